//! Pure helpers for the pass-through: renaming the model in a JSON body or NDJSON
//! line, and reading an Ollama answer line into a neutral chunk.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::backend::request::ToolCall;
use crate::backend::{BackendError, Chunk, Completion, Delta, Logprob};

/// Rewrites the top-level `model` (and legacy `name`) of a JSON object. Bodies that
/// are not objects are left alone; key order and unknown keys survive.
pub fn rename_model(body: &[u8], model: &str) -> Result<Bytes, BackendError> {
    let mut object: Map<String, Value> =
        serde_json::from_slice(body).map_err(|e| BackendError::Protocol(format!("not a JSON object ({e})")))?;
    for key in ["model", "name"] {
        if object.contains_key(key) {
            object.insert(key.into(), model.into());
        }
    }
    if !object.contains_key("model") && !object.contains_key("name") {
        object.insert("model".into(), model.into());
    }
    serde_json::to_vec(&object)
        .map(Bytes::from)
        .map_err(|e| BackendError::Protocol(e.to_string()))
}

/// `/api/embed`'s answer → vectors in input order.
pub fn ollama_embed_to_vectors(body: &[u8], expected: usize) -> Result<crate::backend::Embeddings, BackendError> {
    #[derive(Deserialize)]
    struct EmbedAnswer {
        embeddings: Vec<Vec<f64>>,
        #[serde(default)]
        prompt_eval_count: Option<u64>,
    }
    let answer: EmbedAnswer = serde_json::from_slice(body).map_err(|e| {
        let text = String::from_utf8_lossy(body);
        let shown: String = text.chars().take(200).collect();
        BackendError::Protocol(format!("unreadable /api/embed answer ({e}): {shown}"))
    })?;
    if answer.embeddings.len() != expected {
        return Err(BackendError::Protocol(format!(
            "asked for {expected} embeddings, got {}",
            answer.embeddings.len()
        )));
    }
    Ok(crate::backend::Embeddings {
        vectors: answer.embeddings,
        prompt_tokens: answer.prompt_eval_count,
    })
}

#[derive(Debug, Default, Deserialize)]
struct AnswerLine {
    #[serde(default)]
    message: Option<AnswerMessage>,
    #[serde(default)]
    response: Option<String>,
    #[serde(default)]
    thinking: Option<String>,
    #[serde(default)]
    done: bool,
    #[serde(default)]
    done_reason: Option<String>,
    #[serde(default)]
    error: Option<Value>,
    #[serde(default)]
    total_duration: Option<u64>,
    #[serde(default)]
    load_duration: Option<u64>,
    #[serde(default)]
    prompt_eval_count: Option<u64>,
    #[serde(default)]
    prompt_eval_duration: Option<u64>,
    #[serde(default)]
    eval_count: Option<u64>,
    #[serde(default)]
    eval_duration: Option<u64>,
    #[serde(default)]
    logprobs: Option<Vec<Logprob>>,
}

#[derive(Debug, Default, Deserialize)]
struct AnswerMessage {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    thinking: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCall>>,
}

