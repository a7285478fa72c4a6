//! The chat/generate handlers (and `/`, `/health`). Handlers stay thin: parse, resolve the
//! model, call the backend, hand the stream to `respond`.

use axum::body::Bytes;
use axum::extract::Extension;
use axum::response::{IntoResponse, Response};
use futures::future::Either;
use serde_json::Value;

use super::error::render;
use super::respond::{Answer, Shape};
use super::types::{ChatRequest, GenerateRequest};
use crate::AppState;
use crate::api::edge::context::RequestContext;
use crate::api::exchange::{CacheSlot, ExchangeError, Recorder, parse_body};
use crate::clock::now_rfc3339;

use crate::backend::keep_alive::{self, KeepAlive};
use crate::backend::{
    AnyBackend, BackendError, Call, Capture, ChunkStream, Failover, Lifecycle, Routed, Unrouted, Upstream,
};
use crate::config::Target;
use crate::models::Resolved;
use crate::reload::Snapshot;

pub(crate) async fn root_handler() -> &'static str {
    "Ollama is running"
}

pub(crate) async fn health_handler() -> axum::Json<Value> {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

// The chat and generate handlers, and `ask_targets`, are plain functions returning an
// `async move` block, and keep the recorder and the parsed request boxed: their future is
// what every request waiting for its backend holds. An `async fn` keeps each argument
// beside the local it is moved into, and a local that was ever borrowed keeps its room
// across every later await even once moved out; both made the chat future 5.5 KB. With
// rare paths (the load request, discovery, a queued slot) boxed it is 1.8 KB.

#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice in its future"
)]
pub(crate) fn chat_handler(
    Snapshot(state): Snapshot,
    Extension(context): Extension<RequestContext>,
    body: Bytes,
) -> impl Future<Output = Response> {
    async move {
        let mut recorder = Recorder::begin(&state, &context, "/api/chat", &body, render);
        let request: Box<ChatRequest> = match parse_body(&body) {
            Ok(r) => r,
            Err(e) => return recorder.reject(e),
        };
        let stream = request.stream.unwrap_or(true);
        let prompt = request.messages.as_ref().and_then(|m| serde_json::to_string(m).ok());
        recorder.request(request.model.as_deref(), prompt, stream);
        let Some(messages) = &request.messages else {
            return recorder.reject(ExchangeError::BadRequest("messages is required".into()));
        };
        let resolved = match resolve(&state, &context, request.model.as_deref()).await {
            Ok(r) => r,
            Err(e) => return recorder.reject(e),
        };
        recorder.resolved(&resolved);
        if messages.is_empty() {
            return Box::pin(load_answer(
                &state,
                *recorder,
                Shape::Chat,
                &resolved,
                request.keep_alive.as_ref(),
            ))
            .await;
        }
        if state.config.server.log_messages {
            tracing::info!(model = %resolved.client, messages = ?messages, "chat request");
        }
        answer(&state, &context, recorder, Shape::Chat, resolved, stream, request, body).await
    }
}

#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice in its future"
)]
pub(crate) fn generate_handler(
    Snapshot(state): Snapshot,
    Extension(context): Extension<RequestContext>,
    body: Bytes,
) -> impl Future<Output = Response> {
    async move {
        let mut recorder = Recorder::begin(&state, &context, "/api/generate", &body, render);
        let request: Box<GenerateRequest> = match parse_body(&body) {
            Ok(r) => r,
            Err(e) => return recorder.reject(e),
        };
        let stream = request.stream.unwrap_or(true);
        recorder.request(request.model.as_deref(), request.prompt.clone(), stream);
        let resolved = match resolve(&state, &context, request.model.as_deref()).await {
            Ok(r) => r,
            Err(e) => return recorder.reject(e),
        };
        recorder.resolved(&resolved);
        // Fill-in-the-middle needs a model and route that honour `suffix`; llama.cpp's
        // /v1/completions ignores it silently, so only models configured with the
        // "insert" capability get it, as Ollama itself refuses it otherwise.
        let supports_insert = state
            .models
            .mapping(&resolved.client)
            .and_then(|m| m.capabilities.as_ref())
            .is_some_and(|c| c.iter().any(|c| c == "insert"));
        let first = &state.backends[resolved.targets[0].backend].client;
        if request.suffix.is_some() && !supports_insert && !first.refuses_unfit_suffix() {
            let e = ExchangeError::BadRequest(format!(
                "\"{}\" does not support insert (suffix); add \"insert\" to its capabilities in models.mappings \
             if the backend's /v1/completions honours suffix",
                resolved.client
            ));
            return recorder.reject(e);
        }
        if request.template.is_some() {
            tracing::debug!(model = %resolved.client, "generate: 'template' is ignored; the backend applies its own");
        }
        if request.prompt.as_deref().unwrap_or_default().is_empty() && request.suffix.is_none() {
            return Box::pin(load_answer(
                &state,
                *recorder,
                Shape::Generate,
                &resolved,
                request.keep_alive.as_ref(),
            ))
            .await;
        }
        if state.config.server.log_messages {
            tracing::info!(model = %resolved.client, prompt = ?request.prompt, system = ?request.system, "generate request");
        }
        answer(
            &state,
            &context,
            recorder,
            Shape::Generate,
            resolved,
            stream,
            request,
            body,
        )
        .await
    }
}

