//! Watches one exchange and hands exactly one record to the logger when it ends:
//! finished, failed, or dropped because the client went away. It also owns the
//! request's clock, so the final chunk's durations come from one place.
//!
//! The answer is gathered by [`AnswerSoFar`] (`answer.rs`), the row completed from it by
//! `row.rs`; [`Recorder::finish`] hands the result to the cache, metrics, live views and
//! the log, once.
//!
//! Every dialect builds on this module alone: a request refused before any answer is an
//! [`ExchangeError`] (`error.rs`), which the recorder logs and the dialect's [`Render`]
//! writes in its own shape.

mod answer;
mod error;
mod row;

pub use answer::{AnswerSoFar, FinalMetrics};
pub use error::{ExchangeError, Render, parse_body};

use std::sync::Arc;
use std::time::Instant;

use axum::response::Response;
use futures::StreamExt;

use crate::Telemetry;
use crate::api::edge::context::RequestContext;
use crate::backend::{Attempt, BackendError, Capture, Chunk, ChunkStream, Completion, Upstream};
use crate::metrics::{InflightGuard, RequestEvent};
use crate::store::{LogRecord, Ticket, timestamp_now};

pub struct Recorder {
    telemetry: Arc<Telemetry>,
    _inflight: InflightGuard,
    started: Instant,
    /// Boxed: the recorder moves through every handler's future, which would otherwise
    /// carry the row's ~640 bytes once per place it passes through.
    record: Box<LogRecord>,
    answer: AnswerSoFar,
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
    /// How the client's dialect answers a refused exchange.
    render: Render,
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
        render: Render,
    ) -> Recorder {
        let timestamp = timestamp_now();
        Recorder {
            _inflight: telemetry.metrics.inflight(),
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
            answer: AnswerSoFar::default(),
            capture: None,
            cache_slot: None,
            ticket: None,
            last_progress: None,
            model_known: false,
            sent: false,
            render,
        }
    }

    /// A recorder for a request to this server's backend, refusing in the dialect `render` writes.
    pub fn start(
        state: &crate::AppState,
        context: &RequestContext,
        endpoint: &str,
        method: &str,
        body: &[u8],
        render: Render,
    ) -> Recorder {
        let mut recorder = Recorder::new(
            &state.telemetry,
            context,
            endpoint,
            method,
            state.backend().client.kind().as_str(),
            render,
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
    pub fn begin(
        state: &crate::AppState,
        context: &RequestContext,
        endpoint: &str,
        body: &[u8],
        render: Render,
    ) -> Box<Recorder> {
        let recorder = Box::new(Recorder::start(state, context, endpoint, "POST", body, render));
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
        self.answer.skip_logprobs(false);
    }

    /// Answered from the cache: the row says so.
    pub fn cache_hit(&mut self) {
        self.record.cache_hit = true;
    }

    /// The backend exchange's bytes, stored with the row when the answer ends.
    pub fn capture(&mut self, capture: Option<Capture>) {
        self.capture = capture;
    }

    /// The backend that took the request, and the targets that failed before it.
    pub fn routed(&mut self, upstream: &Upstream, attempts: &[Attempt]) {
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
    pub fn cut_off(&self) -> &tokio_util::sync::CancellationToken {
        &self.telemetry.cut_off
    }

    /// The backend's next chunk, or `ShuttingDown` once the grace period is over. The
    /// chunk is polled first: one already there is taken without touching the token,
    /// which every request shares (registering with it and cloning it each take its lock,
    /// and a chunk was asked for this way ~17 times per answer).
    pub async fn next_chunk(&self, chunks: &mut ChunkStream) -> Option<Result<Chunk, BackendError>> {
        tokio::select! {
            biased;
            next = chunks.next() => next,
            () = self.telemetry.cut_off.cancelled() => Some(Err(BackendError::ShuttingDown)),
        }
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
        // A streamed answer's chunks carried their own logprobs; only a cache fill or a
        // `stream: false` reply reads them from the answer.
        self.answer.skip_logprobs(stream && self.cache_slot.is_none());
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
        if let Some(now) = self.answer.observe(chunk) {
            if self.last_progress.is_none_or(|last| now - last >= PROGRESS_EVERY) {
                self.last_progress = Some(now);
                self.progress();
            }
        }
    }

    /// At most every `PROGRESS_EVERY`: asking whether anyone listens takes the event
    /// channel's lock, shared by every request, so it is not asked per chunk.
    fn progress(&self) {
        if self.telemetry.events.receiver_count() > 0 {
            let _ = self.telemetry.events.send(RequestEvent::Progress {
                request_id: self.record.request_id.clone(),
                tokens: self.answer.output_chunks,
            });
        }
    }

    /// The final chunk's fields, as of now.
    pub fn final_metrics(&self) -> FinalMetrics {
        self.answer.final_metrics(self.started)
    }

    /// The answer so far (a `stream: false` reply is built from it).
    pub fn answer(&self) -> &AnswerSoFar {
        &self.answer
    }

    /// Ends a request refused or failed before any answer: the client gets the error in
    /// its dialect's shape.
    pub fn reject(self, error: ExchangeError) -> Response {
        let render = self.render;
        self.fail(error.status_code().as_u16(), &error.to_string());
        render(error)
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
        self.answer.content = response;
        self.answer.done = Some(Completion {
            done_reason: "stop".into(),
            prompt_tokens,
            ..Default::default()
        });
        self.send();
    }

    pub fn finish(mut self) {
        self.send();
    }

    /// Finishes on the last chunk, as soon as it is known rather than when the client has
    /// read it (a client that hangs up right after the end is not counted as gone); the
    /// recorder back otherwise.
    pub fn finish_if_done(self, chunk: &Chunk) -> Option<Recorder> {
        if chunk.done.is_some() {
            self.finish();
            None
        } else {
            Some(self)
        }
    }

    /// The one end of every exchange: the row completed, then handed to the cache,
    /// the metrics, live views and the log.
    fn send(&mut self) {
        if self.sent {
            return;
        }
        self.sent = true;
        self.store_in_cache();
        let mut record = std::mem::take(&mut *self.record);
        if let Some(capture) = self.capture.take() {
            (record.backend_request, record.backend_response) = capture.take();
        }
        let answer = std::mem::take(&mut self.answer);
        row::complete(&mut record, answer, self.started, &self.telemetry.pricing);
        request_line(&record);
        self.telemetry.metrics.observe(&record, self.model_known);
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

    /// Keeps a complete answer (ended with `done`, no error, not cut off) for identical
    /// requests; answers calling tools only with `cache.tool_calls`.
    fn store_in_cache(&mut self) {
        let Some(slot) = self.cache_slot.take() else {
            return;
        };
        let answer = &self.answer;
        let (Some(done), None) = (&answer.done, &self.record.error) else {
            return;
        };
        if self.record.status_code != 200 || (!answer.tool_calls.is_empty() && !slot.tool_calls) {
            return;
        }
        let entry = crate::cache::Entry {
            content: answer.content.clone(),
            thinking: answer.thinking.clone(),
            tool_calls: answer.tool_calls.clone(),
            logprobs: answer.logprobs.clone(),
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
/// `ollabridge::api::exchange`, which `OLLABRIDGE_LOG` can quiet on its own).
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
