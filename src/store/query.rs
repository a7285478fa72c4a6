//! Reading the log: the queries `GET /api/logs` on the admin listener and the
//! `ollabridge logs` command share, and the parsing of their filter values.
//!
//! Only fixed SQL fragments are ever concatenated; every user value is a bind.

use std::path::Path;
use std::time::Duration;

use chrono::format::{Fixed, Item, Numeric, Pad};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::{Encode, QueryBuilder, Type};

use super::db::{Dialect, POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS, on_pool};
use super::{Store, StoreError};

/// Characters of prompt and response a list item carries.
pub const PREVIEW_CHARS: u32 = 200;
/// Most rows one page returns.
pub const MAX_LIMIT: u32 = 500;

/// The stored `timestamp` format (UTC), `%Y-%m-%d %H:%M:%S%.3f` parsed ahead: every
/// request's row is stamped on the request path, and parsing the pattern each time
/// cost more than the formatting.
const STORED: &[Item<'static>] = &[
    Item::Numeric(Numeric::Year, Pad::Zero),
    Item::Literal("-"),
    Item::Numeric(Numeric::Month, Pad::Zero),
    Item::Literal("-"),
    Item::Numeric(Numeric::Day, Pad::Zero),
    Item::Literal(" "),
    Item::Numeric(Numeric::Hour, Pad::Zero),
    Item::Literal(":"),
    Item::Numeric(Numeric::Minute, Pad::Zero),
    Item::Literal(":"),
    Item::Numeric(Numeric::Second, Pad::Zero),
    Item::Fixed(Fixed::Nanosecond3),
];

/// The stored format as read back (and as clients may write it): any fraction of a second.
const STORED_READ: &str = "%Y-%m-%d %H:%M:%S%.f";

/// Opens an existing log database for reading only: never creates, migrates or writes.
pub async fn open_reader(path: &Path, max_connections: u32) -> Result<SqlitePool, StoreError> {
    let shown = path.display().to_string();
    let options = SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .create_if_missing(false)
        .busy_timeout(Duration::from_secs(5));
    SqlitePoolOptions::new()
        .max_connections(max_connections)
        .connect_with(options)
        .await
        .map_err(|source| StoreError::Open { path: shown, source })
}

/// Checks that the database has every migration this build knows, so the reading
/// queries find their columns; the message says what to do otherwise.
pub async fn check_schema(store: &Store) -> Result<(), String> {
    let migrations = match store {
        Store::Sqlite(_) => &SQLITE_MIGRATIONS,
        Store::Postgres(_) => &POSTGRES_MIGRATIONS,
    };
    let latest = migrations.iter().map(|m| m.version).max().unwrap_or(0);
    let sql = "SELECT MAX(version) FROM _sqlx_migrations WHERE success";
    let applied: Option<i64> = on_pool!(store, pool => sqlx::query_scalar(sql).fetch_one(pool).await)
        .map_err(|e| format!("not an ollabridge log database ({e})"))?;
    match applied {
        Some(v) if v >= latest => Ok(()),
        _ => Err("the database has an older schema; start the ollabridge server on it once to migrate it".into()),
    }
}

/// Which rows to list. Every field narrows the selection (AND).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogFilter {
    /// Exact client model name.
    pub model: Option<String>,
    pub status: Option<StatusFilter>,
    /// Only rows with an `error`.
    pub errors_only: bool,
    /// Inclusive lower bound, in the stored format (see [`parse_time`]).
    pub since: Option<String>,
    /// Exclusive upper bound, in the stored format.
    pub until: Option<String>,
    /// Substring of the prompt or the response; ASCII letters match in any case
    /// (SQLite's `LIKE`; PostgreSQL's `ILIKE` in a C-locale database), `%`, `_` and `\`
    /// match themselves.
    pub search: Option<String>,
    /// Only starred rows.
    pub starred: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    /// One status code, e.g. 404.
    Exact(u16),
    /// A class: 2 for `2xx`, ..., 5 for `5xx`.
    Class(u16),
}

