//! Watches one exchange and hands exactly one record to the logger when it ends:
//! finished, failed, or dropped because the client went away. It also owns the
//! request's clock, so the final chunk's durations come from one place.

use std::sync::Arc;
use std::time::Instant;

use axum::response::{IntoResponse, Response};
use tokio::sync::OwnedSemaphorePermit;

use super::context::RequestContext;
use super::error::ApiError;
use crate::Telemetry;
use crate::backend::{Attempt, BackendError, Capture, Chunk, Completion, Upstream};
use crate::metrics::{InflightGuard, RequestEvent};
use crate::models::normalize;
use crate::ollama::types::{FinalMetrics, ToolCall};
use crate::store::{LogRecord, Ticket, timestamp_now};

pub struct Recorder {
    telemetry: Arc<Telemetry>,
    _inflight: InflightGuard,
    /// A backend slot (`max_concurrent`), held until the answer ends.
    _slot: Option<OwnedSemaphorePermit>,
    started: Instant,
    /// Boxed: the recorder moves through every handler's future, which would otherwise
    /// carry the row's ~640 bytes once per place it passes through.
    record: Box<LogRecord>,
    content: String,
    thinking: String,
    tool_calls: Vec<ToolCall>,
    first_output: Option<Instant>,
    output_chunks: u64,
    done: Option<Completion>,
    capture: Option<Capture>,
    /// Where a complete answer is kept for identical requests (cache miss).
    cache_slot: Option<CacheSlot>,
    /// Set once the request was announced to the log writer and live views.
    ticket: Option<Ticket>,
    /// When live views last heard how far the answer got.
    last_progress: Option<Instant>,
    /// The model was resolved (mapped or offered): a name metrics may label with.
    model_known: bool,
    sent: bool,
}

/// How often live views hear a streaming answer's token count.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

impl Recorder {
    pub fn new(
        telemetry: &Arc<Telemetry>,
        context: &RequestContext,
        endpoint: &str,
        method: &str,
        backend_type: &str,
    ) -> Recorder {
        let timestamp = timestamp_now();
        Recorder {
            _inflight: telemetry.metrics.inflight(),
            _slot: None,
            telemetry: telemetry.clone(),
            started: context.received,
            record: Box::new(LogRecord {
                timestamp,
                endpoint: endpoint.to_owned(),
                method: method.to_owned(),
                backend_type: backend_type.to_owned(),
                status_code: 200,
                request_id: context.id.clone(),
                client_addr: context.client_addr.map(|a| a.to_string()),
                client_key: context.client_key.clone(),
                replay_of: context.replay_of,
                ..Default::default()
            }),
            content: String::new(),
            thinking: String::new(),
            tool_calls: Vec::new(),
            first_output: None,
            output_chunks: 0,
            done: None,
            capture: None,
            cache_slot: None,
            ticket: None,
            last_progress: None,
            model_known: false,
            sent: false,
        }
    }

    /// A recorder for a request to this server's backend.
    pub fn start(
        state: &crate::AppState,
        context: &RequestContext,
        endpoint: &str,
        method: &str,
        body: &[u8],
    ) -> Recorder {
        let mut recorder = Recorder::new(
            &state.telemetry,
            context,
            endpoint,
            method,
            state.backend().client.kind().as_str(),
        );
        recorder.request_bytes(body.len());
        if state.config.database.store_bodies {
            recorder.record.request_body = Some(String::from_utf8_lossy(body).into_owned());
        }
        recorder
    }

    /// [`start`](Recorder::start) for a POST that answers from a backend, boxed (the
    /// handlers' futures hold it while the backend answers), with the raw body logged
    /// when `server.log_raw_requests` is on.
    pub fn begin(state: &crate::AppState, context: &RequestContext, endpoint: &str, body: &[u8]) -> Box<Recorder> {
        let recorder = Box::new(Recorder::start(state, context, endpoint, "POST", body));
        if state.config.server.log_raw_requests {
            tracing::info!(body = %String::from_utf8_lossy(body), "raw request {endpoint}");
        }
        recorder
    }

