//! The backend boundary: one neutral request and one neutral chunk stream, whatever
//! serves the model. `openai` translates to and from OpenAI's API; `ollama` passes a
//! real Ollama through. Dispatch is an enum so a new backend is a compile error at
//! every place that must handle it.

mod answering;
pub mod capture;
pub mod error;
pub mod health;
pub mod keep_alive;
pub mod ollama;
pub mod openai;
pub mod request;
pub mod upstream;

use std::pin::Pin;

use bytes::Bytes;
use futures::Stream;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use answering::first_chunk;
pub use capture::Capture;
pub use error::BackendError;
pub use upstream::{Attempt, Failover, LimitSource, Routed, TryError, Unrouted, Upstream};

use crate::config::{BackendConfig, BackendKind};
use request::{ChatRequest, GenerateRequest, ToolCall};

/// What a backend streams back. Every item is either a piece of the answer or its end.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<Chunk, BackendError>> + Send>>;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Chunk {
    pub delta: Delta,
    /// Set on the last chunk only.
    pub done: Option<Completion>,
    /// Pass-through: the upstream NDJSON object, forwarded to the client as it is.
    pub raw: Option<Bytes>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Delta {
    pub content: String,
    pub thinking: String,
    /// Complete calls only: arguments are a JSON object, never a fragment.
    pub tool_calls: Vec<ToolCall>,
    /// The generated tokens' log probabilities, in order, when the client asked for them.
    pub logprobs: Vec<Logprob>,
}

impl Delta {
    pub fn is_empty(&self) -> bool {
        self.content.is_empty() && self.thinking.is_empty() && self.tool_calls.is_empty() && self.logprobs.is_empty()
    }
}

/// One generated token's log probability, with the likeliest tokens at its position when
/// asked for (`top_logprobs`). Ollama's `Logprob`, as its API writes it: `bytes` and
/// `top_logprobs` are left out when empty.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Logprob {
    pub token: String,
    pub logprob: f64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bytes: Vec<u8>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub top_logprobs: Vec<TokenLogprob>,
}

/// A token that could have come at a position, and its log probability.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    pub token: String,
    pub logprob: f64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bytes: Vec<u8>,
}

/// How an answer ended, with what the backend reported about it. `None` means the
/// backend did not say, and the frontend falls back to what it measured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Completion {
    /// Ollama vocabulary: `stop` or `length`.
    pub done_reason: String,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub prompt_eval_ns: Option<u64>,
    pub eval_ns: Option<u64>,
    pub total_ns: Option<u64>,
    pub load_ns: Option<u64>,
}

/// A chat or generate call, after model mapping.
#[derive(Debug)]
pub struct Call<R> {
    /// The name the client used; echoed in every response.
    pub client_model: String,
    /// The name the backend knows the model by.
    pub backend_model: String,
    pub stream: bool,
    /// Move `<think>…</think>` inlined in the answer's text into thinking.
    pub strip_think: bool,
    /// Shared by the tries of a request's targets.
    pub request: std::sync::Arc<R>,
    /// The client's JSON body, for pass-through (unknown keys survive).
    pub body: Bytes,
    /// Where the bytes exchanged with the backend go, with `database.store_bodies`.
    pub capture: Option<Capture>,
}

/// By hand: a call is cloned for each target tried, sharing its request (no `R: Clone`).
impl<R> Clone for Call<R> {
    fn clone(&self) -> Call<R> {
        Call {
            client_model: self.client_model.clone(),
            backend_model: self.backend_model.clone(),
            stream: self.stream,
            strip_think: self.strip_think,
            request: self.request.clone(),
            body: self.body.clone(),
            capture: self.capture.clone(),
        }
    }
}

pub type ChatCall = Call<ChatRequest>;
pub type GenerateCall = Call<GenerateRequest>;

/// Vectors for the inputs, in input order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Embeddings {
    pub vectors: Vec<Vec<f64>>,
    pub prompt_tokens: Option<u64>,
}

