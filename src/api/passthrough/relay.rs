//! The backend's answer on its way to the client, read on the side for the log row.
//!
//! Streams: the backend's SSE bytes go out event by event as they arrive, unchanged. The
//! events' `model` stays the backend's name: renaming it would mean re-serialising every
//! event of every stream, and clients do not act on it. The one event left out is the
//! usage chunk ollabridge asked for when the client did not. Meanwhile each event goes
//! through the route's [`SideReader`], so the row gets text, thinking, tool calls, tokens
//! and timings exactly as for an Ollama request.
//!
//! Whole answers: the backend's body with `model` renamed to the client's name.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use bytes::Bytes;
use futures::{Stream, StreamExt, stream};
use serde_json::{Map, Value};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use super::request::rename_model;
use super::{DialectError, Logged, Route, SideReader};
use crate::api::exchange::Recorder;
use crate::backend::openai::sse::{SseEvent, SseSplitter};
use crate::backend::{BackendError, Capture};

type Upstream = Pin<Box<dyn Stream<Item = Result<Bytes, reqwest::Error>> + Send>>;

/// What the relay needs to know about the exchange.
pub struct Exchange<R> {
    pub route: R,
    pub client_model: String,
    /// The backend named in errors (its endpoint).
    pub label: String,
    /// ollabridge added `stream_options.include_usage`: the usage chunk is not the client's.
    pub strip_usage: bool,
    /// The model's `strip_think`: `<think>` in the text is logged as thinking.
    pub strip_think: bool,
    /// `server.log_raw_responses`.
    pub log_lines: bool,
    /// The backend's bytes, kept with `database.store_bodies`.
    pub capture: Option<Capture>,
    /// A backend slot (`max_concurrent`), held until the relay ends or the client goes.
    pub _slot: Option<OwnedSemaphorePermit>,
}

/// Ends a request with an error in its dialect's shape, logged with the same status and message.
pub fn refuse(recorder: Recorder, error: impl DialectError) -> Response {
    recorder.fail(error.status().as_u16(), error.message());
    error.into_response()
}

/// The `error` object of an answer or event, for the backend's own `type` and `code`.
pub fn error_detail(body: &[u8]) -> Option<Value> {
    let value: Value = serde_json::from_slice(body).ok()?;
    value.get("error").filter(|e| e.is_object()).cloned()
}

fn from_reqwest<R: Route>(exchange: &Exchange<R>, e: &reqwest::Error) -> R::Error {
    R::Error::from_backend(&BackendError::from_reqwest(&exchange.label, e), None)
}

/// A whole answer: read it, log it, and send it on with the client's model name. The
/// recorder stays boxed: its room would be in the handler's future otherwise.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice in its future"
)]
pub fn whole<R: Route>(
    exchange: Exchange<R>,
    response: reqwest::Response,
    mut recorder: Box<Recorder>,
) -> impl Future<Output = Response> {
    async move {
        let cut_off = recorder.cut_off().clone();
        let body = tokio::select! {
            body = response.bytes() => match body {
                Ok(body) => body,
                Err(e) => return refuse(*recorder, from_reqwest(&exchange, &e)),
            },
            () = cut_off.cancelled() => {
                return refuse(*recorder, R::Error::from_backend(&BackendError::ShuttingDown, None));
            }
        };
        if let Some(capture) = &exchange.capture {
            capture.response(&body);
        }
        if exchange.log_lines {
            tracing::info!(response = %String::from_utf8_lossy(&body), "raw response");
        }
        let Ok(mut answer) = serde_json::from_slice::<Map<String, Value>>(&body) else {
            let text = String::from_utf8_lossy(&body);
            let error = BackendError::Protocol(format!("not a JSON object: {}", preview(&text)));
            return refuse(*recorder, R::Error::from_backend(&error, None));
        };
        let detail = answer.get("error").filter(|e| !e.is_null()).cloned();
        let logged = exchange.route.reader(exchange.strip_think).on_body(&body);
        // A 200 that carries an error object (llama.cpp sends some failures so) is that error.
        if let Err(error @ BackendError::Status { .. }) = &logged {
            return refuse(*recorder, R::Error::from_backend(error, detail.as_ref()));
        }
        let body = match rename_model(&mut answer, &exchange.client_model) {
            // Serialising a map read from JSON cannot fail.
            true => Bytes::from(serde_json::to_vec(&answer).unwrap_or_default()),
            false => body,
        };
        recorder.sent_bytes(body.len());
        match logged {
            Ok(Logged::Chunks(chunks)) => {
                chunks.iter().for_each(|c| recorder.observe(c));
                recorder.finish();
            }
            Ok(Logged::Summary(summary, prompt_tokens)) => recorder.finish_with(summary, prompt_tokens),
            // Only the log could not read it (say, tool call arguments that are not JSON);
            // the client gets the backend's answer as it was.
            Err(e) => recorder.fail_stream(&e),
        }
        with_type(Response::new(Body::from(body)), "application/json")
    }
}

