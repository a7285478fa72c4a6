//! Keeps the log within `database.retention`: rows older than an age, beyond a count,
//! or beyond a size are deleted oldest first, in small batches so the writer never
//! waits long for the lock, and the freed pages are given back.
//!
//! The age and row bounds are the same SQL on both databases. Sizes differ: SQLite
//! counts its used pages; PostgreSQL's files keep freed space for reuse (autovacuum),
//! so there the bound is on the rows' stored size (see [`postgres_keep_rows`]).

use std::time::Duration;

use sqlx::{Encode, PgPool, QueryBuilder, SqlitePool, Type};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::connect::{Store, on_pool};
use super::schema::{Dialect, stored};
use crate::config::Retention;

/// Rows deleted per statement: each takes the write lock only briefly.
const BATCH: i64 = 500;

pub fn spawn_retention(store: impl Into<Store>, policy: Retention, stop: CancellationToken) -> JoinHandle<()> {
    let store = store.into();
    tokio::spawn(async move {
        loop {
            match enforce(&store, &policy).await {
                Ok(0) => {}
                Ok(deleted) => tracing::info!(deleted, "retention: old log rows deleted"),
                Err(e) => tracing::warn!(error = %e, "retention: cannot delete old log rows"),
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(policy.interval) => {}
            }
        }
    })
}

/// One pass of the policy; returns how many rows went.
pub async fn enforce(store: impl Into<Store>, policy: &Retention) -> Result<u64, sqlx::Error> {
    let store = store.into();
    let mut deleted = 0;
    if let Some(age) = policy.max_age {
        let cutoff = chrono::Utc::now() - chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX);
        let cutoff = stored(&cutoff);
        loop {
            let n = on_pool!(&store, pool => older_than(&cutoff).build().execute(pool).await?.rows_affected());
            deleted += n;
            if n < BATCH as u64 {
                break;
            }
            tokio::task::yield_now().await;
        }
    }
    let size_as_rows = match (&store, policy.max_bytes) {
        (Store::Postgres(pool), Some(max_bytes)) => postgres_keep_rows(pool, max_bytes).await?,
        _ => None,
    };
    if let Some(max_rows) = policy.max_rows.into_iter().chain(size_as_rows).min() {
        deleted += keep_newest(&store, max_rows).await?;
    }
    if let (Store::Sqlite(pool), Some(max_bytes)) = (&store, policy.max_bytes) {
        deleted += sqlite_keep_bytes(pool, max_bytes).await?;
    }
    if let (Store::Sqlite(pool), true) = (&store, deleted > 0) {
        reclaim(pool).await?;
    }
    Ok(deleted)
}

/// Rows retention may delete: starred rows are kept, and so are rows of requests
/// still running (they are replaced when the request ends).
fn push_deletable<DB: Dialect>(qb: &mut QueryBuilder<'_, DB>) {
    qb.push("starred = ")
        .push(DB::FALSE)
        .push(" AND in_flight = ")
        .push(DB::FALSE);
}

fn older_than<'a, DB: Dialect>(cutoff: &str) -> QueryBuilder<'a, DB>
where
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
{
    let mut qb = QueryBuilder::new("DELETE FROM logs WHERE id IN (SELECT id FROM logs WHERE timestamp < ");
    qb.push_bind(cutoff.to_owned()).push(" AND ");
    push_deletable(&mut qb);
    qb.push(" ORDER BY id LIMIT ").push_bind(BATCH).push(")");
    qb
}

/// Deletes everything older than the newest `max_rows` rows.
async fn keep_newest(store: &Store, max_rows: u64) -> Result<u64, sqlx::Error> {
    // A bound on ids rather than a count to delete, so two passes at once (or two
    // replicas) can never delete too much.
    let keep_from = i64::try_from(max_rows.max(1) - 1).unwrap_or(i64::MAX);
    let mut deleted = 0;
    loop {
        let n = on_pool!(store, pool => beyond_newest(keep_from).build().execute(pool).await?.rows_affected());
        deleted += n;
        if n < BATCH as u64 {
            return Ok(deleted);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn beyond_newest<'a, DB: Dialect>(keep_from: i64) -> QueryBuilder<'a, DB>
where
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    let mut qb = QueryBuilder::new(
        "DELETE FROM logs WHERE id IN (SELECT id FROM logs \
         WHERE id < (SELECT id FROM logs ORDER BY id DESC LIMIT 1 OFFSET ",
    );
    qb.push_bind(keep_from).push(") AND ");
    push_deletable(&mut qb);
    qb.push(" ORDER BY id LIMIT ").push_bind(BATCH).push(")");
    qb
}

/// Rows sampled for PostgreSQL's average row size.
const SIZE_SAMPLE: i64 = 1000;

/// PostgreSQL: `max_bytes` as a row count, from the stored size (`pg_column_size`,
/// compressed and TOASTed values as stored) of the newest rows. Deleted rows leave
/// space that autovacuum lets new rows reuse, so the table's files
/// (`pg_total_relation_size`) stop growing near the bound plus indexes instead of
/// shrinking; counting bytes in those files would never see the deletions.
async fn postgres_keep_rows(pool: &PgPool, max_bytes: u64) -> Result<Option<u64>, sqlx::Error> {
    let average: Option<f64> = sqlx::query_scalar(
        "SELECT AVG(pg_column_size(newest.*))::float8 FROM (SELECT * FROM logs ORDER BY id DESC LIMIT $1) newest",
    )
    .bind(SIZE_SAMPLE)
    .fetch_one(pool)
    .await?;
    Ok(average
        .filter(|a| *a > 0.0)
        .map(|average| (max_bytes as f64 / average).floor() as u64))
}

/// SQLite: deletes the oldest rows while the used pages exceed `max_bytes`.
async fn sqlite_keep_bytes(pool: &SqlitePool, max_bytes: u64) -> Result<u64, sqlx::Error> {
    let mut deleted = 0;
    // Smaller steps here: each is followed by a size check, so the cut is close to the bound.
    while used_bytes(pool).await? > max_bytes {
        let n = delete_oldest(pool, BATCH / 10).await?;
        deleted += n;
        reclaim(pool).await?;
        if n == 0 {
            break;
        }
    }
    Ok(deleted)
}

async fn delete_oldest(pool: &SqlitePool, n: i64) -> Result<u64, sqlx::Error> {
    let mut qb = QueryBuilder::new("DELETE FROM logs WHERE id IN (SELECT id FROM logs WHERE ");
    push_deletable(&mut qb);
    qb.push(" ORDER BY id LIMIT ").push_bind(n).push(")");
    let result = qb.build().execute(pool).await?;
    tokio::time::sleep(Duration::from_millis(1)).await;
    Ok(result.rows_affected())
}

/// Pages in use (not on the free list), in bytes.
async fn used_bytes(pool: &SqlitePool) -> Result<u64, sqlx::Error> {
    let pages: i64 =
        sqlx::query_scalar("SELECT page_count - freelist_count FROM pragma_page_count(), pragma_freelist_count()")
            .fetch_one(pool)
            .await?;
    let size: i64 = sqlx::query_scalar("SELECT page_size FROM pragma_page_size()")
        .fetch_one(pool)
        .await?;
    Ok(u64::try_from(pages * size).unwrap_or(0))
}

/// Gives free pages back to the file system (databases created with incremental
/// auto-vacuum; a no-op for older ones, whose free pages are reused instead).
async fn reclaim(pool: &SqlitePool) -> Result<(), sqlx::Error> {
    sqlx::query("PRAGMA incremental_vacuum").execute(pool).await?;
    Ok(())
}
