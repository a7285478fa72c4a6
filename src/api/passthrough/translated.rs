//! A dialect's route answered by ollabridge itself, for a backend that does not serve the
//! route (`serves` false, or a 404 for it remembered): the client's body is translated
//! into the neutral chat request (the route's [`Translation`]), the backend answers it
//! like an Ollama `/api/chat` (an OpenAI backend on `/v1/chat/completions`, a real Ollama
//! on `/api/chat`), and the neutral chunks are written back in the dialect by the route's
//! [`Encoder`], a pure state machine. The recorder sees every chunk, as for `/api/chat`.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures::stream;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use super::relay::{refuse, with_type};
use super::{DialectError, Route};
use crate::api::exchange::Recorder;
use crate::backend::request::ChatRequest;
use crate::backend::{BackendError, Chunk, ChunkStream, Delta};

/// How a route's requests and answers are translated.
pub trait Translation: Sync {
    /// The client's body as the neutral chat request; the error is a 400's message,
    /// naming the field.
    fn request(&self, body: &[u8]) -> Result<ChatRequest, String>;

    /// The writer of one answer: `id` is the request's (answers' ids derive from it),
    /// `model` the client's name for the model, `created` the Unix time.
    fn encoder(&self, id: &str, model: &str, created: u64) -> Box<dyn Encoder>;
}

/// Writes one answer in a dialect, from the neutral chunks. Pure.
pub trait Encoder: Send {
    /// The SSE events for one chunk (the first call opens the answer; `end` comes with
    /// the last chunk and closes it).
    fn chunk(&mut self, chunk: &Chunk, end: Option<&End>) -> String;

    /// The answer object as it stands, once ended.
    fn ended(&self, end: &End) -> Value;

    /// The `sequence_number` the next event would carry (the Responses API numbers its
    /// events), for an error that ends the stream.
    fn next_sequence(&self) -> u64 {
        0
    }

    /// The whole answer (`stream: false`) of the answer gathered in one delta: the same
    /// blocks or items a stream of it builds.
    fn whole(mut self: Box<Self>, answer: &Delta, end: &End) -> Value {
        let chunk = Chunk {
            delta: answer.clone(),
            ..Default::default()
        };
        self.chunk(&chunk, Some(end));
        self.ended(end)
    }
}

/// How an answer ended, with the tokens the backend counted (or ollabridge did).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct End {
    /// Ollama's words: `stop` or `length`.
    pub reason: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// One SSE event.
pub fn event(name: &str, data: &Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

/// Reads a body into a dialect's request type; the error names the field, as Ollama's
/// routes do.
pub fn read_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    crate::api::exchange::parse_body(body).map_err(|e| e.to_string())
}

/// A field that is a plain string or a list of typed parts: Anthropic's `system` and
/// `content` (content blocks), the Responses API's message `content` (content parts).
pub enum TextOrParts<P> {
    Text(String),
    Parts(Vec<P>),
}

/// By hand: serde's untagged enums lose why a part did not fit (its unknown type, say).
impl<'de, P: DeserializeOwned> serde::Deserialize<'de> for TextOrParts<P> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<TextOrParts<P>, D::Error> {
        use serde::de::Error;
        match Value::deserialize(d)? {
            Value::String(text) => Ok(TextOrParts::Text(text)),
            parts @ Value::Array(_) => serde_json::from_value(parts)
                .map(TextOrParts::Parts)
                .map_err(D::Error::custom),
            _ => Err(D::Error::custom("expected a string or a list of content parts")),
        }
    }
}

/// A client's function tool as the chat's (OpenAI-style) function; a tool without a
/// schema takes no arguments.
pub fn function_tool(name: String, description: Option<String>, parameters: Option<Value>) -> Value {
    let mut function = Map::new();
    function.insert("name".into(), name.into());
    if let Some(description) = description {
        function.insert("description".into(), description.into());
    }
    let parameters = parameters.unwrap_or_else(|| json!({"type": "object", "properties": {}}));
    function.insert("parameters".into(), parameters);
    json!({"type": "function", "function": function})
}

/// The sampling settings the dialects share, by their Ollama names.
#[derive(Debug, Default)]
pub struct Sampling {
    pub num_predict: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<u64>,
    pub stop: Option<Vec<String>>,
}

impl Sampling {
    /// The chat's `options`: the settings given, `None` when there are none.
    pub fn options(self) -> Option<Map<String, Value>> {
        let Sampling {
            num_predict,
            temperature,
            top_p,
            top_k,
            stop,
        } = self;
        let options: Map<String, Value> = [
            ("num_predict", num_predict.map(Value::from)),
            ("temperature", temperature.map(Value::from)),
            ("top_p", top_p.map(Value::from)),
            ("top_k", top_k.map(Value::from)),
            ("stop", stop.map(Value::from)),
        ]
        .into_iter()
        .filter_map(|(key, value)| Some((key.to_owned(), value?)))
        .collect();
        (!options.is_empty()).then_some(options)
    }
}

/// The chat a backend is asked, and what the answer needs to be written.
pub struct Translated {
    pub request: Arc<ChatRequest>,
    /// The request as Ollama's `/api/chat` body (what a real Ollama backend is sent).
    pub body: Bytes,
}

