//! `/v1/models`: the models `/api/tags` lists (every mapped name, then what the backends
//! offer under their `discover` prefix), in OpenAI's list shape. Not logged, like
//! `/api/tags`.

use axum::Json;
use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::error::OpenAiError;
use crate::AppState;
use crate::reload::Snapshot;

pub async fn list_handler(Snapshot(state): Snapshot) -> Json<Value> {
    let data: Vec<Value> = state
        .models
        .listed_names(&state.backends)
        .await
        .iter()
        .map(|id| entry(&state, id))
        .collect();
    Json(json!({ "object": "list", "data": data }))
}

/// `GET /v1/models/{model}`: any name a request may use (`:latest`, any case).
pub async fn retrieve_handler(Snapshot(state): Snapshot, Path(model): Path<String>) -> Response {
    match state.models.resolve(Some(&model), &state.backends).await {
        Ok(resolved) => Json(entry(&state, &resolved.client)).into_response(),
        Err(e) => OpenAiError::from(e).into_response(),
    }
}

/// `created` is when ollabridge started: the backends' own dates are not kept.
fn entry(state: &AppState, id: &str) -> Value {
    let created = chrono::DateTime::parse_from_rfc3339(&state.started_at).map_or(0, |t| t.timestamp());
    json!({ "id": id, "object": "model", "created": created, "owned_by": "ollabridge" })
}
