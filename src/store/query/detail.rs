//! One row's detail as the admin API and the replay read it: the stored texts, with
//! the JSON ones parsed back.

use serde::Serialize;
use serde_json::Value;

/// Everything stored about one row; `prompt` (where the endpoint stores JSON) and
/// `tool_calls` are parsed back into JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogDetail {
    pub id: i64,
    pub timestamp: String,
    pub request_id: Option<String>,
    pub endpoint: String,
    pub method: String,
    pub model: Option<String>,
    pub backend_model: Option<String>,
    pub backend_type: Option<String>,
    pub status_code: Option<i64>,
    pub error: Option<String>,
    pub stream: Option<bool>,
    pub done_reason: Option<String>,
    /// Chat messages, embed inputs or a forwarded body as JSON; a generate prompt (or
    /// text cut short by `max_body_bytes`) as a string.
    pub prompt: Option<Value>,
    pub response: Option<String>,
    pub thinking: Option<String>,
    pub tool_calls: Option<Value>,
    pub latency_ms: Option<i64>,
    pub ttft_ms: Option<f64>,
    pub prompt_eval_ms: Option<f64>,
    pub eval_ms: Option<f64>,
    pub tokens_per_second: Option<f64>,
    pub prompt_tokens: Option<i64>,
    pub completion_tokens: Option<i64>,
    pub tokens_estimated: bool,
    pub request_bytes: Option<i64>,
    pub response_bytes: Option<i64>,
    pub client_addr: Option<String>,
    /// The configured id of the client API key that made the request.
    pub client_key: Option<String>,
    pub cost: Option<f64>,
    pub in_flight: bool,
    pub starred: bool,
    /// The row this request replayed, and the rows that replayed this one.
    pub replay_of: Option<i64>,
    pub replays: Vec<i64>,
    /// With `database.store_bodies`: the client's body (JSON when it parses), and the
    /// backend exchange as it went over the wire.
    pub request_body: Option<Value>,
    pub backend_request: Option<String>,
    pub backend_response: Option<String>,
    /// The backend's name in config, and the targets that failed before it (JSON).
    pub backend: Option<String>,
    pub attempts: Option<Value>,
    pub cache_hit: bool,
}

/// One row as selected ([`super::super::schema::DETAIL_COLUMNS`]).
#[derive(sqlx::FromRow)]
pub(super) struct DetailRow {
    id: i64,
    timestamp: String,
    request_id: Option<String>,
    endpoint: String,
    method: String,
    model: Option<String>,
    backend_model: Option<String>,
    backend_type: Option<String>,
    status_code: Option<i64>,
    error: Option<String>,
    stream: Option<bool>,
    done_reason: Option<String>,
    prompt: Option<String>,
    response: Option<String>,
    thinking: Option<String>,
    tool_calls: Option<String>,
    latency_ms: Option<i64>,
    ttft_ms: Option<f64>,
    prompt_eval_ms: Option<f64>,
    eval_ms: Option<f64>,
    tokens_per_second: Option<f64>,
    prompt_tokens: Option<i64>,
    completion_tokens: Option<i64>,
    tokens_estimated: bool,
    request_bytes: Option<i64>,
    response_bytes: Option<i64>,
    client_addr: Option<String>,
    client_key: Option<String>,
    cost: Option<f64>,
    in_flight: bool,
    starred: bool,
    replay_of: Option<i64>,
    request_body: Option<String>,
    backend_request: Option<String>,
    backend_response: Option<String>,
    backend: Option<String>,
    attempts: Option<String>,
    cache_hit: bool,
}

/// Endpoints whose `prompt` column is plain text, not JSON.
const TEXT_PROMPTS: [&str; 2] = ["/api/generate", "/api/embeddings"];

impl From<DetailRow> for LogDetail {
    fn from(r: DetailRow) -> LogDetail {
        let as_json = |text: String| serde_json::from_str(&text).unwrap_or(Value::String(text));
        let prompt = r.prompt.map(|p| {
            if TEXT_PROMPTS.contains(&r.endpoint.as_str()) {
                Value::String(p)
            } else {
                as_json(p)
            }
        });
        LogDetail {
            id: r.id,
            timestamp: r.timestamp,
            request_id: r.request_id,
            endpoint: r.endpoint,
            method: r.method,
            model: r.model,
            backend_model: r.backend_model,
            backend_type: r.backend_type,
            status_code: r.status_code,
            error: r.error,
            stream: r.stream,
            done_reason: r.done_reason,
            prompt,
            response: r.response,
            thinking: r.thinking,
            tool_calls: r.tool_calls.map(as_json),
            latency_ms: r.latency_ms,
            ttft_ms: r.ttft_ms,
            prompt_eval_ms: r.prompt_eval_ms,
            eval_ms: r.eval_ms,
            tokens_per_second: r.tokens_per_second,
            prompt_tokens: r.prompt_tokens,
            completion_tokens: r.completion_tokens,
            tokens_estimated: r.tokens_estimated,
            request_bytes: r.request_bytes,
            response_bytes: r.response_bytes,
            client_addr: r.client_addr,
            client_key: r.client_key,
            cost: r.cost,
            in_flight: r.in_flight,
            starred: r.starred,
            replay_of: r.replay_of,
            replays: Vec::new(),
            request_body: r.request_body.map(as_json),
            backend_request: r.backend_request,
            backend_response: r.backend_response,
            backend: r.backend,
            attempts: r.attempts.map(as_json),
            cache_hit: r.cache_hit,
        }
    }
}
