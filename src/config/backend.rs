//! One backend's section (`backend`, or each entry of `backends`): its type, endpoint,
//! limits, quirks, discovery, health checks and circuit breaker.

use std::fmt;
use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;

use super::{Secret, seconds};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// Any OpenAI-compatible server: llama.cpp `llama-server`, vLLM, LM Studio, OpenRouter.
    Openai,
    /// A real Ollama, passed through.
    Ollama,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Openai => "openai",
            BackendKind::Ollama => "ollama",
        }
    }
}

/// How a backend is told to think or not (Ollama's `think`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ThinkingStyle {
    /// `chat_template_kwargs.enable_thinking` (llama.cpp, vLLM, SGLang), plus
    /// `reasoning_effort` for levels.
    #[default]
    ChatTemplateKwargs,
    /// `reasoning_effort` only (OpenAI, OpenRouter); `think: false` hides thinking.
    ReasoningEffort,
    /// Send nothing; `think: false` still hides thinking.
    None,
}

#[derive(Clone, PartialEq)]
pub struct BackendConfig {
    /// The key in `backends`; for the single `backend` form, its type.
    pub name: String,
    /// Requests sent to the backend at once; the rest queue.
    pub max_concurrent: MaxConcurrent,
    /// Longest wait for a free slot before a 503.
    pub queue_timeout: Duration,
    pub kind: BackendKind,
    pub thinking: ThinkingStyle,
    pub endpoint: Url,
    /// Longest silence tolerated from the backend (connect, or between two reads).
    pub timeout: Duration,
    pub api_key: Option<Secret>,
    /// Extra headers on every request (e.g. OpenRouter's `HTTP-Referer`).
    pub headers: Vec<(String, Secret)>,
    /// Where Ollama's `num_predict` goes: `max_tokens` or `max_completion_tokens`.
    pub max_tokens_field: MaxTokensField,
    /// Ask for `usage` in streamed answers (`stream_options.include_usage`); off for
    /// backends that refuse the key.
    pub stream_options: bool,
    /// Whether the backend answers Anthropic's `/v1/messages` and OpenAI's
    /// `/v1/responses` itself (`serves`).
    pub serves: ServedRoutes,
    /// Whether the backend is a llama-server in router mode, which loads and unloads
    /// models on request (`None`: detected, from its `/props` or its model list).
    pub router: Option<bool>,
    /// Which of the backend's own models clients may ask for by name (`None`: only
    /// mapped names reach this backend).
    pub discover: Option<Discovery>,
    /// How often the backend is checked (`None`: never; then only failures count).
    pub health_interval: Option<Duration>,
    pub breaker: Breaker,
}

/// A client route in another dialect, which a backend may or may not answer itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NativeRoute {
    /// Anthropic's `/v1/messages`.
    Messages,
    /// OpenAI's `/v1/responses`.
    Responses,
}

impl NativeRoute {
    pub fn key(self) -> &'static str {
        match self {
            NativeRoute::Messages => "messages",
            NativeRoute::Responses => "responses",
        }
    }
}

/// Whether a backend answers a [`NativeRoute`] itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Serves {
    /// Asked; a 404 for the route (not for a model) is remembered as "no".
    #[default]
    Auto,
    Yes,
    No,
}

/// `serves`: per [`NativeRoute`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServedRoutes {
    pub messages: Serves,
    pub responses: Serves,
}

impl ServedRoutes {
    pub fn get(&self, route: NativeRoute) -> Serves {
        match route {
            NativeRoute::Messages => self.messages,
            NativeRoute::Responses => self.responses,
        }
    }
}

/// How many requests go to the backend at once (`max_concurrent`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxConcurrent {
    /// Not set: a llama-server gets as many as it has slots (`total_slots` of its
    /// `/props`), any other backend no limit. llama-server serves each connection on one
    /// of a few HTTP threads; more requests at once than it has threads wait behind its
    /// idle keep-alive connections (5 s per wave).
    Auto,
    /// `0`: no limit.
    Unlimited,
    Limit(usize),
}

/// The backend's own models, offered to clients under `prefix` + their name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Discovery {
    pub prefix: String,
    /// Wildcard patterns (`*`, `?`) on the backend's name; empty includes all.
    pub include: Vec<String>,
    pub exclude: Vec<String>,
}

impl Discovery {
    /// Whether the backend's model `name` is offered.
    pub fn offers(&self, name: &str) -> bool {
        let matches = |p: &String| wildmatch::WildMatch::new(p).matches(name);
        (self.include.is_empty() || self.include.iter().any(matches)) && !self.exclude.iter().any(matches)
    }
}

