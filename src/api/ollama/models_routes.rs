//! Model metadata routes (`/api/tags`, `/api/show`, `/api/ps`, `/api/version`) and the
//! pass-through of every other `/api/*` route to an Ollama backend.

use axum::Json;
use axum::body::{Body, Bytes};
use std::sync::Arc;

use axum::extract::{Extension, FromRequest, FromRequestParts, Query, Request};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::error::render;
use crate::AppState;
use crate::api::edge::context::RequestContext;
use crate::api::exchange::{ExchangeError, Recorder, parse_body};
use crate::backend::ollama::translate::rename_model;
use crate::backend::{BackendError, BackendModel, ModelsAnswer, Upstream};
use crate::models::{Described, ResolveError, find, listed_name};
use crate::reload::{Live, Snapshot};

/// OpenAI-compatible servers do not report an architecture; clients only need one
/// to find `<arch>.context_length` in `model_info`.
const ARCHITECTURE: &str = "llama";
/// What Ollama shows as the expiry of a model kept loaded forever (`keep_alive: -1`);
/// also of a backend that keeps its models loaded.
const FOREVER: &str = "2318-01-01T00:00:00Z";

/// `/api/ps`'s `expires_at`; `None`: never.
fn format_expiry(at: Option<std::time::SystemTime>) -> String {
    at.map_or_else(|| FOREVER.to_owned(), crate::clock::rfc3339)
}

pub async fn version_handler(Snapshot(state): Snapshot) -> Json<Value> {
    Json(json!({ "version": state.config.server.version }))
}

/// Every mapped name, plus every model the backends offer (under their `discover`
/// prefix).
pub async fn tags_handler(Snapshot(state): Snapshot) -> Json<Value> {
    let offered = state.models.offered_or_empty(&state.backends).await;
    let entries: Vec<Value> = state
        .models
        .described(&state.backends, &offered)
        .iter()
        .map(|m| entry(m, &state))
        .collect();
    Json(json!({ "models": entries }))
}