/// A model the backend offers, with whatever Ollama-style metadata it reports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BackendModel {
    pub name: String,
    /// The backend's own `/api/tags` entry (Ollama backends), reused for aliases.
    pub entry: Option<Value>,
    pub context_length: Option<u64>,
    /// Ollama capability names, when the backend tells (llama.cpp's `/props`).
    pub capabilities: Option<Vec<String>>,
    /// The chat template, when the backend tells.
    pub template: Option<String>,
}

/// What a backend answers on one of Ollama's model routes (`/api/show`, `/api/ps`).
pub enum ModelsAnswer {
    /// Its own answer, to pass through as it came (a real Ollama's).
    Own(reqwest::Response),
    /// It has none: ollabridge describes the models from the model map and the backends'
    /// lists.
    Described,
    /// It loads models on request (a llama-server router): the ones loaded now, which
    /// ollabridge describes (`/api/ps`).
    Loaded(Vec<LoadedModel>),
}

/// A model a backend has loaded now (`/api/ps`).
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedModel {
    /// The backend's name for it.
    pub name: String,
    /// Bytes; 0 when the backend does not tell.
    pub size: u64,
    pub context_length: Option<u64>,
    /// When ollabridge unloads it (`None`: never).
    pub expires_at: Option<std::time::SystemTime>,
}

/// What Ollama's load request (an empty chat or prompt) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// The model is loaded; `waited` for a load this request started or found under way.
    Loaded { waited: std::time::Duration },
    /// Unloaded (or to be, when its last request in flight ends).
    Unloaded,
}

#[expect(
    async_fn_in_trait,
    reason = "used only through AnyBackend, whose concrete futures are Send"
)]
pub trait Backend {
    const KIND: BackendKind;
    async fn chat(&self, call: &ChatCall) -> Result<ChunkStream, BackendError>;
    async fn generate(&self, call: &GenerateCall) -> Result<ChunkStream, BackendError>;
    async fn models(&self) -> Result<Vec<BackendModel>, BackendError>;
    /// `/api/show` for the backend's model `backend_model`; `body` is the client's, when
    /// it sent one (keys the backend may read survive).
    async fn show(&self, backend_model: &str, body: Option<Bytes>) -> Result<ModelsAnswer, BackendError>;
    /// `/api/ps`: the models loaded now.
    async fn ps(&self) -> Result<ModelsAnswer, BackendError>;
}

pub enum AnyBackend {
    OpenAi(openai::OpenAiBackend),
    Ollama(ollama::OllamaBackend),
}

impl AnyBackend {
    /// `book` keeps the models the backend holds loaded, across reloads (routers only).
    pub fn new(config: &BackendConfig, book: std::sync::Arc<keep_alive::Book>) -> Result<AnyBackend, BackendError> {
        let http = http_client(config)?;
        Ok(match config.kind {
            BackendKind::Openai => AnyBackend::OpenAi(openai::OpenAiBackend::new(config, http, book)),
            BackendKind::Ollama => AnyBackend::Ollama(ollama::OllamaBackend::new(config, http)),
        })
    }

    pub fn kind(&self) -> BackendKind {
        match self {
            AnyBackend::OpenAi(_) => openai::OpenAiBackend::KIND,
            AnyBackend::Ollama(_) => ollama::OllamaBackend::KIND,
        }
    }

    pub async fn chat(&self, call: &ChatCall) -> Result<ChunkStream, BackendError> {
        match self {
            AnyBackend::OpenAi(b) => b.chat(call).await,
            AnyBackend::Ollama(b) => b.chat(call).await,
        }
    }

    pub async fn generate(&self, call: &GenerateCall) -> Result<ChunkStream, BackendError> {
        match self {
            AnyBackend::OpenAi(b) => b.generate(call).await,
            AnyBackend::Ollama(b) => b.generate(call).await,
        }
    }

    pub async fn models(&self) -> Result<Vec<BackendModel>, BackendError> {
        match self {
            AnyBackend::OpenAi(b) => b.models().await,
            AnyBackend::Ollama(b) => b.models().await,
        }
    }