impl StatusFilter {
    /// `200`, or `2xx`/`4xx`/`5xx` (any class 1-5, `X` in either case).
    pub fn parse(text: &str) -> Result<StatusFilter, String> {
        let bad = || format!("expected a status code like 404 or a class like 5xx, got '{text}'");
        let bytes = text.as_bytes();
        if bytes.len() != 3 {
            return Err(bad());
        }
        if bytes[1..].eq_ignore_ascii_case(b"xx") && (b'1'..=b'5').contains(&bytes[0]) {
            return Ok(StatusFilter::Class(u16::from(bytes[0] - b'0')));
        }
        match text.parse::<u16>() {
            Ok(code) if (100..=599).contains(&code) && bytes.iter().all(u8::is_ascii_digit) => {
                Ok(StatusFilter::Exact(code))
            }
            _ => Err(bad()),
        }
    }
}

/// One row of a list: the summary columns and short previews, not the bodies.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct LogSummary {
    pub id: i64,
    pub timestamp: String,
    pub request_id: Option<String>,
    pub endpoint: String,
    pub method: String,
    pub model: Option<String>,
    pub backend_model: Option<String>,
    pub status_code: Option<i64>,
    pub latency_ms: Option<i64>,
    pub ttft_ms: Option<f64>,
    pub stream: Option<bool>,
    pub done_reason: Option<String>,
    pub prompt_tokens: Option<i64>,
    pub completion_tokens: Option<i64>,
    pub tokens_per_second: Option<f64>,
    pub cost: Option<f64>,
    pub error: Option<String>,
    /// The request is still running (no status or latency yet).
    pub in_flight: bool,
    pub starred: bool,
    /// The row this request replayed.
    pub replay_of: Option<i64>,
    /// Answered from the response cache.
    pub cache_hit: bool,
    /// The first [`PREVIEW_CHARS`] characters of the prompt.
    pub prompt_preview: Option<String>,
    /// The first [`PREVIEW_CHARS`] characters of the response.
    pub response_preview: Option<String>,
}

/// A page of rows, newest first; `next_cursor` is the `cursor` for the next page,
/// `None` when this page is the last.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogPage {
    pub logs: Vec<LogSummary>,
    pub next_cursor: Option<i64>,
}

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