fn preview(text: &str) -> String {
    const MAX: usize = 200;
    match text.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// A streamed answer: waits for the first event before answering, so a failure before
/// any output is a real HTTP error (as on the Ollama routes), then forwards the rest.
///
/// The relay is boxed before the wait (it moves into the body whole), so the handler's
/// future carries a pointer to it rather than its room; the arguments are used up before
/// the `async` block, so it does not keep them too.
pub fn stream<R: Route>(
    exchange: Exchange<R>,
    response: reqwest::Response,
    recorder: Recorder,
) -> impl Future<Output = Response> {
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok())
        .unwrap_or(HeaderValue::from_static("text/event-stream"));
    let upstream = crate::backend::captured(response.bytes_stream(), exchange.capture.clone());
    let mut relay = Box::new(Relay {
        upstream: Box::pin(upstream),
        cut_off: recorder.cut_off().clone(),
        splitter: SseSplitter::default(),
        reader: exchange.route.reader(exchange.strip_think),
        recorder: Some(recorder),
        exchange,
        ready: VecDeque::new(),
        forwarded: false,
        done: false,
        ended: false,
        early: None,
    });
    async move {
        while relay.ready.is_empty() && !relay.ended {
            relay.pump().await;
        }
        if let Some((recorder, error)) = relay.early.take() {
            return refuse(recorder, error);
        }
        let body = stream::unfold(relay, |mut relay| async move {
            let bytes = relay.next().await?;
            Some((Ok::<_, Infallible>(bytes), relay))
        });
        let mut response = Response::new(Body::from_stream(body));
        response.headers_mut().insert(header::CONTENT_TYPE, content_type);
        response
    }
}

struct Relay<R: Route> {
    upstream: Upstream,
    cut_off: CancellationToken,
    splitter: SseSplitter,
    reader: R::Reader,
    /// Until the row is handed over: at `[DONE]`, on failure, or dropped with the
    /// response when the client hangs up (a 499 row; the backend stream closes with it).
    recorder: Option<Recorder>,
    exchange: Exchange<R>,
    /// Events ready for the client.
    ready: VecDeque<Bytes>,
    /// Something was made ready for the client; failures are events from now on.
    forwarded: bool,
    /// The answer's last event went by: the rest is forwarded as it is, unread.
    done: bool,
    /// Nothing more is read from the backend.
    ended: bool,
    /// A failure before any output: answered as an HTTP error.
    early: Option<(Recorder, R::Error)>,
}

