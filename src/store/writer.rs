//! The single SQLite writer: WAL, `synchronous=NORMAL`, one transaction per batch.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{LogRecord, Logger};

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
        .map_err(|source| StoreError::Migrate { path: shown, source })?;
    Ok(pool)
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
            dropped: Arc::new(AtomicU64::new(0)),
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

async fn write_loop(pool: SqlitePool, mut rx: mpsc::Receiver<LogRecord>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        let deadline = tokio::time::Instant::now() + BATCH_WINDOW;
        while batch.len() < MAX_BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(record)) => batch.push(record),
                Ok(None) | Err(_) => break,
            }
        }
        if let Err(e) = insert_batch(&pool, &batch).await {
            tracing::error!(error = %e, rows = batch.len(), "cannot write request log rows");
        }
        batch.clear();
    }
    pool.close().await;
}

/// Rows per INSERT statement: each statement is a round trip to sqlx's SQLite thread,
/// which costs more than SQLite's own work (28 columns × 64 rows stays far below
/// SQLite's limit of 32,766 bound values).
const ROWS_PER_STATEMENT: usize = 64;

async fn insert_batch(pool: &SqlitePool, batch: &[LogRecord]) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    for rows in batch.chunks(ROWS_PER_STATEMENT) {
        let mut insert = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO logs (timestamp, endpoint, method, model, backend_model, prompt, response, thinking, \
             tool_calls, status_code, latency_ms, stream, backend_type, done_reason, prompt_tokens, \
             completion_tokens, error, request_id, ttft_ms, prompt_eval_ms, eval_ms, tokens_per_second, \
             tokens_estimated, request_bytes, response_bytes, client_addr, cost, client_key) ",
        );
        insert.push_values(rows, |mut row, r| {
            row.push_bind(&r.timestamp)
                .push_bind(&r.endpoint)
                .push_bind(&r.method)
                .push_bind(&r.model)
                .push_bind(&r.backend_model)
                .push_bind(&r.prompt)
                .push_bind(&r.response)
                .push_bind(&r.thinking)
                .push_bind(&r.tool_calls)
                .push_bind(i64::from(r.status_code))
                .push_bind(to_i64(r.latency_ms))
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
                .push_bind(&r.client_key);
        });
        insert.build().execute(&mut *tx).await?;
    }
    tx.commit().await
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