    pub fn endpoint(&self) -> &str {
        &self.record.endpoint
    }

    /// A cache miss: a complete, successful answer is stored under `key` for `ttl`.
    pub fn cache_on_success(&mut self, slot: CacheSlot) {
        self.cache_slot = Some(slot);
    }

    /// Answered from the cache: the row says so.
    pub fn cache_hit(&mut self) {
        self.record.cache_hit = true;
    }

    /// The backend exchange's bytes, stored with the row when the answer ends.
    pub fn capture(&mut self, capture: Option<Capture>) {
        self.capture = capture;
    }

    /// The backend that took the request (holding `slot` until the answer ends), and
    /// the targets that failed before it.
    pub fn routed(&mut self, upstream: &Upstream, slot: Option<OwnedSemaphorePermit>, attempts: &[Attempt]) {
        self._slot = slot;
        self.record.backend = Some(upstream.name().to_owned());
        self.record.backend_type = upstream.client.kind().as_str().to_owned();
        self.failed_attempts(attempts);
    }

    /// Targets that failed (all of them, when the request failed).
    pub fn failed_attempts(&mut self, attempts: &[Attempt]) {
        if let Some(last) = attempts.last() {
            self.record.backend.get_or_insert_with(|| last.backend.clone());
            self.record.attempts = serde_json::to_string(attempts).ok();
        }
    }

    /// Fires when the shutdown grace period is over.
    pub fn cut_off(&self) -> tokio_util::sync::CancellationToken {
        self.telemetry.cut_off.clone()
    }

    /// Size of the client's request body.
    pub fn request_bytes(&mut self, n: usize) {
        self.record.request_bytes = n as u64;
    }

    /// Bytes written to the client (NDJSON lines or the one JSON body).
    pub fn sent_bytes(&mut self, n: usize) {
        self.record.response_bytes += n as u64;
    }

    pub fn request(&mut self, model: Option<&str>, prompt: Option<String>, stream: bool) {
        self.record.model = model.map(str::to_owned);
        self.record.prompt = prompt;
        self.record.stream = stream;
    }

    pub fn backend_model(&mut self, name: &str) {
        self.record.backend_model = Some(name.to_owned());
    }

    /// After model mapping: the row names the model actually used (the default one
    /// when the client sent none) and the backend's name for it.
    pub fn resolved(&mut self, resolved: &crate::models::Resolved) {
        self.record.model = Some(resolved.client.clone());
        self.model_known = true;
        self.backend_model(&resolved.backend);
        self.announce();
    }

    /// Tells the log writer (for an in-flight row) and live views that the request
    /// is under way, once its model is known.
    fn announce(&mut self) {
        let r = &self.record;
        // The event is for live views only: without one, not even built.
        if self.telemetry.events.receiver_count() > 0 {
            let _ = self.telemetry.events.send(RequestEvent::Started {
                request_id: r.request_id.clone(),
                endpoint: r.endpoint.clone(),
                timestamp: r.timestamp.clone(),
                model: r.model.clone(),
            });
        }
        let so_far = LogRecord {
            timestamp: r.timestamp.clone(),
            endpoint: r.endpoint.clone(),
            method: r.method.clone(),
            model: r.model.clone(),
            backend_model: r.backend_model.clone(),
            stream: r.stream,
            backend_type: r.backend_type.clone(),
            request_id: r.request_id.clone(),
            request_bytes: r.request_bytes,
            client_addr: r.client_addr.clone(),
            client_key: r.client_key.clone(),
            replay_of: r.replay_of,
            ..Default::default()
        };
        self.ticket = Some(self.telemetry.logger.started(so_far));
    }

    pub fn observe(&mut self, chunk: &Chunk) {
        let delta = &chunk.delta;
        if !delta.is_empty() {
            let now = Instant::now();
            self.first_output.get_or_insert(now);
            self.output_chunks += 1;
            if self.last_progress.is_none_or(|last| now - last >= PROGRESS_EVERY) {
                self.last_progress = Some(now);
                self.progress();
            }
        }
        self.content.push_str(&delta.content);
        self.thinking.push_str(&delta.thinking);
        self.tool_calls.extend(delta.tool_calls.iter().cloned());
        if let Some(done) = &chunk.done {
            self.done = Some(done.clone());
        }
    }

