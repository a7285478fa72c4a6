//! The admin listener, apart from the public Ollama port so that one can be exposed
//! safely: Prometheus metrics and the log API.
//!
//! | route | |
//! |---|---|
//! | `GET /metrics` | OpenMetrics text |
//! | `GET /health` | `{"status":"ok"}` |
//! | `GET /api/logs` | rows, newest first, filtered and paged ([`logs`]) |
//! | `GET /api/logs/{id}` | one row with everything in it |
//! | `PUT /api/logs/{id}/starred` | `{"starred": true}` stars a row (kept by retention) |
//! | `POST /api/replay/{id}` | runs a logged request again ([`replay`]) |
//! | `GET /api/stats` | counts, error rate, percentiles per model and overall ([`stats`]) |
//! | `GET /api/stats/timeseries` | the same in time buckets |
//! | `GET /api/events` | requests starting and finishing, as Server-Sent Events ([`events`]) |
//! | `GET /api/backends` | each backend's health, breaker and models ([`backends`]) |
//! | `/ollama/api/...` | the Ollama API, for the dashboard's playground and replay |
//! | `GET /`, `GET /<file>` | the dashboard ([`dashboard`]) |
//!
//! Errors are Ollama's shape, `{"error": "..."}`: 400 naming the bad parameter, 404
//! for an unknown row or route, 413 for a body over [`MAX_BODY_BYTES`], 500 when the
//! database fails.
//!
//! Without `admin.token`, whoever reaches the listener may read the log; it listens on
//! loopback then, and [`admin_edge`] keeps web pages out: a `Host` that is not this
//! machine's (a DNS name rebound to 127.0.0.1 by a page) and requests sent by pages
//! other than the dashboard's own (`Origin`) are refused with 403. With a token, a page
//! cannot send it, so the token alone decides.

pub mod backends;
pub mod dashboard;
pub mod events;
pub mod logs;
pub mod replay;
pub mod stats;

use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::Telemetry;

pub struct AdminState {
    pub telemetry: Arc<Telemetry>,
    /// The log database (SQLite or PostgreSQL), for reading.
    pub pool: crate::store::Store,
    /// The writer's pool, for the few changes the admin API makes (stars).
    pub write_pool: crate::store::Store,
    /// Cancelled when the server shuts down: ends the event streams, which would
    /// otherwise hold their connections (and the graceful shutdown) open forever.
    pub stop: CancellationToken,
    /// The live config: `admin.token` and `admin.allowed_hosts`, `POST /api/reload`.
    pub live: Arc<crate::reload::Live>,
}

/// The largest body the admin routes take (stars, replay options: a few bytes); the
/// dashboard's copy of the Ollama API under `/ollama` takes `server.max_body_bytes`.
pub const MAX_BODY_BYTES: usize = 2 << 20;

pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route(
            "/health",
            get(|| async { axum::Json(serde_json::json!({ "status": "ok" })) }),
        )
        .route("/api/logs", get(logs::list_handler))
        .route("/api/logs/{id}", get(logs::get_handler))
        .route("/api/logs/{id}/starred", axum::routing::put(logs::star_handler))
        .route("/api/replay/{id}", axum::routing::post(replay::replay_handler))
        .route("/api/stats", get(stats::stats_handler))
        .route("/api/stats/timeseries", get(stats::timeseries_handler))
        .route("/api/events", get(events::events_handler))
        .route("/api/reload", axum::routing::post(reload_handler))
        .route("/api/backends", get(backends::backends_handler))
        .route(
            "/api/{*rest}",
            axum::routing::any(|| async { AdminError::NotFound("not found".into()) }),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .nest_service("/ollama", crate::api::dashboard_router(state.live.clone()))
        .fallback(dashboard::asset_handler)
        .layer(axum::middleware::from_fn_with_state(state.clone(), admin_edge))
        .with_state(state)
}