/// Circuit breaker: after `failures` failed requests in a row the backend is skipped
/// for `cooldown`, then one trial request decides whether it is back.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Breaker {
    pub failures: u32,
    pub cooldown: Duration,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MaxTokensField {
    #[default]
    MaxTokens,
    /// OpenAI's newer name, required by its reasoning models.
    MaxCompletionTokens,
}

impl MaxTokensField {
    pub fn as_str(self) -> &'static str {
        match self {
            MaxTokensField::MaxTokens => "max_tokens",
            MaxTokensField::MaxCompletionTokens => "max_completion_tokens",
        }
    }
}

impl BackendConfig {
    /// The endpoint as errors, logs and the admin API show it: credentials masked.
    pub fn shown_endpoint(&self) -> String {
        super::masked_url(&self.endpoint)
    }
}

/// Written by hand so the endpoint prints as a URL, with any password in it masked.
impl fmt::Debug for BackendConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendConfig")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("endpoint", &self.shown_endpoint())
            .field("timeout", &self.timeout)
            .field("api_key", &self.api_key)
            .field("thinking", &self.thinking)
            .field("max_concurrent", &self.max_concurrent)
            .field("queue_timeout", &self.queue_timeout)
            .field("headers", &self.headers)
            .field("max_tokens_field", &self.max_tokens_field)
            .field("stream_options", &self.stream_options)
            .field("serves", &self.serves)
            .field("router", &self.router)
            .field("discover", &self.discover)
            .field("health_interval", &self.health_interval)
            .field("breaker", &self.breaker)
            .finish()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackend {
    /// Read as text so an unknown value gets our message, listing the accepted ones.
    #[serde(rename = "type")]
    pub(super) kind: String,
    pub(super) endpoint: String,
    #[serde(default = "default_timeout")]
    pub(super) timeout: f64,
    #[serde(default)]
    pub(super) api_key: Option<String>,
    #[serde(default)]
    pub(super) thinking: Option<String>,
    /// Requests sent to the backend at once; 0 means no limit, absent means llama-server's
    /// slot count.
    #[serde(default)]
    pub(super) max_concurrent: Option<usize>,
    /// How long a request may wait for a free slot before a 503.
    #[serde(default)]
    pub(super) queue_timeout: Option<f64>,
    #[serde(default)]
    pub(super) headers: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub(super) max_tokens_field: Option<String>,
    #[serde(default = "default_stream_options")]
    pub(super) stream_options: bool,
    #[serde(default)]
    pub(super) serves: RawServes,
    /// `true`, `false`, or absent (detected).
    #[serde(default)]
    pub(super) router: Option<bool>,
    /// `true`, `false`, or `{"prefix", "include", "exclude"}`.
    #[serde(default)]
    pub(super) discover: Option<serde_json::Value>,
    #[serde(default = "default_health_interval")]
    pub(super) health_interval: f64,
    #[serde(default)]
    pub(super) breaker: RawBreaker,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawBreaker {
    pub(super) failures: u32,
    pub(super) cooldown: f64,
}

impl Default for RawBreaker {
    fn default() -> Self {
        RawBreaker {
            failures: 3,
            cooldown: 30.0,
        }
    }
}

/// `serves`: each route `"auto"`, `true` or `false`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawServes {
    pub(super) messages: Option<serde_json::Value>,
    pub(super) responses: Option<serde_json::Value>,
}