    /// At most every `PROGRESS_EVERY`: asking whether anyone listens takes the event
    /// channel's lock, shared by every request, so it is not asked per chunk.
    fn progress(&self) {
        if self.telemetry.events.receiver_count() > 0 {
            let _ = self.telemetry.events.send(RequestEvent::Progress {
                request_id: self.record.request_id.clone(),
                tokens: self.output_chunks,
            });
        }
    }

    /// The final chunk's fields: the backend's numbers where it reported them,
    /// otherwise what we measured (time to first output, output chunks).
    pub fn final_metrics(&self) -> FinalMetrics {
        let done = self.done.clone().unwrap_or_default();
        let now = Instant::now();
        let first = self.first_output.unwrap_or(now);
        let ns = |d: std::time::Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        FinalMetrics {
            done_reason: if done.done_reason.is_empty() {
                "stop".into()
            } else {
                done.done_reason
            },
            total_duration: done.total_ns.unwrap_or_else(|| ns(now - self.started)),
            load_duration: done.load_ns.unwrap_or(0),
            prompt_eval_count: done.prompt_tokens.unwrap_or(0),
            prompt_eval_duration: done.prompt_eval_ns.unwrap_or_else(|| ns(first - self.started)),
            eval_count: done.completion_tokens.unwrap_or(self.output_chunks),
            eval_duration: done.eval_ns.unwrap_or_else(|| ns(now - first)),
        }
    }

    pub fn content(&self) -> &str {
        &self.content
    }

    pub fn thinking(&self) -> &str {
        &self.thinking
    }

    pub fn tool_calls(&self) -> &[ToolCall] {
        &self.tool_calls
    }

    /// Ends a request refused or failed before any answer: the client gets the error.
    pub fn reject(self, error: ApiError) -> Response {
        self.fail(error.status_code().as_u16(), &error.to_string());
        error.into_response()
    }

    /// Ends a request that failed (before or during the answer).
    pub fn fail(mut self, status: u16, error: &str) {
        self.record.status_code = status;
        self.record.error = Some(error.to_owned());
        self.send();
    }

    /// Ends a stream that broke after the client got its 200.
    pub fn fail_stream(mut self, error: &BackendError) {
        self.record.error = Some(error.to_string());
        self.send();
    }

    /// Ends a request whose answer is not a chunk stream (embeddings): a short
    /// description stands in for the response.
    pub fn finish_with(mut self, response: String, prompt_tokens: Option<u64>) {
        self.content = response;
        self.done = Some(Completion {
            done_reason: "stop".into(),
            prompt_tokens,
            ..Default::default()
        });
        self.send();
    }

    pub fn finish(mut self) {
        self.send();
    }

