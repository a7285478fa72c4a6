//! The single log writer: one transaction per batch, multi-row INSERTs. SQLite: WAL,
//! `synchronous=NORMAL`. PostgreSQL: a small pool. A batch that fails for a reason
//! that passes (a full disk, an unreachable server) is retried with backoff while new
//! records wait in the bounded queue (see [`Writer`]).

use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, Encode, QueryBuilder, Type};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

use std::collections::{HashMap, HashSet};

use tokio::time::Instant;

use super::db::{Dialect, Instance, Store, close_abandoned_rows, close_own_rows, close_rows, on_pool};
use super::{DropWarnings, Entry, LogRecord, Logger, Ticket};

/// How long the writer gathers records before committing them together. Each batch
/// costs a transaction and several hand-offs to sqlx's worker thread: at ~220 requests/s
/// 200 ms took 30 µs less CPU per request than 50 ms (of ~300).
const BATCH_WINDOW: Duration = Duration::from_millis(200);
/// Entries taken per batch; a queue this deep ends the gathering window early.
pub(super) const MAX_BATCH: usize = 512;

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
    super::db::SQLITE_MIGRATIONS
        .run(&pool)
        .await
        .map_err(|source| StoreError::Migrate {
            path: shown.clone(),
            source,
        })?;
    let abandoned = close_all_in_flight(&pool)
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

/// Rows left in flight by a previous run that stopped without finishing them: on
/// SQLite, every row in flight at start (one server owns the file).
pub(super) async fn close_all_in_flight(pool: &SqlitePool) -> Result<u64, sqlx::Error> {
    let result = close_rows::<sqlx::Sqlite>(None).build().execute(pool).await?;
    Ok(result.rows_affected())
}

/// The writer task; `close` waits for every queued record to be stored.
///
/// When a batch cannot be written for a reason that passes ([`transient`]: SQLite's
/// disk full or I/O errors, PostgreSQL unreachable), the writer keeps the batch and
/// tries again with backoff, not reading the queue meanwhile, so new records wait
/// there; only once it is full are records dropped (and counted). The outage is logged
/// once when it starts and once when it ends, and `ollabridge_log_store_up` is 0
/// during it. Rows the database refuses for good (a constraint) are given up one by
/// one, each logged and counted as dropped; the rest of their batch is stored.
pub struct Writer {
    handle: JoinHandle<()>,
}

impl Writer {
    /// A writer whose in-flight rows name a process bound to no address.
    pub fn spawn(store: impl Into<Store>, capacity: usize, max_body_bytes: usize) -> (Logger, Writer) {
        let unbound = std::net::SocketAddr::from(([0, 0, 0, 0], 0));
        Writer::spawn_as(store, Instance::new(unbound), capacity, max_body_bytes)
    }