/// Every admin request: without `admin.token`, the `Host` and `Origin` checks (see the
/// module's header); with it, the token on every route but `/health` and the
/// dashboard's own files. The token is read from the live config, so a reload changes
/// it at once. A body too large is refused in JSON, as every other admin error.
async fn admin_edge(
    State(state): State<Arc<AdminState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let live = state.live.load();
    let admin = &live.config.admin;
    let refusal = match &admin.token {
        None => web_page_refusal(admin, request.headers()),
        Some(_) if request.uri().path() == "/health" || dashboard::is_public(request.uri().path()) => None,
        Some(token) => match crate::api::edge::auth::bearer_token(request.headers()) {
            Some(presented) if token.matches(presented) => None,
            Some(_) => Some(crate::api::edge::auth::unauthorized("invalid admin token")),
            None => Some(crate::api::edge::auth::unauthorized("missing admin token")),
        },
    };
    if let Some(refusal) = refusal {
        return refusal;
    }
    drop(live);
    body_too_large_as_json(next.run(request).await)
}

/// 403 for a request a web page made to the token-less admin listener: one naming
/// a host that is not this machine (DNS rebinding), or sent by a page that is not the
/// dashboard's own.
fn web_page_refusal(admin: &crate::config::AdminConfig, headers: &HeaderMap) -> Option<Response> {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    if let Some(host) = host {
        let name = host_name(host);
        if !(is_local_name(name) || name.eq_ignore_ascii_case(&admin.host) || admin.allowed_hosts.allows(name)) {
            tracing::warn!(host, "admin: rejected a request for another host (DNS rebinding?)");
            return Some(forbidden(format!(
                "host '{name}' is not allowed on the admin listener (add it to admin.allowed_hosts, or set \
                 admin.token)"
            )));
        }
    }
    let origin = headers.get(header::ORIGIN)?;
    let origin_authority = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, authority)| authority);
    let same_origin = origin_authority
        .zip(host)
        .is_some_and(|(o, h)| o.eq_ignore_ascii_case(h));
    // Pages the operator named, e.g. the dashboard through a proxy under another name.
    let named = origin_authority.is_some_and(|o| admin.allowed_hosts.allows(host_name(o)));
    if same_origin || named {
        return None;
    }
    let origin = String::from_utf8_lossy(origin.as_bytes());
    tracing::warn!(%origin, "admin: rejected a request from another site's page");
    Some(forbidden(format!(
        "origin '{origin}' is not allowed on the admin listener: only the dashboard's own pages may call it \
         (add its host to admin.allowed_hosts, or set admin.token)"
    )))
}

