//! The request log. Handlers hand one [`LogRecord`] per request to a [`Logger`], which
//! never blocks: records queue in a bounded channel and a single writer task stores
//! them in batches. Shutting down drains the queue before the process exits.
//!
//! The modules depend on each other in one direction only: `schema` (the row, the
//! migrations, the dialects) ← `connect` (opening a [`Store`]) ← `writer`, `query`,
//! `stats` and `retention`; this file holds the record and the logger, and re-exports.

pub mod connect;
pub mod query;
pub mod retention;
pub mod schema;
pub mod stats;
mod writer;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::mpsc;

pub use connect::{Instance, Store, StoreError, open};
pub use retention::spawn_retention;
pub use writer::{IN_FLIGHT_ROW_AFTER, Writer};

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct LogRecord {
    /// UTC, `YYYY-MM-DD HH:MM:SS.SSS` so SQLite's date functions read it.
    pub timestamp: String,
    pub endpoint: String,
    pub method: String,
    pub model: Option<String>,
    pub backend_model: Option<String>,
    pub prompt: Option<String>,
    pub response: Option<String>,
    pub thinking: Option<String>,
    pub tool_calls: Option<String>,
    pub status_code: u16,
    pub latency_ms: u64,
    pub stream: bool,
    pub backend_type: String,
    pub done_reason: Option<String>,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub error: Option<String>,
    pub request_id: String,
    pub ttft_ms: Option<f64>,
    pub prompt_eval_ms: Option<f64>,
    pub eval_ms: Option<f64>,
    pub tokens_per_second: Option<f64>,
    /// The backend reported no token counts; the counts are our estimate.
    pub tokens_estimated: bool,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub client_addr: Option<String>,
    pub cost: Option<f64>,
    /// The id of the client's API key, never the key.
    pub client_key: Option<String>,
    /// The row this request replayed (dashboard replay).
    pub replay_of: Option<i64>,
    /// With `database.store_bodies`: the client's body, and what went to and came
    /// from the backend, as sent.
    pub request_body: Option<String>,
    pub backend_request: Option<String>,
    pub backend_response: Option<String>,
    /// The backend's name in config.
    pub backend: Option<String>,
    /// JSON array of the targets that failed before the one that answered.
    pub attempts: Option<String>,
    /// Answered from the response cache.
    pub cache_hit: bool,
}

pub fn timestamp_now() -> String {
    schema::stored(&chrono::Utc::now())
}

/// What the writer receives: a request starting (stored as an in-flight row only if it
/// is still running a moment later) or a request's final record.
enum Entry {
    Started {
        ticket: Ticket,
        at: tokio::time::Instant,
        record: LogRecord,
    },
    Finished {
        ticket: Option<Ticket>,
        record: LogRecord,
    },
}

/// Pairs a request's start with its end in the writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ticket {
    id: u64,
    /// The start went into the queue (it is not sent when the queue is half full).
    queued: bool,
}

/// The request path's handle on the log: cheap to clone, never waits.
#[derive(Clone)]
pub struct Logger {
    tx: mpsc::Sender<Entry>,
    /// Wakes the writer before its window ends once a whole batch waits.
    batch_ready: Arc<tokio::sync::Notify>,
    tickets: Arc<AtomicU64>,
    /// Records lost: dropped by the full queue, or refused by the database.
    dropped: Arc<AtomicU64>,
    /// Requests whose start was queued but whose final record was dropped: the writer
    /// must not keep them in flight (see `WriteLoop::forget_dropped`).
    finals_dropped: Arc<Mutex<Vec<Ticket>>>,
    /// False while the writer cannot reach the database (and retries).
    store_up: Arc<AtomicBool>,
    /// One warning a second at most about dropped records, however many are dropped.
    drop_warnings: Arc<DropWarnings>,
    max_body_bytes: usize,
    redact: bool,
}

impl Logger {
    /// With `database.redact`, rows keep metadata only.
    pub fn redacting(mut self, redact: bool) -> Logger {
        self.redact = redact;
        self
    }

