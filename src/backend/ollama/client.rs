//! HTTP side of the Ollama pass-through.

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream};
use reqwest::{Method, Url};
use serde_json::Value;
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};
use tokio_util::io::StreamReader;

use super::translate::{answer_line_to_chunk, ollama_embed_to_vectors, rename_model};
use crate::backend::{Backend, BackendError, BackendModel, Call, ChunkStream, Embeddings, ModelsAnswer};
use crate::config::{BackendConfig, BackendKind};

/// Ollama's Go client refuses lines over 8 MB; we accept a little more.
const MAX_LINE_BYTES: usize = 16 << 20;

pub struct OllamaBackend {
    http: reqwest::Client,
    base: Url,
    label: String,
}

impl OllamaBackend {
    pub fn new(config: &BackendConfig, http: reqwest::Client) -> OllamaBackend {
        let mut base = config.endpoint.clone();
        let path = base.path().trim_end_matches('/').to_owned();
        base.set_path(&format!("{path}/"));
        OllamaBackend {
            http,
            base,
            label: config.shown_endpoint(),
        }
    }

    /// Sends a request to `path` on the backend and returns its response as it is,
    /// for routes we pass through without reading (show, embed, ps, pull, ...).
    pub async fn forward(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<reqwest::Response, BackendError> {
        let url = self
            .base
            .join(path.trim_start_matches('/'))
            .map_err(|e| BackendError::Config(format!("cannot build backend URL for {path}: {e}")))?;
        let request = || {
            let request = self.http.request(method.clone(), url.clone());
            match &body {
                Some(body) => request
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.clone()),
                None => request,
            }
        };
        crate::backend::send(request, &self.label).await
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// `/api/embed` for a batch of inputs (a model's fallback target on a real Ollama).
    pub async fn embed(&self, backend_model: &str, inputs: &[String]) -> Result<Embeddings, BackendError> {
        let body = serde_json::json!({ "model": backend_model, "input": inputs }).to_string();
        let response = self.forward(Method::POST, "api/embed", Some(Bytes::from(body))).await?;
        let body = crate::backend::whole_answer(response, &self.label).await?;
        ollama_embed_to_vectors(&body, inputs.len())
    }

    async fn answer<R>(&self, path: &str, call: &Call<R>) -> Result<ChunkStream, BackendError> {
        let body = rename_model(&call.body, &call.backend_model)?;
        if let Some(capture) = &call.capture {
            capture.request(&body);
        }
        let response = self.forward(Method::POST, path, Some(body)).await?;
        let status = response.status();
        if !status.is_success() {
            // Boxed: only a refusal needs room for reading a body whole (~500 bytes that
            // every request waiting for its backend would otherwise carry).
            let body = Box::pin(response.bytes()).await.unwrap_or_default();
            if let Some(capture) = &call.capture {
                capture.response(&body);
            }
            return Err(BackendError::from_status(status.as_u16(), &body));
        }
        let label = self.label.clone();
        let bytes = crate::backend::captured(response.bytes_stream(), call.capture.clone());
        let reader = StreamReader::new(bytes.map_err(std::io::Error::other));
        let lines = FramedRead::new(reader, LinesCodec::new_with_max_length(MAX_LINE_BYTES));
        let (client_model, backend_model) = (call.client_model.clone(), call.backend_model.clone());
        let mut finished = false;
        let chunks = lines
            .filter(|line| std::future::ready(!matches!(line, Ok(l) if l.trim().is_empty())))
            .map(move |line| match line {
                Ok(line) => answer_line_to_chunk(line.as_bytes(), &client_model, &backend_model),
                Err(LinesCodecError::Io(e)) => Err(io_error(&label, e)),
                Err(LinesCodecError::MaxLineLengthExceeded) => Err(BackendError::Protocol(format!(
                    "a line longer than {MAX_LINE_BYTES} bytes"
                ))),
            })
            // An Ollama answer ends with `done: true`; anything else was cut off.
            .chain(stream::once(async { Err(BackendError::Truncated) }))
            .take_while(move |item| {
                let keep = !finished;
                finished = finished || matches!(item, Ok(chunk) if chunk.done.is_some()) || item.is_err();
                std::future::ready(keep)
            });
        Ok(chunks.boxed())
    }
}

fn io_error(label: &str, error: std::io::Error) -> BackendError {
    match error.get_ref().and_then(|e| e.downcast_ref::<reqwest::Error>()) {
        Some(e) => BackendError::from_reqwest(label, e),
        None => BackendError::Unreachable {
            endpoint: label.to_owned(),
            reason: error.to_string(),
        },
    }
}

impl Backend for OllamaBackend {
    const KIND: BackendKind = BackendKind::Ollama;

    async fn chat(&self, call: &crate::backend::ChatCall) -> Result<ChunkStream, BackendError> {
        self.answer("api/chat", call).await
    }

    async fn generate(&self, call: &crate::backend::GenerateCall) -> Result<ChunkStream, BackendError> {
        self.answer("api/generate", call).await
    }

    async fn models(&self) -> Result<Vec<BackendModel>, BackendError> {
        let response = self.forward(Method::GET, "api/tags", None).await?;
        let body = crate::backend::whole_answer(response, &self.label).await?;
        let list: Value = serde_json::from_slice(&body)
            .map_err(|e| BackendError::Protocol(format!("unreadable /api/tags from {}: {e}", self.label)))?;
        Ok(list["models"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|entry| {
                let name = entry.get("model").or_else(|| entry.get("name"))?.as_str()?.to_owned();
                let context_length = entry["details"]["context_length"].as_u64();
                Some(BackendModel {
                    name,
                    entry: Some(entry.clone()),
                    context_length,
                    ..Default::default()
                })
            })
            .collect())
    }

    async fn show(&self, backend_model: &str, body: Option<Bytes>) -> Result<ModelsAnswer, BackendError> {
        let body = body.unwrap_or_else(|| Bytes::from(serde_json::json!({ "model": backend_model }).to_string()));
        let body = rename_model(&body, backend_model)?;
        let response = self.forward(Method::POST, "api/show", Some(body)).await?;
        Ok(ModelsAnswer::Own(response))
    }

    async fn ps(&self) -> Result<ModelsAnswer, BackendError> {
        Ok(ModelsAnswer::Own(self.forward(Method::GET, "api/ps", None).await?))
    }
}