/// The name in a `Host` header (or an origin's authority), without its port or the
/// brackets around an IPv6 address.
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split_once(']').map_or(rest, |(name, _)| name);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// Names only this machine answers to: loopback names and IP addresses. A DNS rebinding
/// page has a name of its own; an address names the server itself.
fn is_local_name(name: &str) -> bool {
    // `localhost.` is the same name, fully qualified.
    let lower = name.trim_end_matches('.').to_ascii_lowercase();
    lower == "localhost" || lower.ends_with(".localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

fn forbidden(message: String) -> Response {
    (
        StatusCode::FORBIDDEN,
        axum::Json(serde_json::json!({ "error": message })),
    )
        .into_response()
}

/// axum refuses an oversized body in plain text; the dashboard's copy of the Ollama API
/// answers its own JSON already.
fn body_too_large_as_json(response: Response) -> Response {
    if !crate::api::edge::is_body_limit_refusal(&response) {
        return response;
    }
    let message = format!("request body is larger than the admin API accepts ({MAX_BODY_BYTES} bytes)");
    (
        StatusCode::PAYLOAD_TOO_LARGE,
        axum::Json(serde_json::json!({ "error": message })),
    )
        .into_response()
}

/// Reads the config file again: 200 with what still needs a restart, or 400 with why
/// the file was refused (the old config stays).
async fn reload_handler(State(state): State<Arc<AdminState>>) -> Response {
    let live = state.live.clone();
    match tokio::task::spawn_blocking(move || live.reload()).await {
        Ok(Ok(needs_restart)) => {
            axum::Json(serde_json::json!({ "status": "reloaded", "needs_restart": needs_restart })).into_response()
        }
        Ok(Err(e)) => (
            StatusCode::BAD_REQUEST,
            axum::Json(serde_json::json!({ "error": e.to_string() })),
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(serde_json::json!({ "error": e.to_string() })),
        )
            .into_response(),
    }
}

async fn metrics_handler(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    let live = state.live.load();
    let now = std::time::Instant::now();
    let backends: Vec<_> = live
        .backends
        .iter()
        .map(|b| (b.name().to_owned(), b.health.report(now)))
        .collect();
    let body = state.telemetry.metrics.render(&state.telemetry.logger, &backends);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
}

/// An admin API failure, answered as `{"error": "..."}`.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// 400: `invalid 'name': why`.
    #[error("invalid '{name}': {message}")]
    Param { name: String, message: String },
    /// 400 for the query string as a whole (unknown or repeated parameters).
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl AdminError {
    pub fn param(name: &str, message: impl Into<String>) -> AdminError {
        AdminError::Param {
            name: name.to_owned(),
            message: message.into(),
        }
    }

    pub fn status_code(&self) -> StatusCode {
        match self {
            AdminError::Param { .. } | AdminError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AdminError::NotFound(_) => StatusCode::NOT_FOUND,
            AdminError::Database(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        if let AdminError::Database(e) = &self {
            tracing::error!(error = %e, "admin API query failed");
        }
        (
            self.status_code(),
            axum::Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response()
    }
}

/// A query string checked against the parameters a route knows: unknown or repeated
/// names are refused (a typo like `error_only` should not silently match everything),
/// empty values count as absent.
pub struct Params(Vec<(String, String)>);

impl Params {
    pub fn new(
        query: Result<Query<Vec<(String, String)>>, QueryRejection>,
        known: &[&str],
    ) -> Result<Params, AdminError> {
        let Query(pairs) = query.map_err(|e| AdminError::BadRequest(format!("invalid query string: {e}")))?;
        for (i, (name, _)) in pairs.iter().enumerate() {
            if !known.contains(&name.as_str()) {
                return Err(AdminError::BadRequest(format!(
                    "unknown parameter '{name}' (known: {})",
                    known.join(", ")
                )));
            }
            // SQLite reads a text up to its first NUL (`q=%00` matched every row) and
            // PostgreSQL refuses one: no parameter has a use for it.
            if pairs[i].1.contains('\0') {
                return Err(AdminError::param(name, "must not contain NUL (%00)"));
            }
            if pairs[..i].iter().any(|(n, _)| n == name) {
                return Err(AdminError::BadRequest(format!(
                    "parameter '{name}' given more than once"
                )));
            }
        }
        Ok(Params(pairs))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, v)| n == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    /// The parameter parsed by `parse`, whose error message is wrapped as
    /// `invalid 'name': message`.
    pub fn parse<T>(&self, name: &str, parse: impl FnOnce(&str) -> Result<T, String>) -> Result<Option<T>, AdminError> {
        self.get(name)
            .map(parse)
            .transpose()
            .map_err(|message| AdminError::param(name, message))
    }
}

/// A span like `90s`, `15m`, `1h`, `24h` or `7d`, in seconds.
pub fn parse_span(text: &str) -> Result<i64, String> {
    let bad = || format!("expected a number and a unit (s, m, h or d) like 15m, 1h or 7d, got '{text}'");
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (digits, unit) = text.split_at(split);
    let unit_secs: i64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    let n: i64 = digits.parse().map_err(|_| bad())?;
    if n == 0 {
        return Err(format!("must be more than zero, got '{text}'"));
    }
    n.checked_mul(unit_secs).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::parse_span;

    #[test]
    fn spans() {
        assert_eq!(parse_span("15m"), Ok(900));
        assert_eq!(parse_span("1h"), Ok(3600));
        assert_eq!(parse_span("24h"), Ok(86_400));
        assert_eq!(parse_span("7d"), Ok(604_800));
        assert_eq!(parse_span("90s"), Ok(90));
        for bad in ["", "h", "1", "1w", "-1h", "1.5h", "1 h", "0m", "99999999999999999999d"] {
            assert!(parse_span(bad).is_err(), "{bad}");
        }
    }
}
