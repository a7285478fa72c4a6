//! Pass-through for the dialects a backend speaks itself (OpenAI's `/v1/chat/completions`,
//! `/v1/completions`, `/v1/embeddings`, `/v1/responses`; Anthropic's `/v1/messages`): the
//! client's body goes to the backend's route of the same name with only the model renamed,
//! and the answer comes back as the backend sent it (`relay`), read on the side for the
//! log row by the route's [`SideReader`]. Each dialect says what differs through
//! [`Route`]: its paths, its prompt, its reader and the shape of its errors.
//!
//! A backend that does not serve `/v1/messages` or `/v1/responses` is asked the route's
//! [`Translation`] of the request as a chat instead (`translated.rs`), within the same
//! failover: one target may pass through while the next translates.

mod relay;
mod request;
mod translated;

use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use axum::body::Bytes;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::future::Either;
use serde_json::{Map, Value};
use tokio::sync::OwnedSemaphorePermit;

use self::relay::{Exchange, error_detail, refuse};
use self::request::ClientRequest;
use self::translated::Translated;
pub use self::translated::{Encoder, End, Sampling, TextOrParts, Translation, event, function_tool, read_body};
use crate::AppState;
use crate::api::edge::context::RequestContext;
use crate::api::exchange::{ExchangeError, Recorder, Render};
use crate::backend::{
    BackendError, Call, Capture, ChatCall, Chunk, ChunkStream, Failover, Routed, TryError, Unrouted, Upstream,
};
use crate::config::NativeRoute;
use crate::models::ResolveError;

/// One route of a dialect, as the pass-through needs to know it.
pub trait Route: Copy + Send + Sync + 'static {
    type Error: DialectError;
    type Reader: SideReader;

    /// The path clients call, which is also the log row's `endpoint`.
    fn endpoint(self) -> &'static str;

    /// The backend's route, relative to its base URL.
    fn upstream(self) -> &'static str {
        &self.endpoint()[1..]
    }

    /// What the log row keeps as `prompt`.
    fn prompt(self, body: &Map<String, Value>) -> Option<String>;

    /// Whether a streamed request may be given `stream_options.include_usage`.
    fn asks_usage(self) -> bool {
        false
    }

    /// The reader of the backend's answer, for the row.
    fn reader(self, strip_think: bool) -> Self::Reader;

    /// The route a backend may not serve (`serves` in its config).
    fn native(self) -> Option<NativeRoute> {
        None
    }

    /// How the route is answered from a chat when the backend does not serve it.
    fn translation(self) -> Option<&'static dyn Translation> {
        None
    }
}

/// A dialect's error object: its answer to a failed request, and its last event of a
/// stream that breaks after it began.
pub trait DialectError: IntoResponse + Sized + Send + 'static {
    fn new(status: StatusCode, message: String) -> Self;

    /// A backend's failure, with the backend's own error object (`detail`) when it sent one.
    fn from_backend(error: &BackendError, detail: Option<&Value>) -> Self;

    fn from_resolve(error: ResolveError) -> Self {
        match error {
            ResolveError::Missing | ResolveError::TooLong(_) => Self::new(StatusCode::BAD_REQUEST, error.to_string()),
            ResolveError::NotFound(_) => Self::new(StatusCode::NOT_FOUND, error.to_string()),
            ResolveError::Backend(e) => Self::from_backend(&e, None),
        }
    }

    /// An exchange refused before it reached a backend.
    fn from_exchange(error: ExchangeError) -> Self {
        match error {
            ExchangeError::Backend(e) => Self::from_backend(&e, None),
            ExchangeError::Busy(message) => Self::from_backend(&BackendError::Busy(message), None),
            e => Self::new(e.status_code(), e.to_string()),
        }
    }

    fn status(&self) -> StatusCode;
    fn message(&self) -> &str;

    /// The error as the last event of a stream; `sequence_number` is what the stream's
    /// next event would carry, for the dialect that numbers its events (Responses).
    fn event(&self, sequence_number: u64) -> Bytes;
}