    pub async fn show(&self, backend_model: &str, body: Option<Bytes>) -> Result<ModelsAnswer, BackendError> {
        match self {
            AnyBackend::OpenAi(b) => b.show(backend_model, body).await,
            AnyBackend::Ollama(b) => b.show(backend_model, body).await,
        }
    }

    pub async fn ps(&self) -> Result<ModelsAnswer, BackendError> {
        match self {
            AnyBackend::OpenAi(b) => b.ps().await,
            AnyBackend::Ollama(b) => b.ps().await,
        }
    }

    /// Ollama's load request: loads `backend_model` (or with `keep_alive` 0 unloads it)
    /// on a backend that loads models on request (a llama-server router); `None` from
    /// any other, which keeps its models loaded itself.
    pub async fn load(
        &self,
        backend_model: &str,
        keep_alive: Option<&Value>,
    ) -> Result<Option<Lifecycle>, BackendError> {
        match self {
            AnyBackend::OpenAi(b) => b.load(backend_model, keep_alive).await,
            AnyBackend::Ollama(_) => Ok(None),
        }
    }

    /// The models loaded now, on a backend that loads them on request (a llama-server
    /// router); `None` from any other.
    pub async fn loaded_models(&self) -> Result<Option<Vec<LoadedModel>>, BackendError> {
        match self {
            AnyBackend::OpenAi(b) => b.loaded_models().await,
            AnyBackend::Ollama(_) => Ok(None),
        }
    }

    /// Vectors for `inputs` from the backend's model `backend_model`; `keep_alive` as a
    /// chat's (a llama-server router's models only).
    pub async fn embed(
        &self,
        backend_model: &str,
        inputs: &[String],
        keep_alive: Option<&Value>,
    ) -> Result<Embeddings, BackendError> {
        match self {
            AnyBackend::OpenAi(b) => b.embed(backend_model, inputs, keep_alive).await,
            AnyBackend::Ollama(b) => b.embed(backend_model, inputs).await,
        }
    }

    /// Posts a client's body as it is to an OpenAI route (`v1/chat/completions`, ...):
    /// an OpenAI backend's own, or the one a real Ollama serves beside its API.
    pub async fn post_v1(&self, path: &str, body: Bytes) -> Result<reqwest::Response, BackendError> {
        match self {
            AnyBackend::OpenAi(b) => b.post_v1(path, body).await,
            AnyBackend::Ollama(b) => b.forward(reqwest::Method::POST, path, Some(body)).await,
        }
    }

    /// Whether the backend serves Ollama's own API: then the Ollama routes that work on a
    /// model without asking it (pull, embed, model management) pass through to it.
    pub fn serves_ollama_api(&self) -> bool {
        matches!(self, AnyBackend::Ollama(_))
    }

    /// Whether the backend itself refuses a `suffix` (fill-in-the-middle) its model cannot
    /// fill in, as a real Ollama does; OpenAI-compatible servers ignore it silently.
    pub fn refuses_unfit_suffix(&self) -> bool {
        matches!(self, AnyBackend::Ollama(_))
    }

    /// Sends a request as it is to one of Ollama's own routes on the backend, for a
    /// backend that [serves Ollama's API](AnyBackend::serves_ollama_api).
    pub async fn forward(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<reqwest::Response, BackendError> {
        match self {
            AnyBackend::Ollama(b) => b.forward(method, path, body).await,
            AnyBackend::OpenAi(b) => Err(BackendError::Status {
                status: 501,
                message: format!(
                    "{path} is not available from the OpenAI-compatible backend at {}",
                    b.label()
                ),
            }),
        }
    }

    /// The endpoint as errors name it.
    pub fn label(&self) -> &str {
        match self {
            AnyBackend::OpenAi(b) => b.label(),
            AnyBackend::Ollama(b) => b.label(),
        }
    }
}

/// A whole answer's body; a non-2xx answer becomes the backend's error.
pub(crate) async fn whole_answer(response: reqwest::Response, label: &str) -> Result<Bytes, BackendError> {
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|e| BackendError::from_reqwest(label, &e))?;
    if !status.is_success() {
        return Err(BackendError::from_status(status.as_u16(), &body));
    }
    Ok(body)
}

