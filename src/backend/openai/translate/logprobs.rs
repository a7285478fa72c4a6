//! OpenAI log probabilities → Ollama's: one entry per generated token, its alternatives
//! cut to what the client asked for. Pure: no I/O.

use super::super::types::ChoiceLogprobs;
use crate::backend::{Logprob, TokenLogprob};

/// What OpenAI writes for a token too unlikely to have a number: a missing log
/// probability becomes it, as JSON has no `-inf`.
const UNLIKELY: f64 = -9999.0;

/// A choice's log probabilities with at most `top` alternatives per position. Reads
/// chat's `content` list (llama.cpp's `/v1/completions` too) and the legacy completions
/// columns `tokens`, `token_logprobs`, `top_logprobs` (vLLM, OpenAI).
pub(super) fn choice_logprobs(logprobs: ChoiceLogprobs, top: usize) -> Vec<Logprob> {
    if let Some(content) = logprobs.content {
        return content
            .into_iter()
            // The end-of-generation token (llama.cpp reports it in whole answers and in
            // completions streams) has no text to go with: left out, as Ollama does.
            .filter(|entry| {
                entry.token.as_deref().is_some_and(|t| !t.is_empty())
                    || entry.bytes.as_ref().is_some_and(|b| !b.is_empty())
            })
            .map(|entry| {
                let mut alternatives = entry.top_logprobs.unwrap_or_default();
                alternatives.truncate(top);
                let chosen = token(entry.token, entry.logprob, entry.bytes);
                Logprob {
                    token: chosen.token,
                    logprob: chosen.logprob,
                    bytes: chosen.bytes,
                    top_logprobs: alternatives
                        .into_iter()
                        .map(|a| token(a.token, a.logprob, a.bytes))
                        .collect(),
                }
            })
            .collect();
    }
    let values = logprobs.token_logprobs.unwrap_or_default();
    let mut tops = logprobs.top_logprobs.unwrap_or_default().into_iter();
    logprobs
        .tokens
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, text)| {
            let mut alternatives: Vec<TokenLogprob> = tops
                .next()
                .flatten()
                .unwrap_or_default()
                .into_iter()
                .map(|(text, logprob)| token(Some(text), logprob.as_f64(), None))
                .collect();
            // A JSON object has no order to trust: likeliest first, as in chat's lists.
            alternatives.sort_by(|a, b| b.logprob.total_cmp(&a.logprob));
            alternatives.truncate(top);
            let chosen = token(Some(text), values.get(i).copied().flatten(), None);
            Logprob {
                token: chosen.token,
                logprob: chosen.logprob,
                bytes: chosen.bytes,
                top_logprobs: alternatives,
            }
        })
        .collect()
}

/// A token with its UTF-8 bytes (the text's own when the backend sent none).
fn token(text: Option<String>, logprob: Option<f64>, bytes: Option<Vec<u8>>) -> TokenLogprob {
    let text = text.unwrap_or_default();
    TokenLogprob {
        bytes: bytes.unwrap_or_else(|| text.as_bytes().to_vec()),
        token: text,
        logprob: logprob.filter(|l| l.is_finite()).unwrap_or(UNLIKELY),
    }
}
