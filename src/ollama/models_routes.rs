//! Model metadata routes (`/api/tags`, `/api/show`, `/api/ps`, `/api/version`) and the
//! pass-through of every other `/api/*` route to an Ollama backend.

use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::error::{ApiError, parse_body};
use super::recorder::Recorder;
use crate::AppState;
use crate::backend::ollama::translate::rename_model;
use crate::backend::{AnyBackend, BackendModel};
use crate::models::{listed_name, normalize};

/// Context length reported when the backend does not tell.
const FALLBACK_CONTEXT: u64 = 4096;

pub async fn version_handler(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({ "version": state.config.server.version }))
}

/// Every mapped name, plus every model the backend offers under its own name.
pub async fn tags_handler(State(state): State<Arc<AppState>>) -> Json<Value> {
    let offered = offered_or_empty(&state).await;
    let mut entries: Vec<Value> = state
        .models
        .mappings()
        .iter()
        .map(|(client, target)| model_entry(&state, client, find(&offered, target)))
        .collect();
    for model in offered.iter() {
        if state.models.mapped(&model.name).is_none() {
            entries.push(model_entry(&state, &model.name, Some(model)));
        }
    }
    Json(json!({ "models": entries }))
}

#[derive(Debug, Deserialize)]
pub struct ShowRequest {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

pub async fn show_handler(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let request: ShowRequest = match parse_body(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    show(&state, request, Some(body))
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// Zed asks `GET /api/show?model=...`.
pub async fn show_query_handler(State(state): State<Arc<AppState>>, Query(request): Query<ShowRequest>) -> Response {
    show(&state, request, None)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn show(state: &AppState, request: ShowRequest, body: Option<Bytes>) -> Result<Response, ApiError> {
    let requested = request.model.or(request.name);
    let resolved = state.models.resolve(requested.as_deref(), &state.backend).await?;
    if let AnyBackend::Ollama(backend) = &state.backend {
        let body = body.unwrap_or_else(|| Bytes::from(json!({ "model": resolved.backend }).to_string()));
        let body = rename_model(&body, &resolved.backend)?;
        let response = backend.forward(Method::POST, "api/show", Some(body)).await?;
        return Ok(relay(response));
    }
    let offered = offered_or_empty(state).await;
    let context = find(&offered, &resolved.backend)
        .and_then(|m| m.context_length)
        .unwrap_or(FALLBACK_CONTEXT);
    Ok(Json(json!({
        "license": "",
        "modelfile": format!("# Served by ollabridge from backend model {}\nFROM {}\nPARAMETER num_ctx {context}\n", resolved.backend, resolved.backend),
        "parameters": format!("{:<30} {context}", "num_ctx"),
        "template": "{{ .Prompt }}",
        "details": details(Some(context)),
        "model_info": {
            "general.architecture": "llama",
            "general.basename": resolved.client,
            "llama.context_length": context,
        },
        "capabilities": ["completion", "tools"],
        "modified_at": state.started_at,
    }))
    .into_response())
}

pub async fn ps_handler(State(state): State<Arc<AppState>>) -> Response {
    if let AnyBackend::Ollama(backend) = &state.backend {
        return match backend.forward(Method::GET, "api/ps", None).await {
            Ok(response) => relay(response),
            Err(e) => ApiError::from(e).into_response(),
        };
    }
    let offered = offered_or_empty(&state).await;
    let models: Vec<Value> = state
        .models
        .mappings()
        .iter()
        .map(|(client, target)| {
            let mut entry = model_entry(&state, client, find(&offered, target));
            let context = find(&offered, target)
                .and_then(|m| m.context_length)
                .unwrap_or(FALLBACK_CONTEXT);
            entry["expires_at"] = "2318-01-01T00:00:00Z".into(); // kept loaded by the backend
            entry["size_vram"] = 0.into();
            entry["context_length"] = context.into();
            entry
        })
        .collect();
    Json(json!({ "models": models })).into_response()
}

/// Other `/api/*` routes: forwarded to an Ollama backend (model name mapped);
/// an OpenAI backend cannot serve them.
pub async fn other_api_handler(State(state): State<Arc<AppState>>, method: Method, uri: Uri, body: Bytes) -> Response {
    let path = uri.path().to_owned();
    let AnyBackend::Ollama(backend) = &state.backend else {
        return ApiError::Unsupported(format!("{path} is not available with an OpenAI-compatible backend"))
            .into_response();
    };
    let mut recorder = Recorder::new(
        state.logger.clone(),
        &path,
        method.as_str(),
        state.backend.kind().as_str(),
    );
    let requested: Option<String> = serde_json::from_slice::<Value>(&body).ok().and_then(|v| {
        v.get("model")
            .or_else(|| v.get("name"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    });
    recorder.request(
        requested.as_deref(),
        (!body.is_empty()).then(|| String::from_utf8_lossy(&body).into_owned()),
        false,
    );
    let body = match requested.as_deref().and_then(|name| state.models.mapped(name)) {
        Some(target) => {
            recorder.backend_model(target);
            match rename_model(&body, target) {
                Ok(b) => b,
                Err(e) => return reject(recorder, e.into()),
            }
        }
        None => body,
    };
    let path_and_query = uri.path_and_query().map_or(path.as_str(), |p| p.as_str());
    let forwarded_body = (!body.is_empty()).then_some(body);
    match backend.forward(method, path_and_query, forwarded_body).await {
        Ok(response) => {
            let status = response.status().as_u16();
            if status >= 400 {
                recorder.fail(status, &format!("backend answered HTTP {status}"));
            } else {
                recorder.finish();
            }
            relay(response)
        }
        Err(e) => reject(recorder, e.into()),
    }
}

fn reject(recorder: Recorder, error: ApiError) -> Response {
    recorder.fail(error.status_code().as_u16(), &error.to_string());
    error.into_response()
}

/// Streams a backend response back as it comes, keeping status and content type.
fn relay(response: reqwest::Response) -> Response {
    let status = StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
    let body = Body::from_stream(response.bytes_stream().map_err(std::io::Error::other));
    let mut out = Response::new(body);
    *out.status_mut() = status;
    if let Some(ct) = content_type.and_then(|c| HeaderValue::from_bytes(c.as_bytes()).ok()) {
        out.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    out
}

/// The backend's list; when the backend is down, the mapping table alone still
/// answers, so clients such as Home Assistant can finish their setup.
async fn offered_or_empty(state: &AppState) -> Arc<Vec<BackendModel>> {
    match state.models.offered(&state.backend, false).await {
        Ok(list) => list,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the backend's models; listing mapped models only");
            Arc::new(Vec::new())
        }
    }
}

fn find<'a>(offered: &'a [BackendModel], name: &str) -> Option<&'a BackendModel> {
    let key = normalize(name);
    offered.iter().find(|m| normalize(&m.name) == key)
}

/// An `/api/tags` entry. A real Ollama's own entry lends its size, digest and details.
fn model_entry(state: &AppState, name: &str, backend: Option<&BackendModel>) -> Value {
    let listed = listed_name(name);
    let mut entry = backend.and_then(|m| m.entry.clone()).unwrap_or_else(|| {
        json!({
            "modified_at": state.started_at,
            "size": 0,
            "digest": format!("{:x}", Sha256::digest(listed.as_bytes())),
            "details": details(backend.and_then(|m| m.context_length)),
        })
    });
    entry["name"] = listed.clone().into();
    entry["model"] = listed.into();
    entry
}

fn details(context_length: Option<u64>) -> Value {
    let mut details = json!({
        "parent_model": "",
        "format": "gguf",
        "family": "llama",
        "families": ["llama"],
        "parameter_size": "",
        "quantization_level": "",
    });
    if let Some(n) = context_length {
        details["context_length"] = n.into();
    }
    details
}
