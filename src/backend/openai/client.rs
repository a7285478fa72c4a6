//! HTTP side of the OpenAI backend: sends translated requests, cuts the SSE answer into
//! events with [`SseSplitter`], and feeds each event to the pure translator.

use futures::future::{self, Either};
use futures::{StreamExt, TryFutureExt, stream};
use reqwest::Url;
use serde_json::{Map, Value};

use super::lifecycle::{Router, held};
use super::sse::SseSplitter;
use super::translate::{self, Route, Translator};
use super::types::{ModelList, Props};
use crate::backend::keep_alive::Book;
use crate::backend::request::{ChatRequest, Think, logprobs_asked};
use crate::backend::{
    Backend, BackendError, BackendModel, Capture, ChatCall, ChunkStream, Embeddings, GenerateCall, ModelsAnswer,
};
use crate::config::{BackendConfig, BackendKind, MaxTokensField, ThinkingStyle};

pub struct OpenAiBackend {
    pub(super) http: reqwest::Client,
    /// Endpoint with a trailing slash and without a trailing `v1/`, so both
    /// `http://host:8080` and `https://openrouter.ai/api/v1` work.
    base: Url,
    /// `v1/chat/completions` and `v1/completions` joined to `base` once: joining parses,
    /// ~1.5 % of a request's CPU.
    chat_url: Url,
    completions_url: Url,
    label: String,
    thinking: ThinkingStyle,
    max_tokens_field: MaxTokensField,
    /// `stream_options` of the config: whether streamed requests may ask for `usage`.
    stream_options: bool,
    /// Whether it is a llama-server router, which loads and unloads models on request,
    /// and what that takes.
    pub(super) router: Box<Router>,
}

impl OpenAiBackend {
    pub fn new(config: &BackendConfig, http: reqwest::Client, book: std::sync::Arc<Book>) -> OpenAiBackend {
        let mut base = config.endpoint.clone();
        let path = base.path().trim_end_matches('/').trim_end_matches("/v1").to_owned();
        base.set_path(&format!("{path}/"));
        // An http(s) URL with a host (the config checks) joins any relative path.
        let join = |route: Route| base.join(route.path()).unwrap_or_else(|_| base.clone());
        let backend = OpenAiBackend {
            http,
            chat_url: join(Route::Chat),
            completions_url: join(Route::Completions),
            base,
            label: config.shown_endpoint(),
            thinking: config.thinking,
            max_tokens_field: config.max_tokens_field,
            stream_options: config.stream_options,
            router: Box::new(Router::new(config.router, book, config.timeout)),
        };
        // The book outlives reloads; its timers unload through the newest client.
        if let Ok(unloader) = backend.unloader() {
            backend.router.attach(unloader);
        }
        backend
    }

    pub(super) fn url(&self, path: &str) -> Result<Url, BackendError> {
        self.base
            .join(path)
            .map_err(|e| BackendError::Config(format!("cannot build backend URL for {path}: {e}")))
    }

    /// `/v1/embeddings` for a batch of inputs.
    pub async fn embed(
        &self,
        backend_model: &str,
        inputs: &[String],
        keep_alive: Option<&Value>,
    ) -> Result<Embeddings, BackendError> {
        // Held until the vectors came: the model's keep-alive starts then.
        let _lease = self.lease(backend_model, keep_alive).await?;
        let body = translate::embeddings_request(backend_model, inputs);
        let url = self.url("v1/embeddings")?;
        let bytes = self.exchange(|| self.http.post(url.clone()).json(&body)).await?;
        translate::openai_embeddings_to_vectors(&bytes, inputs.len())
    }

    /// Posts a client's body as it is to one of the backend's `/v1` routes.
    pub async fn post_v1(&self, path: &str, body: bytes::Bytes) -> Result<reqwest::Response, BackendError> {
        let url = self.url(path)?;
        crate::backend::send(|| self.post_json(&url, &body), &self.label).await
    }

