//! What a log row is: the `logs` table's columns, defined once here ([`COLUMNS`], with
//! how the writer binds each one and which reads show it), the migrations that create
//! the table on each database, the SQL that differs between the databases
//! ([`Dialect`]), and the stored format of `timestamp`.
//!
//! The migrations stay SQL files; a test checks that the tables they make have exactly
//! the columns defined here (SQLite below, PostgreSQL in `tests/postgres_store.rs`).
//! Nothing here opens a database: this is the bottom of the store's modules.

use std::sync::LazyLock;

use chrono::format::{Fixed, Item, Numeric, Pad};
use chrono::{DateTime, NaiveDateTime, Utc};
use sqlx::migrate::Migrator;
use sqlx::query_builder::Separated;
use sqlx::{Database, Encode, Postgres, QueryBuilder, Sqlite, Type};

use super::LogRecord;

/// The SQLite schema (`migrations/`).
pub static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations");
/// The same schema for PostgreSQL (`migrations/postgres/`).
pub static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// SQL that is written differently for each database.
pub trait Dialect: Database {
    /// Boolean literals, written as the partial indexes are (SQLite's planner only
    /// uses `WHERE starred = 1` for `starred = 1`, not for `starred = TRUE`).
    const TRUE: &'static str;
    const FALSE: &'static str;
    /// A pattern match with ASCII letters in any case (SQLite's `LIKE`; PostgreSQL's
    /// `ILIKE`, which folds ASCII only under the C locale the README recommends).
    const LIKE: &'static str;
}

impl Dialect for Sqlite {
    const TRUE: &'static str = "1";
    const FALSE: &'static str = "0";
    const LIKE: &'static str = "LIKE";
}

impl Dialect for Postgres {
    const TRUE: &'static str = "TRUE";
    const FALSE: &'static str = "FALSE";
    const LIKE: &'static str = "ILIKE";
}

/// One column of `logs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    pub shown: Shown,
}

/// Which reads of the admin API and the `logs` command select a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown {
    /// In a list item ([`super::query::LogSummary`]) and in one row's detail.
    List,
    /// Only in one row's detail ([`super::query::LogDetail`]).
    Detail,
    /// Never read back by the API (bookkeeping).
    Hidden,
}

/// What the writer stores as one row: a request's record, and the row's own flags.
pub struct Row<'a> {
    pub in_flight: bool,
    pub starred: bool,
    /// The process running the request (in-flight rows).
    pub instance: Option<&'a str>,
    pub record: &'a LogRecord,
}

/// Defines [`COLUMNS`], the `INSERT` column list and the matching binds from one table
/// of `name: shown = value` lines, in the table's column order (after `id`, which the
/// database assigns). `$row` is the [`Row`] and `$r` its record in the values.
macro_rules! log_columns {
    (
        |$row:ident, $r:ident|
        $first:ident : $first_shown:ident = $first_value:expr,
        $($name:ident : $shown:ident = $value:expr,)*
    ) => {
        /// Every column of `logs`, in the table's order.
        pub const COLUMNS: &[Column] = &[
            Column { name: "id", shown: Shown::List },
            Column { name: stringify!($first), shown: Shown::$first_shown },
            $(Column { name: stringify!($name), shown: Shown::$shown },)*
        ];

        const INSERT_INTO: &str =
            concat!("INSERT INTO logs (", stringify!($first), $(", ", stringify!($name),)* ") ");

        /// Binds one row's values, in [`INSERT_INTO`]'s order.
        fn bind_row<'a, DB: Database>(values: &mut Separated<'_, 'a, DB, &'static str>, $row: &'a Row<'a>)
        where
            for<'q> bool: Encode<'q, DB> + Type<DB>,
            for<'q> i64: Encode<'q, DB> + Type<DB>,
            for<'q> f64: Encode<'q, DB> + Type<DB>,
            for<'q> String: Encode<'q, DB> + Type<DB>,
            for<'q> &'q str: Encode<'q, DB> + Type<DB>,
            for<'q> Option<i64>: Encode<'q, DB>,
            for<'q> Option<f64>: Encode<'q, DB>,
            for<'q> Option<String>: Encode<'q, DB>,
            for<'q> Option<&'q str>: Encode<'q, DB>,
        {
            let $r = $row.record;
            values.push_bind($first_value)$(.push_bind($value))*;
        }
    };
}

