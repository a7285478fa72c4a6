//! The answer so far, gathered from the chunks as they pass: its text, thinking and tool
//! calls, when output began and how many chunks carried it, and how it ended. Both the
//! `stream: false` reply and the log row are read from it.

use std::time::Instant;

use serde::Serialize;

use crate::backend::request::ToolCall;
use crate::backend::{Chunk, Completion, Delta, Logprob};

/// How an answer ended and what it took, as the last chunk reports it: the backend's
/// numbers where it gave them, else what was measured. All integers, durations in ns; the
/// names are Ollama's (its final chunk carries them as they are).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FinalMetrics {
    pub done_reason: String,
    pub total_duration: u64,
    pub load_duration: u64,
    pub prompt_eval_count: u64,
    pub prompt_eval_duration: u64,
    pub eval_count: u64,
    pub eval_duration: u64,
}

#[derive(Debug, Default)]
pub struct AnswerSoFar {
    pub content: String,
    pub thinking: String,
    pub tool_calls: Vec<ToolCall>,
    /// Every token's logprobs, kept only while someone will read them ([`skip_logprobs`](AnswerSoFar::skip_logprobs)).
    pub logprobs: Vec<Logprob>,
    /// No one reads `logprobs`: a streamed answer (each chunk carried its own) that no
    /// cache slot keeps. A long answer with `top_logprobs` 20 would hold tens of MB.
    pub(super) skip_logprobs: bool,
    /// When the first chunk with output came.
    pub first_output: Option<Instant>,
    /// Chunks that carried output (a token each, when the backend counts none).
    pub output_chunks: u64,
    /// The backend's word on how it ended, from the last chunk.
    pub done: Option<Completion>,
}

impl AnswerSoFar {
    /// Adds a chunk; returns when it carried output (`None` for an empty one).
    pub fn observe(&mut self, chunk: &Chunk) -> Option<Instant> {
        let delta = &chunk.delta;
        let output = (!delta.is_empty()).then(|| {
            let now = Instant::now();
            self.first_output.get_or_insert(now);
            self.output_chunks += 1;
            now
        });
        self.content.push_str(&delta.content);
        self.thinking.push_str(&delta.thinking);
        self.tool_calls.extend(delta.tool_calls.iter().cloned());
        if !self.skip_logprobs {
            self.logprobs.extend(delta.logprobs.iter().cloned());
        }
        if let Some(done) = &chunk.done {
            self.done = Some(done.clone());
        }
        output
    }

    /// Whether the logprobs are left out: only the `stream: false` reply and the cache
    /// read them.
    pub fn skip_logprobs(&mut self, skip: bool) {
        self.skip_logprobs = skip;
    }

    /// The whole answer as one delta (a `stream: false` reply).
    pub fn whole(&self) -> Delta {
        Delta {
            content: self.content.clone(),
            thinking: self.thinking.clone(),
            tool_calls: self.tool_calls.clone(),
            logprobs: self.logprobs.clone(),
        }
    }

    /// The final chunk's fields for a request received at `started`: the backend's
    /// numbers where it reported them, otherwise what was measured (time to first
    /// output, output chunks).
    pub fn final_metrics(&self, started: Instant) -> FinalMetrics {
        let done = self.done.clone().unwrap_or_default();
        let now = Instant::now();
        let first = self.first_output.unwrap_or(now);
        let ns = |d: std::time::Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        FinalMetrics {
            done_reason: if done.done_reason.is_empty() {
                "stop".into()
            } else {
                done.done_reason
            },
            total_duration: done.total_ns.unwrap_or_else(|| ns(now - started)),
            load_duration: done.load_ns.unwrap_or(0),
            prompt_eval_count: done.prompt_tokens.unwrap_or(0),
            prompt_eval_duration: done.prompt_eval_ns.unwrap_or_else(|| ns(first - started)),
            eval_count: done.completion_tokens.unwrap_or(self.output_chunks),
            eval_duration: done.eval_ns.unwrap_or_else(|| ns(now - first)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_gathered_and_counted_and_the_end_kept() {
        let mut answer = AnswerSoFar::default();
        let text = |t: &str| Chunk {
            delta: Delta {
                content: t.into(),
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(answer.observe(&text("Hel")).is_some());
        assert!(
            answer.observe(&Chunk::default()).is_none(),
            "an empty chunk is no output"
        );
        assert!(answer.observe(&text("lo")).is_some());
        let end = Chunk {
            done: Some(Completion {
                done_reason: "length".into(),
                completion_tokens: Some(7),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(answer.observe(&end).is_none());
        assert_eq!((answer.content.as_str(), answer.output_chunks), ("Hello", 2));
        assert_eq!(answer.whole().content, "Hello");
        let metrics = answer.final_metrics(Instant::now());
        // The backend's count wins over the chunks counted.
        assert_eq!((metrics.done_reason.as_str(), metrics.eval_count), ("length", 7));
    }

    #[test]
    fn logprobs_are_kept_only_for_a_reader() {
        let token = Chunk {
            delta: Delta {
                content: "Hi".into(),
                logprobs: vec![Logprob {
                    token: "Hi".into(),
                    logprob: -0.5,
                    ..Default::default()
                }],
                ..Default::default()
            },
            ..Default::default()
        };
        let mut kept = AnswerSoFar::default();
        kept.observe(&token);
        assert_eq!(kept.whole().logprobs, token.delta.logprobs);
        let mut skipped = AnswerSoFar::default();
        skipped.skip_logprobs(true);
        skipped.observe(&token);
        assert_eq!((skipped.content.as_str(), skipped.logprobs.len()), ("Hi", 0));
    }
}
