//! `/api/embed` and the legacy `/api/embeddings`, over `/v1/embeddings` for OpenAI
//! backends and passed through for Ollama ones.

use std::time::Instant;

use axum::Json;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::models_routes::Started;
use crate::AppState;
use crate::api::exchange::{ExchangeError, Recorder};
use crate::backend::{BackendError, Embeddings, Failover, Routed, Unrouted, Upstream};
use crate::models::Resolved;

#[derive(Debug, Deserialize)]
pub struct EmbedRequest {
    #[serde(default)]
    model: Option<String>,
    /// A string or an array of strings; checked by hand so the error says so.
    #[serde(default)]
    input: Option<Value>,
    /// Ollama truncates over-long inputs by default; backends here decide for themselves.
    #[serde(default)]
    #[expect(dead_code, reason = "accepted for compatibility; the backend applies its own limit")]
    truncate: Option<bool>,
    #[serde(default)]
    dimensions: Option<usize>,
    /// How long a model a llama-server router loads stays loaded once idle.
    #[serde(default)]
    keep_alive: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub struct LegacyEmbeddingsRequest {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    keep_alive: Option<Value>,
}

pub async fn embed_handler(started: Started<EmbedRequest>) -> Response {
    let Started {
        state,
        mut recorder,
        request,
    } = started;
    let inputs = match input_strings(request.input) {
        Ok(inputs) => inputs,
        Err(e) => return recorder.reject(e),
    };
    recorder.request(request.model.as_deref(), serde_json::to_string(&inputs).ok(), false);
    let started = Instant::now();
    let asked = embed(
        &state,
        request.model.as_deref(),
        &inputs,
        request.keep_alive.as_ref(),
        &mut recorder,
    );
    let (resolved, vectors, prompt_tokens) = match asked.await {
        Ok(r) => r,
        Err(e) => return recorder.reject(e),
    };
    let vectors: Vec<Vec<f64>> = vectors.into_iter().map(|v| normalized(v, request.dimensions)).collect();
    recorder.finish_with(summary(&vectors), prompt_tokens);
    Json(json!({
        "model": resolved.client,
        "embeddings": vectors,
        "total_duration": u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX),
        "load_duration": 0,
        "prompt_eval_count": prompt_tokens.unwrap_or(0),
    }))
    .into_response()
}

/// The legacy route: one `prompt`, one `embedding`, not normalised (as Ollama does).
pub async fn embeddings_handler(started: Started<LegacyEmbeddingsRequest>) -> Response {
    let Started {
        state,
        mut recorder,
        request,
    } = started;
    let inputs: Vec<String> = request.prompt.into_iter().filter(|p| !p.is_empty()).collect();
    recorder.request(request.model.as_deref(), inputs.first().cloned(), false);
    let asked = embed(
        &state,
        request.model.as_deref(),
        &inputs,
        request.keep_alive.as_ref(),
        &mut recorder,
    );
    match asked.await {
        Ok((_, vectors, prompt_tokens)) => {
            recorder.finish_with(summary(&vectors), prompt_tokens);
            let embedding = vectors.into_iter().next().unwrap_or_default();
            Json(json!({ "embedding": embedding })).into_response()
        }
        Err(e) => recorder.reject(e),
    }
}

fn input_strings(input: Option<Value>) -> Result<Vec<String>, ExchangeError> {
    let invalid =
        || ExchangeError::BadRequest("invalid input type: 'input' must be a string or an array of strings".into());
    match input {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) if s.is_empty() => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s]),
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|item| match item {
                Value::String(s) => Ok(s),
                _ => Err(invalid()),
            })
            .collect(),
        Some(_) => Err(invalid()),
    }
}

/// Resolves the model and asks its targets in turn; no inputs is Ollama's "load" and
/// asks nothing.
async fn embed(
    state: &AppState,
    model: Option<&str>,
    inputs: &[String],
    keep_alive: Option<&Value>,
    recorder: &mut Recorder,
) -> Result<(Resolved, Vec<Vec<f64>>, Option<u64>), ExchangeError> {
    let resolved = state.models.resolve(model, &state.backends).await?;
    recorder.resolved(&resolved);
    if inputs.is_empty() {
        return Ok((resolved, Vec::new(), Some(0)));
    }
    let failover = Failover::new(&state.backends, &resolved.targets);
    let routed = failover.run(&state.telemetry.cut_off, |upstream, model| async move {
        embed_on(upstream, &model, inputs, keep_alive).await
    });
    match routed.await {
        Ok(Routed {
            upstream,
            model,
            answer: embeddings,
            attempts,
        }) => {
            recorder.routed(upstream, &attempts);
            recorder.backend_model(&model);
            Ok((resolved, embeddings.vectors, embeddings.prompt_tokens))
        }
        Err(Unrouted { error, attempts }) => {
            recorder.failed_attempts(&attempts);
            Err(error.into())
        }
    }
}

async fn embed_on(
    upstream: &Upstream,
    model: &str,
    inputs: &[String],
    keep_alive: Option<&Value>,
) -> Result<Embeddings, BackendError> {
    // One of the backend's slots, held while it computes.
    let _slot = upstream.slot().await?;
    upstream.client.embed(model, inputs, keep_alive).await
}

/// Ollama's `/api/embed` returns unit vectors; with `dimensions` it cuts first, then
/// normalises again.
fn normalized(mut v: Vec<f64>, dimensions: Option<usize>) -> Vec<f64> {
    if let Some(d) = dimensions.filter(|d| *d > 0) {
        v.truncate(d);
    }
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

fn summary(vectors: &[Vec<f64>]) -> String {
    let dims = vectors.first().map_or(0, Vec::len);
    let mut s = Map::new();
    s.insert("embeddings".into(), vectors.len().into());
    s.insert("dimensions".into(), dims.into());
    Value::Object(s).to_string()
}

#[cfg(test)]
mod tests {
    use super::normalized;

    #[test]
    fn vectors_are_unit_length_and_cut_before_normalising() {
        assert_eq!(normalized(vec![3.0, 4.0], None), vec![0.6, 0.8]);
        assert_eq!(normalized(vec![3.0, 4.0, 12.0], Some(2)), vec![0.6, 0.8]);
        assert_eq!(normalized(vec![0.0, 0.0], None), vec![0.0, 0.0]);
    }
}