    /// Makes the record fit the log: the texts cut to `database.max_body_bytes` (or
    /// dropped, with the tool calls, when redacting), every other text to
    /// [`MAX_FIELD_BYTES`]. Clients choose most of them (a model name can be 30 MB), and
    /// the row is stored, shown by the admin API and sent to live views. Cutting again
    /// changes nothing, so a record capped by the recorder passes the logger as it is.
    pub fn cap_bodies(&self, record: &mut LogRecord) {
        for text in [
            &mut record.model,
            &mut record.backend_model,
            &mut record.done_reason,
            &mut record.client_addr,
            &mut record.backend,
            &mut record.attempts,
        ]
        .into_iter()
        .flatten()
        .chain([&mut record.endpoint, &mut record.method, &mut record.backend_type])
        {
            cap(text, MAX_FIELD_BYTES);
        }
        if let Some(error) = &mut record.error {
            cap(error, MAX_ERROR_BYTES);
        }
        if self.redact {
            record.prompt = None;
            record.response = None;
            record.thinking = None;
            record.tool_calls = None;
            record.request_body = None;
            record.backend_request = None;
            record.backend_response = None;
            return;
        }
        for text in [
            &mut record.prompt,
            &mut record.response,
            &mut record.thinking,
            &mut record.tool_calls,
            &mut record.request_body,
            &mut record.backend_request,
            &mut record.backend_response,
        ]
        .into_iter()
        .flatten()
        {
            cap(text, self.max_body_bytes);
        }
    }

    /// A request has started; `record` holds what is known so far. Its row appears
    /// only if the request is still running after a second, so short requests cost
    /// one row write, not two.
    pub fn started(&self, record: LogRecord) -> Ticket {
        let id = self.tickets.fetch_add(1, Ordering::Relaxed);
        let unsent = Ticket { id, queued: false };
        // With the queue half full the writer is behind: final records (the log) come
        // first, and a start not sent only means no in-flight row for that request.
        if self.tx.capacity() < self.tx.max_capacity() / 2 {
            return unsent;
        }
        let ticket = Ticket { id, queued: true };
        let started = Entry::Started {
            ticket,
            at: tokio::time::Instant::now(),
            record,
        };
        // Lost when the queue is full: the request's final record stands alone then.
        if self.tx.try_send(started).is_err() {
            return unsent;
        }
        self.queued();
        ticket
    }

    /// A request's final record; replaces its in-flight row when it has one.
    pub fn finished(&self, ticket: Ticket, record: LogRecord) {
        self.send(Some(ticket), record);
    }

    /// A final record for a request never announced by [`Logger::started`].
    pub fn log(&self, record: LogRecord) {
        self.send(None, record);
    }

    fn send(&self, ticket: Option<Ticket>, mut record: LogRecord) {
        self.cap_bodies(&mut record);
        let full = match self.tx.try_send(Entry::Finished { ticket, record }) {
            Ok(()) => return self.queued(),
            Err(mpsc::error::TrySendError::Full(_)) => true,
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        };
        let total = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(ticket) = ticket.filter(|t| t.queued) {
            self.finals_dropped
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(ticket);
        }
        // Under overload every request lands here: one line a second, not one a record.
        let Some(dropped) = self.drop_warnings.dropped(std::time::Instant::now()) else {
            return;
        };
        if full {
            tracing::warn!(dropped, total, "log queue full: request records dropped");
        } else {
            tracing::warn!(dropped, total, "log writer stopped: request records dropped");
        }
    }

    /// The writer sleeps while entries gather; a whole batch waiting wakes it.
    fn queued(&self) {
        if self.queue_depth() >= writer::MAX_BATCH {
            self.batch_ready.notify_one();
        }
    }

    /// Records lost since start: the queue was full, or the database refused them.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Whether the writer's last write went through (false during a database outage).
    pub fn store_up(&self) -> bool {
        self.store_up.load(Ordering::Relaxed)
    }