    /// A POST of a JSON body; built again for each try of [`crate::backend::send`].
    fn post_json(&self, url: &Url, body: &bytes::Bytes) -> reqwest::RequestBuilder {
        self.http
            .post(url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone())
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// Encodes and sends the request; the returned future holds only the send and
    /// what reads the answer, as it lives as long as the backend takes to answer.
    fn send<'a>(
        &'a self,
        route: Route,
        mut body: Map<String, Value>,
        stream: bool,
        translator: Translator,
        capture: Option<&'a Capture>,
    ) -> impl Future<Output = Result<ChunkStream, BackendError>> + 'a {
        // Without usage, counts come from llama.cpp's `timings` or are estimated.
        if !self.stream_options {
            body.remove("stream_options");
        }
        if self.max_tokens_field != MaxTokensField::MaxTokens {
            if let Some(limit) = body.remove("max_tokens") {
                body.insert(self.max_tokens_field.as_str().to_owned(), limit);
            }
        }
        let body = match serde_json::to_vec(&body) {
            Ok(body) => bytes::Bytes::from(body),
            Err(e) => {
                let error = BackendError::Protocol(format!("cannot encode request: {e}"));
                return Either::Left(future::ready(Err(error)));
            }
        };
        if let Some(capture) = capture {
            capture.request(&body);
        }
        let url = match route {
            Route::Chat => &self.chat_url,
            Route::Completions => &self.completions_url,
        };
        let request = move || self.post_json(url, &body);
        // `and_then`, not an async block awaiting the send: the block would keep the
        // send's future twice.
        let sent = crate::backend::send(request, &self.label);
        Either::Right(sent.and_then(move |response| {
            let status = response.status();
            if status.is_success() && stream {
                let bytes = crate::backend::captured(response.bytes_stream(), capture.cloned());
                return Either::Left(future::ready(Ok(sse_to_chunks(bytes, translator, self.label.clone()))));
            }
            // Boxed: only an answer read whole needs room for the read, which every
            // request waiting for its backend would otherwise carry (~700 bytes).
            Either::Right(Box::pin(async move {
                let body = response
                    .bytes()
                    .await
                    .map_err(|e| BackendError::from_reqwest(&self.label, &e))?;
                if let Some(capture) = capture {
                    capture.response(&body);
                }
                if !status.is_success() {
                    let status = status.as_u16();
                    return Err(translate::context_exceeded(status, &body)
                        .unwrap_or_else(|| BackendError::from_status(status, &body)));
                }
                let chunks = translator.on_body(&body)?;
                Ok(stream::iter(chunks.into_iter().map(Ok)).boxed())
            }))
        }))
    }
}

/// Drives the translator over the SSE events; at the end of the upstream stream it
/// emits the buffered tool calls and the final chunk (or the truncation error).
fn sse_to_chunks<S>(bytes: S, translator: Translator, label: String) -> ChunkStream
where
    S: futures::Stream<Item = Result<bytes::Bytes, reqwest::Error>> + Send + 'static,
{
    struct State<S> {
        bytes: std::pin::Pin<Box<S>>,
        splitter: SseSplitter,
        translator: Translator,
        pending: std::collections::VecDeque<crate::backend::Chunk>,
        ended: bool,
        label: String,
    }
    let state = State {
        bytes: Box::pin(bytes),
        splitter: SseSplitter::default(),
        translator,
        pending: Default::default(),
        ended: false,
        label,
    };
    stream::unfold(state, |mut state| async move {
        loop {
            if let Some(chunk) = state.pending.pop_front() {
                return Some((Ok(chunk), state));
            }
            if state.ended {
                return None;
            }
            let item = match state.splitter.next_event() {
                Err(e) => Err(BackendError::Protocol(e.to_string())),
                Ok(Some(event)) => match event.data() {
                    // Comments and keep-alives.
                    None => continue,
                    Some(data) if event.name == "error" => Err(BackendError::Status {
                        status: 502,
                        message: data.to_owned(),
                    }),
                    Some(data) => match state.translator.on_event(data) {
                        Ok(Some(chunk)) => Ok(chunk),
                        Ok(None) => continue,
                        Err(e) => Err(e),
                    },
                },
                Ok(None) => match state.bytes.next().await {
                    Some(Ok(bytes)) => {
                        state.splitter.push(&bytes);
                        continue;
                    }
                    Some(Err(e)) => Err(BackendError::from_reqwest(&state.label, &e)),
                    // An unfinished event at the end is discarded, as SSE readers do.
                    None => match state.translator.finish() {
                        Ok(chunks) => {
                            state.ended = true;
                            state.pending.extend(chunks);
                            continue;
                        }
                        Err(e) => Err(e),
                    },
                },
            };
            if item.is_err() {
                state.ended = true;
            }
            return Some((item, state));
        }
    })
    .boxed()
}

impl Backend for OpenAiBackend {
    const KIND: BackendKind = BackendKind::Openai;

    async fn chat(&self, call: &ChatCall) -> Result<ChunkStream, BackendError> {
        let lease = self
            .lease(&call.backend_model, call.request.keep_alive.as_ref())
            .await?;
        let chunks = match self.chat_once(call, &call.request).await {
            Err(BackendError::ContextExceeded {
                message,
                prompt_tokens,
                context,
            }) if call.request.truncate != Some(false) => {
                // Boxed: only a chat that overflowed pays for the room the retries take.
                Box::pin(self.chat_fitted(call, message, prompt_tokens, context)).await
            }
            answer => answer,
        }?;
        Ok(held(chunks, lease))
    }

    async fn generate(&self, call: &GenerateCall) -> Result<ChunkStream, BackendError> {
        let lease = self
            .lease(&call.backend_model, call.request.keep_alive.as_ref())
            .await?;
        let (route, body) =
            translate::ollama_generate_to_openai(&call.request, &call.backend_model, call.stream, self.thinking);
        let translator = Translator::new(Think::is_off(call.request.think), call.strip_think)
            .with_logprobs(logprobs_asked(call.request.logprobs, call.request.top_logprobs));
        let chunks = self
            .send(route, body, call.stream, translator, call.capture.as_ref())
            .await?;
        Ok(held(chunks, lease))
    }