/// The response's bytes, copied into `capture` as they pass when there is one.
pub(crate) fn captured<S, E>(bytes: S, capture: Option<Capture>) -> impl Stream<Item = Result<Bytes, E>> + Send
where
    S: Stream<Item = Result<Bytes, E>> + Send,
{
    futures::StreamExt::inspect(bytes, move |item| {
        if let (Some(capture), Ok(bytes)) = (&capture, item) {
            capture.response(bytes);
        }
    })
}

/// Idle pooled connections are closed after this (checked again within as long).
/// llama-server keeps an idle keep-alive connection, and the HTTP thread serving it, for
/// 5 s: closing ours first gives its few threads back sooner and never reuses a
/// connection it is about to close.
const POOL_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// One pooled client per backend. `TCP_NODELAY` keeps Nagle's algorithm from holding
/// small stream chunks back; the read timeout bounds silence, not whole streams.
fn http_client(config: &BackendConfig) -> Result<reqwest::Client, BackendError> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(key) = &config.api_key {
        let value = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", key.expose()))
            .map_err(|_| BackendError::Config("backend.api_key contains characters not allowed in a header".into()))?;
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    for (name, value) in &config.headers {
        let bad = || BackendError::Config(format!("backend header '{name}' has a value not allowed in a header"));
        let name = reqwest::header::HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad())?;
        let value = reqwest::header::HeaderValue::from_str(value.expose()).map_err(|_| bad())?;
        headers.insert(name, value);
    }
    reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .connect_timeout(config.timeout)
        .read_timeout(config.timeout)
        .default_headers(headers)
        .build()
        .map_err(|e| BackendError::Config(format!("cannot build the HTTP client: {e}")))
}

/// Sends the request `build` makes; again (up to 3 tries, building it anew) when a pooled
/// keep-alive connection turns out to be closed before any answer came. llama-server
/// closes connections after every stream while announcing keep-alive, so under load
/// several pooled connections can be dead at once; the server never saw the request,
/// which makes the retry safe.
pub(crate) fn send<'a>(
    build: impl Fn() -> reqwest::RequestBuilder + Send + 'a,
    label: &'a str,
) -> impl Future<Output = Result<reqwest::Response, BackendError>> + 'a {
    futures::FutureExt::map(send_with_tries(build, label, TRIES), |(response, _)| response)
}

/// How many times [`send`] sends a request whose pooled connection turned out closed.
/// Public for `benches/perf`, whose floor proxy retries as ollabridge does.
#[doc(hidden)]
pub const TRIES: usize = 3;

/// [`send`] with a number of tries, also telling how many times the request was sent
/// again. Public for `benches/perf`, whose load driver sends the same way (and reports
/// the retries).
///
/// The request is built again for a retry rather than cloned up front: every request
/// waiting for its backend would otherwise hold a copy (its URL and headers) that is
/// almost never used. A plain function returning an `async move` block: an `async fn`
/// would keep its arguments twice in the future.
#[doc(hidden)]
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice in its future"
)]
pub fn send_with_tries<'a>(
    build: impl Fn() -> reqwest::RequestBuilder + Send + 'a,
    label: &'a str,
    tries: usize,
) -> impl Future<Output = (Result<reqwest::Response, BackendError>, usize)> + 'a {
    async move {
        let mut attempt = 1;
        loop {
            match build().send().await {
                Err(e) if attempt < tries && is_stale_connection(&e) => {
                    tracing::debug!(backend = label, attempt, "pooled connection was closed; sending again");
                    attempt += 1;
                }
                result => return (result.map_err(|e| BackendError::from_reqwest(label, &e)), attempt - 1),
            }
        }
    }
}

fn is_stale_connection(error: &reqwest::Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(s) = source {
        if let Some(h) = s.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() || h.is_canceled() {
                return true;
            }
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ) {
                return true;
            }
        }
        source = s.source();
    }
    false
}
