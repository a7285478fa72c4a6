//! Loads `config.json` (plus `OLLABRIDGE__SECTION__KEY` environment overrides) into a
//! validated [`Config`]. Everything that can be wrong with a config is found here, at
//! start-up, and reported with the file, the key and the problem.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;

use crate::json::JsonError;

/// A problem with the configuration; start-up stops with this message.
#[derive(Debug, thiserror::Error)]
#[error("invalid config {file}: {problem}")]
pub struct ConfigError {
    pub file: String,
    pub problem: String,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    /// In file order; the first is the default, which serves plain string mappings.
    pub backends: Vec<BackendConfig>,
    pub database: DatabaseConfig,
    pub models: ModelsConfig,
    pub admin: AdminConfig,
    /// Prices per model name (the client's or the backend's), for `cost`.
    pub pricing: Vec<(String, Price)>,
    pub auth: AuthConfig,
    pub cache: CacheConfig,
}

/// The response cache (off while `models` is empty).
#[derive(Debug, Clone, PartialEq)]
pub struct CacheConfig {
    /// Client model names (wildcards allowed) whose answers are cached.
    pub models: Vec<String>,
    pub ttl: Duration,
    /// Bounds of the in-memory LRU; read at start.
    pub max_entries: usize,
    pub max_bytes: usize,
    /// Only requests whose answer cannot vary (temperature 0 or a seed).
    pub only_deterministic: bool,
    /// Also cache answers that call tools.
    pub tool_calls: bool,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            models: Vec::new(),
            ttl: Duration::from_secs(3600),
            max_entries: 10_000,
            max_bytes: 64 << 20,
            only_deterministic: true,
            tool_calls: false,
        }
    }
}

/// Client API keys for the Ollama port. No keys: open, as Ollama is.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    pub keys: Vec<ClientKey>,
    /// Networks whose clients need no key (e.g. the Home Assistant host).
    pub allow_unauthenticated_from: Vec<ipnet::IpNet>,
}

/// A client key, kept only as its SHA-256 so the config may hold either form.
#[derive(Clone)]
pub struct ClientKey {
    /// Recorded in each log row as `client_key`.
    pub id: String,
    pub sha256: [u8; 32],
}

impl ClientKey {
    /// Whether `token` is this key, compared as SHA-256 digests in constant time.
    pub fn matches(&self, token: &str) -> bool {
        use sha2::Digest;
        use subtle::ConstantTimeEq;
        let digest: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        self.sha256.ct_eq(&digest).into()
    }
}

impl fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientKey {{ id: {:?}, sha256: \"***\" }}", self.id)
    }
}

/// The admin listener: metrics and the log API, apart from the public Ollama port.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub enabled: bool,
    pub host: String,
    pub port: u16,
    /// Required (as `Authorization: Bearer`) on every admin route but `/health` when set.
    pub token: Option<ClientKey>,
}

/// Price per million tokens, in whatever currency the user thinks in.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input: f64,
    pub output: f64,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    pub enable_cors: bool,
    pub log_messages: bool,
    pub log_raw_requests: bool,
    pub log_raw_responses: bool,
    /// What `/api/version` reports; clients such as Copilot gate features on it.
    pub version: String,
    /// Largest request body accepted (images included); larger ones get 413.
    pub max_body_bytes: usize,
    /// At shutdown, how long requests in flight may take to finish before they are cut.
    pub shutdown_grace: Duration,
    /// Reload the config file when it changes (SIGHUP and `POST /api/reload` always work).
    pub watch_config: bool,
    /// HTTPS on the Ollama port: PEM certificate chain and private key.
    pub tls: Option<TlsFiles>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

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
    /// Requests sent to the backend at once (`None`: no limit); the rest queue.
    pub max_concurrent: Option<usize>,
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
    /// Which of the backend's own models clients may ask for by name (`None`: only
    /// mapped names reach this backend).
    pub discover: Option<Discovery>,
    /// How often the backend is checked (`None`: never; then only failures count).
    pub health_interval: Option<Duration>,
    pub breaker: Breaker,
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