#[derive(Debug, Deserialize)]
pub struct ShowRequest {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

pub async fn show_handler(Snapshot(state): Snapshot, body: Bytes) -> Response {
    let request: ShowRequest = match parse_body(&body) {
        Ok(r) => r,
        Err(e) => return render(e),
    };
    show(&state, request, Some(body)).await.unwrap_or_else(render)
}

/// Zed asks `GET /api/show?model=...`.
pub async fn show_query_handler(Snapshot(state): Snapshot, Query(request): Query<ShowRequest>) -> Response {
    show(&state, request, None).await.unwrap_or_else(render)
}

async fn show(state: &AppState, request: ShowRequest, body: Option<Bytes>) -> Result<Response, ExchangeError> {
    let requested = request.model.or(request.name);
    let resolved = state.models.resolve(requested.as_deref(), &state.backends).await?;
    let first = &resolved.targets[0];
    let backend = &state.backends[first.backend].client;
    if let ModelsAnswer::Own(response) = backend.show(&resolved.backend, body).await? {
        return Ok(relay(response));
    }
    let offered = state.models.offered_or_empty(&state.backends).await;
    let model = Described {
        name: resolved.client.clone(),
        mapping: state.models.mapping(&resolved.client),
        backend: find(&offered[first.backend], &resolved.backend),
    };
    let context = model.context_length();
    let template = model
        .backend
        .and_then(|m| m.template.clone())
        .unwrap_or_else(|| "{{ .Prompt }}".into());
    Ok(Json(json!({
        "license": "",
        "modelfile": format!("# Served by ollabridge from backend model {}\nFROM {}\nPARAMETER num_ctx {context}\n", resolved.backend, resolved.backend),
        "parameters": format!("{:<30} {context}", "num_ctx"),
        "template": template,
        "details": details(context),
        "model_info": {
            "general.architecture": ARCHITECTURE,
            "general.basename": resolved.client,
            format!("{ARCHITECTURE}.context_length"): context,
        },
        "capabilities": model.capabilities(),
        "modified_at": state.started_at,
    }))
    .into_response())
}

pub async fn ps_handler(Snapshot(state): Snapshot) -> Response {
    // With several backends, the models of all are listed, each described; a backend
    // that loads models on request (a llama-server router) lists those it has loaded.
    let loaded = if let [only] = state.backends.as_slice() {
        match only.client.ps().await {
            Ok(ModelsAnswer::Own(response)) => return relay(response),
            Ok(ModelsAnswer::Described) => vec![None],
            Ok(ModelsAnswer::Loaded(loaded)) => vec![Some(loaded)],
            Err(e) => return render(e.into()),
        }
    } else {
        let lists = state.backends.iter().map(|b| b.client.loaded_models());
        match futures::future::join_all(lists).await.into_iter().collect() {
            Ok(lists) => lists,
            Err(e) => return render(BackendError::into(e)),
        }
    };
    let offered = state.models.offered_or_empty(&state.backends).await;
    // A loaded model is listed once, under its first name (a mapping's before its own).
    let mut listed = std::collections::HashSet::new();
    let models: Vec<Value> = state
        .models
        .described(&state.backends, &offered)
        .iter()
        .filter_map(|model| {
            let mut entry = entry(model, &state);
            entry["expires_at"] = FOREVER.into();
            entry["size_vram"] = 0.into();
            entry["context_length"] = model.context_length().into();
            let index = backend_of(model, &offered);
            if let Some((index, list)) = index.and_then(|index| Some((index, loaded[index].as_ref()?))) {
                let held = list.iter().find(|m| Some(m.name.as_str()) == backend_name(model))?;
                if !listed.insert((index, held.name.as_str())) {
                    return None;
                }
                entry["expires_at"] = format_expiry(held.expires_at).into();
                entry["size"] = held.size.into();
                let configured = model.mapping.is_some_and(|m| m.context_length.is_some());
                if let Some(context) = held.context_length.filter(|_| !configured) {
                    entry["context_length"] = context.into();
                }
            }
            Some(entry)
        })
        .collect();
    Json(json!({ "models": models })).into_response()
}

/// The backend's name for a listed model.
fn backend_name<'a>(model: &'a Described) -> Option<&'a str> {
    match model.mapping {
        Some(mapping) => Some(&mapping.target),
        None => model.backend.map(|m| m.name.as_str()),
    }
}

/// The backend a listed model is on: its mapping's first target's, or the one whose
/// list it was discovered in.
fn backend_of(model: &Described, offered: &[Arc<Vec<BackendModel>>]) -> Option<usize> {
    if let Some(mapping) = model.mapping {
        return Some(mapping.targets[0].backend);
    }
    let found = model.backend?;
    offered
        .iter()
        .position(|list| list.iter().any(|m| std::ptr::eq(m, found)))
}

/// Other `/api/*` routes: forwarded to an Ollama backend (model name mapped);
/// an OpenAI backend cannot serve them.
pub async fn other_api_handler(
    Snapshot(state): Snapshot,
    Extension(context): Extension<RequestContext>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let Some(backend) = ollama_for(&state, &body).await else {
        let path = uri.path();
        let manages_models =
            ["/api/create", "/api/copy", "/api/delete", "/api/push"].contains(&path) || path.starts_with("/api/blobs/");
        let message = match manages_models {
            true => format!(
                "{path}: ollabridge cannot manage models on an OpenAI-compatible backend; \
                 add or remove models in the backend itself and map them in models.mappings"
            ),
            false => format!("{path} is not available with an OpenAI-compatible backend"),
        };
        return render(ExchangeError::Unsupported(message));
    };
    forward_logged(&state, &context, backend, method, &uri, body).await
}

#[derive(Debug, Deserialize)]
pub struct PullRequest {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    stream: Option<bool>,
}