/// The model's targets; a request pinned to a backend (dashboard replay) goes there
/// alone, under the mapped backend model name or else the name as given.
async fn resolve(
    state: &AppState,
    context: &RequestContext,
    requested: Option<&str>,
) -> Result<Resolved, ExchangeError> {
    let Some(name) = &context.pinned_backend else {
        return Ok(state.models.resolve(requested, &state.backends).await?);
    };
    let Some(index) = state.backends.iter().position(|b| b.name() == name) else {
        let known: Vec<&str> = state.backends.iter().map(|b| b.name()).collect();
        return Err(ExchangeError::BadRequest(format!(
            "no backend named '{name}' (backends: {})",
            known.join(", ")
        )));
    };
    // A pinned backend has no default model: the request names one.
    let client = crate::models::requested_name(requested, None)?;
    let mapping = state.models.mapping(&client);
    let model = mapping.map_or_else(|| client.clone(), |m| m.target.clone());
    Ok(Resolved {
        backend: model.clone(),
        strip_think: mapping.is_some_and(|m| m.strip_think),
        targets: vec![crate::config::Target { backend: index, model }],
        client,
    })
}

/// The request types a backend answers with a chunk stream.
trait Answered: Sized + serde::Serialize {
    async fn ask(backend: &AnyBackend, call: &Call<Self>) -> Result<ChunkStream, BackendError>;
    fn options(&self) -> Option<&serde_json::Map<String, Value>>;
}

impl Answered for ChatRequest {
    async fn ask(backend: &AnyBackend, call: &Call<Self>) -> Result<ChunkStream, BackendError> {
        backend.chat(call).await
    }

    fn options(&self) -> Option<&serde_json::Map<String, Value>> {
        self.options.as_ref()
    }
}

impl Answered for GenerateRequest {
    async fn ask(backend: &AnyBackend, call: &Call<Self>) -> Result<ChunkStream, BackendError> {
        backend.generate(call).await
    }

    fn options(&self) -> Option<&serde_json::Map<String, Value>> {
        self.options.as_ref()
    }
}

/// A cached answer for the request, if caching applies to it; otherwise, when it
/// applies, the recorder is told where to keep the answer.
fn from_cache<R: Answered>(
    state: &AppState,
    context: &RequestContext,
    recorder: &mut Recorder,
    resolved: &Resolved,
    request: &R,
) -> Option<crate::cache::Entry> {
    let cache = &state.config.cache;
    if context.no_cache || !crate::cache::applies(cache, &resolved.client, request.options()) {
        return None;
    }
    let first = &resolved.targets[0];
    let value = serde_json::to_value(request).ok()?;
    let key = crate::cache::key(
        recorder.endpoint(),
        state.backends[first.backend].name(),
        &first.model,
        &value,
    );
    let hit = state.telemetry.cache.get(&key, std::time::Instant::now());
    state.telemetry.metrics.cache_lookup(&resolved.client, hit.is_some());
    if hit.is_none() {
        recorder.cache_on_success(CacheSlot {
            key,
            ttl: cache.ttl,
            tool_calls: cache.tool_calls,
        });
    }
    hit
}

