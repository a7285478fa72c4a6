//! A chat longer than the backend's context: reading llama.cpp's refusal, and cutting
//! the history to fit as Ollama does (the oldest messages go; system messages and the
//! last message stay). Pure: no I/O.

use serde::Deserialize;

use crate::backend::BackendError;
use crate::backend::request::Message;

/// The share of the context a cut history aims at: the counts are estimated from the
/// text, and the answer needs room too.
const TARGET_SHARE: f64 = 0.9;
/// What a message costs beyond its text (role markers, template), in characters.
const MESSAGE_OVERHEAD: usize = 16;

/// llama.cpp's 400 for a prompt that does not fit: `{"error": {"type":
/// "exceed_context_size_error", "message", "n_prompt_tokens", "n_ctx"}}`. Other answers,
/// and this one without its counts (older llama.cpp), are not it.
pub fn context_exceeded(status: u16, body: &[u8]) -> Option<BackendError> {
    #[derive(Deserialize)]
    struct Answer {
        error: Refusal,
    }
    #[derive(Deserialize)]
    struct Refusal {
        #[serde(rename = "type")]
        kind: String,
        message: String,
        n_prompt_tokens: u64,
        n_ctx: u64,
    }
    let refusal = serde_json::from_slice::<Answer>(body).ok()?.error;
    (status == 400 && refusal.kind == "exceed_context_size_error").then_some(BackendError::ContextExceeded {
        message: refusal.message,
        prompt_tokens: refusal.n_prompt_tokens,
        context: refusal.n_ctx,
    })
}

/// The history cut so that, by the backend's count of `prompt_tokens` for all of it, it
/// should fit `context`: the oldest messages other than system messages go, never the
/// last one, and a tool result whose call went goes with it. `None` when nothing is left
/// to drop. Each call drops at least one message, so retrying with it ends.
pub fn fit_to_context(messages: &[Message], prompt_tokens: u64, context: u64) -> Option<Vec<Message>> {
    let last = messages.len().checked_sub(1)?;
    let total: usize = messages.iter().map(weight).sum();
    let target = context as f64 * TARGET_SHARE;
    // The tokens to shed, in the characters they are estimated to take.
    let excess = (prompt_tokens as f64 - target).max(0.0) * total as f64 / prompt_tokens.max(1) as f64;
    let mut shed = 0.0;
    let mut cut = None;
    for (i, message) in messages[..last].iter().enumerate() {
        if message.role == "system" {
            continue;
        }
        cut = Some(i);
        shed += weight(message) as f64;
        if shed >= excess {
            break;
        }
    }
    let mut start = cut? + 1;
    while start < last && messages[start].role == "tool" {
        start += 1;
    }
    Some(
        messages
            .iter()
            .enumerate()
            .filter(|(i, m)| *i >= start || m.role == "system")
            .map(|(_, m)| m.clone())
            .collect(),
    )
}

/// A message's size as the prompt spends it, roughly: its texts and tool calls.
fn weight(message: &Message) -> usize {
    let calls: usize = message
        .tool_calls
        .iter()
        .flatten()
        .map(|c| c.function.name.len() + c.function.arguments.to_string().len())
        .sum();
    MESSAGE_OVERHEAD + message.content.len() + message.thinking.as_ref().map_or(0, String::len) + calls
}