/// A dialect's error object as a response; `Retry-After: 1` when the backend's queue was
/// full (the SDKs honour it).
pub fn error_response(status: StatusCode, body: &Value, retry_after: bool) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    if retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// Reads a backend's answer in one dialect into neutral chunks for the log row. Pure:
/// tested with the events a real backend sent.
pub trait SideReader: Send + 'static {
    /// One SSE event (`name` is empty when the event had none). An error ends the
    /// client's stream with the route's error event in place of this one, so it is
    /// only for the backend's failure written in another shape (chat completions'
    /// `{"error"}` chunk); what the reader merely cannot read is the row's problem,
    /// kept for [`finish`](SideReader::finish).
    fn on_event(&mut self, name: &str, data: &str) -> Result<Option<Chunk>, BackendError>;

    /// Whether this event ends the answer: the row is handed over, the rest is
    /// forwarded unread. The route's own error events end it too (they reach the
    /// client as they are).
    fn ends(&self, name: &str, data: &str) -> bool;

    /// The answer ended (or the backend closed the stream): what is left (the final
    /// chunk), why the answer is incomplete ([`BackendError::Truncated`]), or why the
    /// row is failed though the client got the backend's events (its error event, an
    /// event the reader could not read).
    fn finish(&mut self) -> Result<Vec<Chunk>, BackendError>;

    /// A whole answer.
    fn on_body(self, body: &[u8]) -> Result<Logged, BackendError>;

    /// The event is the usage ollabridge asked for and the client did not.
    fn is_added_usage(&self, _data: &str) -> bool {
        false
    }

    /// The `sequence_number` the stream's next event would carry (the Responses API
    /// numbers its events; other dialects do not).
    fn next_sequence(&self) -> u64 {
        0
    }
}

/// What the row gets of a whole answer.
pub enum Logged {
    Chunks(Vec<Chunk>),
    /// An answer that is no chunk stream (embeddings): a description and the prompt tokens.
    Summary(String, Option<u64>),
}

/// Relays `body` to the backend's `route`, logged like every request.
///
/// A plain function for the reasons the Ollama chat handler is one (its future is what a
/// request waiting holds): the body's reading is done before the future, which keeps
/// only what the wait and the answer need.
pub fn pass_through<R: Route>(
    state: Arc<AppState>,
    context: RequestContext,
    route: R,
    body: Bytes,
) -> impl Future<Output = Response> {
    let endpoint = route.endpoint();
    let render: Render = |e| R::Error::from_exchange(e).into_response();
    let mut recorder = Recorder::begin(&state, &context, endpoint, &body, render);
    let request = match ClientRequest::read(&body) {
        Ok(r) => r,
        Err(message) => {
            let refused = refuse(*recorder, R::Error::new(StatusCode::BAD_REQUEST, message));
            return Either::Left(std::future::ready(refused));
        }
    };
    let prompt = route.prompt(&request.body);
    if state.config.server.log_messages {
        tracing::info!(model = ?request.model, prompt = ?prompt, "{endpoint} request");
    }
    recorder.request(request.model.as_deref(), prompt, request.stream);
    Either::Right(ask_targets(state, context.id, route, body, request, recorder))
}

/// The model resolved and its targets asked in turn, the first to answer relayed.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice in its future"
)]
fn ask_targets<R: Route>(
    state: Arc<AppState>,
    id: String,
    route: R,
    body: Bytes,
    request: ClientRequest,
    mut recorder: Box<Recorder>,
) -> impl Future<Output = Response> {
    async move {
        let state = &*state;
        let resolved = match state.models.resolve(request.model.as_deref(), &state.backends).await {
            Ok(r) => r,
            Err(e) => return refuse(*recorder, R::Error::from_resolve(e)),
        };
        recorder.resolved(&resolved);
        // Like the Ollama routes, the model's targets are tried in turn; here a target has
        // answered once it sent a 2xx status (its stream is not read ahead), or, translated,
        // its first chunk.
        let failover = Failover::new(&state.backends, &resolved.targets);
        let translating = Translating {
            translation: route.translation(),
            body: &body,
            stream: request.stream,
            client_model: &resolved.client,
            strip_think: resolved.strip_think,
            translated: OnceLock::new(),
        };
        let (request, translating) = (&request, &translating);
        let routed = failover.run(&state.telemetry.cut_off, |upstream, model| async move {
            ask(state, upstream, &model, route, request, translating).await
        });
        let Routed {
            upstream,
            model,
            answer,
            attempts,
        } = match routed.await {
            Ok(routed) => routed,
            Err(Unrouted { error, attempts }) => {
                recorder.capture(error.capture);
                recorder.failed_attempts(&attempts);
                return refuse(*recorder, R::Error::from_backend(&error.error, error.detail.as_ref()));
            }
        };
        recorder.backend_model(&model);
        recorder.routed(upstream, &attempts);
        let log_lines = state.config.server.log_raw_responses;
        let answer = match answer {
            Answer::Native(answer) => answer,
            Answer::Translated { chunks, capture } => {
                recorder.capture(capture);
                let Some(translation) = route.translation() else {
                    unreachable!("only a route with a translation is translated")
                };
                let created = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let encoder = translation.encoder(&id, &resolved.client, created);
                return translated::respond::<R>(encoder, request.stream, chunks, *recorder, log_lines).await;
            }
        };
        recorder.capture(answer.capture.clone());
        let exchange = Exchange {
            route,
            client_model: resolved.client,
            label: upstream.client.label().to_owned(),
            strip_usage: answer.strip_usage,
            strip_think: resolved.strip_think,
            log_lines,
            capture: answer.capture,
            _slot: answer.slot,
        };
        match answer.is_sse {
            true => relay::stream(exchange, answer.response, *recorder).await,
            false => relay::whole(exchange, answer.response, recorder).await,
        }
    }
}