    /// A writer for the process `instance` (stored on its in-flight rows).
    pub fn spawn_as(
        store: impl Into<Store>,
        instance: Instance,
        capacity: usize,
        max_body_bytes: usize,
    ) -> (Logger, Writer) {
        let (tx, rx) = mpsc::channel(capacity);
        let store_up = Arc::new(AtomicBool::new(true));
        let batch_ready = Arc::new(Notify::new());
        let dropped = Arc::new(AtomicU64::new(0));
        let finals_dropped = Arc::new(Mutex::new(Vec::new()));
        let logger = Logger {
            tx,
            batch_ready: batch_ready.clone(),
            tickets: Arc::new(AtomicU64::new(0)),
            dropped: dropped.clone(),
            finals_dropped: finals_dropped.clone(),
            store_up: store_up.clone(),
            drop_warnings: Default::default(),
            max_body_bytes,
            redact: false,
        };
        let store = store.into();
        let writer = WriteLoop {
            sweep: matches!(store, Store::Postgres(_)),
            dropped,
            finals_dropped,
            refusals: DropWarnings::default(),
            health: Health {
                up: store_up,
                outage: None,
            },
            next_sweep: Instant::now() + SWEEP_EVERY,
            store,
            instance,
            in_flight: InFlight::default(),
            batch_ready,
        };
        let handle = tokio::spawn(writer.run(rx));
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

/// How often a PostgreSQL writer closes rows that other, stopped processes left in
/// flight ([`close_abandoned_rows`]).
const SWEEP_EVERY: Duration = Duration::from_secs(300);

/// First wait before a failed batch is tried again; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Requests started but not finished: waiting to be due for an in-flight row, or
/// holding one (by row id).
#[derive(Default)]
struct InFlight {
    waiting: HashMap<Ticket, (Instant, LogRecord)>,
    rows: HashMap<Ticket, i64>,
    /// Requests whose final record was dropped before the writer read their start.
    ended: HashSet<Ticket>,
    /// In-flight rows of requests whose final record was dropped, to be closed.
    orphaned: Vec<i64>,
}

struct WriteLoop {
    store: Store,
    instance: Instance,
    /// Look for rows other processes abandoned (PostgreSQL, shared by replicas).
    sweep: bool,
    /// The loggers' count of records lost (`ollabridge_log_dropped_total`).
    dropped: Arc<AtomicU64>,
    /// From the loggers: requests whose final record the full queue dropped.
    finals_dropped: Arc<Mutex<Vec<Ticket>>>,
    /// Rate-limits the error about records the database refused.
    refusals: DropWarnings,
    health: Health,
    in_flight: InFlight,
    /// When to look for rows other processes abandoned next (PostgreSQL).
    next_sweep: Instant,
    /// Poked by the loggers once a whole batch is queued.
    batch_ready: Arc<Notify>,
}

/// What the queue holds now, up to a batch, without waiting (and so without asking to
/// be woken by the next entry).
fn take_queued(rx: &mut mpsc::Receiver<Entry>, batch: &mut Vec<Entry>) {
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(entry) => batch.push(entry),
            Err(_) => break,
        }
    }
}

/// Whether the database takes writes, and since when it does not.
struct Health {
    up: Arc<AtomicBool>,
    outage: Option<Outage>,
}

struct Outage {
    since: Instant,
    failures: u32,
    /// Not before this is the database tried again.
    retry_at: Instant,
}

impl Health {
    /// A write failed: the first failure of an outage is logged, the others only at
    /// debug level. Returns when to try again.
    fn failed(&mut self, error: &sqlx::Error, holding: usize) -> Instant {
        let now = Instant::now();
        let outage = self.outage.get_or_insert_with(|| {
            tracing::error!(
                error = %error,
                holding,
                "log database unavailable: records wait in the queue and are written when it is back"
            );
            self.up.store(false, Ordering::Relaxed);
            Outage {
                since: now,
                failures: 0,
                retry_at: now,
            }
        });
        outage.failures += 1;
        if outage.failures > 1 {
            tracing::debug!(error = %error, failures = outage.failures, "log database still unavailable");
        }
        let backoff = FIRST_BACKOFF
            .saturating_mul(1u32 << (outage.failures - 1).min(16))
            .min(MAX_BACKOFF);
        outage.retry_at = now + backoff;
        outage.retry_at
    }

    /// A write went through: ends an outage.
    fn ok(&mut self) {
        if let Some(outage) = self.outage.take() {
            self.up.store(true, Ordering::Relaxed);
            tracing::warn!(
                after = ?outage.since.elapsed(),
                failed_tries = outage.failures,
                "log database available again; the records held meanwhile are being written"
            );
        }
    }

    fn retry_at(&self) -> Option<Instant> {
        self.outage.as_ref().map(|o| o.retry_at)
    }
}

