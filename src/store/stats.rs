//! The reads behind `GET /api/stats` and `GET /api/stats/timeseries`: the finished rows
//! of a window, with the columns each aggregates (the aggregation and the HTTP side are
//! in `admin::stats`).

use chrono::{DateTime, Utc};
use sqlx::{Encode, QueryBuilder, Type};

use super::connect::{Store, on_pool};
use super::schema::{Dialect, stored};

/// What the stats of one row need.
#[derive(Debug, sqlx::FromRow)]
pub struct StatRow {
    pub model: Option<String>,
    pub failed: bool,
    pub latency_ms: Option<i64>,
    pub ttft_ms: Option<f64>,
    pub tokens_per_second: Option<f64>,
    pub prompt_tokens: Option<i64>,
    pub completion_tokens: Option<i64>,
    pub cost: Option<f64>,
}

/// What a time series needs of one row.
#[derive(Debug, sqlx::FromRow)]
pub struct SeriesRow {
    pub timestamp: String,
    pub failed: bool,
    pub latency_ms: Option<i64>,
    pub prompt_tokens: Option<i64>,
    pub completion_tokens: Option<i64>,
    pub cost: Option<f64>,
}

/// The finished rows in `[since, until)`, oldest first, for the stats.
pub async fn stat_rows(
    store: &Store,
    since: &DateTime<Utc>,
    until: &DateTime<Utc>,
) -> Result<Vec<StatRow>, sqlx::Error> {
    const COLUMNS: &str = "model, error IS NOT NULL AS failed, latency_ms, ttft_ms, tokens_per_second, \
                           prompt_tokens, completion_tokens, cost";
    on_pool!(store, pool => finished_rows(COLUMNS, stored(since), stored(until)).build_query_as().fetch_all(pool).await)
}

/// The finished rows in `[since, until)`, oldest first, for a time series.
pub async fn series_rows(
    store: &Store,
    since: &DateTime<Utc>,
    until: &DateTime<Utc>,
) -> Result<Vec<SeriesRow>, sqlx::Error> {
    const COLUMNS: &str = "timestamp, error IS NOT NULL AS failed, latency_ms, prompt_tokens, completion_tokens, cost";
    on_pool!(store, pool => finished_rows(COLUMNS, stored(since), stored(until)).build_query_as().fetch_all(pool).await)
}

/// `SELECT columns` of the finished rows in `[since, until)`, oldest first.
fn finished_rows<'a, DB: Dialect>(columns: &str, since: String, until: String) -> QueryBuilder<'a, DB>
where
    for<'q> String: Encode<'q, DB> + Type<DB>,
{
    let mut qb = QueryBuilder::new("SELECT ");
    qb.push(columns)
        .push(" FROM logs WHERE timestamp >= ")
        .push_bind(since)
        .push(" AND timestamp < ")
        .push_bind(until)
        .push(" AND in_flight = ")
        .push(DB::FALSE)
        .push(" ORDER BY id");
    qb
}