/// What a target that does not serve the route is asked instead, translated once for
/// all the targets that need it.
struct Translating<'a> {
    translation: Option<&'static dyn Translation>,
    body: &'a Bytes,
    stream: bool,
    client_model: &'a str,
    strip_think: bool,
    translated: OnceLock<Result<Translated, String>>,
}

impl Translating<'_> {
    /// The chat for one target; the error is the 400 of a request that cannot be translated.
    fn call(&self, model: &str, capture: Option<Capture>) -> Result<Option<ChatCall>, BackendError> {
        let Some(translation) = self.translation else {
            return Ok(None);
        };
        let translated = self
            .translated
            .get_or_init(|| translation.request(self.body).map(|r| Translated::new(r, self.stream)));
        let translated = translated.as_ref().map_err(|message| BackendError::Status {
            status: 400,
            message: message.clone(),
        })?;
        Ok(Some(Call {
            client_model: self.client_model.to_owned(),
            backend_model: model.to_owned(),
            stream: self.stream,
            strip_think: self.strip_think,
            request: translated.request.clone(),
            body: translated.body.clone(),
            capture,
        }))
    }
}

/// What a target answered.
enum Answer {
    /// The route itself.
    Native(Native),
    /// The chat it was asked instead: its first chunk has come (the chunks hold the slot).
    Translated {
        chunks: ChunkStream,
        capture: Option<Capture>,
    },
}

/// A backend that took the request: its 2xx answer, not read yet.
struct Native {
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
    /// False for ollabridge's own 400: a request it cannot translate, never sent.
    asked: bool,
}

impl Refusal {
    /// The backend's refusal, with its error object and the bodies of the try.
    fn by_backend(error: BackendError, detail: Option<Value>, capture: Option<Capture>) -> Refusal {
        Refusal {
            error,
            detail,
            capture,
            asked: true,
        }
    }
}

impl From<BackendError> for Refusal {
    fn from(error: BackendError) -> Refusal {
        Refusal::by_backend(error, None, None)
    }
}

impl TryError for Refusal {
    fn backend_error(&self) -> &BackendError {
        &self.error
    }

    fn asked_backend(&self) -> bool {
        self.asked
    }
}

