//! `GET /api/stats` and `GET /api/stats/timeseries`: aggregates over a recent window
//! of the log, computed in Rust from the rows' columns (SQLite has no percentiles).
//!
//! Parameters: `window` (`15m`, `1h`, `24h`, `7d`…; default `24h`, at most 366 days),
//! `until` (end of the window, exclusive; RFC 3339 or `YYYY-MM-DD HH:MM:SS` UTC;
//! default now), and for the time series `bucket` (`1m`, `5m`, `15m`, `1h`, `1d`…;
//! default `1h`, at least `1m`).
//!
//! The rows come from [`crate::store::stats`].
//!
//! Every finished row in the window counts, failed ones included (as in `/metrics`); a value a
//! row lacks (no TTFT for an error, no rate without a generation time) is left out of
//! that value's percentiles and mean only.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use super::{AdminError, AdminState, Params, parse_span};
use crate::store::query::parse_instant;
use crate::store::schema::parse_stored;
use crate::store::stats::{StatRow, series_rows, stat_rows};

const DEFAULT_WINDOW: &str = "24h";
const DEFAULT_BUCKET: &str = "1h";
const MAX_WINDOW_SECS: i64 = 366 * 86_400;
const MIN_BUCKET_SECS: i64 = 60;
const MAX_BUCKETS: i64 = 20_000;

/// `total / count`; 0 when there is nothing to count (no rows, no latencies).
fn per(total: f64, count: u64) -> f64 {
    if count == 0 { 0.0 } else { total / count as f64 }
}