impl Translated {
    pub fn new(mut request: ChatRequest, stream: bool) -> Translated {
        request.stream = Some(stream);
        // Serialising a request read from JSON cannot fail.
        let body = Bytes::from(serde_json::to_vec(&request).unwrap_or_default());
        Translated {
            request: Arc::new(request),
            body,
        }
    }
}

/// Answers the client from the backend's chunks: the first is awaited before any status
/// is sent, so a failure before output is a proper HTTP error in the route's shape.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice in its future"
)]
pub fn respond<R: Route>(
    mut encoder: Box<dyn Encoder>,
    stream: bool,
    mut chunks: ChunkStream,
    mut recorder: Recorder,
    log_lines: bool,
) -> impl Future<Output = Response> {
    async move {
        let first = next_chunk(&mut chunks, &recorder).await;
        let first = match first {
            Ok(chunk) => chunk,
            Err(e) => return refuse(recorder, R::Error::from_backend(&e, None)),
        };
        if !stream {
            // Boxed: the wait for the first chunk need not make room for gathering the rest.
            return Box::pin(whole::<R>(encoder, first, chunks, recorder, log_lines)).await;
        }
        let text = on_chunk(&mut *encoder, &first, &mut recorder, log_lines);
        let recorder = recorder.finish_if_done(&first);
        let state = (encoder, chunks, recorder, Some(text));
        let body = stream::unfold(state, move |(mut encoder, mut chunks, recorder, pending)| async move {
            if let Some(text) = pending {
                return Some((
                    Ok::<_, Infallible>(Bytes::from(text)),
                    (encoder, chunks, recorder, None),
                ));
            }
            let mut rec = recorder?;
            let (text, recorder) = match next_chunk(&mut chunks, &rec).await {
                Ok(chunk) => {
                    let text = on_chunk(&mut *encoder, &chunk, &mut rec, log_lines);
                    (text, rec.finish_if_done(&chunk))
                }
                // Output has gone out with a 200: the error is the last event.
                Err(e) => {
                    let text = R::Error::from_backend(&e, None).event(encoder.next_sequence());
                    rec.sent_bytes(text.len());
                    rec.fail_stream(&e);
                    return Some((Ok(text), (encoder, chunks, None, None)));
                }
            };
            Some((Ok(Bytes::from(text)), (encoder, chunks, recorder, None)))
        });
        with_type(Response::new(Body::from_stream(body)), "text/event-stream")
    }
}

/// The next chunk, or why there is none (the stream ended early, or the server is
/// shutting down).
async fn next_chunk(chunks: &mut ChunkStream, recorder: &Recorder) -> Result<Chunk, BackendError> {
    recorder
        .next_chunk(chunks)
        .await
        .unwrap_or(Err(BackendError::Truncated))
}

fn on_chunk(encoder: &mut dyn Encoder, chunk: &Chunk, recorder: &mut Recorder, log_lines: bool) -> String {
    recorder.observe(chunk);
    let end = chunk.done.as_ref().map(|_| end_of(recorder));
    let text = encoder.chunk(chunk, end.as_ref());
    if log_lines && !text.is_empty() {
        tracing::info!(events = %text.trim_end(), "raw response events");
    }
    recorder.sent_bytes(text.len());
    text
}

fn end_of(recorder: &Recorder) -> End {
    let metrics = recorder.final_metrics();
    End {
        reason: metrics.done_reason,
        input_tokens: metrics.prompt_eval_count,
        output_tokens: metrics.eval_count,
    }
}

/// `stream: false`: the chunks gathered, then the whole answer as one object.
async fn whole<R: Route>(
    encoder: Box<dyn Encoder>,
    first: Chunk,
    mut chunks: ChunkStream,
    mut recorder: Recorder,
    log_lines: bool,
) -> Response {
    let mut chunk = first;
    loop {
        recorder.observe(&chunk);
        if chunk.done.is_some() {
            break;
        }
        chunk = match next_chunk(&mut chunks, &recorder).await {
            Ok(chunk) => chunk,
            Err(e) => return refuse(recorder, R::Error::from_backend(&e, None)),
        };
    }
    let answer = encoder.whole(&recorder.answer().whole(), &end_of(&recorder));
    let body = answer.to_string();
    if log_lines {
        tracing::info!(response = %body, "raw response");
    }
    recorder.sent_bytes(body.len());
    recorder.finish();
    with_type(Response::new(Body::from(body)), "application/json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_tools_and_sampling_options() {
        assert_eq!(
            function_tool("f".into(), None, None),
            json!({"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}})
        );
        assert_eq!(
            function_tool("g".into(), Some("does g".into()), Some(json!({"type": "object"}))),
            json!({"type": "function", "function": {"name": "g", "description": "does g",
                   "parameters": {"type": "object"}}})
        );
        assert_eq!(Sampling::default().options(), None);
        let options = Sampling {
            num_predict: Some(64),
            top_p: Some(0.5),
            stop: Some(vec!["END".into()]),
            ..Default::default()
        }
        .options();
        assert_eq!(
            options.map(Value::Object),
            Some(json!({"num_predict": 64, "top_p": 0.5, "stop": ["END"]}))
        );
    }
}