    /// Records waiting for the writer.
    pub fn queue_depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }
}

/// Rate-limits the warning about dropped records: the first drop is reported at once,
/// later ones at most once per [`DropWarnings::EVERY`], with the number dropped since the
/// last report. Lock-free; the clock is passed in so tests need not sleep.
#[derive(Debug)]
struct DropWarnings {
    origin: std::time::Instant,
    /// Nanoseconds after `origin` before which no report is due.
    next_ns: AtomicU64,
    /// Drops not reported yet.
    pending: AtomicU64,
}

impl DropWarnings {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(1);

    fn new(origin: std::time::Instant) -> DropWarnings {
        DropWarnings {
            origin,
            next_ns: AtomicU64::new(0),
            pending: AtomicU64::new(0),
        }
    }

    /// Counts one drop at `now`; `Some(n)` when a warning is due, `n` the drops it reports.
    fn dropped(&self, now: std::time::Instant) -> Option<u64> {
        self.pending.fetch_add(1, Ordering::Relaxed);
        let now_ns = u64::try_from(now.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX);
        let next = self.next_ns.load(Ordering::Relaxed);
        if now_ns < next {
            return None;
        }
        let after = now_ns.saturating_add(u64::try_from(Self::EVERY.as_nanos()).unwrap_or(u64::MAX));
        // Several threads may find it due: one reports.
        self.next_ns
            .compare_exchange(next, after, Ordering::Relaxed, Ordering::Relaxed)
            .ok()?;
        Some(self.pending.swap(0, Ordering::Relaxed))
    }
}

impl Default for DropWarnings {
    fn default() -> DropWarnings {
        DropWarnings::new(std::time::Instant::now())
    }
}

/// Longest model name, endpoint, backend name... kept in a row.
pub const MAX_FIELD_BYTES: usize = 1024;
/// Longest error kept in a row (an error may quote the backend's own message).
pub const MAX_ERROR_BYTES: usize = 8 * 1024;

