//! The single SQLite writer: WAL, `synchronous=NORMAL`, one transaction per batch.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use std::collections::HashMap;

use tokio::time::Instant;

use super::{Entry, LogRecord, Logger, Ticket};

/// How long the writer gathers records before committing them together.
const BATCH_WINDOW: Duration = Duration::from_millis(50);
const MAX_BATCH: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open database {path}: {source}")]
    Open { path: String, source: sqlx::Error },
    #[error("cannot migrate database {path}: {source}")]
    Migrate {
        path: String,
        source: sqlx::migrate::MigrateError,
    },
}

/// Opens (creating if needed) and migrates the database.
pub async fn open(path: &Path) -> Result<SqlitePool, StoreError> {
    let shown = path.display().to_string();
    let options = SqliteConnectOptions::from_str("sqlite://")
        .map_err(|source| StoreError::Open {
            path: shown.clone(),
            source,
        })?
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(5))
        // New databases give deleted pages back to the file system (retention).
        .auto_vacuum(sqlx::sqlite::SqliteAutoVacuum::Incremental);
    let pool = SqlitePoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await
        .map_err(|source| StoreError::Open {
            path: shown.clone(),
            source,
        })?;
    sqlx::migrate!("./migrations")
        .run(&pool)
        .await
        .map_err(|source| StoreError::Migrate {
            path: shown.clone(),
            source,
        })?;
    let abandoned = close_abandoned_rows(&pool)
        .await
        .map_err(|source| StoreError::Open { path: shown, source })?;
    if abandoned > 0 {
        tracing::warn!(
            rows = abandoned,
            "requests left in flight by the previous run marked as stopped"
        );
    }
    Ok(pool)
}

/// Rows left in flight by a previous run that stopped without finishing them.
pub async fn close_abandoned_rows(pool: &SqlitePool) -> Result<u64, sqlx::Error> {
    let result = sqlx::query(
        "UPDATE logs SET in_flight = 0, error = COALESCE(error, 'ollabridge stopped before the request finished') \
         WHERE in_flight = 1",
    )
    .execute(pool)
    .await?;
    Ok(result.rows_affected())
}

/// The writer task; `close` waits for every queued record to be stored.
pub struct Writer {
    handle: JoinHandle<()>,
}

impl Writer {
    pub fn spawn(pool: SqlitePool, capacity: usize, max_body_bytes: usize) -> (Logger, Writer) {
        let (tx, rx) = mpsc::channel(capacity);
        let logger = Logger {
            tx,
            tickets: Arc::new(AtomicU64::new(0)),
            dropped: Arc::new(AtomicU64::new(0)),
            drop_warnings: Default::default(),
            max_body_bytes,
            redact: false,
        };
        let handle = tokio::spawn(write_loop(pool, rx));
        (logger, Writer { handle })
    }

    /// Waits until all senders are gone and the queue is stored.
    pub async fn close(self) {
        if let Err(e) = self.handle.await {
            tracing::error!(error = %e, "log writer task failed");
        }
    }
}

/// How long a request runs before it gets an in-flight row.
pub const IN_FLIGHT_ROW_AFTER: Duration = Duration::from_secs(1);

/// Requests started but not finished: waiting to be due for an in-flight row, or
/// holding one (by row id).
#[derive(Default)]
struct InFlight {
    waiting: HashMap<Ticket, (Instant, LogRecord)>,
    rows: HashMap<Ticket, i64>,
}