/// Clients pull a model they do not see (Home Assistant does, at setup). A model the
/// backend already serves is "pulled" at once with Ollama's progress sequence; any
/// other cannot be, because ollabridge does not download models.
pub async fn pull_handler(started: Started<PullRequest>) -> Response {
    let Started {
        state,
        mut recorder,
        request,
    } = started;
    let requested = request.model.or(request.name);
    let stream = request.stream.unwrap_or(true);
    recorder.request(requested.as_deref(), None, stream);
    let resolved = match state.models.resolve(requested.as_deref(), &state.backends).await {
        Ok(r) => r,
        Err(ResolveError::NotFound(name)) => {
            let e = ExchangeError::NotFound(format!(
                "model '{name}' is not served by the backend, and ollabridge cannot download models; \
                 load it in the backend or map the name in models.mappings"
            ));
            return recorder.reject(e);
        }
        Err(e) => return recorder.reject(e.into()),
    };
    recorder.resolved(&resolved);
    // A mapped name resolves without asking the backend: a pull must not report success
    // while the backend that would serve the model cannot be reached.
    let first = &resolved.targets[0];
    if let Err(e) = state.models.offered(&state.backends, first.backend, false).await {
        return recorder.reject(e.into());
    }
    recorder.finish();
    if !stream {
        return Json(json!({ "status": "success" })).into_response();
    }
    let lines: String = [
        "pulling manifest",
        "verifying sha256 digest",
        "writing manifest",
        "success",
    ]
    .iter()
    .map(|status| format!("{}\n", json!({ "status": status })))
    .collect();
    ([(header::CONTENT_TYPE, "application/x-ndjson")], lines).into_response()
}

/// Forwards a request to a real Ollama with the model name mapped, streams its answer
/// back as it comes, and logs the exchange (status only: the body is not read).
pub async fn forward_logged(
    state: &AppState,
    context: &RequestContext,
    upstream: &Upstream,
    method: Method,
    uri: &Uri,
    body: Bytes,
) -> Response {
    let path = uri.path();
    let mut recorder = Recorder::start(state, context, path, method.as_str(), &body, render);
    let backend = &upstream.client;
    recorder.routed(upstream, &[]);
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
                Err(e) => return recorder.reject(e.into()),
            }
        }
        None => body,
    };
    let path_and_query = uri.path_and_query().map_or(path, |p| p.as_str());
    let forwarded_body = (!body.is_empty()).then_some(body);
    // A backend still to answer when the shutdown's grace period ends is cut off (a
    // select: `run_until_cancelled` would keep the forwarding future twice).
    let forwarded = tokio::select! {
        forwarded = backend.forward(method, path_and_query, forwarded_body) => forwarded,
        () = state.telemetry.cut_off.cancelled() => Err(BackendError::ShuttingDown),
    };
    match forwarded {
        Ok(response) => {
            let status = response.status().as_u16();
            if status >= 400 {
                recorder.fail(status, &format!("backend answered HTTP {status}"));
            } else {
                recorder.finish();
            }
            relay(response)
        }
        Err(e) => recorder.reject(e.into()),
    }
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

/// How the routes a real Ollama may serve begin (`/api/embed`, `/api/embeddings`,
/// `/api/pull`), as the handler's extractor: passed through (and logged) when the model's
/// backend is an Ollama, and its answer is the rejection; otherwise the live state, a
/// recorder and the parsed body, or the answer refusing a body that does not parse.
pub struct Started<T> {
    pub state: Arc<AppState>,
    pub recorder: Recorder,
    pub request: T,
}

impl<T: DeserializeOwned + Send> FromRequest<Arc<Live>> for Started<T> {
    type Rejection = Response;