/// The nearest-rank percentile of values sorted ascending: the value at 1-based rank
/// ⌈p·n/100⌉ (at least 1), i.e. the smallest value with at least p % of all values at
/// or below it. Always one of the values, never interpolated; `None` when empty.
pub fn nearest_rank<T: Copy>(sorted: &[T], p: u32) -> Option<T> {
    let n = sorted.len() as u64;
    let rank = (u64::from(p) * n).div_ceil(100).max(1);
    sorted.get(usize::try_from(rank - 1).ok()?).copied()
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatencyPercentiles {
    pub p50: Option<i64>,
    pub p95: Option<i64>,
    pub p99: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TtftPercentiles {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
}

/// The aggregates of one group of rows (one model, or all).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupStats {
    pub count: u64,
    /// Rows with an error.
    pub errors: u64,
    /// `errors / count`; 0 when there are no rows.
    pub error_rate: f64,
    /// Over `latency_ms`, nearest rank.
    pub latency_ms: LatencyPercentiles,
    /// Over `ttft_ms`, nearest rank.
    pub ttft_ms: TtftPercentiles,
    /// Arithmetic mean of the rows' `tokens_per_second`.
    pub tokens_per_second_mean: Option<f64>,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    /// Sum of the rows' `cost`; `None` when no row has one (no price configured).
    pub cost: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelStats {
    pub model: Option<String>,
    #[serde(flatten)]
    pub stats: GroupStats,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatsResponse {
    pub window: String,
    pub since: String,
    pub until: String,
    pub overall: GroupStats,
    /// By client model name, sorted; rows without a model come first as `null`.
    pub models: Vec<ModelStats>,
}

#[derive(Default)]
struct Group {
    count: u64,
    errors: u64,
    latencies: Vec<i64>,
    ttfts: Vec<f64>,
    rate_sum: f64,
    rates: u64,
    prompt_tokens: i64,
    completion_tokens: i64,
    cost: Option<f64>,
}

impl Group {
    fn add(&mut self, r: &StatRow) {
        self.count += 1;
        self.errors += u64::from(r.failed);
        self.latencies.extend(r.latency_ms);
        self.ttfts.extend(r.ttft_ms);
        if let Some(rate) = r.tokens_per_second {
            self.rate_sum += rate;
            self.rates += 1;
        }
        // Saturating: a row holds whatever count a backend reported.
        self.prompt_tokens = self.prompt_tokens.saturating_add(r.prompt_tokens.unwrap_or(0));
        self.completion_tokens = self.completion_tokens.saturating_add(r.completion_tokens.unwrap_or(0));
        if let Some(cost) = r.cost {
            *self.cost.get_or_insert(0.0) += cost;
        }
    }

    fn finish(mut self) -> GroupStats {
        self.latencies.sort_unstable();
        self.ttfts.sort_unstable_by(f64::total_cmp);
        GroupStats {
            count: self.count,
            errors: self.errors,
            error_rate: per(self.errors as f64, self.count),
            latency_ms: LatencyPercentiles {
                p50: nearest_rank(&self.latencies, 50),
                p95: nearest_rank(&self.latencies, 95),
                p99: nearest_rank(&self.latencies, 99),
            },
            ttft_ms: TtftPercentiles {
                p50: nearest_rank(&self.ttfts, 50),
                p95: nearest_rank(&self.ttfts, 95),
            },
            tokens_per_second_mean: (self.rates > 0).then(|| self.rate_sum / self.rates as f64),
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            cost: self.cost,
        }
    }
}

/// `window` and `until` of a stats request: the window's name and its bounds.
fn window_bounds(params: &Params) -> Result<(String, DateTime<Utc>, DateTime<Utc>), AdminError> {
    let window = params.get("window").unwrap_or(DEFAULT_WINDOW).to_owned();
    let secs = parse_span(&window).map_err(|m| AdminError::param("window", m))?;
    if secs > MAX_WINDOW_SECS {
        return Err(AdminError::param("window", format!("at most 366d, got '{window}'")));
    }
    let until = params.parse("until", parse_instant)?.unwrap_or_else(Utc::now);
    // Stored timestamps have milliseconds; so do the bounds.
    let until = DateTime::from_timestamp_millis(until.timestamp_millis())
        .ok_or_else(|| AdminError::param("until", "out of range"))?;
    let since = until - chrono::Duration::seconds(secs);
    Ok((window, since, until))
}

fn rfc3339(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub async fn stats_handler(
    State(state): State<Arc<AdminState>>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<StatsResponse>, AdminError> {
    let params = Params::new(query, &["window", "until"])?;
    let (window, since, until) = window_bounds(&params)?;
    let rows = stat_rows(&state.pool, &since, &until).await?;
    let mut overall = Group::default();
    let mut by_model: BTreeMap<Option<String>, Group> = BTreeMap::new();
    for row in &rows {
        overall.add(row);
        by_model.entry(row.model.clone()).or_default().add(row);
    }
    Ok(Json(StatsResponse {
        window,
        since: rfc3339(&since),
        until: rfc3339(&until),
        overall: overall.finish(),
        models: by_model
            .into_iter()
            .map(|(model, group)| ModelStats {
                model,
                stats: group.finish(),
            })
            .collect(),
    }))
}

/// One time bucket: rows whose `timestamp` is in `[start, start + bucket)`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bucket {
    /// RFC 3339, UTC.
    pub start: String,
    pub count: u64,
    pub errors: u64,
    /// Mean `latency_ms`; 0 for an empty bucket.
    pub latency_ms_mean: f64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cost: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimeseriesResponse {
    pub window: String,
    pub bucket: String,
    /// Start of the first bucket: `until - window` rounded down to a whole bucket.
    pub since: String,
    pub until: String,
    /// Oldest first; every bucket from `since` to the one holding `until`, empty ones
    /// with zeros. Buckets are aligned to multiples of their size since the Unix epoch
    /// (whole UTC minutes, hours, days).
    pub buckets: Vec<Bucket>,
}

pub async fn timeseries_handler(
    State(state): State<Arc<AdminState>>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<TimeseriesResponse>, AdminError> {
    let params = Params::new(query, &["window", "bucket", "until"])?;
    let (window, since, until) = window_bounds(&params)?;
    let bucket = params.get("bucket").unwrap_or(DEFAULT_BUCKET).to_owned();
    let bucket_secs = parse_span(&bucket).map_err(|m| AdminError::param("bucket", m))?;
    if bucket_secs < MIN_BUCKET_SECS {
        return Err(AdminError::param("bucket", format!("at least 1m, got '{bucket}'")));
    }
    let size = bucket_secs * 1000;
    let first = since.timestamp_millis().div_euclid(size) * size;
    let last = (until.timestamp_millis() - 1).div_euclid(size) * size;
    let count = (last - first) / size + 1;
    if count > MAX_BUCKETS {
        return Err(AdminError::param(
            "bucket",
            format!("'{bucket}' makes {count} buckets in '{window}', more than {MAX_BUCKETS}"),
        ));
    }
    let start = DateTime::from_timestamp_millis(first).ok_or_else(|| AdminError::param("until", "out of range"))?;
    let rows = series_rows(&state.pool, &start, &until).await?;

    struct Acc {
        count: u64,
        errors: u64,
        latency_sum: i64,
        latencies: u64,
        prompt_tokens: i64,
        completion_tokens: i64,
        cost: f64,
    }
    let mut accs: Vec<Acc> = (0..count)
        .map(|_| Acc {
            count: 0,
            errors: 0,
            latency_sum: 0,
            latencies: 0,
            prompt_tokens: 0,
            completion_tokens: 0,
            cost: 0.0,
        })
        .collect();
    for row in &rows {
        let Some(at) = parse_stored(&row.timestamp) else {
            tracing::debug!(timestamp = %row.timestamp, "log row with an unreadable timestamp left out");
            continue;
        };
        let Some(acc) = usize::try_from((at.timestamp_millis() - first).div_euclid(size))
            .ok()
            .and_then(|i| accs.get_mut(i))
        else {
            continue;
        };
        acc.count += 1;
        acc.errors += u64::from(row.failed);
        if let Some(latency) = row.latency_ms {
            acc.latency_sum += latency;
            acc.latencies += 1;
        }
        acc.prompt_tokens += row.prompt_tokens.unwrap_or(0);
        acc.completion_tokens += row.completion_tokens.unwrap_or(0);
        acc.cost += row.cost.unwrap_or(0.0);
    }
    let buckets = accs
        .into_iter()
        .zip(0..)
        .map(|(acc, i)| Bucket {
            start: rfc3339(&(start + chrono::Duration::milliseconds(i * size))),
            count: acc.count,
            errors: acc.errors,
            latency_ms_mean: per(acc.latency_sum as f64, acc.latencies),
            prompt_tokens: acc.prompt_tokens,
            completion_tokens: acc.completion_tokens,
            cost: acc.cost,
        })
        .collect();
    Ok(Json(TimeseriesResponse {
        window,
        bucket,
        since: rfc3339(&start),
        until: rfc3339(&until),
        buckets,
    }))
}

#[cfg(test)]
mod tests {
    use super::{Group, nearest_rank};
    use crate::store::stats::StatRow;

    #[test]
    fn token_sums_stop_at_the_largest_count_rather_than_wrap() {
        let huge = StatRow {
            model: Some("m".into()),
            failed: false,
            latency_ms: Some(5),
            ttft_ms: None,
            tokens_per_second: None,
            prompt_tokens: Some(i64::MAX - 1),
            completion_tokens: Some(i64::MAX),
            cost: None,
        };
        let mut group = Group::default();
        group.add(&huge);
        group.add(&huge);
        let stats = group.finish();
        assert_eq!(stats.count, 2);
        assert_eq!(stats.prompt_tokens, i64::MAX);
        assert_eq!(stats.completion_tokens, i64::MAX);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let hundred: Vec<i64> = (1..=100).collect();
        assert_eq!(nearest_rank(&hundred, 50), Some(50));
        assert_eq!(nearest_rank(&hundred, 95), Some(95));
        assert_eq!(nearest_rank(&hundred, 99), Some(99));
        assert_eq!(nearest_rank(&hundred, 100), Some(100));
        assert_eq!(nearest_rank(&hundred, 0), Some(1));
        // The textbook example: 15, 20, 35, 40, 50.
        let five = [15, 20, 35, 40, 50];
        assert_eq!(nearest_rank(&five, 30), Some(20));
        assert_eq!(nearest_rank(&five, 40), Some(20));
        assert_eq!(nearest_rank(&five, 50), Some(35));
        assert_eq!(nearest_rank(&five, 100), Some(50));
        assert_eq!(nearest_rank(&[7.5], 99), Some(7.5));
        assert_eq!(nearest_rank::<i64>(&[], 50), None);
    }
}