impl<R: Route> Relay<R> {
    /// The next bytes for the client: every event ready so far, in one piece.
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            match self.ready.len() {
                0 if self.ended => return None,
                0 => self.pump().await,
                1 => return self.ready.pop_front(),
                _ => {
                    let mut all = bytes::BytesMut::new();
                    self.ready.drain(..).for_each(|b| all.extend_from_slice(&b));
                    return Some(all.freeze());
                }
            }
        }
    }

    /// Reads one piece from the backend.
    async fn pump(&mut self) {
        // The backend first: bytes already there are taken without the shared token's lock.
        let next = tokio::select! {
            biased;
            next = self.upstream.next() => next,
            () = self.cut_off.cancelled() => return self.fail(BackendError::ShuttingDown, None),
        };
        match next {
            Some(Ok(bytes)) => {
                self.splitter.push(&bytes);
                while !self.ended {
                    match self.splitter.next_event() {
                        Ok(Some(event)) => self.on_event(event),
                        Ok(None) => break,
                        Err(e) => self.fail(BackendError::Protocol(e.to_string()), None),
                    }
                }
            }
            Some(Err(e)) => self.fail(BackendError::from_reqwest(&self.exchange.label, &e), None),
            None => self.on_end(),
        }
    }

    fn on_event(&mut self, event: SseEvent) {
        let Some(data) = event.data().filter(|_| !self.done) else {
            return self.forward(event.raw);
        };
        let done = self.reader.ends(&event.name, data);
        let left_out = self.exchange.strip_usage && self.reader.is_added_usage(data);
        match self.reader.on_event(&event.name, data) {
            Ok(Some(chunk)) => {
                if let Some(recorder) = &mut self.recorder {
                    recorder.observe(&chunk);
                }
            }
            // An error event the route's reader does not end on is no error of the
            // route's dialect (chat completions has none of its own): it is written
            // again in the route's shape. One it ends on (Anthropic's, the Responses
            // API's) is the client's dialect already: forwarded as it is, failing the row.
            Ok(None) if event.name == "error" && !done => {
                let detail = error_detail(data.as_bytes());
                let message = detail
                    .as_ref()
                    .and_then(|d| d.get("message"))
                    .and_then(Value::as_str)
                    .unwrap_or(data);
                let error = BackendError::Status {
                    status: 502,
                    message: message.to_owned(),
                };
                return self.fail(error, detail);
            }
            Ok(None) => {}
            Err(e) => return self.fail(e, error_detail(data.as_bytes())),
        }
        if !left_out {
            self.forward(event.raw);
        }
        if done {
            // Logged now, not when the client has read it: a client that hangs up
            // right after the end did get the whole answer. The backend's stream is
            // still read to its end, so its connection can serve the next request.
            self.done = true;
            let result = self.reader.finish();
            self.log_end(result);
        }
    }

    /// The backend closed the stream.
    fn on_end(&mut self) {
        self.ended = true;
        if let Some(rest) = self.splitter.rest() {
            self.forward(rest);
        }
        if self.done {
            return;
        }
        match self.reader.finish() {
            Err(BackendError::Truncated) => self.fail(BackendError::Truncated, None),
            result => self.log_end(result),
        }
    }

    fn log_end(&mut self, result: Result<Vec<crate::backend::Chunk>, BackendError>) {
        let Some(mut recorder) = self.recorder.take() else {
            return;
        };
        match result {
            Ok(chunks) => {
                chunks.iter().for_each(|c| recorder.observe(c));
                recorder.finish();
            }
            // Only the log could not read it (say, tool call arguments that are not
            // JSON); the client got the backend's bytes as they were.
            Err(e) => recorder.fail_stream(&e),
        }
    }

    fn forward(&mut self, bytes: Bytes) {
        if self.exchange.log_lines {
            tracing::info!(line = %String::from_utf8_lossy(&bytes).trim_end(), "raw response event");
        }
        if let Some(recorder) = &mut self.recorder {
            recorder.sent_bytes(bytes.len());
        }
        self.forwarded = true;
        self.ready.push_back(bytes);
    }

    /// The stream broke: before any output, an HTTP error; after, one error event, the end.
    fn fail(&mut self, error: BackendError, detail: Option<Value>) {
        self.ended = true;
        let Some(mut recorder) = self.recorder.take() else {
            return;
        };
        let event = R::Error::from_backend(&error, detail.as_ref());
        if !self.forwarded {
            self.early = Some((recorder, event));
            return;
        }
        let bytes = event.event(self.reader.next_sequence());
        recorder.sent_bytes(bytes.len());
        recorder.fail_stream(&error);
        self.ready.push_back(bytes);
    }
}

pub(super) fn with_type(mut response: Response, content_type: &'static str) -> Response {
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
