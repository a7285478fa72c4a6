//! Ollama wire types, shaped after Ollama's `api/types.go`. Requests are lenient in
//! the ways real clients need (numbers as floats, roles capitalised, null content);
//! responses are strict: integers for metrics, RFC 3339 timestamps, no `error` key.

use serde::Serialize;

/// The requests and their parts are the backend's neutral request, in Ollama's shape.
pub use crate::backend::Logprob;
pub use crate::backend::request::{ChatRequest, GenerateRequest, Message, ToolCall, ToolCallFunction};

/// The assistant message of a chat chunk; `content` is always present.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OutMessage {
    pub role: &'static str,
    pub content: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub thinking: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
}

/// Fields only the final (`done: true`) object carries.
pub use crate::api::exchange::FinalMetrics;

#[derive(Debug, Serialize)]
pub struct ChatChunk<'a> {
    pub model: &'a str,
    pub created_at: String,
    pub message: OutMessage,
    pub done: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub logprobs: Vec<Logprob>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<FinalMetrics>,
}

#[derive(Debug, Serialize)]
pub struct GenerateChunk<'a> {
    pub model: &'a str,
    pub created_at: String,
    /// Always present: ollama-python 0.5.1 (Home Assistant's pin) requires it.
    pub response: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub thinking: String,
    pub done: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub logprobs: Vec<Logprob>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<FinalMetrics>,
}