    async fn models(&self) -> Result<Vec<BackendModel>, BackendError> {
        let url = self.url("v1/models")?;
        let body = self.exchange(|| self.http.get(url.clone())).await?;
        let list: ModelList = serde_json::from_slice(&body)
            .map_err(|e| BackendError::Protocol(format!("unreadable model list from {}: {e}", self.label)))?;
        self.note_list(&list);
        // A single-model llama-server describes its model in /props; other servers
        // have no such route, and then the model list alone has to do. A router's
        // /props describes no model.
        let single = list.data.len() == 1 && !super::router::is_router_list(&list);
        let props = if single { self.props().await } else { None };
        Ok(list
            .data
            .into_iter()
            .map(|m| BackendModel {
                context_length: props
                    .as_ref()
                    .and_then(|p| p.default_generation_settings.as_ref()?.n_ctx)
                    .or(m.meta.as_ref().and_then(|meta| meta.n_ctx.or(meta.n_ctx_train))),
                capabilities: props.as_ref().map(translate::props_to_capabilities),
                template: props.as_ref().and_then(|p| p.chat_template.clone()),
                name: m.id,
                entry: None,
            })
            .collect())
    }

    /// OpenAI's API has no such route: what `models` read describes the model.
    async fn show(&self, _backend_model: &str, _body: Option<bytes::Bytes>) -> Result<ModelsAnswer, BackendError> {
        Ok(ModelsAnswer::Described)
    }

    /// OpenAI's API has no such route: a llama-server router tells what it has loaded;
    /// other servers' listed models are described as loaded.
    async fn ps(&self) -> Result<ModelsAnswer, BackendError> {
        Ok(match self.loaded_models().await? {
            Some(loaded) => ModelsAnswer::Loaded(loaded),
            None => ModelsAnswer::Described,
        })
    }
}

/// How many times a chat is cut shorter after the backend says it does not fit.
const FIT_TRIES: usize = 3;

impl OpenAiBackend {
    fn chat_once<'a>(
        &'a self,
        call: &'a ChatCall,
        request: &ChatRequest,
    ) -> impl Future<Output = Result<ChunkStream, BackendError>> + 'a {
        let body = translate::ollama_chat_to_openai(request, &call.backend_model, call.stream, self.thinking);
        let translator = Translator::new(Think::is_off(request.think), call.strip_think)
            .with_logprobs(logprobs_asked(request.logprobs, request.top_logprobs));
        self.send(Route::Chat, body, call.stream, translator, call.capture.as_ref())
    }

    /// Ollama's answer to a chat longer than the context: the oldest messages other than
    /// system messages are dropped until the backend takes it (a few tries at most, each
    /// from the backend's latest count). The log row's backend request is the one that
    /// was answered; the process log says what was dropped.
    async fn chat_fitted(
        &self,
        call: &ChatCall,
        mut message: String,
        mut prompt_tokens: u64,
        mut context: u64,
    ) -> Result<ChunkStream, BackendError> {
        let mut request = (*call.request).clone();
        let original = request.messages.as_ref().map_or(0, Vec::len);
        for _ in 0..FIT_TRIES {
            let messages = request.messages.as_deref().unwrap_or_default();
            let Some(fewer) = translate::fit_to_context(messages, prompt_tokens, context) else {
                break;
            };
            tracing::warn!(
                model = %call.client_model,
                backend = %self.label,
                prompt_tokens,
                context,
                dropped = original - fewer.len(),
                kept = fewer.len(),
                "the chat does not fit the backend's context: its oldest messages are dropped",
            );
            request.messages = Some(fewer);
            match self.chat_once(call, &request).await {
                Err(BackendError::ContextExceeded {
                    message: m,
                    prompt_tokens: p,
                    context: c,
                }) => (message, prompt_tokens, context) = (m, p, c),
                answer => return answer,
            }
        }
        Err(BackendError::ContextExceeded {
            message,
            prompt_tokens,
            context,
        })
    }

    /// A whole request and answer; a non-2xx answer becomes the backend's error.
    pub(super) async fn exchange(
        &self,
        request: impl Fn() -> reqwest::RequestBuilder + Send,
    ) -> Result<bytes::Bytes, BackendError> {
        let response = crate::backend::send(request, &self.label).await?;
        crate::backend::whole_answer(response, &self.label).await
    }

    /// A llama-server's slot count, from its `/props`; `None` from other servers.
    pub async fn total_slots(&self) -> Option<usize> {
        self.props().await?.total_slots.filter(|n| *n > 0)
    }

    /// `/props`, noting whether the backend is a router.
    pub(super) async fn props(&self) -> Option<Props> {
        let url = self.url("props").ok()?;
        match self.exchange(|| self.http.get(url.clone())).await {
            Ok(body) => {
                let props: Props = serde_json::from_slice(&body).ok()?;
                self.note_props(&props);
                Some(props)
            }
            // Servers other than llama-server have no /props: then not a router.
            Err(BackendError::Status { status: 404, .. }) => {
                self.note_props(&Props::default());
                None
            }
            Err(_) => None,
        }
    }
}
