//! Keeps the log within `database.retention`: rows older than an age, beyond a count,
//! or beyond a size are deleted oldest first, in small batches so the writer never
//! waits long for the lock, and the freed pages are given back.

use std::time::Duration;

use sqlx::SqlitePool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Retention;

/// Rows retention may delete: starred rows are kept, and so are rows of requests
/// still running (they are replaced when the request ends).
macro_rules! deletable {
    () => {
        "starred = 0 AND in_flight = 0"
    };
}

/// Rows deleted per statement: each takes the write lock only briefly.
const BATCH: i64 = 500;

pub fn spawn_retention(pool: SqlitePool, policy: Retention, stop: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match enforce(&pool, &policy).await {
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
pub async fn enforce(pool: &SqlitePool, policy: &Retention) -> Result<u64, sqlx::Error> {
    let mut deleted = 0;
    if let Some(age) = policy.max_age {
        let cutoff = chrono::Utc::now() - chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX);
        let cutoff = cutoff.format("%Y-%m-%d %H:%M:%S%.3f").to_string();
        loop {
            let n = sqlx::query(concat!(
                "DELETE FROM logs WHERE id IN (SELECT id FROM logs WHERE timestamp < ? AND ",
                deletable!(),
                " ORDER BY id LIMIT ?)"
            ))
            .bind(&cutoff)
            .bind(BATCH)
            .execute(pool)
            .await?
            .rows_affected();
            deleted += n;
            if n < BATCH as u64 {
                break;
            }
            tokio::task::yield_now().await;
        }
    }
    if let Some(max_rows) = policy.max_rows {
        // Everything older than the newest `max_rows` rows: a bound on ids rather than a
        // count to delete, so two passes at once can never delete too much.
        let keep_from = i64::try_from(max_rows.max(1) - 1).unwrap_or(i64::MAX);
        loop {
            let n = sqlx::query(concat!(
                "DELETE FROM logs WHERE id IN (SELECT id FROM logs ",
                "WHERE id < (SELECT id FROM logs ORDER BY id DESC LIMIT 1 OFFSET ?) AND ",
                deletable!(),
                " ORDER BY id LIMIT ?)"
            ))
            .bind(keep_from)
            .bind(BATCH)
            .execute(pool)
            .await?
            .rows_affected();
            deleted += n;
            if n < BATCH as u64 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    if let Some(max_bytes) = policy.max_bytes {
        // Smaller steps here: each is followed by a size check, so the cut is close to the bound.
        while used_bytes(pool).await? > max_bytes {
            let n = delete_oldest(pool, BATCH / 10).await?;
            deleted += n;
            reclaim(pool).await?;
            if n == 0 {
                break;
            }
        }
    }
    if deleted > 0 {
        reclaim(pool).await?;
    }
    Ok(deleted)
}

async fn delete_oldest(pool: &SqlitePool, n: i64) -> Result<u64, sqlx::Error> {
    let result = sqlx::query(concat!(
        "DELETE FROM logs WHERE id IN (SELECT id FROM logs WHERE ",
        deletable!(),
        " ORDER BY id LIMIT ?)"
    ))
    .bind(n)
    .execute(pool)
    .await?;
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
