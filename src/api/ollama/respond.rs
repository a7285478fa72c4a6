//! Turns a backend's chunk stream into the client's answer: NDJSON lines flushed one
//! by one, or a single JSON object. The first chunk is awaited before any status is
//! sent, so failures that happen before output become proper HTTP errors.

use std::convert::Infallible;

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use bytes::Bytes;
use futures::stream;

use super::types::{ChatChunk, FinalMetrics, GenerateChunk, OutMessage};
use crate::api::exchange::Recorder;
use crate::backend::{BackendError, Chunk, ChunkStream};
use crate::clock::now_rfc3339;

const NDJSON: &str = "application/x-ndjson";
const JSON: &str = "application/json; charset=utf-8";

/// Which Ollama object the chunks become.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Chat,
    Generate,
}

pub struct Answer {
    pub shape: Shape,
    pub model: String,
    pub stream: bool,
    pub log_lines: bool,
}

impl Answer {
    pub async fn respond(self, mut chunks: ChunkStream, mut recorder: Recorder) -> Response {
        let first = recorder.next_chunk(&mut chunks).await;
        let first = match first {
            Some(Ok(chunk)) => chunk,
            Some(Err(e)) => return recorder.reject(e.into()),
            None => return recorder.reject(BackendError::Truncated.into()),
        };
        if !self.stream {
            return self.single(first, chunks, recorder).await;
        }
        recorder.observe(&first);
        let first_line = self.line(&first, &mut recorder);
        let recorder = recorder.finish_if_done(&first);
        let state = (self, chunks, recorder, Some(first_line));
        let body = stream::unfold(state, |(answer, mut chunks, mut recorder, pending)| async move {
            if let Some(line) = pending {
                return Some((Ok::<_, Infallible>(line), (answer, chunks, recorder, None)));
            }
            let mut rec = recorder.take()?;
            let next = rec.next_chunk(&mut chunks).await;
            let line = match next {
                Some(Ok(chunk)) => {
                    rec.observe(&chunk);
                    let line = answer.line(&chunk, &mut rec);
                    recorder = rec.finish_if_done(&chunk);
                    line
                }
                // Output has gone out with a 200: the error becomes the last line.
                failure => {
                    let e = match failure {
                        Some(Err(e)) => e,
                        _ => BackendError::Truncated,
                    };
                    let line = error_line(&e);
                    rec.sent_bytes(line.len());
                    rec.fail_stream(&e);
                    line
                }
            };
            Some((Ok(line), (answer, chunks, recorder, None)))
        });
        with_type(Response::new(Body::from_stream(body)), NDJSON)
    }

    /// Non-streaming: the whole answer as one object, like Ollama's `stream: false`.
    async fn single(self, first: Chunk, mut chunks: ChunkStream, mut recorder: Recorder) -> Response {
        let mut last = first;
        let mut count = 1;
        loop {
            recorder.observe(&last);
            if last.done.is_some() {
                break;
            }
            let next = recorder.next_chunk(&mut chunks).await;
            match next {
                Some(Ok(chunk)) => {
                    last = chunk;
                    count += 1;
                }
                Some(Err(e)) => return recorder.reject(e.into()),
                None => return recorder.reject(BackendError::Truncated.into()),
            }
        }
        // A pass-through answer that came as one object goes back unchanged.
        let body = match last.raw.take() {
            Some(raw) if count == 1 => raw.to_vec(),
            _ => {
                let metrics = recorder.final_metrics();
                let whole = Chunk {
                    delta: recorder.answer().whole(),
                    ..Default::default()
                };
                self.encode(&whole, Some(metrics))
            }
        };
        if self.log_lines {
            tracing::info!(response = %String::from_utf8_lossy(&body), "raw response");
        }
        recorder.sent_bytes(body.len());
        recorder.finish();
        with_type(Response::new(Body::from(body)), JSON)
    }

    fn line(&self, chunk: &Chunk, recorder: &mut Recorder) -> Bytes {
        let mut line = match &chunk.raw {
            Some(raw) => raw.to_vec(),
            None => self.encode(chunk, chunk.done.as_ref().map(|_| recorder.final_metrics())),
        };
        if self.log_lines {
            tracing::info!(line = %String::from_utf8_lossy(&line), "raw response line");
        }
        line.push(b'\n');
        recorder.sent_bytes(line.len());
        Bytes::from(line)
    }

    fn encode(&self, chunk: &Chunk, metrics: Option<FinalMetrics>) -> Vec<u8> {
        let done = metrics.is_some();
        let delta = chunk.delta.clone();
        let encoded = match self.shape {
            Shape::Chat => serde_json::to_vec(&ChatChunk {
                model: &self.model,
                created_at: now_rfc3339(),
                message: OutMessage {
                    role: "assistant",
                    content: delta.content,
                    thinking: delta.thinking,
                    tool_calls: delta.tool_calls,
                },
                done,
                logprobs: delta.logprobs,
                metrics,
            }),
            Shape::Generate => serde_json::to_vec(&GenerateChunk {
                model: &self.model,
                created_at: now_rfc3339(),
                response: delta.content,
                thinking: delta.thinking,
                done,
                logprobs: delta.logprobs,
                metrics,
            }),
        };
        // Serialising plain strings and integers cannot fail; keep the stream valid anyway.
        encoded.unwrap_or_else(|e| error_json(&e.to_string()))
    }
}

fn error_json(message: &str) -> Vec<u8> {
    serde_json::json!({ "error": message }).to_string().into_bytes()
}

fn error_line(error: &BackendError) -> Bytes {
    let mut line = error_json(&error.to_string());
    line.push(b'\n');
    Bytes::from(line)
}

fn with_type(mut response: Response, content_type: &'static str) -> Response {
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