fn serves(key: &str, route: NativeRoute, value: Option<serde_json::Value>) -> Result<Serves, String> {
    match value {
        None => Ok(Serves::Auto),
        Some(serde_json::Value::Bool(true)) => Ok(Serves::Yes),
        Some(serde_json::Value::Bool(false)) => Ok(Serves::No),
        Some(serde_json::Value::String(s)) if s == "auto" => Ok(Serves::Auto),
        Some(other) => Err(format!(
            "{key}.serves.{}: expected \"auto\", true or false, got {other}",
            route.key()
        )),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawDiscovery {
    pub(super) prefix: String,
    pub(super) include: Vec<String>,
    pub(super) exclude: Vec<String>,
}

pub(super) fn default_stream_options() -> bool {
    true
}

pub(super) fn default_health_interval() -> f64 {
    15.0
}

/// With a `max_concurrent` set in the config.
pub(super) fn default_queue_timeout() -> f64 {
    30.0
}

pub(super) fn default_timeout() -> f64 {
    300.0
}

/// The endpoint as the user wrote it, unless it holds credentials: then masked.
fn shown_as_written(written: &str, parsed: &Url) -> String {
    let masked = super::masked_url(parsed);
    if masked == parsed.as_str() {
        written.to_owned()
    } else {
        masked
    }
}

/// One backend's section, `key` naming it in messages (`backend` or `backends.<name>`).
pub(super) fn backend(key: &str, name: String, raw: RawBackend) -> Result<BackendConfig, String> {
    let kind = match raw.kind.as_str() {
        "openai" => BackendKind::Openai,
        "ollama" => BackendKind::Ollama,
        other => {
            return Err(format!(
                "{key}.type: '{other}' is not a backend type (use openai or ollama)"
            ));
        }
    };
    let thinking = match raw.thinking.as_deref() {
        None | Some("chat_template_kwargs") => ThinkingStyle::ChatTemplateKwargs,
        Some("reasoning_effort") => ThinkingStyle::ReasoningEffort,
        Some("none") => ThinkingStyle::None,
        Some(other) => {
            return Err(format!(
                "{key}.thinking: '{other}' is not a thinking style (use chat_template_kwargs, reasoning_effort or none)"
            ));
        }
    };
    let endpoint = Url::parse(&raw.endpoint).map_err(|e| {
        // A URL that does not parse cannot be masked: one with credentials is not echoed.
        let shown = if raw.endpoint.contains('@') {
            "(not shown: it holds credentials)"
        } else {
            &raw.endpoint
        };
        format!("{key}.endpoint: '{shown}' is not a URL ({e})")
    })?;
    if !matches!(endpoint.scheme(), "http" | "https") || endpoint.host().is_none() {
        return Err(format!(
            "{key}.endpoint: '{}' must be an http:// or https:// URL with a host",
            shown_as_written(&raw.endpoint, &endpoint)
        ));
    }
    let max_tokens_field = match raw.max_tokens_field.as_deref() {
        None | Some("max_tokens") => MaxTokensField::MaxTokens,
        Some("max_completion_tokens") => MaxTokensField::MaxCompletionTokens,
        Some(other) => {
            return Err(format!(
                "{key}.max_tokens_field: '{other}' is not one of max_tokens, max_completion_tokens"
            ));
        }
    };
    let discover = match raw.discover {
        None | Some(serde_json::Value::Bool(true)) => Some(Discovery::default()),
        Some(serde_json::Value::Bool(false)) => None,
        Some(object @ serde_json::Value::Object(_)) => {
            let d: RawDiscovery = serde_json::from_value(object).map_err(|e| format!("{key}.discover: {e}"))?;
            Some(Discovery {
                prefix: d.prefix,
                include: d.include,
                exclude: d.exclude,
            })
        }
        Some(other) => {
            return Err(format!(
                "{key}.discover: expected true, false or {{\"prefix\", \"include\", \"exclude\"}}, got {other}"
            ));
        }
    };
    for header in raw.headers.keys() {
        if reqwest::header::HeaderName::from_bytes(header.as_bytes()).is_err() {
            return Err(format!("{key}.headers: '{header}' is not a valid header name"));
        }
    }
    let max_concurrent = match raw.max_concurrent {
        None => MaxConcurrent::Auto,
        Some(0) => MaxConcurrent::Unlimited,
        Some(n) => MaxConcurrent::Limit(n),
    };
    let timeout = seconds(&format!("{key}.timeout"), raw.timeout, false)?;
    // The automatic limit keeps queued what llama-server would have queued itself, with
    // no deadline: waiting as long as the backend may stay silent keeps slow answers
    // from turning into 503s.
    let queue_timeout = match (raw.queue_timeout, max_concurrent) {
        (Some(wait), _) => seconds(&format!("{key}.queue_timeout"), wait, true)?,
        (None, MaxConcurrent::Auto) => timeout,
        (None, _) => seconds(&format!("{key}.queue_timeout"), default_queue_timeout(), true)?,
    };
    if raw.router == Some(true) && kind == BackendKind::Ollama {
        return Err(format!(
            "{key}.router: a real Ollama manages its own models; router applies to openai backends (llama-server)"
        ));
    }
    if raw.breaker.failures == 0 {
        return Err(format!("{key}.breaker.failures: must be at least 1"));
    }
    Ok(BackendConfig {
        name,
        kind,
        thinking,
        max_concurrent,
        queue_timeout,
        endpoint,
        timeout,
        api_key: raw.api_key.filter(|k| !k.is_empty()).map(Secret),
        headers: raw.headers.into_iter().map(|(k, v)| (k, Secret(v))).collect(),
        max_tokens_field,
        stream_options: raw.stream_options,
        serves: ServedRoutes {
            messages: serves(key, NativeRoute::Messages, raw.serves.messages)?,
            responses: serves(key, NativeRoute::Responses, raw.serves.responses)?,
        },
        router: raw.router,
        discover,
        health_interval: Some(seconds(&format!("{key}.health_interval"), raw.health_interval, true)?)
            .filter(|d| !d.is_zero()),
        breaker: Breaker {
            failures: raw.breaker.failures,
            cooldown: seconds(&format!("{key}.breaker.cooldown"), raw.breaker.cooldown, true)?,
        },
    })
}
