//! `POST /api/replay/{id}`: runs a logged request again through the same Ollama path
//! clients use, answered whole (`stream: false`), and logged as a new row whose
//! `replay_of` is the original's id.
//!
//! Body (optional): `{"model": "other"}` to ask another model, `{"backend": "name"}` to
//! send it to that backend alone (chat and generate; under the mapped backend model
//! name, or the model name as given). The request replayed is
//! the client's body when it was stored (`database.store_bodies`), otherwise one
//! rebuilt from the row (model and messages or prompt: tools and options are then
//! not known). Answer: `{"original": <the row>, "replay": {"request_id", "status",
//! "latency_ms", "source": "request_body"|"rebuilt", "answer": <Ollama's JSON>}}`.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{Request, header};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::logs::parse_id;
use super::{AdminError, AdminState};
use crate::api::dashboard_router;
use crate::api::edge::{PINNED_BACKEND, REPLAY_OF};
use crate::store::query::{self, LogDetail};

#[derive(Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {
    model: Option<String>,
    backend: Option<String>,
}

/// The answer is read whole; a replay is one non-streamed answer, far below this.
const MAX_ANSWER_BYTES: usize = 64 << 20;

pub async fn replay_handler(
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, AdminError> {
    let id = parse_id(&id).map_err(|message| AdminError::param("id", message))?;
    let options: Options = if body.iter().all(u8::is_ascii_whitespace) {
        Options::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| AdminError::BadRequest(format!("invalid body: {e}")))?
    };
    let original = query::get(&state.pool, id)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("log {id} not found")))?;
    if original.in_flight {
        return Err(AdminError::BadRequest(format!("log {id} is still running")));
    }
    let (mut request, source) = replayable(&original)?;
    if let Some(model) = options.model.as_deref().filter(|m| !m.is_empty()) {
        request["model"] = model.into();
    }
    request["stream"] = false.into();

    let started = Instant::now();
    let mut call = Request::post(original.endpoint.as_str())
        .header(header::CONTENT_TYPE, "application/json")
        .header(REPLAY_OF, id.to_string());
    if let Some(backend) = options.backend.as_deref().filter(|b| !b.is_empty()) {
        call = call.header(PINNED_BACKEND, backend);
    }
    let call = call
        .body(Body::from(request.to_string()))
        .map_err(|e| AdminError::BadRequest(format!("cannot build the replay request: {e}")))?;
    let response = dashboard_router(state.live.clone())
        .oneshot(call)
        .await
        .unwrap_or_else(|never| match never {});
    let status = response.status().as_u16();
    let request_id = response
        .headers()
        .get(crate::api::edge::REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = axum::body::to_bytes(response.into_body(), MAX_ANSWER_BYTES)
        .await
        .map_err(|e| AdminError::BadRequest(format!("the replay's answer could not be read: {e}")))?;
    let answer =
        serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    Ok(Json(json!({
        "original": original,
        "replay": {
            "request_id": request_id,
            "status": status,
            "latency_ms": started.elapsed().as_secs_f64() * 1000.0,
            "source": source,
            "answer": answer,
        },
    })))
}

/// The request to send again, and where it came from.
fn replayable(row: &LogDetail) -> Result<(Value, &'static str), AdminError> {
    if let Some(body @ Value::Object(_)) = &row.request_body {
        return Ok((body.clone(), "request_body"));
    }
    let cannot =
        |why: &str| AdminError::BadRequest(format!("log {} ({}) cannot be replayed: {why}", row.id, row.endpoint));
    let Some(prompt) = &row.prompt else {
        return Err(cannot(
            "no prompt was stored (database.redact, or a request refused before it was read)",
        ));
    };
    let key = match (row.endpoint.as_str(), prompt) {
        ("/api/chat", Value::Array(_)) => "messages",
        ("/api/generate" | "/api/embeddings", Value::String(_)) => "prompt",
        ("/api/embed", Value::Array(_)) => "input",
        ("/api/chat" | "/api/generate" | "/api/embed" | "/api/embeddings", _) => {
            return Err(cannot("its stored prompt was cut at database.max_body_bytes"));
        }
        _ => return Err(cannot("only chat, generate and embedding requests can be replayed")),
    };
    Ok((json!({ "model": row.model, key: prompt }), "rebuilt"))
}