log_columns! {
    |row, r|
    timestamp: List = &r.timestamp,
    endpoint: List = &r.endpoint,
    method: List = &r.method,
    model: List = &r.model,
    backend_model: List = &r.backend_model,
    prompt: Detail = &r.prompt,
    response: Detail = &r.response,
    thinking: Detail = &r.thinking,
    tool_calls: Detail = &r.tool_calls,
    // A request still running has neither yet.
    status_code: List = (!row.in_flight).then(|| i64::from(r.status_code)),
    latency_ms: List = (!row.in_flight).then(|| to_i64(r.latency_ms)),
    stream: List = r.stream,
    backend_type: Detail = &r.backend_type,
    done_reason: List = &r.done_reason,
    prompt_tokens: List = r.prompt_tokens.map(to_i64),
    completion_tokens: List = r.completion_tokens.map(to_i64),
    error: List = &r.error,
    request_id: List = &r.request_id,
    ttft_ms: List = r.ttft_ms,
    prompt_eval_ms: Detail = r.prompt_eval_ms,
    eval_ms: Detail = r.eval_ms,
    tokens_per_second: List = r.tokens_per_second,
    tokens_estimated: Detail = r.tokens_estimated,
    request_bytes: Detail = to_i64(r.request_bytes),
    response_bytes: Detail = to_i64(r.response_bytes),
    client_addr: Detail = &r.client_addr,
    cost: List = r.cost,
    client_key: Detail = &r.client_key,
    in_flight: List = row.in_flight,
    starred: List = row.starred,
    replay_of: List = r.replay_of,
    request_body: Detail = &r.request_body,
    backend_request: Detail = &r.backend_request,
    backend_response: Detail = &r.backend_response,
    backend: Detail = &r.backend,
    attempts: Detail = &r.attempts,
    cache_hit: List = r.cache_hit,
    instance: Hidden = row.instance,
}

/// Rows per INSERT statement: each statement is a round trip to sqlx's SQLite thread
/// (or to PostgreSQL), which costs more than the database's own work (39 columns × 64
/// rows stays far below SQLite's limit of 32,766 bound values and PostgreSQL's 65,535).
pub const ROWS_PER_STATEMENT: usize = 64;

/// `INSERT` of up to [`ROWS_PER_STATEMENT`] rows.
pub fn insert_rows<'a, DB: Dialect>(rows: &'a [Row<'a>]) -> QueryBuilder<'a, DB>
where
    for<'q> bool: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> f64: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB>,
    for<'q> Option<f64>: Encode<'q, DB>,
    for<'q> Option<String>: Encode<'q, DB>,
    for<'q> Option<&'q str>: Encode<'q, DB>,
{
    let mut insert = QueryBuilder::new(INSERT_INTO);
    insert.push_values(rows, |mut values, row| bind_row(&mut values, row));
    insert
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// `id, timestamp, …`: the columns a list item shows.
pub static LIST_COLUMNS: LazyLock<String> = LazyLock::new(|| column_list(|shown| shown == Shown::List));

/// The columns one row's detail shows (all but the bookkeeping).
pub static DETAIL_COLUMNS: LazyLock<String> = LazyLock::new(|| column_list(|shown| shown != Shown::Hidden));

fn column_list(include: impl Fn(Shown) -> bool) -> String {
    COLUMNS
        .iter()
        .filter(|c| include(c.shown))
        .map(|c| c.name)
        .collect::<Vec<_>>()
        .join(", ")
}

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
pub(super) const STORED_READ: &str = "%Y-%m-%d %H:%M:%S%.f";

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

#[cfg(test)]
mod tests {
    use sqlx::sqlite::SqlitePoolOptions;

    use super::*;

    fn names(columns: impl IntoIterator<Item = &'static Column>) -> Vec<&'static str> {
        columns.into_iter().map(|c| c.name).collect()
    }

    /// The migrations and [`COLUMNS`] cannot drift apart (PostgreSQL's twin of this test
    /// is in tests/postgres_store.rs).
    #[tokio::test]
    async fn the_sqlite_migrations_make_exactly_the_defined_columns() {
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .expect("in-memory database");
        SQLITE_MIGRATIONS.run(&pool).await.expect("migrate");
        let migrated: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_table_info('logs') ORDER BY cid")
            .fetch_all(&pool)
            .await
            .expect("table info");
        assert_eq!(migrated, names(COLUMNS));
    }

    #[test]
    fn the_insert_names_every_column_but_id_and_binds_as_many_values() {
        let written = &names(COLUMNS)[1..];
        assert_eq!(INSERT_INTO, format!("INSERT INTO logs ({}) ", written.join(", ")));
        let record = LogRecord::default();
        let row = Row {
            in_flight: false,
            starred: false,
            instance: None,
            record: &record,
        };
        let rows = [row];
        let sql = insert_rows::<Sqlite>(&rows).into_sql();
        let values = sql.trim_start_matches(INSERT_INTO);
        assert_eq!(values.matches('?').count(), written.len(), "{values}");
    }

    #[test]
    fn reads_show_the_columns_their_level_allows() {
        assert!(LIST_COLUMNS.starts_with("id, timestamp, endpoint, "));
        assert!(!LIST_COLUMNS.contains("prompt,"));
        assert!(DETAIL_COLUMNS.contains(", prompt, "));
        assert!(!DETAIL_COLUMNS.contains("instance"));
        assert_eq!(DETAIL_COLUMNS.split(", ").count(), COLUMNS.len() - 1);
    }
}
