//! The OpenAI routes passed through as they are (`/v1/chat/completions`, `/v1/completions`,
//! `/v1/embeddings`), and how their answers are read for the log row: completions by
//! the OpenAI backend's own translator, embeddings as a short description.

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Map, Value, json};

use super::error::OpenAiError;
use crate::api::passthrough::{self, Logged, SideReader};
use crate::backend::openai::translate::Translator;
use crate::backend::{BackendError, Chunk};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Chat,
    Completions,
    Embeddings,
}

impl passthrough::Route for Route {
    type Error = OpenAiError;
    type Reader = Reader;

    fn endpoint(self) -> &'static str {
        match self {
            Route::Chat => "/v1/chat/completions",
            Route::Completions => "/v1/completions",
            Route::Embeddings => "/v1/embeddings",
        }
    }

    /// The messages as JSON, the prompt text, or the inputs as a JSON array (as
    /// `/api/embed` stores them).
    fn prompt(self, body: &Map<String, Value>) -> Option<String> {
        let (key, value) = match self {
            Route::Chat => ("messages", body.get("messages")),
            Route::Completions => ("prompt", body.get("prompt")),
            Route::Embeddings => ("input", body.get("input")),
        };
        match (key, value?) {
            (_, Value::Null) => None,
            ("prompt", Value::String(text)) => Some(text.clone()),
            ("input", Value::String(text)) => Some(json!([text]).to_string()),
            (_, other) => Some(other.to_string()),
        }
    }

    fn asks_usage(self) -> bool {
        self != Route::Embeddings
    }

    fn reader(self, strip_think: bool) -> Reader {
        match self {
            Route::Chat | Route::Completions => Reader::Completions(Translator::new(false, strip_think)),
            Route::Embeddings => Reader::Embeddings,
        }
    }
}

#[expect(
    clippy::large_enum_variant,
    reason = "boxing would allocate for every chat; embeddings are rare and short-lived"
)]
pub enum Reader {
    Completions(Translator),
    /// Never streamed.
    Embeddings,
}

impl SideReader for Reader {
    fn on_event(&mut self, _name: &str, data: &str) -> Result<Option<Chunk>, BackendError> {
        match self {
            Reader::Completions(translator) => translator.on_event(data),
            Reader::Embeddings => Ok(None),
        }
    }

    fn ends(&self, _name: &str, data: &str) -> bool {
        data.trim_start().starts_with("[DONE]")
    }

    fn finish(&mut self) -> Result<Vec<Chunk>, BackendError> {
        match self {
            Reader::Completions(translator) => translator.finish(),
            Reader::Embeddings => Ok(Vec::new()),
        }
    }

    fn on_body(self, body: &[u8]) -> Result<Logged, BackendError> {
        match self {
            Reader::Completions(translator) => translator.on_body(body).map(Logged::Chunks),
            Reader::Embeddings => {
                let answer: Map<String, Value> = serde_json::from_slice(body)
                    .map_err(|e| BackendError::Protocol(format!("not a JSON object: {e}")))?;
                if let Some(detail) = answer.get("error").filter(|e| !e.is_null()) {
                    return Err(error_in_answer(detail));
                }
                let (summary, tokens) = embeddings_summary(&answer);
                Ok(Logged::Summary(summary, tokens))
            }
        }
    }

    fn is_added_usage(&self, data: &str) -> bool {
        is_usage_only(data)
    }
}

/// An error object in a 200 answer, with its `code` as the status when it is one.
fn error_in_answer(detail: &Value) -> BackendError {
    let message = detail
        .get("message")
        .and_then(Value::as_str)
        .or(detail.as_str())
        .map_or_else(|| detail.to_string(), str::to_owned);
    let status = detail
        .get("code")
        .and_then(Value::as_u64)
        .filter(|c| (400..600).contains(c));
    BackendError::Status {
        status: status.map_or(502, |s| s as u16),
        message,
    }
}

/// `/v1/embeddings` for the log: a short description (as for `/api/embed`) and the
/// prompt tokens. Vectors come as float arrays or, with `encoding_format: "base64"`
/// (the openai SDK's default), as base64 of little-endian f32s.
fn embeddings_summary(answer: &Map<String, Value>) -> (String, Option<u64>) {
    let data = answer
        .get("data")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let dimensions = data.first().map_or(0, |entry| match &entry["embedding"] {
        Value::Array(v) => v.len(),
        Value::String(b64) => base64_len(b64) / 4,
        _ => 0,
    });
    let summary = serde_json::json!({ "embeddings": data.len(), "dimensions": dimensions }).to_string();
    let tokens = answer
        .get("usage")
        .and_then(|u| u.get("prompt_tokens"))
        .and_then(Value::as_u64);
    (summary, tokens)
}

/// Decoded length of a base64 text.
fn base64_len(text: &str) -> usize {
    let text = text.trim_end();
    let padding = text.bytes().rev().take_while(|b| *b == b'=').count();
    (text.len() * 3 / 4).saturating_sub(padding)
}

/// The chunk `stream_options.include_usage` adds at the end: `usage` and no choices.
fn is_usage_only(data: &str) -> bool {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(default)]
        choices: Option<Vec<IgnoredAny>>,
        #[serde(default)]
        usage: Option<IgnoredAny>,
    }
    // Cheap test first: every other chunk of the stream goes through here too.
    data.contains("\"usage\"")
        && serde_json::from_str::<Probe>(data)
            .is_ok_and(|p| p.choices.is_some_and(|c| c.is_empty()) && p.usage.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::passthrough::Route as _;

    #[test]
    fn base64_lengths() {
        assert_eq!(base64_len("AAAAAA=="), 4);
        assert_eq!(base64_len("AAAAAAAA"), 6);
        assert_eq!(base64_len("AAAAAAAAAAA="), 8);
    }

    #[test]
    fn usage_only_chunks_are_told_apart() {
        assert!(is_usage_only(
            r#"{"choices":[],"usage":{"prompt_tokens":1},"timings":{}}"#
        ));
        assert!(!is_usage_only(
            r#"{"choices":[{"index":0,"delta":{}}],"usage":{"prompt_tokens":1}}"#
        ));
        assert!(!is_usage_only(r#"{"choices":[],"usage":null}"#));
        assert!(!is_usage_only(r#"{"choices":[{"delta":{"content":"usage"}}]}"#));
        assert!(!is_usage_only("[DONE]"));
    }

    #[test]
    fn prompts_for_the_log() {
        let body = |text: &str| serde_json::from_str::<Map<String, Value>>(text).unwrap();
        let chat = body(r#"{"messages":[{"role":"user","content":"Hi"}]}"#);
        assert_eq!(
            Route::Chat.prompt(&chat).as_deref(),
            Some(r#"[{"role":"user","content":"Hi"}]"#)
        );
        assert_eq!(
            Route::Completions.prompt(&body(r#"{"prompt":"Once"}"#)).as_deref(),
            Some("Once")
        );
        assert_eq!(
            Route::Completions.prompt(&body(r#"{"prompt":["a","b"]}"#)).as_deref(),
            Some(r#"["a","b"]"#)
        );
        assert_eq!(
            Route::Embeddings.prompt(&body(r#"{"input":"x"}"#)).as_deref(),
            Some(r#"["x"]"#)
        );
        assert_eq!(Route::Chat.prompt(&body("{}")), None);
        assert_eq!(Route::Chat.upstream(), "v1/chat/completions");
    }
}