/// Written by hand so the endpoint prints as a URL, with any password in it masked.
impl fmt::Debug for BackendConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut endpoint = self.endpoint.clone();
        if endpoint.password().is_some() {
            let _ = endpoint.set_password(Some("***"));
        }
        f.debug_struct("BackendConfig")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("endpoint", &endpoint.as_str())
            .field("timeout", &self.timeout)
            .field("api_key", &self.api_key)
            .field("thinking", &self.thinking)
            .field("max_concurrent", &self.max_concurrent)
            .field("queue_timeout", &self.queue_timeout)
            .field("headers", &self.headers)
            .field("max_tokens_field", &self.max_tokens_field)
            .field("stream_options", &self.stream_options)
            .field("discover", &self.discover)
            .field("health_interval", &self.health_interval)
            .field("breaker", &self.breaker)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct DatabaseConfig {
    /// The SQLite file; unused when `url` is set.
    pub path: PathBuf,
    /// `postgres://…`: the log goes to PostgreSQL instead of the SQLite file.
    pub url: Option<DatabaseUrl>,
    /// Prompts and responses longer than this are cut before they are stored.
    pub max_body_bytes: usize,
    /// Log records waiting for the writer; beyond this they are dropped and counted.
    pub queue_capacity: usize,
    /// Store metadata only: no prompt, response, thinking or tool calls.
    pub redact: bool,
    /// Also store the client's request body and the backend's request and response
    /// bodies as they went over the wire (each cut to `max_body_bytes`).
    pub store_bodies: bool,
    pub retention: Option<Retention>,
}

/// A PostgreSQL connection URL. Shown (Display, Debug) with its password masked;
/// [`DatabaseUrl::expose`] gives the real one.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// `postgres://` or `postgresql://`, as sqlx reads it (host, port, user, password,
    /// database, and parameters such as `sslmode`).
    pub fn parse(text: &str) -> Result<DatabaseUrl, String> {
        let url = DatabaseUrl(text.to_owned());
        let scheme_ok = text.starts_with("postgres://") || text.starts_with("postgresql://");
        if !scheme_ok {
            return Err(format!(
                "expected a PostgreSQL URL like postgres://user:password@host/database, got '{url}'"
            ));
        }
        if let Err(e) = <sqlx::postgres::PgConnectOptions as std::str::FromStr>::from_str(text) {
            // (Not echoed: where it does not parse, a password cannot be masked.)
            return Err(format!("not a valid PostgreSQL URL: {e}"));
        }
        Ok(url)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Url::parse(&self.0) {
            Ok(mut url) => {
                if url.password().is_some() {
                    let _ = url.set_password(Some("***"));
                }
                // `password=` in the query string is masked too.
                if url.query_pairs().any(|(k, _)| k == "password") {
                    let pairs: Vec<(String, String)> = url
                        .query_pairs()
                        .map(|(k, v)| {
                            let v = if k == "password" { "***".into() } else { v.into_owned() };
                            (k.into_owned(), v)
                        })
                        .collect();
                    url.query_pairs_mut().clear().extend_pairs(pairs);
                }
                f.write_str(url.as_str())
            }
            // It may hold a password where a URL parser cannot find it.
            Err(_) => f.write_str("postgres://***"),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// How much of the log to keep; enforced by a background task in small batches.
#[derive(Debug, Clone, PartialEq)]
pub struct Retention {
    pub max_age: Option<Duration>,
    pub max_rows: Option<u64>,
    /// Bytes of used database pages.
    pub max_bytes: Option<u64>,
    pub interval: Duration,
}

#[derive(Debug, Clone, Default)]
pub struct ModelsConfig {
    pub default: Option<String>,
    /// Client-facing names and what serves them, in file order.
    pub mappings: Vec<ModelMapping>,
}

/// One `models.mappings` entry: `"name": "backend-model"`, or the object form
/// `"name": {"model": "backend-model", "context_length": 8192, "capabilities": [...],
/// "strip_think": true}` for what the backend cannot tell us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelMapping {
    pub name: String,
    /// The backend model name on the first target.
    pub target: String,
    /// Where to send it, in order: the mapping's backend and model, then its fallbacks.
    pub targets: Vec<Target>,
    /// Reported by `/api/show`, `/api/tags`, `/api/ps` instead of the backend's value.
    pub context_length: Option<u64>,
    /// Reported by `/api/show` instead of what is read from the backend.
    pub capabilities: Option<Vec<String>>,
    /// Move `<think>…</think>` found in the answer's text into `thinking`.
    pub strip_think: bool,
}

/// A model on a backend (by its index in [`Config::backends`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub backend: usize,
    pub model: String,
}

