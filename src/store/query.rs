//! Reading the log: the queries `GET /api/logs` on the admin listener and the
//! `ollabridge logs` command share, and the parsing of their filter values.
//!
//! Only fixed SQL fragments are ever concatenated; every user value is a bind.

use std::sync::LazyLock;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde::Serialize;
use sqlx::{Encode, QueryBuilder, Type};

mod detail;

use self::detail::DetailRow;
pub use self::detail::LogDetail;
use super::connect::{Store, on_pool};
use super::schema::{
    DETAIL_COLUMNS, Dialect, LIST_COLUMNS, POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS, STORED_READ, escape_like, stored,
};

/// Characters of prompt and response a list item carries.
pub const PREVIEW_CHARS: u32 = 200;
/// Most rows one page returns.
pub const MAX_LIMIT: u32 = 500;

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

/// The list query's start: the list columns ([`super::schema::Shown::List`]) and the
/// previews (a constant length: a bound u32 has no PostgreSQL type, and an int8 no
/// `substr`).
static SELECT_SUMMARIES: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {}, substr(prompt, 1, {PREVIEW_CHARS}) AS prompt_preview, \
         substr(response, 1, {PREVIEW_CHARS}) AS response_preview FROM logs WHERE 1 = 1",
        *LIST_COLUMNS
    )
});

/// One row's query, up to its id: the detail columns.
static SELECT_DETAIL: LazyLock<String> = LazyLock::new(|| format!("SELECT {} FROM logs WHERE id = ", *DETAIL_COLUMNS));

/// The list query's start, with `filter`'s conditions (generic over the database, as
/// every builder here: the store runs it on its own).
fn select_summaries<'a, DB: Dialect>(filter: &LogFilter) -> QueryBuilder<'a, DB>
where
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
{
    let mut qb = QueryBuilder::new(SELECT_SUMMARIES.as_str());
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
        let row = QueryBuilder::new(SELECT_DETAIL.as_str())
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

#[cfg(test)]
mod tests {
    use super::super::schema::{COLUMNS, Row, Shown, insert_rows, parse_stored};
    use super::*;

    /// The keys a read's JSON has, beyond `extra`.
    fn keys(value: &impl Serialize, extra: &[&str]) -> Vec<String> {
        let json = serde_json::to_value(value).expect("serializes");
        let mut keys: Vec<String> = json.as_object().expect("an object").keys().cloned().collect();
        keys.retain(|k| !extra.contains(&k.as_str()));
        keys.sort();
        keys
    }

    fn columns(include: impl Fn(Shown) -> bool) -> Vec<String> {
        let mut names: Vec<String> = COLUMNS
            .iter()
            .filter(|c| include(c.shown))
            .map(|c| c.name.to_owned())
            .collect();
        names.sort();
        names
    }

    /// A list item and a row's detail show exactly the columns the schema gives their
    /// level: a column added to [`COLUMNS`] but not to the read structs (or the other
    /// way round) fails here.
    #[tokio::test]
    async fn reads_show_exactly_the_columns_of_their_level() {
        let dir = tempfile::tempdir().expect("temp dir");
        let pool = super::super::connect::open(&dir.path().join("logs.db"))
            .await
            .expect("open");
        let record = super::super::LogRecord {
            timestamp: "2026-01-02 03:04:05.000".into(),
            endpoint: "/api/chat".into(),
            prompt: Some("[]".into()),
            ..Default::default()
        };
        let row = Row {
            in_flight: false,
            starred: false,
            instance: None,
            record: &record,
        };
        insert_rows::<sqlx::Sqlite>(std::slice::from_ref(&row))
            .build()
            .execute(&pool)
            .await
            .expect("insert");
        let store = Store::from(pool);
        let page = list(&store, &LogFilter::default(), None, 10).await.expect("list");
        assert_eq!(page.logs.len(), 1);
        assert_eq!(
            keys(&page.logs[0], &["prompt_preview", "response_preview"]),
            columns(|shown| shown == Shown::List)
        );
        let detail = get(&store, page.logs[0].id).await.expect("get").expect("the row");
        assert_eq!(keys(&detail, &["replays"]), columns(|shown| shown != Shown::Hidden));
        store.close().await;
    }

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