    fn send(&mut self) {
        if self.sent {
            return;
        }
        self.sent = true;
        let metrics = self.final_metrics();
        self.store_in_cache();
        let r: &mut LogRecord = &mut self.record;
        r.latency_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        if r.error.is_none() || !self.content.is_empty() {
            r.response = Some(std::mem::take(&mut self.content));
        }
        if !self.thinking.is_empty() {
            r.thinking = Some(std::mem::take(&mut self.thinking));
        }
        if !self.tool_calls.is_empty() {
            r.tool_calls = serde_json::to_string(&self.tool_calls).ok();
        }
        if let Some(done) = &self.done {
            r.done_reason = Some(metrics.done_reason.clone());
            r.prompt_tokens = done.prompt_tokens;
            r.completion_tokens = done.completion_tokens;
            // No counts from the backend: about four characters a token, one token a chunk.
            // (An answer without output, like embeddings, has no completion to count.)
            if r.prompt_tokens.is_none() {
                r.tokens_estimated = true;
                let prompt_chars = r.prompt.as_deref().map_or(0, |p| p.chars().count()) as u64;
                r.prompt_tokens = Some(prompt_chars.div_ceil(4));
            }
            if r.completion_tokens.is_none() && self.output_chunks > 0 {
                r.tokens_estimated = true;
                r.completion_tokens = Some(self.output_chunks);
            }
            r.prompt_eval_ms = Some(metrics.prompt_eval_duration as f64 / 1e6);
            r.eval_ms = Some(metrics.eval_duration as f64 / 1e6);
            r.tokens_per_second = r
                .completion_tokens
                .filter(|_| metrics.eval_duration > 0)
                .map(|n| n as f64 / (metrics.eval_duration as f64 / 1e9));
        }
        if let Some(capture) = self.capture.take() {
            (r.backend_request, r.backend_response) = capture.take();
        }
        r.ttft_ms = self.first_output.map(|t| (t - self.started).as_secs_f64() * 1000.0);
        r.cost = price(&self.telemetry.pricing, r).map(|(input, output)| {
            (r.prompt_tokens.unwrap_or(0) as f64 * input + r.completion_tokens.unwrap_or(0) as f64 * output) / 1e6
        });
        request_line(r);
        self.telemetry.metrics.observe(r, self.model_known);
        let mut record = std::mem::take(r);
        // Capped before anyone sees it: live views get what the database gets.
        self.telemetry.logger.cap_bodies(&mut record);
        if self.telemetry.events.receiver_count() > 0 {
            let _ = self
                .telemetry
                .events
                .send(RequestEvent::Finished(Box::new(record.clone())));
        }
        match self.ticket {
            Some(ticket) => self.telemetry.logger.finished(ticket, record),
            None => self.telemetry.logger.log(record),
        }
    }
}

impl Recorder {
    /// Keeps a complete answer (ended with `done`, no error, not cut off) for identical
    /// requests; answers calling tools only with `cache.tool_calls`.
    fn store_in_cache(&mut self) {
        let Some(slot) = self.cache_slot.take() else {
            return;
        };
        let (Some(done), None) = (&self.done, &self.record.error) else {
            return;
        };
        if self.record.status_code != 200 || (!self.tool_calls.is_empty() && !slot.tool_calls) {
            return;
        }
        let entry = crate::cache::Entry {
            content: self.content.clone(),
            thinking: self.thinking.clone(),
            tool_calls: self.tool_calls.clone(),
            done: done.clone(),
        };
        self.telemetry.cache.put(slot.key, entry, slot.ttl, Instant::now());
    }
}

/// Where a cache miss's answer goes, and under which rules.
pub struct CacheSlot {
    pub key: crate::cache::Key,
    pub ttl: std::time::Duration,
    /// Answers that call tools are kept too.
    pub tool_calls: bool,
}

/// The one line each finished request writes to the process log (target
/// `ollabridge::ollama::recorder`, which `OLLABRIDGE_LOG` can quiet on its own).
pub fn request_line(r: &LogRecord) {
    tracing::info!(
        request_id = %r.request_id,
        endpoint = %r.endpoint,
        model = r.model.as_deref().unwrap_or(""),
        status = r.status_code,
        latency_ms = r.latency_ms,
        error = r.error.as_deref().unwrap_or(""),
        "request"
    );
}

/// The configured price for the row's model: the client's name first, then the backend's.
fn price(pricing: &[(String, crate::config::Price)], r: &LogRecord) -> Option<(f64, f64)> {
    if pricing.is_empty() {
        return None;
    }
    [r.model.as_deref(), r.backend_model.as_deref()]
        .into_iter()
        .flatten()
        .find_map(|name| {
            let key = normalize(name);
            pricing
                .iter()
                .find(|(model, _)| normalize(model) == key)
                .map(|(_, p)| (p.input, p.output))
        })
}

impl Drop for Recorder {
    /// Dropped before it was finished: the client went away mid-request.
    fn drop(&mut self) {
        if !self.sent {
            self.record.status_code = 499;
            self.record.error = Some("client disconnected before the response was complete".into());
            self.send();
        }
    }
}
