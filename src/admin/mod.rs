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
//! for an unknown row or route, 500 when the database fails.

pub mod backends;
pub mod dashboard;
pub mod events;
pub mod logs;
pub mod replay;
pub mod stats;

use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
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
    /// `admin.token`, when set.
    pub token: Option<crate::config::ClientKey>,
    /// The live config, for `POST /api/reload`.
    pub live: Arc<crate::reload::Live>,
}

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
        .nest_service("/ollama", crate::ollama::dashboard_router(state.live.clone()))
        .fallback(dashboard::asset_handler)
        .layer(axum::middleware::from_fn_with_state(state.clone(), require_token))
        .with_state(state)
}

/// With `admin.token` set, every route but `/health` and the dashboard's own files
/// needs it as a bearer token.
async fn require_token(
    State(state): State<Arc<AdminState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(token) = &state.token else {
        return next.run(request).await;
    };
    if request.uri().path() == "/health" || dashboard::is_public(request.uri().path()) {
        return next.run(request).await;
    }
    match crate::ollama::auth::bearer_token(request.headers()) {
        Some(presented) if token.matches(presented) => next.run(request).await,
        Some(_) => crate::ollama::auth::unauthorized("invalid admin token"),
        None => crate::ollama::auth::unauthorized("missing admin token"),
    }
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
