//! The single log writer: one transaction per batch, multi-row INSERTs. SQLite: WAL,
//! `synchronous=NORMAL`. PostgreSQL: a small pool. A batch that fails for a reason
//! that passes (a full disk, an unreachable server) is retried with backoff while new
//! records wait in the bounded queue (see [`Writer`]).
//!
//! This file is the task and its bookkeeping of requests in flight; the statements it
//! runs on a batch are in `writer/batch.rs`, the outage handling in `writer/outage.rs`.

mod batch;
mod outage;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use self::batch::{WriteError, already_stored, close_orphaned, store_finished};
use self::outage::{Health, transient};
use super::connect::{Instance, Store, close_abandoned_rows, close_own_rows, on_pool};
use super::schema::{Row, insert_rows};
use super::{DropWarnings, Entry, LogRecord, Logger, Ticket};

/// How long the writer gathers records before committing them together. Each batch
/// costs a transaction and several hand-offs to sqlx's worker thread: at ~220 requests/s
/// 200 ms took 30 µs less CPU per request than 50 ms (of ~300).
const BATCH_WINDOW: Duration = Duration::from_millis(200);
/// Entries taken per batch; a queue this deep ends the gathering window early.
pub(super) const MAX_BATCH: usize = 512;

/// The writer task; `close` waits for every queued record to be stored.
///
/// When a batch cannot be written for a reason that passes ([`transient`](outage::transient): SQLite's
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
