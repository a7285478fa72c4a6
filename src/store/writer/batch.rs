//! The writer's statements on a batch: final rows in one transaction (replacing the
//! in-flight rows of their requests), the check after a failed COMMIT, and closing the
//! in-flight rows whose final records were dropped.

use std::collections::HashMap;

use sqlx::{Connection, Encode, QueryBuilder, Type};

use super::super::LogRecord;
use super::super::connect::{Store, closing_in_flight, on_pool};
use super::super::schema::{Dialect, ROWS_PER_STATEMENT, Row, insert_rows};

/// What an in-flight row whose request's final record was dropped says.
const FINAL_RECORD_DROPPED: &str = "the request ended but its log record was dropped (log queue full)";

/// Closes the in-flight rows `ids` (their final records were dropped).
pub(super) async fn close_orphaned(store: &Store, ids: &[i64]) -> Result<(), sqlx::Error> {
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        on_pool!(store, pool => close_ids(chunk).build().execute(pool).await.map(drop)?);
    }
    Ok(())
}

fn close_ids<'a, DB: Dialect>(ids: &[i64]) -> QueryBuilder<'a, DB>
where
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
{
    let mut qb = closing_in_flight(FINAL_RECORD_DROPPED);
    qb.push(" AND id IN (");
    let mut list = qb.separated(", ");
    for id in ids {
        list.push_bind(*id);
    }
    qb.push(")");
    qb
}

pub(super) enum WriteError {
    /// Nothing was stored.
    Before(sqlx::Error),
    /// COMMIT failed: the connection may have gone after the database committed.
    Commit(sqlx::Error),
}

impl WriteError {
    pub(super) fn source(&self) -> &sqlx::Error {
        match self {
            WriteError::Before(e) | WriteError::Commit(e) => e,
        }
    }
}

impl From<sqlx::Error> for WriteError {
    fn from(e: sqlx::Error) -> WriteError {
        WriteError::Before(e)
    }
}

/// Final rows, in one transaction. A request with an in-flight row gets a new row
/// (ids follow the order requests ended in, so `id > last seen` finds every new final
/// row) and its in-flight row goes, passing on its star.
pub(super) async fn store_finished(
    store: &Store,
    new: &[LogRecord],
    replacing: &[(i64, LogRecord)],
) -> Result<(), WriteError> {
    on_pool!(store, pool => {
        let mut conn = pool.acquire().await?;
        let result = async {
            let mut tx = conn.begin().await?;
            let mut starred = HashMap::new();
            for ids in replacing.chunks(ROWS_PER_STATEMENT) {
                let deleted: Vec<(i64, bool)> = delete_rows(ids.iter().map(|(id, _)| *id))
                    .build_query_as()
                    .fetch_all(&mut *tx)
                    .await?;
                starred.extend(deleted);
            }
            let rows = final_rows(new, replacing, &starred);
            for chunk in rows.chunks(ROWS_PER_STATEMENT) {
                insert_rows(chunk).build().execute(&mut *tx).await?;
            }
            tx.commit().await.map_err(WriteError::Commit)
        }
        .await;
        if result.is_err() {
            // A connection whose transaction failed is closed, not pooled: sqlx's
            // idea of it may be wrong. On SQLite, a COMMIT that fails with SQLITE_FULL
            // or an I/O error is rolled back by SQLite itself, but sqlx still counts
            // the transaction open: the ROLLBACK it sends when `tx` drops fails ("no
            // transaction is active") and leaves its depth at 1. Its next `begin` on
            // this connection is then a SAVEPOINT, which opens a real transaction,
            // and rolling that back is `ROLLBACK TO`, which leaves it open. From then
            // on the connection holds the write lock (every other connection gets
            // "database is locked"), and its own "commits" only release a savepoint
            // inside that transaction: nothing is ever stored. Closing the connection
            // ends whatever transaction it holds; the pool opens a fresh one.
            if let Err(e) = conn.close().await {
                tracing::debug!(error = %e, "closing a log database connection after a failed write");
            }
        }
        result
    })
}

fn final_rows<'a>(
    new: &'a [LogRecord],
    replacing: &'a [(i64, LogRecord)],
    starred: &HashMap<i64, bool>,
) -> Vec<Row<'a>> {
    let mut rows: Vec<Row> = new
        .iter()
        .map(|record| Row {
            in_flight: false,
            starred: false,
            instance: None,
            record,
        })
        .collect();
    rows.extend(replacing.iter().map(|(id, record)| Row {
        in_flight: false,
        starred: starred.get(id).copied().unwrap_or(false),
        instance: None,
        record,
    }));
    rows
}

/// Whether a batch whose COMMIT failed was stored after all: its last row is there
/// (request ids are 128-bit random, so with the start time they name one row).
pub(super) async fn already_stored(
    store: &Store,
    new: &[LogRecord],
    replacing: &[(i64, LogRecord)],
) -> Result<bool, sqlx::Error> {
    let Some(last) = replacing.last().map(|(_, r)| r).or(new.last()) else {
        return Ok(true);
    };
    let found: i64 = on_pool!(store, pool => {
        found_query(last).build_query_scalar().fetch_one(pool).await?
    });
    Ok(found > 0)
}

fn found_query<'a, DB: Dialect>(record: &'a LogRecord) -> QueryBuilder<'a, DB>
where
    for<'q> String: Encode<'q, DB> + Type<DB>,
{
    let mut qb = QueryBuilder::new("SELECT COUNT(*) FROM logs WHERE request_id = ");
    qb.push_bind(&record.request_id)
        .push(" AND timestamp = ")
        .push_bind(&record.timestamp)
        .push(" AND endpoint = ")
        .push_bind(&record.endpoint)
        .push(" AND in_flight = ")
        .push(DB::FALSE);
    qb
}

/// `DELETE … RETURNING id, starred` for in-flight rows being replaced.
fn delete_rows<'a, DB: Dialect>(ids: impl Iterator<Item = i64>) -> QueryBuilder<'a, DB>
where
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    let mut qb = QueryBuilder::new("DELETE FROM logs WHERE id IN (");
    let mut list = qb.separated(", ");
    for id in ids {
        list.push_bind(id);
    }
    qb.push(") RETURNING id, starred");
    qb
}
