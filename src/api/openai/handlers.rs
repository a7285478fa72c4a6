//! `/v1/chat/completions`, `/v1/completions` and `/v1/embeddings`: the client's body goes
//! to the backend's route of the same name with only the model renamed, and the answer
//! comes back as the backend sent it (see `relay`), logged like an Ollama request.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::Extension;
use axum::http::header;
use axum::response::Response;
use serde_json::Value;
use tokio::sync::OwnedSemaphorePermit;

use super::error::OpenAiError;
use super::relay::{self, Exchange, error_detail, refuse};
use super::request::{ClientRequest, Route};
use crate::AppState;
use crate::api::edge::context::RequestContext;
use crate::api::exchange::Recorder;
use crate::backend::{BackendError, Capture, Failover, Routed, TryError, Unrouted, Upstream};
use crate::reload::Snapshot;

pub fn chat_handler(
    Snapshot(state): Snapshot,
    Extension(context): Extension<RequestContext>,
    body: Bytes,
) -> impl Future<Output = Response> {
    pass_through(state, context, Route::Chat, body)
}

pub fn completions_handler(
    Snapshot(state): Snapshot,
    Extension(context): Extension<RequestContext>,
    body: Bytes,
) -> impl Future<Output = Response> {
    pass_through(state, context, Route::Completions, body)
}

pub fn embeddings_handler(
    Snapshot(state): Snapshot,
    Extension(context): Extension<RequestContext>,
    body: Bytes,
) -> impl Future<Output = Response> {
    pass_through(state, context, Route::Embeddings, body)
}

/// A plain function returning an `async move` block, with the recorder boxed, for the
/// reason the Ollama chat handler is (its future is what a request waiting holds).
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice in its future"
)]
fn pass_through(
    state: Arc<AppState>,
    context: RequestContext,
    route: Route,
    body: Bytes,
) -> impl Future<Output = Response> {
    async move {
        let state = &*state;
        let endpoint = route.endpoint();
        let mut recorder = Recorder::begin(state, &context, endpoint, &body);
        let server = &state.config.server;
        let request = match ClientRequest::read(&body) {
            Ok(r) => r,
            Err(e) => return refuse(*recorder, e),
        };
        let prompt = route.prompt(&request.body);
        if server.log_messages {
            tracing::info!(model = ?request.model, prompt = ?prompt, "{endpoint} request");
        }
        recorder.request(request.model.as_deref(), prompt, request.stream);
        let resolved = match state.models.resolve(request.model.as_deref(), &state.backends).await {
            Ok(r) => r,
            Err(e) => return refuse(*recorder, e.into()),
        };
        recorder.resolved(&resolved);
        // Like the Ollama routes, the model's targets are tried in turn; here a target has
        // answered once it sent a 2xx status (its stream is not read ahead).
        let failover = Failover::new(&state.backends, &resolved.targets);
        let request = &request;
        let routed = failover.run(&state.telemetry.cut_off, |upstream, model| async move {
            ask(state, upstream, &model, route, request).await
        });
        match routed.await {
            Ok(Routed {
                upstream,
                model,
                answer,
                attempts,
            }) => {
                recorder.routed(upstream, answer.slot, &attempts);
                recorder.backend_model(&model);
                recorder.capture(answer.capture.clone());
                let exchange = Exchange {
                    route,
                    client_model: resolved.client,
                    label: upstream.client.label().to_owned(),
                    strip_usage: answer.strip_usage,
                    strip_think: resolved.strip_think,
                    log_lines: server.log_raw_responses,
                    capture: answer.capture,
                };
                match answer.is_sse {
                    true => relay::stream(exchange, answer.response, *recorder).await,
                    false => relay::whole(exchange, answer.response, *recorder).await,
                }
            }
            Err(Unrouted { error, attempts }) => {
                recorder.capture(error.capture);
                recorder.failed_attempts(&attempts);
                refuse(
                    *recorder,
                    OpenAiError::from_backend(&error.error, error.detail.as_ref()),
                )
            }
        }
    }
}

/// A backend that took the request: its 2xx answer, not read yet.
struct Answer {
    response: reqwest::Response,
    /// Whether it is a stream: what came back decides, not what was asked.
    is_sse: bool,
    slot: Option<OwnedSemaphorePermit>,
    /// ollabridge asked for usage the client did not.
    strip_usage: bool,
    capture: Option<Capture>,
}

/// A backend that did not: why, with its own error object when it sent one.
struct Refusal {
    error: BackendError,
    detail: Option<Value>,
    capture: Option<Capture>,
}

impl From<BackendError> for Refusal {
    fn from(error: BackendError) -> Refusal {
        Refusal {
            error,
            detail: None,
            capture: None,
        }
    }
}

impl TryError for Refusal {
    fn backend_error(&self) -> &BackendError {
        &self.error
    }
}

/// Sends the request to one target, holding one of its backend's slots.
async fn ask(
    state: &AppState,
    upstream: &Upstream,
    model: &str,
    route: Route,
    request: &ClientRequest,
) -> Result<Answer, Refusal> {
    let ask_usage = upstream.config.stream_options && route != Route::Embeddings;
    let (body, strip_usage) = request.for_backend(model, ask_usage);
    let database = &state.config.database;
    // Each try has its own, so the row keeps the bodies of the one that answered.
    let capture = database.store_bodies.then(|| Capture::new(database.max_body_bytes));
    if let Some(capture) = &capture {
        capture.request(&body);
    }
    let refused = |error, detail, capture| Refusal { error, detail, capture };
    let slot = match upstream.slot().await {
        Ok(slot) => slot,
        Err(e) => return Err(refused(e, None, capture)),
    };
    let response = match upstream.client.post_v1(route.upstream(), body).await {
        Ok(r) => r,
        Err(e) => return Err(refused(e, None, capture)),
    };
    let status = response.status();
    if !status.is_success() {
        let body = match response.bytes().await {
            Ok(body) => body,
            Err(e) => {
                return Err(refused(
                    BackendError::from_reqwest(upstream.client.label(), &e),
                    None,
                    capture,
                ));
            }
        };
        if let Some(capture) = &capture {
            capture.response(&body);
        }
        let error = BackendError::from_status(status.as_u16(), &body);
        return Err(refused(error, error_detail(&body), capture));
    }
    let is_sse = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("text/event-stream"));
    Ok(Answer {
        response,
        is_sse,
        slot,
        strip_usage,
        capture,
    })
}
