//! Loads `config.json` (plus `OLLABRIDGE__SECTION__KEY` environment overrides) into a
//! validated [`Config`]. Everything that can be wrong with a config is found here, at
//! start-up, and reported with the file, the key and the problem.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::json::JsonError;

mod auth;
mod backend;
mod cache;
mod database;
mod models;
mod origins;

pub use auth::*;
pub use backend::*;
pub use cache::*;
pub use database::*;
pub use models::*;
pub use origins::{AllowedHosts, AllowedOrigins};

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

/// The admin listener: metrics and the log API, apart from the public Ollama port.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub enabled: bool,
    pub host: String,
    pub port: u16,
    /// Required (as `Authorization: Bearer`) on every admin route but `/health` when set.
    pub token: Option<ClientKey>,
    /// Without a token, the host names beyond loopback names, IP addresses and `host`
    /// that requests may name in `Host` (any other is a rebound DNS name), and whose
    /// pages may send requests (`Origin`) besides the dashboard's own.
    pub allowed_hosts: AllowedHosts,
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
    /// Request bodies held at once, all requests together; past it, 503. Read at start.
    pub max_inflight_body_bytes: usize,
    /// Web pages (by `Origin`) that may call the client port, and that CORS answers.
    pub allowed_origins: AllowedOrigins,
    /// At shutdown, how long requests in flight may take to finish before they are cut.
    pub shutdown_grace: Duration,
    /// Reload the config file when it changes (SIGHUP and `POST /api/reload` always work).
    pub watch_config: bool,
    /// HTTPS on the Ollama port: PEM certificate chain and private key.
    pub tls: Option<TlsFiles>,
    /// How long a connection may take to send a request's headers; also how long an idle
    /// keep-alive connection may wait for its next request. Both ports.
    pub header_read_timeout: Duration,
    /// Connections open at once on each port (client and admin); `None` derives it from
    /// the open-file limit at start.
    pub max_connections: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
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
struct RawAdmin {
    enabled: bool,
    host: String,
    port: i64,
    token: Option<String>,
    allowed_hosts: Vec<String>,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            enabled: true,
            host: "127.0.0.1".into(),
            port: 11435,
            token: None,
            allowed_hosts: Vec::new(),
        }
    }
}

/// `server.max_inflight_body_bytes` when unset: eight bodies of the default
/// `max_body_bytes` (32 MiB) at once.
pub const DEFAULT_MAX_INFLIGHT_BODY_BYTES: usize = 256 << 20;

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
    /// Unset: [`DEFAULT_MAX_INFLIGHT_BODY_BYTES`], or `max_body_bytes` if that is larger.
    max_inflight_body_bytes: Option<usize>,
    allowed_origins: Vec<String>,
    shutdown_grace: f64,
    watch_config: bool,
    tls: Option<TlsFiles>,
    header_read_timeout: f64,
    max_connections: Option<usize>,
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
            max_inflight_body_bytes: None,
            allowed_origins: Vec::new(),
            shutdown_grace: 30.0,
            watch_config: true,
            tls: None,
            header_read_timeout: 30.0,
            max_connections: None,
        }
    }
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
        let cache = cache::cache(self.cache)?;
        let max_inflight_body_bytes = match self.server.max_inflight_body_bytes {
            None => DEFAULT_MAX_INFLIGHT_BODY_BYTES.max(self.server.max_body_bytes),
            Some(bytes) if bytes < self.server.max_body_bytes => {
                return Err(format!(
                    "server.max_inflight_body_bytes: {bytes} is less than server.max_body_bytes ({}); \
                     one request's body must fit",
                    self.server.max_body_bytes
                ));
            }
            Some(bytes) => bytes,
        };
        let allowed_origins = origins::allowed_origins(&self.server.allowed_origins)?;
        let allowed_hosts = origins::allowed_hosts(&self.admin.allowed_hosts)?;
        if let Some(max) = self
            .server
            .max_connections
            .filter(|max| !(1..=MAX_CONNECTIONS_LIMIT).contains(max))
        {
            return Err(format!(
                "server.max_connections: {max} is out of range 1-{MAX_CONNECTIONS_LIMIT} (leave it out for the default)"
            ));
        }
        Ok(Config {
            cache,
            auth,
            admin: AdminConfig {
                enabled: self.admin.enabled,
                host: self.admin.host,
                port: admin_port,
                token: admin_token,
                allowed_hosts,
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
                max_inflight_body_bytes,
                allowed_origins,
                shutdown_grace: seconds("server.shutdown_grace", self.server.shutdown_grace, true)?,
                watch_config: self.server.watch_config,
                tls: self.server.tls,
                header_read_timeout: seconds("server.header_read_timeout", self.server.header_read_timeout, false)?,
                max_connections: self.server.max_connections,
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

/// Far above any open-file limit; a larger `server.max_connections` is a typo.
const MAX_CONNECTIONS_LIMIT: usize = 1_000_000;

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

fn is_dotted_version(v: &str) -> bool {
    !v.is_empty()
        && v.split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests;