#[derive(sqlx::FromRow)]
struct DetailRow {
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

const SUMMARY_COLUMNS: &str = "SELECT id, timestamp, request_id, endpoint, method, model, backend_model, status_code, \
     latency_ms, ttft_ms, stream, done_reason, prompt_tokens, completion_tokens, tokens_per_second, cost, error, \
     in_flight, starred, replay_of, cache_hit, substr(prompt, 1, ";
const SUMMARY_COLUMNS_END: &str = ") AS response_preview FROM logs WHERE 1 = 1";

/// The list query's start, with `filter`'s conditions (generic over the database, as
/// every builder here: the store runs it on its own).
fn select_summaries<'a, DB: Dialect>(filter: &LogFilter) -> QueryBuilder<'a, DB>
where
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
{
    let mut qb = QueryBuilder::new(SUMMARY_COLUMNS);
    // A constant (a bound u32 has no PostgreSQL type, and an int8 no `substr`).
    qb.push(PREVIEW_CHARS)
        .push(") AS prompt_preview, substr(response, 1, ")
        .push(PREVIEW_CHARS)
        .push(SUMMARY_COLUMNS_END);
    if let Some(model) = &filter.model {
        qb.push(" AND model = ").push_bind(model.clone());
    }
    match filter.status {
        Some(StatusFilter::Exact(code)) => {
            qb.push(" AND status_code = ").push_bind(i64::from(code));
        }
        Some(StatusFilter::Class(class)) => {
            qb.push(" AND status_code >= ")
                .push_bind(i64::from(class) * 100)
                .push(" AND status_code < ")
                .push_bind(i64::from(class) * 100 + 100);
        }
        None => {}
    }
    if filter.errors_only {
        qb.push(" AND error IS NOT NULL");
    }
    if filter.starred {
        qb.push(" AND starred = ").push(DB::TRUE);
    }
    if let Some(since) = &filter.since {
        qb.push(" AND timestamp >= ").push_bind(since.clone());
    }
    if let Some(until) = &filter.until {
        qb.push(" AND timestamp < ").push_bind(until.clone());
    }
    if let Some(search) = &filter.search {
        let pattern = like_pattern(search);
        qb.push(" AND (prompt ")
            .push(DB::LIKE)
            .push(" ")
            .push_bind(pattern.clone())
            .push(" ESCAPE '\\' OR response ")
            .push(DB::LIKE)
            .push(" ")
            .push_bind(pattern)
            .push(" ESCAPE '\\')");
    }
    qb
}

/// One page, newest first: rows with `id < cursor` (all when `None`), at most `limit`.
pub async fn list(store: &Store, filter: &LogFilter, cursor: Option<i64>, limit: u32) -> Result<LogPage, sqlx::Error> {
    let limit = limit.clamp(1, MAX_LIMIT);
    let mut logs: Vec<LogSummary> =
        on_pool!(store, pool => list_query(filter, cursor, limit).build_query_as().fetch_all(pool).await?);
    let more = logs.len() > limit as usize;
    logs.truncate(limit as usize);
    let next_cursor = if more { logs.last().map(|r| r.id) } else { None };
    Ok(LogPage { logs, next_cursor })
}

fn list_query<'a, DB: Dialect>(filter: &LogFilter, cursor: Option<i64>, limit: u32) -> QueryBuilder<'a, DB>
where
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
{
    let mut qb = select_summaries(filter);
    if let Some(cursor) = cursor {
        qb.push(" AND id < ").push_bind(cursor);
    }
    // One row more than asked tells whether another page follows.
    qb.push(" ORDER BY id DESC LIMIT ").push_bind(i64::from(limit) + 1);
    qb
}

/// Rows added after `after_id`, oldest first, at most `limit` (for following the log).
pub async fn newer(
    store: &Store,
    filter: &LogFilter,
    after_id: i64,
    limit: u32,
) -> Result<Vec<LogSummary>, sqlx::Error> {
    on_pool!(store, pool => newer_query(filter, after_id, limit).build_query_as().fetch_all(pool).await)
}

fn newer_query<'a, DB: Dialect>(filter: &LogFilter, after_id: i64, limit: u32) -> QueryBuilder<'a, DB>
where
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
{
    let mut qb = select_summaries(filter);
    // An in-flight row is replaced by a new one when its request ends.
    qb.push(" AND in_flight = ")
        .push(DB::FALSE)
        .push(" AND id > ")
        .push_bind(after_id)
        .push(" ORDER BY id ASC LIMIT ")
        .push_bind(i64::from(limit.clamp(1, MAX_LIMIT)));
    qb
}

/// One row with everything in it.
pub async fn get(store: &Store, id: i64) -> Result<Option<LogDetail>, sqlx::Error> {
    let (row, replays): (Option<DetailRow>, Vec<i64>) = on_pool!(store, pool => {
        let row = QueryBuilder::new(
            "SELECT id, timestamp, request_id, endpoint, method, model, backend_model, backend_type, status_code, \
             error, stream, done_reason, prompt, response, thinking, tool_calls, latency_ms, ttft_ms, \
             prompt_eval_ms, eval_ms, tokens_per_second, prompt_tokens, completion_tokens, tokens_estimated, \
             request_bytes, response_bytes, client_addr, client_key, cost, in_flight, starred, replay_of, \
             request_body, backend_request, backend_response, backend, attempts, cache_hit \
             FROM logs WHERE id = ",
        )
        .push_bind(id)
        .build_query_as()
        .fetch_optional(pool)
        .await?;
        let replays = match row {
            None => Vec::new(),
            Some(_) => {
                QueryBuilder::new("SELECT id FROM logs WHERE replay_of = ")
                    .push_bind(id)
                    .push(" ORDER BY id")
                    .build_query_scalar()
                    .fetch_all(pool)
                    .await?
            }
        };
        (row, replays)
    });
    let Some(row) = row else { return Ok(None) };
    let mut detail = LogDetail::from(row);
    detail.replays = replays;
    Ok(Some(detail))
}

/// Stars or unstars a row (starred rows are kept by retention); false when there is
/// no such row.
pub async fn set_starred(store: &Store, id: i64, starred: bool) -> Result<bool, sqlx::Error> {
    let changed = on_pool!(store, pool => {
        QueryBuilder::new("UPDATE logs SET starred = ")
            .push_bind(starred)
            .push(" WHERE id = ")
            .push_bind(id)
            .build()
            .execute(pool)
            .await?
            .rows_affected()
    });
    Ok(changed > 0)
}

/// `%text%` for `LIKE … ESCAPE '\'`, with the user's `\`, `%` and `_` escaped.
pub fn like_pattern(text: &str) -> String {
    format!("%{}%", escape_like(text))
}

/// `text` with `\`, `%` and `_` escaped for `LIKE … ESCAPE '\'`.
pub fn escape_like(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len() + 2);
    for c in text.chars() {
        if matches!(c, '\\' | '%' | '_') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// A time as the API and CLI accept it, in the stored format (UTC,
/// `YYYY-MM-DD HH:MM:SS.SSS`) so it compares as text with `timestamp`:
/// RFC 3339 with any offset (`2026-01-02T03:04:05Z`, `…+02:00`), or
/// `YYYY-MM-DD HH:MM:SS[.fff]` / `YYYY-MM-DD` taken as UTC.
pub fn parse_time(text: &str) -> Result<String, String> {
    parse_instant(text).map(|t| stored(&t))
}

/// Like [`parse_time`], as an instant.
pub fn parse_instant(text: &str) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(text, STORED_READ) {
        return Ok(t.and_utc());
    }
    if let Some(t) = NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
    {
        return Ok(t.and_utc());
    }
    Err(format!(
        "expected RFC 3339 like 2026-01-02T03:04:05Z (in a URL, '+' as %2B) or 'YYYY-MM-DD HH:MM:SS' in UTC, \
         got '{text}'"
    ))
}

/// An instant in the stored `timestamp` format.
pub fn stored(t: &DateTime<Utc>) -> String {
    t.format_with_items(STORED.iter()).to_string()
}

/// A stored `timestamp` read back as an instant.
pub fn parse_stored(text: &str) -> Option<DateTime<Utc>> {
    NaiveDateTime::parse_from_str(text, STORED_READ)
        .ok()
        .map(|t| t.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_escape_wildcards_and_the_escape() {
        assert_eq!(like_pattern("50%_off\\"), "%50\\%\\_off\\\\%");
        assert_eq!(like_pattern("plain"), "%plain%");
    }

    #[test]
    fn status_filters() {
        assert_eq!(StatusFilter::parse("404"), Ok(StatusFilter::Exact(404)));
        assert_eq!(StatusFilter::parse("5xx"), Ok(StatusFilter::Class(5)));
        assert_eq!(StatusFilter::parse("2XX"), Ok(StatusFilter::Class(2)));
        for bad in ["", "6xx", "x00", "+20", "20", "2000", "099", "600", "abc"] {
            assert!(StatusFilter::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn times_become_the_stored_utc_text() {
        assert_eq!(parse_time("2026-01-02T03:04:05Z").unwrap(), "2026-01-02 03:04:05.000");
        assert_eq!(
            parse_time("2026-01-02T03:04:05.5+02:00").unwrap(),
            "2026-01-02 01:04:05.500"
        );
        assert_eq!(parse_time("2026-01-02 03:04:05").unwrap(), "2026-01-02 03:04:05.000");
        assert_eq!(
            parse_time("2026-01-02 03:04:05.123").unwrap(),
            "2026-01-02 03:04:05.123"
        );
        assert_eq!(parse_time("2026-01-02").unwrap(), "2026-01-02 00:00:00.000");
        // A '+' that a URL query turned into a space.
        assert!(parse_time("2026-01-02T03:04:05 02:00").unwrap_err().contains("%2B"));
        assert!(parse_time("yesterday").is_err());
        assert_eq!(
            parse_stored("2026-01-02 03:04:05.250").map(|t| stored(&t)).as_deref(),
            Some("2026-01-02 03:04:05.250")
        );
    }
}