    async fn from_request(request: Request, live: &Arc<Live>) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        let Snapshot(state) = Snapshot::from_request_parts(&mut parts, live)
            .await
            .unwrap_or_else(|never| match never {});
        let Extension(context) = Extension::<RequestContext>::from_request_parts(&mut parts, live)
            .await
            .map_err(IntoResponse::into_response)?;
        let (method, uri) = (parts.method.clone(), parts.uri.clone());
        let body = Bytes::from_request(Request::from_parts(parts, body), live)
            .await
            .map_err(IntoResponse::into_response)?;
        let (recorder, request) = forwarded_or_parsed(&state, &context, method, &uri, body).await?;
        Ok(Started {
            state,
            recorder,
            request,
        })
    }
}

/// [`Started`]'s work; `Err` is the client's answer.
async fn forwarded_or_parsed<T: DeserializeOwned>(
    state: &AppState,
    context: &RequestContext,
    method: Method,
    uri: &Uri,
    body: Bytes,
) -> Result<(Recorder, T), Response> {
    if let Some(upstream) = ollama_for(state, &body).await {
        return Err(forward_logged(state, context, upstream, method, uri, body).await);
    }
    let recorder = Recorder::start(state, context, uri.path(), "POST", &body, render);
    match parse_body(&body) {
        Ok(request) => Ok((recorder, request)),
        Err(e) => Err(recorder.reject(e)),
    }
}

/// The Ollama backend a pass-through request goes to: the one serving the model its
/// body names, else the default backend; `None` when that is not an Ollama.
pub async fn ollama_for<'a>(state: &'a AppState, body: &[u8]) -> Option<&'a Upstream> {
    // With one backend there is nothing to choose (and nothing to ask it).
    let requested = requested_model(body).filter(|_| state.backends.len() > 1);
    let index = match requested.as_deref() {
        Some(name) => state
            .models
            .resolve(Some(name), &state.backends)
            .await
            .map_or(0, |r| r.targets[0].backend),
        None => 0,
    };
    let upstream = &state.backends[index];
    upstream.client.serves_ollama_api().then_some(upstream)
}

/// The `model` (or older `name`) a JSON body names.
fn requested_model(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Named {
        model: Option<String>,
        name: Option<String>,
    }
    let named: Named = serde_json::from_slice(body).ok()?;
    named.model.or(named.name)
}

/// An `/api/tags` entry. A real Ollama's own entry lends its size, digest and details.
fn entry(model: &Described, state: &AppState) -> Value {
    let listed = listed_name(&model.name);
    let mut entry = model.backend.and_then(|m| m.entry.clone()).unwrap_or_else(|| {
        json!({
            "modified_at": state.started_at,
            "size": 0,
            "digest": format!("{:x}", Sha256::digest(listed.as_bytes())),
            "details": details(model.context_length()),
            "capabilities": model.capabilities(),
        })
    });
    entry["name"] = listed.clone().into();
    entry["model"] = listed.into();
    entry
}

fn details(context_length: u64) -> Value {
    json!({
        "parent_model": "",
        "format": "gguf",
        "family": ARCHITECTURE,
        "families": [ARCHITECTURE],
        "parameter_size": "",
        "quantization_level": "",
        "context_length": context_length,
    })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::format_expiry;
    use crate::backend::keep_alive::{KeepAlive, expiry};

    #[test]
    fn expiry_is_idle_time_plus_keep_alive_in_ollamas_format() {
        let idle = SystemTime::UNIX_EPOCH + Duration::new(1_796_600_000, 123_456_789);
        let at = expiry(idle, KeepAlive::For(Duration::from_secs(300)));
        assert_eq!(format_expiry(at), "2026-12-06T23:38:20.123456789Z");
        assert_eq!(
            format_expiry(expiry(idle, KeepAlive::Unload)),
            "2026-12-06T23:33:20.123456789Z"
        );
        assert_eq!(expiry(idle, KeepAlive::Forever), None);
        assert_eq!(format_expiry(None), "2318-01-01T00:00:00Z");
    }
}