/// Calls the model's targets in turn (see [`Failover`]) and streams the
/// first answer to the client. A target counts as answering once its first chunk came
/// without error, so a backend that accepts the request and then fails at once still
/// hands it on: nothing has reached the client yet.
#[expect(
    clippy::too_many_arguments,
    reason = "one call site per endpoint, each naming every part"
)]
fn answer<'a, R: Answered + 'a>(
    state: &'a AppState,
    context: &'a RequestContext,
    mut recorder: Box<Recorder>,
    shape: Shape,
    resolved: Resolved,
    stream: bool,
    request: Box<R>,
    body: Bytes,
) -> impl Future<Output = Response> + 'a {
    // What needs no waiting is done before the answer's future: an `async move` block
    // would keep room for the request, its body and the resolved names even once moved
    // into `call`.
    let answer = Answer {
        shape,
        model: resolved.client.clone(),
        stream,
        log_lines: state.config.server.log_raw_responses,
    };
    if let Some(hit) = from_cache(state, context, &mut recorder, &resolved, &*request) {
        recorder.cache_hit();
        recorder.backend_model(&resolved.backend);
        return Either::Left(Box::pin(answer.respond(hit.into_chunks(), *recorder)));
    }
    let database = &state.config.database;
    let capture = database.store_bodies.then(|| Capture::new(database.max_body_bytes));
    recorder.capture(capture.clone());
    let call = Call {
        capture,
        client_model: resolved.client,
        backend_model: resolved.backend,
        strip_think: resolved.strip_think,
        stream,
        request: std::sync::Arc::<R>::from(request),
        body,
    };
    Either::Right(ask_targets(state, recorder, answer, call, resolved.targets))
}

/// The model's targets asked in turn with `call`, the first to answer streamed back.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice in its future"
)]
fn ask_targets<'a, R: Answered + 'a>(
    state: &'a AppState,
    mut recorder: Box<Recorder>,
    answer: Answer,
    call: Call<R>,
    targets: Vec<Target>,
) -> impl Future<Output = Response> + 'a {
    async move {
        let failover = Failover::new(&state.backends, &targets);
        // Each try gets its own call (cheap: the request is shared) naming its model.
        let routed = failover.run(&state.telemetry.cut_off, |upstream, model| {
            let call = Call {
                backend_model: model,
                ..call.clone()
            };
            async move { ask_first_chunk(upstream, &call).await }
        });
        match routed.await {
            Ok(Routed {
                upstream,
                model,
                answer: chunks,
                attempts,
            }) => {
                recorder.routed(upstream, &attempts);
                recorder.backend_model(&model);
                // Boxed: the future waiting for the first chunk need not have room for it.
                Box::pin(answer.respond(chunks, *recorder)).await
            }
            Err(Unrouted { error, attempts }) => {
                recorder.failed_attempts(&attempts);
                recorder.reject(error.into())
            }
        }
    }
}

/// Asks one backend, holding one of its slots, and waits for the answer's first chunk:
/// a failure up to there has sent the client nothing, so another target may answer.
/// The answer holds the slot until it ends.
async fn ask_first_chunk<R: Answered>(upstream: &Upstream, call: &Call<R>) -> Result<ChunkStream, BackendError> {
    let slot = upstream.slot().await?;
    let chunks = R::ask(&upstream.client, call).await?;
    crate::backend::first_chunk(chunks, slot).await
}

/// An empty chat or prompt is Ollama's "load the model" request (with `keep_alive: 0`,
/// "unload"). A backend that loads models on request (a llama-server router) loads or
/// unloads it for real; any other keeps its models loaded, and this only answers like Ollama.
async fn load_answer(
    state: &AppState,
    mut recorder: Recorder,
    shape: Shape,
    resolved: &Resolved,
    keep_alive: Option<&Value>,
) -> Response {
    let first = &resolved.targets[0];
    let upstream = &state.backends[first.backend];
    let done = match upstream.client.load(&first.model, keep_alive).await {
        Ok(done) => done,
        Err(e) => return recorder.reject(e.into()),
    };
    if done.is_some() {
        recorder.routed(upstream, &[]);
    }
    // Other backends never refused a keep_alive that is not a duration; they still do not.
    let unload = keep_alive::parse(keep_alive) == Ok(KeepAlive::Unload);
    let reason = if unload { "unload" } else { "load" };
    let mut body = serde_json::json!({ "model": resolved.client, "created_at": now_rfc3339() });
    match shape {
        Shape::Chat => body["message"] = serde_json::json!({ "role": "assistant", "content": "" }),
        Shape::Generate => body["response"] = "".into(),
    }
    body["done"] = true.into();
    body["done_reason"] = reason.into();
    if let Some(Lifecycle::Loaded { waited }) = done {
        body["load_duration"] = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX).into();
    }
    recorder.finish();
    axum::Json(body).into_response()
}