impl WriteLoop {
    async fn run(mut self, mut rx: mpsc::Receiver<Entry>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            let received = match self.next_wakeup() {
                None => rx.recv().await,
                Some(due) => match tokio::time::timeout_at(due, rx.recv()).await {
                    Ok(received) => received,
                    Err(_) => {
                        self.timed_work().await;
                        continue;
                    }
                },
            };
            let Some(first) = received else { break };
            batch.push(first);
            take_queued(&mut rx, &mut batch);
            if batch.len() < MAX_BATCH {
                // Entries gather while the writer sleeps: waiting on the queue instead
                // would wake it (a thread switch) for every request.
                tokio::select! {
                    () = tokio::time::sleep(BATCH_WINDOW) => {}
                    () = self.batch_ready.notified() => {}
                }
                take_queued(&mut rx, &mut batch);
            }
            let mut rows = Vec::with_capacity(batch.len());
            let mut replacing = Vec::new();
            for entry in batch.drain(..) {
                match entry {
                    Entry::Started { ticket, at, record } => {
                        self.in_flight.waiting.insert(ticket, (at, record));
                    }
                    Entry::Finished { ticket, record } => {
                        let row = ticket.and_then(|t| {
                            self.in_flight.waiting.remove(&t);
                            self.in_flight.rows.remove(&t)
                        });
                        match row {
                            Some(id) => replacing.push((id, record)),
                            None => rows.push(record),
                        }
                    }
                }
            }
            self.forget_dropped();
            self.store_finished(rows, replacing, &rx).await;
            self.timed_work().await;
        }
        if let Err(e) = close_own_rows(&self.store, &self.instance).await {
            tracing::warn!(error = %e, "cannot close this process's rows left in flight");
        }
        self.store.close().await;
    }

    /// When the writer has something to do without a new record: an in-flight row
    /// falling due, a sweep (PostgreSQL); during an outage, not before the next retry.
    fn next_wakeup(&self) -> Option<Instant> {
        let mut wake = self
            .in_flight
            .waiting
            .values()
            .map(|(at, _)| *at + IN_FLIGHT_ROW_AFTER)
            .min();
        if self.sweep {
            wake = Some(wake.map_or(self.next_sweep, |due| due.min(self.next_sweep)));
        }
        match self.health.retry_at() {
            Some(retry) => wake.map(|wake| wake.max(retry)),
            None => wake,
        }
    }

    async fn timed_work(&mut self) {
        self.forget_dropped();
        self.write_in_flight_rows().await;
        let now = Instant::now();
        let retry_due = self.health.retry_at().is_none_or(|at| at <= now);
        if !self.in_flight.orphaned.is_empty() && retry_due {
            match close_orphaned(&self.store, &self.in_flight.orphaned).await {
                Ok(()) => {
                    self.health.ok();
                    self.in_flight.orphaned.clear();
                }
                Err(e) if transient(&e) => {
                    self.health.failed(&e, self.in_flight.orphaned.len());
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot close the in-flight rows of requests whose log record was dropped");
                    self.in_flight.orphaned.clear();
                }
            }
        }
        if self.sweep && now >= self.next_sweep && retry_due {
            match close_abandoned_rows(&self.store, &self.instance).await {
                Ok(rows) => {
                    self.next_sweep = now + SWEEP_EVERY;
                    self.health.ok();
                    if rows > 0 {
                        tracing::warn!(
                            rows,
                            "requests left in flight by stopped ollabridge processes marked as stopped"
                        );
                    }
                }
                Err(e) => {
                    self.health.failed(&e, self.in_flight.waiting.len());
                }
            }
        }
    }

    /// Stores a batch of final rows. What fails for a reason that passes is tried again
    /// until it is stored; a batch the database refuses is stored row by row, and the
    /// rows it refuses alone are dropped (counted and logged).
    async fn store_finished(
        &mut self,
        new: Vec<LogRecord>,
        replacing: Vec<(i64, LogRecord)>,
        queue: &mpsc::Receiver<Entry>,
    ) {
        let rows = new.len() + replacing.len();
        if rows == 0 {
            return;
        }
        let Err(refused) = self.store_retrying(&new, &replacing, queue).await else {
            return;
        };
        if rows == 1 {
            return self.gave_up(&refused);
        }
        // One bad row fails the whole transaction: find it, keep the others.
        tracing::warn!(error = %refused, rows, "the log database refused a batch; writing its rows one by one");
        for record in &new {
            if let Err(e) = self.store_retrying(std::slice::from_ref(record), &[], queue).await {
                self.gave_up(&e);
            }
        }
        for replaced in &replacing {
            if let Err(e) = self.store_retrying(&[], std::slice::from_ref(replaced), queue).await {
                self.gave_up(&e);
            }
        }
    }

    /// Stores `new` and `replacing` in one transaction, trying again with backoff
    /// until it is stored or fails for a reason that will not pass (returned).
    async fn store_retrying(
        &mut self,
        new: &[LogRecord],
        replacing: &[(i64, LogRecord)],
        queue: &mpsc::Receiver<Entry>,
    ) -> Result<(), sqlx::Error> {
        let mut unsure = false;
        loop {
            if let Some(retry_at) = self.health.retry_at() {
                tokio::time::sleep_until(retry_at).await;
            }
            let result = if unsure {
                // The last try failed at COMMIT: it may have been stored all the same.
                match already_stored(&self.store, new, replacing).await {
                    Ok(true) => Ok(()),
                    Ok(false) => store_finished(&self.store, new, replacing).await,
                    Err(e) => Err(WriteError::Before(e)),
                }
            } else {
                store_finished(&self.store, new, replacing).await
            };
            match result {
                Ok(()) => {
                    self.health.ok();
                    return Ok(());
                }
                Err(e) if transient(e.source()) => {
                    unsure = matches!(e, WriteError::Commit(_));
                    self.health
                        .failed(e.source(), new.len() + replacing.len() + queue.len());
                }
                Err(WriteError::Before(e) | WriteError::Commit(e)) => return Err(e),
            }
        }
    }

    /// A final record the database refused for good: counted with the records the
    /// full queue dropped, and logged (at most once a second, with the count since: a
    /// database that refuses everything, e.g. a damaged file, must not flood the log).
    fn gave_up(&self, error: &sqlx::Error) {
        let total = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(dropped) = self.refusals.dropped(std::time::Instant::now()) {
            tracing::error!(error = %error, dropped, total, "the log database refused request records: dropped");
        }
    }

    /// Requests whose final record the full queue dropped have ended: they get no
    /// in-flight row, and one already written is closed (else it would show the
    /// request running until this process stops).
    fn forget_dropped(&mut self) {
        let dropped = std::mem::take(&mut *self.finals_dropped.lock().unwrap_or_else(PoisonError::into_inner));
        let InFlight {
            waiting,
            rows,
            ended,
            orphaned,
        } = &mut self.in_flight;
        ended.extend(dropped);
        ended.retain(|ticket| {
            if waiting.remove(ticket).is_some() {
                return false;
            }
            if let Some(id) = rows.remove(ticket) {
                orphaned.push(id);
                return false;
            }
            // Its start is still in the queue (only queued starts are reported).
            true
        });
    }

    /// Rows for the requests that have run longer than [`IN_FLIGHT_ROW_AFTER`].
    async fn write_in_flight_rows(&mut self) {
        let now = Instant::now();
        if self.health.retry_at().is_some_and(|at| at > now) {
            return;
        }
        let due: Vec<Ticket> = self
            .in_flight
            .waiting
            .iter()
            .filter(|(_, (at, _))| *at + IN_FLIGHT_ROW_AFTER <= now)
            .map(|(ticket, _)| *ticket)
            .collect();
        for ticket in due {
            let Some((at, record)) = self.in_flight.waiting.remove(&ticket) else {
                continue;
            };
            let row = Row {
                in_flight: true,
                starred: false,
                instance: Some(self.instance.id()),
                record: &record,
            };
            let inserted = on_pool!(&self.store, pool => {
                insert_rows(std::slice::from_ref(&row))
                    .push(" RETURNING id")
                    .build_query_scalar::<i64>()
                    .fetch_one(pool)
                    .await
            });
            match inserted {
                Ok(id) => {
                    self.health.ok();
                    self.in_flight.rows.insert(ticket, id);
                }
                Err(e) if transient(&e) => {
                    // Tried again after the backoff, unless the request ends first.
                    self.in_flight.waiting.insert(ticket, (at, record));
                    self.health.failed(&e, self.in_flight.waiting.len());
                    return;
                }
                // Nothing is lost: the request's final record still comes.
                Err(e) => tracing::warn!(error = %e, "the log database refused an in-flight request row"),
            }
        }
    }
}