impl ModelMapping {
    /// A mapping to `target` on the default backend.
    pub fn new(name: &str, target: &str) -> ModelMapping {
        ModelMapping {
            name: name.to_owned(),
            target: target.to_owned(),
            targets: vec![Target {
                backend: 0,
                model: target.to_owned(),
            }],
            context_length: None,
            capabilities: None,
            strip_think: false,
        }
    }
}

/// Ollama's capability vocabulary (`types/model/capability.go`).
pub const CAPABILITIES: &[&str] = &["completion", "tools", "insert", "vision", "embedding", "thinking"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMappingObject {
    model: String,
    #[serde(default)]
    backend: Option<String>,
    #[serde(default)]
    fallbacks: Vec<RawTarget>,
    #[serde(default)]
    context_length: Option<u64>,
    #[serde(default)]
    capabilities: Option<Vec<String>>,
    #[serde(default)]
    strip_think: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    backend: String,
    model: String,
}

/// A secret that never shows up in logs or debug output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    backend: Option<RawBackend>,
    /// serde_json's `preserve_order` map keeps the file's order: the first is the default.
    #[serde(default)]
    backends: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    database: RawDatabase,
    #[serde(default)]
    models: RawModels,
    #[serde(default)]
    admin: RawAdmin,
    #[serde(default)]
    pricing: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    auth: RawAuth,
    #[serde(default)]
    cache: RawCache,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawCache {
    models: Vec<String>,
    ttl: f64,
    max_entries: usize,
    max_bytes: usize,
    /// `deterministic` (temperature 0 or a seed) or `always`.
    when: String,
    tool_calls: bool,
}

impl Default for RawCache {
    fn default() -> Self {
        let d = CacheConfig::default();
        RawCache {
            models: d.models,
            ttl: d.ttl.as_secs_f64(),
            max_entries: d.max_entries,
            max_bytes: d.max_bytes,
            when: "deterministic".into(),
            tool_calls: d.tool_calls,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAuth {
    keys: Vec<RawKey>,
    allow_unauthenticated_from: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    id: String,
    /// The key itself, or `sha256:<64 hex>` of it.
    key: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAdmin {
    enabled: bool,
    host: String,
    port: i64,
    token: Option<String>,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            enabled: true,
            host: "127.0.0.1".into(),
            port: 11435,
            token: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawServer {
    host: String,
    port: i64,
    enable_cors: bool,
    log_messages: bool,
    log_raw_requests: bool,
    log_raw_responses: bool,
    version: String,
    max_body_bytes: usize,
    shutdown_grace: f64,
    watch_config: bool,
    tls: Option<TlsFiles>,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            host: "0.0.0.0".into(),
            port: 11434,
            enable_cors: false,
            log_messages: false,
            log_raw_requests: false,
            log_raw_responses: false,
            version: "0.12.0".into(),
            max_body_bytes: 32 << 20,
            shutdown_grace: 30.0,
            watch_config: true,
            tls: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    /// Read as text so an unknown value gets our message, listing the accepted ones.
    #[serde(rename = "type")]
    kind: String,
    endpoint: String,
    #[serde(default = "default_timeout")]
    timeout: f64,
    #[serde(default)]
    api_key: Option<String>,
    #[serde(default)]
    thinking: Option<String>,
    /// Requests sent to the backend at once; 0 means no limit.
    #[serde(default)]
    max_concurrent: usize,
    /// How long a request may wait for a free slot before a 503.
    #[serde(default = "default_queue_timeout")]
    queue_timeout: f64,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    max_tokens_field: Option<String>,
    #[serde(default = "default_stream_options")]
    stream_options: bool,
    /// `true`, `false`, or `{"prefix", "include", "exclude"}`.
    #[serde(default)]
    discover: Option<serde_json::Value>,
    #[serde(default = "default_health_interval")]
    health_interval: f64,
    #[serde(default)]
    breaker: RawBreaker,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawBreaker {
    failures: u32,
    cooldown: f64,
}

impl Default for RawBreaker {
    fn default() -> Self {
        RawBreaker {
            failures: 3,
            cooldown: 30.0,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawDiscovery {
    prefix: String,
    include: Vec<String>,
    exclude: Vec<String>,
}

fn default_stream_options() -> bool {
    true
}

fn default_health_interval() -> f64 {
    15.0
}

fn default_queue_timeout() -> f64 {
    30.0
}

fn default_timeout() -> f64 {
    300.0
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawDatabase {
    path: Option<PathBuf>,
    url: Option<String>,
    max_body_bytes: usize,
    queue_capacity: usize,
    redact: bool,
    store_bodies: bool,
    retention: Option<RawRetention>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    #[serde(default)]
    max_age_days: Option<f64>,
    #[serde(default)]
    max_rows: Option<u64>,
    #[serde(default)]
    max_bytes: Option<u64>,
    #[serde(default = "default_retention_interval")]
    interval: f64,
}

const DEFAULT_DATABASE_PATH: &str = "./ollabridge.db";

fn default_retention_interval() -> f64 {
    60.0
}

impl Default for RawDatabase {
    fn default() -> Self {
        RawDatabase {
            path: None,
            url: None,
            max_body_bytes: 1 << 20,
            queue_capacity: 4096,
            redact: false,
            store_bodies: false,
            retention: None,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawModels {
    default: Option<String>,
    /// serde_json's `preserve_order` map keeps the file's order for `/api/tags`.
    mappings: serde_json::Map<String, serde_json::Value>,
}

impl Config {
    /// The default backend: the single `backend`, or the first of `backends`.
    pub fn backend(&self) -> &BackendConfig {
        &self.backends[0]
    }

    /// Reads `path`, applies environment overrides and validates the result.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let fail = |problem: String| ConfigError {
            file: file.clone(),
            problem,
        };
        let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => fail("file not found".into()),
            _ => fail(format!("cannot read it: {e}")),
        })?;
        // Syntax first, worded as for inline configs; the config crate's own message
        // would not say the file is not JSON.
        if let Err(e) = serde_json::from_str::<serde_json::Value>(&text) {
            return Err(fail(format!("invalid JSON: {e}")));
        }
        // Env values stay strings here; the deserializer converts them where a field
        // wants a number, so an API key like 0123 keeps its leading zero.
        let raw: RawConfig = config::Config::builder()
            .add_source(config::File::from_str(&text, config::FileFormat::Json))
            .add_source(config::Environment::with_prefix("OLLABRIDGE").separator("__"))
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| fail(e.to_string()))?;
        raw.validate().map_err(fail)
    }

    /// Parses a config from JSON text (no environment overrides); used by tests and tools.
    pub fn from_json(text: &str) -> Result<Config, ConfigError> {
        let fail = |problem: String| ConfigError {
            file: "<inline>".into(),
            problem,
        };
        let raw: RawConfig = crate::json::from_slice_with_path(text.as_bytes()).map_err(|e| {
            fail(match e {
                JsonError::Syntax(message) => format!("invalid JSON: {message}"),
                JsonError::Data {
                    path: Some(path),
                    message,
                } => format!("{path}: {message}"),
                JsonError::Data { path: None, message } => message,
            })
        })?;
        raw.validate().map_err(fail)
    }
}

impl RawConfig {
    fn validate(self) -> Result<Config, String> {
        let port = u16::try_from(self.server.port)
            .map_err(|_| format!("server.port: {} is out of range 0-65535", self.server.port))?;
        if !is_dotted_version(&self.server.version) {
            return Err(format!(
                "server.version: '{}' must be dotted integers like 0.12.0 (clients parse it)",
                self.server.version
            ));
        }
        let backends = match (self.backend, self.backends.is_empty()) {
            (Some(raw), true) => {
                let name = raw.kind.clone();
                vec![backend("backend", name, raw)?]
            }
            (None, false) => self
                .backends
                .into_iter()
                .map(|(name, value)| {
                    let key = format!("backends.{name}");
                    let raw: RawBackend = serde_json::from_value(value).map_err(|e| format!("{key}: {e}"))?;
                    backend(&key, name, raw)
                })
                .collect::<Result<Vec<_>, _>>()?,
            (Some(_), false) => return Err("backend, backends: use one of them, not both".into()),
            (None, true) => {
                return Err(
                    "backend: missing (set 'backend' for one backend, or 'backends' for several by name)".into(),
                );
            }
        };
        if self.database.queue_capacity == 0 {
            return Err("database.queue_capacity: must be at least 1".into());
        }
        let (database_path, database_url) = match (self.database.path, self.database.url) {
            (Some(_), Some(_)) => {
                return Err(
                    "database.path, database.url: use one of them, not both (path for SQLite, url for PostgreSQL)"
                        .into(),
                );
            }
            (_, Some(url)) => (
                PathBuf::from(DEFAULT_DATABASE_PATH),
                Some(DatabaseUrl::parse(&url).map_err(|e| format!("database.url: {e}"))?),
            ),
            (path, None) => (path.unwrap_or_else(|| DEFAULT_DATABASE_PATH.into()), None),
        };
        let mappings = self
            .models
            .mappings
            .into_iter()
            .map(|(name, value)| mapping(name, value, &backends))
            .collect::<Result<Vec<_>, _>>()?;
        let admin_port = u16::try_from(self.admin.port)
            .map_err(|_| format!("admin.port: {} is out of range 0-65535", self.admin.port))?;
        let pricing = self
            .pricing
            .into_iter()
            .map(|(model, value)| {
                let price: Price = serde_json::from_value(value).map_err(|e| format!("pricing.{model}: {e}"))?;
                if !(price.input >= 0.0 && price.output >= 0.0) {
                    return Err(format!("pricing.{model}: prices must be zero or more"));
                }
                Ok((model, price))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let auth = auth(self.auth)?;
        let admin_token = self
            .admin
            .token
            .as_deref()
            .map(|t| secret_key("admin.token", "admin", t))
            .transpose()?;
        let loopback = matches!(self.admin.host.as_str(), "localhost" | "127.0.0.1" | "::1")
            || self
                .admin
                .host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if self.admin.enabled && !loopback && admin_token.is_none() {
            return Err(format!(
                "admin.host: '{}' is not a loopback address; set admin.token before exposing the admin \
                 listener (it serves prompts and answers)",
                self.admin.host
            ));
        }
        let only_deterministic = match self.cache.when.as_str() {
            "deterministic" => true,
            "always" => false,
            other => return Err(format!("cache.when: '{other}' is not one of deterministic, always")),
        };
        if self.cache.max_entries == 0 {
            return Err("cache.max_entries: must be at least 1".into());
        }
        let cache = CacheConfig {
            models: self.cache.models,
            ttl: seconds("cache.ttl", self.cache.ttl, false)?,
            max_entries: self.cache.max_entries,
            max_bytes: self.cache.max_bytes,
            only_deterministic,
            tool_calls: self.cache.tool_calls,
        };
        Ok(Config {
            cache,
            auth,
            admin: AdminConfig {
                enabled: self.admin.enabled,
                host: self.admin.host,
                port: admin_port,
                token: admin_token,
            },
            pricing,
            server: ServerConfig {
                host: self.server.host,
                port,
                enable_cors: self.server.enable_cors,
                log_messages: self.server.log_messages,
                log_raw_requests: self.server.log_raw_requests,
                log_raw_responses: self.server.log_raw_responses,
                version: self.server.version,
                max_body_bytes: self.server.max_body_bytes,
                shutdown_grace: seconds("server.shutdown_grace", self.server.shutdown_grace, true)?,
                watch_config: self.server.watch_config,
                tls: self.server.tls,
            },
            backends,
            database: DatabaseConfig {
                path: database_path,
                url: database_url,
                max_body_bytes: self.database.max_body_bytes,
                queue_capacity: self.database.queue_capacity,
                redact: self.database.redact,
                store_bodies: self.database.store_bodies,
                retention: self.database.retention.map(retention).transpose()?,
            },
            models: ModelsConfig {
                default: self.models.default.filter(|d| !d.is_empty()),
                mappings,
            },
        })
    }
}

fn auth(raw: RawAuth) -> Result<AuthConfig, String> {
    let mut keys: Vec<ClientKey> = Vec::new();
    for (i, key) in raw.keys.into_iter().enumerate() {
        if key.id.is_empty() {
            return Err(format!("auth.keys[{i}].id: must not be empty"));
        }
        if keys.iter().any(|k| k.id == key.id) {
            return Err(format!("auth.keys[{i}].id: '{}' is used twice", key.id));
        }
        keys.push(secret_key(&format!("auth.keys[{i}].key"), &key.id, &key.key)?);
    }
    let allow_unauthenticated_from = raw
        .allow_unauthenticated_from
        .iter()
        .enumerate()
        .map(|(i, net)| {
            net.parse::<ipnet::IpNet>()
                .or_else(|_| net.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| format!("auth.allow_unauthenticated_from[{i}]: '{net}' is not an address or CIDR network"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(AuthConfig {
        keys,
        allow_unauthenticated_from,
    })
}

/// A key as written in the config: the key itself, or `sha256:<64 hex>` of it.
fn secret_key(field: &str, id: &str, text: &str) -> Result<ClientKey, String> {
    use sha2::Digest;
    let sha256 = match text.strip_prefix("sha256:") {
        Some(hex) => {
            parse_sha256(hex).ok_or_else(|| format!("{field}: 'sha256:' must be followed by 64 hex digits"))?
        }
        None if text.len() < 8 => return Err(format!("{field}: too short (use at least 8 characters)")),
        None => sha2::Sha256::digest(text.as_bytes()).into(),
    };
    Ok(ClientKey {
        id: id.to_owned(),
        sha256,
    })
}

fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// One backend's section, `key` naming it in messages (`backend` or `backends.<name>`).
fn backend(key: &str, name: String, raw: RawBackend) -> Result<BackendConfig, String> {
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
    let endpoint =
        Url::parse(&raw.endpoint).map_err(|e| format!("{key}.endpoint: '{}' is not a URL ({e})", raw.endpoint))?;
    if !matches!(endpoint.scheme(), "http" | "https") || endpoint.host().is_none() {
        return Err(format!(
            "{key}.endpoint: '{}' must be an http:// or https:// URL with a host",
            raw.endpoint
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
    if raw.breaker.failures == 0 {
        return Err(format!("{key}.breaker.failures: must be at least 1"));
    }
    Ok(BackendConfig {
        name,
        kind,
        thinking,
        max_concurrent: (raw.max_concurrent > 0).then_some(raw.max_concurrent),
        queue_timeout: seconds(&format!("{key}.queue_timeout"), raw.queue_timeout, true)?,
        endpoint,
        timeout: seconds(&format!("{key}.timeout"), raw.timeout, false)?,
        api_key: raw.api_key.filter(|k| !k.is_empty()).map(Secret),
        headers: raw.headers.into_iter().map(|(k, v)| (k, Secret(v))).collect(),
        max_tokens_field,
        stream_options: raw.stream_options,
        discover,
        health_interval: Some(seconds(&format!("{key}.health_interval"), raw.health_interval, true)?)
            .filter(|d| !d.is_zero()),
        breaker: Breaker {
            failures: raw.breaker.failures,
            cooldown: seconds(&format!("{key}.breaker.cooldown"), raw.breaker.cooldown, true)?,
        },
    })
}

fn mapping(name: String, value: serde_json::Value, backends: &[BackendConfig]) -> Result<ModelMapping, String> {
    let key = format!("models.mappings.{name}");
    let expected = "expected the backend model name, or an object with \"model\"";
    match value {
        serde_json::Value::String(target) if !target.is_empty() => Ok(ModelMapping::new(&name, &target)),
        object @ serde_json::Value::Object(_) => {
            let raw: RawMappingObject = serde_json::from_value(object).map_err(|e| format!("{key}: {e}"))?;
            if raw.model.is_empty() {
                return Err(format!("{key}.model: must not be empty"));
            }
            if let Some(unknown) = raw
                .capabilities
                .iter()
                .flatten()
                .find(|c| !CAPABILITIES.contains(&c.as_str()))
            {
                return Err(format!(
                    "{key}.capabilities: '{unknown}' is not one of {}",
                    CAPABILITIES.join(", ")
                ));
            }
            let backend_index = |field: &str, backend: &str| {
                backends.iter().position(|b| b.name == backend).ok_or_else(|| {
                    let known: Vec<&str> = backends.iter().map(|b| b.name.as_str()).collect();
                    format!(
                        "{key}.{field}: no backend named '{backend}' (backends: {})",
                        known.join(", ")
                    )
                })
            };
            let mut targets = vec![Target {
                backend: raw.backend.as_deref().map_or(Ok(0), |b| backend_index("backend", b))?,
                model: raw.model.clone(),
            }];
            for (i, fallback) in raw.fallbacks.into_iter().enumerate() {
                targets.push(Target {
                    backend: backend_index(&format!("fallbacks[{i}].backend"), &fallback.backend)?,
                    model: fallback.model,
                });
            }
            Ok(ModelMapping {
                name,
                target: raw.model,
                targets,
                context_length: raw.context_length,
                capabilities: raw.capabilities,
                strip_think: raw.strip_think,
            })
        }
        other => Err(format!("{key}: {expected}, got {other}")),
    }
}

/// A duration in seconds from the config; zero allowed only where it means "at once".
fn seconds(key: &str, value: f64, zero_ok: bool) -> Result<Duration, String> {
    Some(value)
        .filter(|v| if zero_ok { *v >= 0.0 } else { *v > 0.0 })
        .and_then(|v| Duration::try_from_secs_f64(v).ok())
        .ok_or_else(|| {
            let expected = if zero_ok {
                "zero or more"
            } else {
                "a positive number of"
            };
            format!("{key}: {value} must be {expected} seconds")
        })
}

fn retention(raw: RawRetention) -> Result<Retention, String> {
    if raw.max_age_days.is_none() && raw.max_rows.is_none() && raw.max_bytes.is_none() {
        return Err("database.retention: set max_age_days, max_rows or max_bytes".into());
    }
    Ok(Retention {
        max_age: raw
            .max_age_days
            .map(|days| seconds("database.retention.max_age_days", days * 86_400.0, false))
            .transpose()?,
        max_rows: raw.max_rows,
        max_bytes: raw.max_bytes,
        interval: seconds("database.retention.interval", raw.interval, false)?,
    })
}

fn is_dotted_version(v: &str) -> bool {
    !v.is_empty()
        && v.split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests;
