//! `GET /api/logs` and `GET /api/logs/{id}`: the request log, read with the queries
//! the `ollabridge logs` command uses too ([`crate::store::query`]).
//!
//! List parameters (all optional, combined with AND):
//!
//! | parameter | |
//! |---|---|
//! | `model` | exact client model name |
//! | `status` | a code (`404`) or a class (`2xx`, `4xx`, `5xx`) |
//! | `errors_only` | `true`: only rows with an error |
//! | `since`, `until` | RFC 3339 or `YYYY-MM-DD HH:MM:SS` (UTC); since inclusive, until exclusive |
//! | `q` | substring of the prompt or the response (ASCII case-insensitive) |
//! | `limit` | rows per page, default 50, at most 500 (more is cut to 500) |
//! | `cursor` | the `next_cursor` of the previous page: rows with a smaller id |
//! | `starred` | `true`: only starred rows |
//!
//! Rows of requests still running (over a second) are included with `in_flight: true`
//! and no status yet; when the request ends its final row replaces them (new id).
//!
//! Answer: `{"logs": [summary, ...], "next_cursor": id | null}`, newest first.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};

use super::{AdminError, AdminState, Params};
use crate::store::query::{self, LogDetail, LogFilter, LogPage, MAX_LIMIT, StatusFilter};

const DEFAULT_LIMIT: u32 = 50;

const KNOWN: [&str; 9] = [
    "model",
    "status",
    "errors_only",
    "since",
    "until",
    "q",
    "limit",
    "cursor",
    "starred",
];

pub async fn list_handler(
    State(state): State<Arc<AdminState>>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<LogPage>, AdminError> {
    let params = Params::new(query, &KNOWN)?;
    let filter = LogFilter {
        model: params.get("model").map(str::to_owned),
        status: params.parse("status", StatusFilter::parse)?,
        errors_only: params.parse("errors_only", parse_bool)?.unwrap_or(false),
        since: params.parse("since", query::parse_time)?,
        until: params.parse("until", query::parse_time)?,
        search: params.get("q").map(str::to_owned),
        starred: params.parse("starred", parse_bool)?.unwrap_or(false),
    };
    let limit = params.parse("limit", parse_limit)?.unwrap_or(DEFAULT_LIMIT);
    let cursor = params.parse("cursor", parse_id)?;
    Ok(Json(query::list(&state.pool, &filter, cursor, limit).await?))
}

pub async fn get_handler(
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
) -> Result<Json<LogDetail>, AdminError> {
    let id = parse_id(&id).map_err(|message| AdminError::param("id", message))?;
    match query::get(&state.pool, id).await? {
        Some(row) => Ok(Json(row)),
        None => Err(AdminError::NotFound(format!("log {id} not found"))),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Star {
    starred: bool,
}

/// `PUT /api/logs/{id}/starred` with `{"starred": true|false}`: starred rows are kept
/// by retention and can be listed with `starred=true`.
pub async fn star_handler(
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, AdminError> {
    let id = parse_id(&id).map_err(|message| AdminError::param("id", message))?;
    let Star { starred } = serde_json::from_slice(&body)
        .map_err(|e| AdminError::BadRequest(format!("invalid body: {e}; expected {{\"starred\": true}} or false")))?;
    if !query::set_starred(&state.write_pool, id, starred).await? {
        return Err(AdminError::NotFound(format!("log {id} not found")));
    }
    Ok(Json(serde_json::json!({ "id": id, "starred": starred })))
}

pub fn parse_bool(text: &str) -> Result<bool, String> {
    match text {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(format!("expected true or false, got '{text}'")),
    }
}

/// 1 or more; above [`MAX_LIMIT`] is cut to it.
fn parse_limit(text: &str) -> Result<u32, String> {
    match text.parse::<u64>() {
        Ok(n) if n >= 1 => Ok(u32::try_from(n).unwrap_or(MAX_LIMIT).min(MAX_LIMIT)),
        _ => Err(format!("expected a whole number from 1 to {MAX_LIMIT}, got '{text}'")),
    }
}

pub fn parse_id(text: &str) -> Result<i64, String> {
    match text.parse::<i64>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("expected a row id (a whole number from 1), got '{text}'")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_ids() {
        assert_eq!(parse_limit("3"), Ok(3));
        assert_eq!(parse_limit("500"), Ok(500));
        assert_eq!(parse_limit("501"), Ok(500));
        assert_eq!(parse_limit("99999999999"), Ok(500));
        assert!(parse_limit("0").is_err());
        assert!(parse_limit("-1").is_err());
        assert!(parse_limit("ten").is_err());
        assert_eq!(parse_id("7"), Ok(7));
        assert!(parse_id("0").is_err());
        assert!(parse_id("x").is_err());
        assert_eq!(parse_bool("true"), Ok(true));
        assert!(parse_bool("yes").is_err());
    }
}