/// What an in-flight row whose request's final record was dropped says.
const FINAL_RECORD_DROPPED: &str = "the request ended but its log record was dropped (log queue full)";

/// Closes the in-flight rows `ids` (their final records were dropped).
async fn close_orphaned(store: &Store, ids: &[i64]) -> Result<(), sqlx::Error> {
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
    let mut qb = QueryBuilder::new("UPDATE logs SET in_flight = ");
    qb.push(DB::FALSE)
        .push(", error = COALESCE(error, ")
        .push_bind(FINAL_RECORD_DROPPED)
        .push(") WHERE in_flight = ")
        .push(DB::TRUE)
        .push(" AND id IN (");
    let mut list = qb.separated(", ");
    for id in ids {
        list.push_bind(*id);
    }
    qb.push(")");
    qb
}

enum WriteError {
    /// Nothing was stored.
    Before(sqlx::Error),
    /// COMMIT failed: the connection may have gone after the database committed.
    Commit(sqlx::Error),
}

impl WriteError {
    fn source(&self) -> &sqlx::Error {
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

/// Whether a failed write may go through later as it is: the database is busy,
/// unreachable, out of space or failing I/O. Anything else (a constraint, a value the
/// database will not take) fails the same way every time.
fn transient(error: &sqlx::Error) -> bool {
    use sqlx::Error;
    match error {
        Error::Database(e) => {
            if e.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                // Extended result codes: the primary code is the low byte.
                let primary = e.code().and_then(|c| c.parse::<i32>().ok()).map(|c| c & 0xff);
                // BUSY, LOCKED, NOMEM, READONLY (e.g. remounted), INTERRUPT, IOERR,
                // FULL, CANTOPEN, PROTOCOL.
                matches!(primary, Some(5..=10 | 13..=15))
            } else {
                // PostgreSQL: all but data exceptions (22) and constraint violations
                // (23) pass, among them disk full (53100) and a server going away.
                !e.code().is_some_and(|c| c.starts_with("22") || c.starts_with("23"))
            }
        }
        Error::Io(_)
        | Error::Tls(_)
        | Error::Protocol(_)
        | Error::PoolTimedOut
        | Error::PoolClosed
        | Error::WorkerCrashed => true,
        _ => false,
    }
}

/// Final rows, in one transaction. A request with an in-flight row gets a new row
/// (ids follow the order requests ended in, so `id > last seen` finds every new final
/// row) and its in-flight row goes, passing on its star.
async fn store_finished(store: &Store, new: &[LogRecord], replacing: &[(i64, LogRecord)]) -> Result<(), WriteError> {
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
async fn already_stored(store: &Store, new: &[LogRecord], replacing: &[(i64, LogRecord)]) -> Result<bool, sqlx::Error> {
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

struct Row<'a> {
    in_flight: bool,
    starred: bool,
    /// The process running the request (in-flight rows).
    instance: Option<&'a str>,
    record: &'a LogRecord,
}

/// Rows per INSERT statement: each statement is a round trip to sqlx's SQLite thread
/// (or to PostgreSQL), which costs more than the database's own work (39 columns × 64
/// rows stays far below SQLite's limit of 32,766 bound values and PostgreSQL's 65,535).
const ROWS_PER_STATEMENT: usize = 64;

/// `INSERT` of up to [`ROWS_PER_STATEMENT`] rows.
fn insert_rows<'a, DB: Dialect>(rows: &'a [Row<'a>]) -> QueryBuilder<'a, DB>
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
    let mut insert = QueryBuilder::new(
        "INSERT INTO logs (in_flight, starred, timestamp, endpoint, method, model, backend_model, prompt, \
         response, thinking, tool_calls, status_code, latency_ms, stream, backend_type, done_reason, prompt_tokens, \
         completion_tokens, error, request_id, ttft_ms, prompt_eval_ms, eval_ms, tokens_per_second, \
         tokens_estimated, request_bytes, response_bytes, client_addr, cost, client_key, replay_of, request_body, \
         backend_request, backend_response, backend, attempts, cache_hit, instance) ",
    );
    insert.push_values(
        rows,
        |mut row,
         Row {
             in_flight,
             starred,
             instance,
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
                .push_bind(r.cache_hit)
                .push_bind(*instance);
        },
    );
    insert
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
