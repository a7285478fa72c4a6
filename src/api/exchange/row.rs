//! The log row of a finished exchange: what the answer was, its token counts (the
//! backend's, else estimated), its timings and its cost. Pure: no I/O.

use std::time::Instant;

use super::answer::AnswerSoFar;
use crate::config::Price;
use crate::models::normalize;
use crate::store::LogRecord;

/// Fills `r`, the row of a request received at `started`, from its answer.
pub fn complete(r: &mut LogRecord, answer: AnswerSoFar, started: Instant, pricing: &[(String, Price)]) {
    let metrics = answer.final_metrics(started);
    r.latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    if r.error.is_none() || !answer.content.is_empty() {
        r.response = Some(answer.content);
    }
    if !answer.thinking.is_empty() {
        r.thinking = Some(answer.thinking);
    }
    if !answer.tool_calls.is_empty() {
        r.tool_calls = serde_json::to_string(&answer.tool_calls).ok();
    }
    if let Some(done) = &answer.done {
        r.done_reason = Some(metrics.done_reason.clone());
        r.prompt_tokens = done.prompt_tokens;
        r.completion_tokens = done.completion_tokens;
        // No counts from the backend: about four characters a token, one token a chunk.
        // (An answer without output, like embeddings, has no completion to count.)
        if r.prompt_tokens.is_none() {
            r.tokens_estimated = true;
            let prompt_chars = r.prompt.as_deref().map_or(0, |p| p.chars().count()) as u64;
            r.prompt_tokens = Some(prompt_chars.div_ceil(4));
        }
        if r.completion_tokens.is_none() && answer.output_chunks > 0 {
            r.tokens_estimated = true;
            r.completion_tokens = Some(answer.output_chunks);
        }
        r.prompt_eval_ms = Some(metrics.prompt_eval_duration as f64 / 1e6);
        r.eval_ms = Some(metrics.eval_duration as f64 / 1e6);
        r.tokens_per_second = r
            .completion_tokens
            .filter(|_| metrics.eval_duration > 0)
            .map(|n| n as f64 / (metrics.eval_duration as f64 / 1e9));
    }
    r.ttft_ms = answer.first_output.map(|t| (t - started).as_secs_f64() * 1000.0);
    r.cost = price(pricing, r).map(|(input, output)| {
        (r.prompt_tokens.unwrap_or(0) as f64 * input + r.completion_tokens.unwrap_or(0) as f64 * output) / 1e6
    });
}

/// The configured price for the row's model: the client's name first, then the backend's.
fn price(pricing: &[(String, Price)], r: &LogRecord) -> Option<(f64, f64)> {
    if pricing.is_empty() {
        return None;
    }
    [r.model.as_deref(), r.backend_model.as_deref()]
        .into_iter()
        .flatten()
        .find_map(|name| {
            let key = normalize(name);
            pricing
                .iter()
                .find(|(model, _)| normalize(model) == key)
                .map(|(_, p)| (p.input, p.output))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Completion;

    #[test]
    fn counts_are_estimated_when_the_backend_gives_none_and_priced_by_either_name() {
        let mut row = LogRecord {
            model: Some("Alias".into()),
            backend_model: Some("real".into()),
            prompt: Some("12345678".into()),
            ..Default::default()
        };
        let answer = AnswerSoFar {
            content: "hi".into(),
            output_chunks: 3,
            done: Some(Completion::default()),
            ..Default::default()
        };
        let pricing = [(
            "real:latest".to_owned(),
            Price {
                input: 1e6,
                output: 2e6,
            },
        )];
        complete(&mut row, answer, Instant::now(), &pricing);
        assert_eq!(
            (
                row.response.as_deref(),
                row.prompt_tokens,
                row.completion_tokens,
                row.tokens_estimated
            ),
            (Some("hi"), Some(2), Some(3), true)
        );
        assert_eq!(row.done_reason.as_deref(), Some("stop"));
        // 2 prompt tokens at 1 a token, 3 completion tokens at 2.
        assert_eq!(row.cost, Some(8.0));
    }

    #[test]
    fn a_failed_request_without_output_keeps_no_response() {
        let mut row = LogRecord {
            error: Some("backend unreachable".into()),
            ..Default::default()
        };
        complete(&mut row, AnswerSoFar::default(), Instant::now(), &[]);
        assert_eq!((row.response, row.prompt_tokens, row.cost), (None, None, None));
    }
}