fn cap(text: &mut String, max: usize) {
    let total = text.len();
    crate::text::cut_noting(text, max, total);
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{DropWarnings, cap};

    #[test]
    fn dropped_records_are_reported_once_a_second_with_their_count() {
        let t0 = Instant::now();
        let warnings = DropWarnings::new(t0);
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // The first drop is reported at once.
        assert_eq!(warnings.dropped(at(0)), Some(1));
        // Within the next second: counted, not reported.
        for ms in [1, 10, 500, 999] {
            assert_eq!(warnings.dropped(at(ms)), None);
        }
        // A second after the last report: the four silent ones and this one.
        assert_eq!(warnings.dropped(at(1000)), Some(5));
        assert_eq!(warnings.dropped(at(1500)), None);
        // Long quiet, then a drop: reported at once, with the one left over.
        assert_eq!(warnings.dropped(at(60_000)), Some(2));
        assert_eq!(warnings.dropped(at(60_001)), None);
        // A clock reading earlier than the origin does not panic (saturates to 0).
        assert_eq!(DropWarnings::new(at(5)).dropped(t0), Some(1));
    }

    #[test]
    fn a_burst_from_many_threads_makes_one_report_and_loses_no_count() {
        let t0 = Instant::now();
        let warnings = DropWarnings::new(t0);
        let reports: Vec<u64> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| (0..1000).filter_map(|_| warnings.dropped(t0)).collect::<Vec<_>>()))
                .collect();
            handles.into_iter().flat_map(|h| h.join().expect("thread")).collect()
        });
        assert_eq!(reports.len(), 1, "{reports:?}");
        // The next report carries every drop the first one did not.
        let next = warnings.dropped(t0 + Duration::from_secs(1)).expect("due");
        assert_eq!(reports[0] + next, 8001);
    }

    #[test]
    fn a_whole_batch_queued_wakes_the_writer_before_its_window_ends() {
        use futures::FutureExt;
        let (logger, _rx) = test_logger(4 * super::writer::MAX_BATCH);
        let woken = || logger.batch_ready.notified().now_or_never().is_some();
        for _ in 1..super::writer::MAX_BATCH {
            logger.log(super::LogRecord::default());
        }
        assert!(!woken(), "one short of a batch: the writer sleeps on");
        logger.log(super::LogRecord::default());
        assert!(woken(), "a whole batch waits: the writer is told");
    }

    fn test_logger(capacity: usize) -> (super::Logger, tokio::sync::mpsc::Receiver<super::Entry>) {
        let (tx, rx) = tokio::sync::mpsc::channel(capacity);
        let logger = super::Logger {
            tx,
            batch_ready: Default::default(),
            tickets: Default::default(),
            dropped: Default::default(),
            finals_dropped: Default::default(),
            store_up: Default::default(),
            drop_warnings: Default::default(),
            max_body_bytes: 1 << 20,
            redact: false,
        };
        (logger, rx)
    }

    #[test]
    fn starts_are_not_queued_once_the_queue_is_half_full() {
        let (logger, mut rx) = test_logger(4);
        let record = super::LogRecord::default;
        logger.log(record());
        logger.log(record());
        // Two of four taken: a start still goes in; then three are, and the next waits out.
        logger.started(record());
        logger.started(record());
        let kinds: Vec<bool> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|e| matches!(e, super::Entry::Started { .. }))
            .collect();
        assert_eq!(kinds, [false, false, true]);
        // Final records still fill the queue to the end.
        logger.log(record());
        assert_eq!(logger.dropped(), 0);
    }

    #[test]
    fn cap_cuts_on_a_char_boundary_and_says_so() {
        // The note takes 30 bytes of the 33: "hé" would end inside the é.
        let mut s = format!("hé{}", "x".repeat(40));
        cap(&mut s, 33);
        assert_eq!(s, "h…[truncated, 43 bytes in all]");
        assert!(s.len() <= 33);
        let mut short = "ok".to_owned();
        cap(&mut short, 2);
        assert_eq!(short, "ok");
        // Too small a limit for the note: just cut.
        let mut tiny = "abcdef".to_owned();
        cap(&mut tiny, 4);
        assert_eq!(tiny, "abcd");
    }

    /// Regression: the recorder capped a row and the logger capped it again, so a
    /// 370-byte body was noted as "96 bytes in all".
    #[test]
    fn capping_twice_keeps_the_true_length() {
        let mut once = "x".repeat(370);
        cap(&mut once, 64);
        assert_eq!(once, format!("{}…[truncated, 370 bytes in all]", "x".repeat(32)));
        let mut twice = once.clone();
        cap(&mut twice, 64);
        assert_eq!(twice, once);
    }

    #[test]
    fn every_field_is_capped_and_the_texts_to_max_body_bytes() {
        let (logger, _rx) = test_logger(4);
        let huge = "m".repeat(3 * super::MAX_ERROR_BYTES);
        let mut record = super::LogRecord {
            model: Some(huge.clone()),
            backend_model: Some(huge.clone()),
            endpoint: huge.clone(),
            error: Some(huge.clone()),
            attempts: Some(huge.clone()),
            prompt: Some("p".repeat(2 << 20)),
            tool_calls: Some("t".repeat(2 << 20)),
            ..Default::default()
        };
        logger.cap_bodies(&mut record);
        for field in [&record.model, &record.backend_model, &record.attempts] {
            assert_eq!(field.as_ref().unwrap().len(), super::MAX_FIELD_BYTES);
        }
        assert_eq!(record.endpoint.len(), super::MAX_FIELD_BYTES);
        assert!(record.endpoint.ends_with("…[truncated, 24576 bytes in all]"));
        assert_eq!(record.error.as_ref().unwrap().len(), super::MAX_ERROR_BYTES);
        assert_eq!(record.prompt.as_ref().unwrap().len(), 1 << 20);
        assert_eq!(record.tool_calls.as_ref().unwrap().len(), 1 << 20);
    }
}