/// Sends the request to one target, holding one of its backend's slots: the route
/// itself, or its translation when the backend does not serve the route (known before,
/// or learned from this try's 404).
async fn ask<R: Route>(
    state: &AppState,
    upstream: &Upstream,
    model: &str,
    route: R,
    request: &ClientRequest,
    translating: &Translating<'_>,
) -> Result<Answer, Refusal> {
    let database = &state.config.database;
    // Each try has its own, so the row keeps the bodies of the one that answered.
    let new_capture = || database.store_bodies.then(|| Capture::new(database.max_body_bytes));
    let slot = upstream.slot().await?;
    if let Some(native) = route.native().filter(|n| !upstream.serves(*n)) {
        return ask_translated(upstream, model, route, native, translating, slot, new_capture()).await;
    }
    let ask_usage = upstream.config.stream_options && route.asks_usage();
    let (body, strip_usage) = request.for_backend(model, ask_usage);
    let capture = new_capture();
    if let Some(capture) = &capture {
        capture.request(&body);
    }
    let response = match upstream.client.post_v1(route.upstream(), body).await {
        Ok(r) => r,
        Err(e) => return Err(Refusal::by_backend(e, None, capture)),
    };
    let status = response.status();
    if !status.is_success() {
        // Boxed: an error's body is rare, and its read is a large future.
        let body = match Box::pin(response.bytes()).await {
            Ok(body) => body,
            Err(e) => {
                return Err(Refusal::by_backend(
                    BackendError::from_reqwest(upstream.client.label(), &e),
                    None,
                    capture,
                ));
            }
        };
        if let Some(capture) = &capture {
            capture.response(&body);
        }
        // Only `serves: "auto"` learns; with `true` the backend's 404 is the answer.
        let unserved =
            |native: &NativeRoute| is_unknown_route(status.as_u16(), &body) && upstream.learned_unserved(*native);
        if let Some(native) = route.native().filter(unserved) {
            return ask_translated(upstream, model, route, native, translating, slot, new_capture()).await;
        }
        let error = BackendError::from_status(status.as_u16(), &body);
        return Err(Refusal::by_backend(error, error_detail(&body), capture));
    }
    let is_sse = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("text/event-stream"));
    Ok(Answer::Native(Native {
        response,
        is_sse,
        slot,
        strip_usage,
        capture,
    }))
}

/// Asks the backend the route's translation as a chat, and waits for the first chunk (a
/// failure up to there sent the client nothing, so another target may answer). Boxed:
/// the rare translation need not make room in every request's wait.
fn ask_translated<'a>(
    upstream: &'a Upstream,
    model: &'a str,
    route: impl Route,
    native: NativeRoute,
    translating: &'a Translating<'_>,
    slot: Option<OwnedSemaphorePermit>,
    capture: Option<Capture>,
) -> Pin<Box<impl Future<Output = Result<Answer, Refusal>> + 'a>> {
    Box::pin(async move {
        let call = match translating.call(model, capture.clone()) {
            Ok(Some(call)) => call,
            Ok(None) => return Err(unserved(upstream, route, native).into()),
            Err(e) => {
                // ollabridge's own 400: never sent, so no backend refused it.
                return Err(Refusal {
                    asked: false,
                    ..Refusal::by_backend(e, None, None)
                });
            }
        };
        let chunks = match upstream.client.chat(&call).await {
            Ok(chunks) => crate::backend::first_chunk(chunks, slot).await,
            Err(e) => Err(e),
        };
        match chunks {
            Ok(chunks) => Ok(Answer::Translated { chunks, capture }),
            Err(e) => Err(Refusal::by_backend(e, None, capture)),
        }
    })
}

/// The backend does not answer this route itself.
fn unserved(upstream: &Upstream, route: impl Route, native: NativeRoute) -> BackendError {
    BackendError::Status {
        status: 404,
        message: format!(
            "the backend '{}' does not serve {} (its serves.{} setting, or a 404 it sent for the route)",
            upstream.name(),
            route.endpoint(),
            native.key()
        ),
    }
}

/// Whether a backend's error says it has no such route, rather than no such model:
/// a 404 or 405 whose body does not mention a model (llama-server's `File Not Found`,
/// FastAPI's `Not Found`, Ollama's `404 page not found`).
fn is_unknown_route(status: u16, body: &[u8]) -> bool {
    matches!(status, 404 | 405) && !String::from_utf8_lossy(body).to_ascii_lowercase().contains("model")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_routes_are_told_from_unknown_models() {
        // llama-server 0.3.36, vLLM (FastAPI), Ollama's Go router.
        assert!(is_unknown_route(
            404,
            br#"{"error":{"message":"File Not Found","type":"not_found_error","code":404}}"#
        ));
        assert!(is_unknown_route(404, br#"{"detail":"Not Found"}"#));
        assert!(is_unknown_route(404, b"404 page not found"));
        assert!(is_unknown_route(405, b"Method Not Allowed"));
        // A model the backend lacks is the request's problem, not the route's.
        assert!(!is_unknown_route(
            404,
            br#"{"error":{"message":"The model `x` does not exist.","type":"NotFoundError","code":404}}"#
        ));
        assert!(!is_unknown_route(404, br#"{"error":"model 'x' not found"}"#));
        assert!(!is_unknown_route(400, b"Not Found"));
    }
}

/// For the dialects' reader tests: fixtures, and a stream read as the relay reads it.
#[cfg(test)]
pub(crate) mod test_support;
