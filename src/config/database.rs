//! `database`: where the log goes (a SQLite file or a PostgreSQL URL), how much of each
//! body is kept, and retention.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;

use super::seconds;

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
            Ok(url) => f.write_str(&super::masked_url(&url)),
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawDatabase {
    pub(super) path: Option<PathBuf>,
    pub(super) url: Option<String>,
    pub(super) max_body_bytes: usize,
    pub(super) queue_capacity: usize,
    pub(super) redact: bool,
    pub(super) store_bodies: bool,
    pub(super) retention: Option<RawRetention>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetention {
    #[serde(default)]
    pub(super) max_age_days: Option<f64>,
    #[serde(default)]
    pub(super) max_rows: Option<u64>,
    #[serde(default)]
    pub(super) max_bytes: Option<u64>,
    #[serde(default = "default_retention_interval")]
    pub(super) interval: f64,
}

pub(super) const DEFAULT_DATABASE_PATH: &str = "./ollabridge.db";

pub(super) fn default_retention_interval() -> f64 {
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

pub(super) fn retention(raw: RawRetention) -> Result<Retention, String> {
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