async fn write_loop(pool: SqlitePool, mut rx: mpsc::Receiver<Entry>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut in_flight = InFlight::default();
    loop {
        let due = in_flight
            .waiting
            .values()
            .map(|(at, _)| *at + IN_FLIGHT_ROW_AFTER)
            .min();
        let received = match due {
            None => rx.recv().await,
            Some(due) => match tokio::time::timeout_at(due, rx.recv()).await {
                Ok(received) => received,
                Err(_) => {
                    write_in_flight_rows(&pool, &mut in_flight).await;
                    continue;
                }
            },
        };
        let Some(first) = received else { break };
        batch.push(first);
        let deadline = Instant::now() + BATCH_WINDOW;
        while batch.len() < MAX_BATCH {
            // Everything queued at once: one wake-up and timer for many entries.
            let room = MAX_BATCH - batch.len();
            match tokio::time::timeout_at(deadline, rx.recv_many(&mut batch, room)).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let mut rows = Vec::with_capacity(batch.len());
        let mut replacing = Vec::new();
        for entry in batch.drain(..) {
            match entry {
                Entry::Started { ticket, at, record } => {
                    in_flight.waiting.insert(ticket, (at, record));
                }
                Entry::Finished { ticket, record } => {
                    let row = ticket.and_then(|t| {
                        in_flight.waiting.remove(&t);
                        in_flight.rows.remove(&t)
                    });
                    match row {
                        Some(id) => replacing.push((id, record)),
                        None => rows.push(record),
                    }
                }
            }
        }
        if let Err(e) = store_finished(&pool, &rows, &replacing).await {
            tracing::error!(error = %e, rows = rows.len() + replacing.len(), "cannot write request log rows");
        }
        write_in_flight_rows(&pool, &mut in_flight).await;
    }
    pool.close().await;
}

/// Rows for the requests that have run longer than [`IN_FLIGHT_ROW_AFTER`].
async fn write_in_flight_rows(pool: &SqlitePool, in_flight: &mut InFlight) {
    let now = Instant::now();
    let due: Vec<Ticket> = in_flight
        .waiting
        .iter()
        .filter(|(_, (at, _))| *at + IN_FLIGHT_ROW_AFTER <= now)
        .map(|(ticket, _)| *ticket)
        .collect();
    for ticket in due {
        let Some((_, record)) = in_flight.waiting.remove(&ticket) else {
            continue;
        };
        let row = Row {
            in_flight: true,
            starred: false,
            record: &record,
        };
        match insert(pool, &[row]).await {
            Ok(id) => {
                in_flight.rows.insert(ticket, id);
            }
            Err(e) => tracing::error!(error = %e, "cannot write an in-flight request row"),
        }
    }
}

/// Final rows, in one transaction. A request with an in-flight row gets a new row
/// (ids follow the order requests ended in, so `id > last seen` finds every new final
/// row) and its in-flight row goes, passing on its star.
async fn store_finished(
    pool: &SqlitePool,
    new: &[LogRecord],
    replacing: &[(i64, LogRecord)],
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut rows: Vec<Row> = new
        .iter()
        .map(|record| Row {
            in_flight: false,
            starred: false,
            record,
        })
        .collect();
    for (id, record) in replacing {
        let starred: Option<bool> = sqlx::query_scalar("DELETE FROM logs WHERE id = ? RETURNING starred")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        rows.push(Row {
            in_flight: false,
            starred: starred.unwrap_or(false),
            record,
        });
    }
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        insert(&mut *tx, chunk).await?;
    }
    tx.commit().await
}

struct Row<'a> {
    in_flight: bool,
    starred: bool,
    record: &'a LogRecord,
}

/// Rows per INSERT statement: each statement is a round trip to sqlx's SQLite thread,
/// which costs more than SQLite's own work (38 columns × 64 rows stays far below
/// SQLite's limit of 32,766 bound values).
const ROWS_PER_STATEMENT: usize = 64;

/// Inserts up to [`ROWS_PER_STATEMENT`] rows; returns the last row's id.
async fn insert<'e, E>(executor: E, rows: &[Row<'_>]) -> Result<i64, sqlx::Error>
where
    E: sqlx::Executor<'e, Database = sqlx::Sqlite>,
{
    let mut insert = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
        "INSERT INTO logs (in_flight, starred, timestamp, endpoint, method, model, backend_model, prompt, \
         response, thinking, tool_calls, status_code, latency_ms, stream, backend_type, done_reason, prompt_tokens, \
         completion_tokens, error, request_id, ttft_ms, prompt_eval_ms, eval_ms, tokens_per_second, \
         tokens_estimated, request_bytes, response_bytes, client_addr, cost, client_key, replay_of, request_body, \
         backend_request, backend_response, backend, attempts, cache_hit) ",
    );
    insert.push_values(
        rows,
        |mut row,
         Row {
             in_flight,
             starred,
             record: r,
         }| {
            row.push_bind(*in_flight)
                .push_bind(*starred)
                .push_bind(&r.timestamp)
                .push_bind(&r.endpoint)
                .push_bind(&r.method)
                .push_bind(&r.model)
                .push_bind(&r.backend_model)
                .push_bind(&r.prompt)
                .push_bind(&r.response)
                .push_bind(&r.thinking)
                .push_bind(&r.tool_calls)
                // A request still running has neither yet.
                .push_bind((!*in_flight).then(|| i64::from(r.status_code)))
                .push_bind((!*in_flight).then(|| to_i64(r.latency_ms)))
                .push_bind(r.stream)
                .push_bind(&r.backend_type)
                .push_bind(&r.done_reason)
                .push_bind(r.prompt_tokens.map(to_i64))
                .push_bind(r.completion_tokens.map(to_i64))
                .push_bind(&r.error)
                .push_bind(&r.request_id)
                .push_bind(r.ttft_ms)
                .push_bind(r.prompt_eval_ms)
                .push_bind(r.eval_ms)
                .push_bind(r.tokens_per_second)
                .push_bind(r.tokens_estimated)
                .push_bind(to_i64(r.request_bytes))
                .push_bind(to_i64(r.response_bytes))
                .push_bind(&r.client_addr)
                .push_bind(r.cost)
                .push_bind(&r.client_key)
                .push_bind(r.replay_of)
                .push_bind(&r.request_body)
                .push_bind(&r.backend_request)
                .push_bind(&r.backend_response)
                .push_bind(&r.backend)
                .push_bind(&r.attempts)
                .push_bind(r.cache_hit);
        },
    );
    Ok(insert.build().execute(executor).await?.last_insert_rowid())
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