/// One line of an Ollama chat/generate answer. The line itself is kept for the client
/// (renamed to `client_model` when the names differ).
pub fn answer_line_to_chunk(line: &[u8], client_model: &str, backend_model: &str) -> Result<Chunk, BackendError> {
    let parsed: AnswerLine = serde_json::from_slice(line).map_err(|e| {
        BackendError::Protocol(format!(
            "unreadable line from Ollama ({e}): {}",
            String::from_utf8_lossy(line)
        ))
    })?;
    if let Some(error) = parsed.error {
        let message = error.as_str().map(str::to_owned).unwrap_or_else(|| error.to_string());
        return Err(BackendError::Status { status: 502, message });
    }
    let raw = if client_model == backend_model {
        Bytes::copy_from_slice(line)
    } else {
        rename_model(line, client_model)?
    };
    let message = parsed.message.unwrap_or_default();
    let delta = Delta {
        content: message.content.or(parsed.response).unwrap_or_default(),
        thinking: message.thinking.or(parsed.thinking).unwrap_or_default(),
        tool_calls: message.tool_calls.unwrap_or_default(),
        logprobs: parsed.logprobs.unwrap_or_default(),
    };
    let done = parsed.done.then(|| Completion {
        done_reason: parsed.done_reason.unwrap_or_else(|| "stop".into()),
        prompt_tokens: parsed.prompt_eval_count,
        completion_tokens: parsed.eval_count,
        prompt_eval_ns: parsed.prompt_eval_duration,
        eval_ns: parsed.eval_duration,
        total_ns: parsed.total_duration,
        load_ns: parsed.load_duration,
    });
    Ok(Chunk {
        delta,
        done,
        raw: Some(raw),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_embed_answers_and_refuses_a_wrong_count() {
        let body = br#"{"model":"m","embeddings":[[0.6,0.8],[1.0,0.0]],"prompt_eval_count":4}"#;
        let embeddings = ollama_embed_to_vectors(body, 2).unwrap();
        assert_eq!(embeddings.vectors, vec![vec![0.6, 0.8], vec![1.0, 0.0]]);
        assert_eq!(embeddings.prompt_tokens, Some(4));
        assert_eq!(
            ollama_embed_to_vectors(body, 3),
            Err(BackendError::Protocol("asked for 3 embeddings, got 2".into()))
        );
    }

    #[test]
    fn renames_model_and_keeps_unknown_keys_in_order() {
        let out = rename_model(br#"{"model":"alias","x":{"y":1},"stream":false}"#, "real").unwrap();
        assert_eq!(&out[..], br#"{"model":"real","x":{"y":1},"stream":false}"#);
    }

    #[test]
    fn reads_a_final_line_with_metrics() {
        let line = br#"{"model":"real","created_at":"2025-01-01T00:00:00Z","message":{"role":"assistant","content":""},"done":true,"done_reason":"stop","total_duration":10,"load_duration":1,"prompt_eval_count":3,"prompt_eval_duration":4,"eval_count":5,"eval_duration":6}"#;
        let chunk = answer_line_to_chunk(line, "alias", "real").unwrap();
        let done = chunk.done.unwrap();
        assert_eq!(
            (done.prompt_tokens, done.completion_tokens, done.total_ns),
            (Some(3), Some(5), Some(10))
        );
        let raw: Value = serde_json::from_slice(&chunk.raw.unwrap()).unwrap();
        assert_eq!(raw["model"], "alias");
        assert_eq!(raw["eval_duration"], 6);
    }

    #[test]
    fn same_name_forwards_the_exact_bytes() {
        let line = br#"{"model":"m","response":"hi","done":false}"#;
        let chunk = answer_line_to_chunk(line, "m", "m").unwrap();
        assert_eq!(&chunk.raw.unwrap()[..], &line[..]);
        assert_eq!(chunk.delta.content, "hi");
    }

    /// Ollama's log probabilities pass through in the line, and are read for the record.
    #[test]
    fn logprobs_go_through_and_are_read() {
        let line = br#"{"model":"m","response":"Hi","done":false,"logprobs":[{"token":"Hi","logprob":-0.5,"bytes":[72,105],"top_logprobs":[{"token":"Hi","logprob":-0.5}]}]}"#;
        let chunk = answer_line_to_chunk(line, "m", "m").unwrap();
        assert_eq!(&chunk.raw.unwrap()[..], &line[..]);
        assert_eq!(
            chunk.delta.logprobs,
            [Logprob {
                token: "Hi".into(),
                logprob: -0.5,
                bytes: b"Hi".to_vec(),
                top_logprobs: vec![crate::backend::TokenLogprob {
                    token: "Hi".into(),
                    logprob: -0.5,
                    bytes: vec![],
                }],
            }]
        );
    }

    #[test]
    fn an_error_line_is_an_error() {
        let err = answer_line_to_chunk(br#"{"error":"boom"}"#, "m", "m").unwrap_err();
        assert_eq!(err.to_string(), "boom");
    }
}
