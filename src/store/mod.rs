//! The request log. Handlers hand one [`LogRecord`] per request to a [`Logger`], which
//! never blocks: records queue in a bounded channel and a single writer task stores
//! them in batches. Shutting down drains the queue before the process exits.

pub mod db;
pub mod query;
pub mod retention;
mod writer;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::mpsc;

pub use db::{Instance, Store};
pub use retention::spawn_retention;
pub use writer::{IN_FLIGHT_ROW_AFTER, StoreError, Writer, open};

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
    chrono::Utc::now().format("%Y-%m-%d %H:%M:%S%.3f").to_string()
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
pub struct Ticket(u64);

/// The request path's handle on the log: cheap to clone, never waits.
#[derive(Clone)]
pub struct Logger {
    tx: mpsc::Sender<Entry>,
    tickets: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
    /// False while the writer cannot reach the database (and retries).
    store_up: Arc<AtomicBool>,
    max_body_bytes: usize,
    redact: bool,
}

impl Logger {
    /// With `database.redact`, rows keep metadata only.
    pub fn redacting(mut self, redact: bool) -> Logger {
        self.redact = redact;
        self
    }

    /// Cuts the texts to `database.max_body_bytes`, or drops them (and the tool
    /// calls) when redacting.
    pub fn cap_bodies(&self, record: &mut LogRecord) {
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
            &mut record.request_body,
            &mut record.backend_request,
            // (`backend_response` is cut as it streams in: see `backend::Capture`.)
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
        let ticket = Ticket(self.tickets.fetch_add(1, Ordering::Relaxed));
        let started = Entry::Started {
            ticket,
            at: tokio::time::Instant::now(),
            record,
        };
        // Lost when the queue is full: the request's final record stands alone then.
        let _ = self.tx.try_send(started);
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
        match self.tx.try_send(Entry::Finished { ticket, record }) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(dropped, "log queue full: request record dropped");
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("log writer stopped: request record dropped");
            }
        }
    }

    /// Records lost because the queue was full since start.
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

/// Cuts `text` to at most `max` bytes on a character boundary, saying so at the end.
fn cap(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let total = text.len();
    text.truncate(end);
    text.push_str(&format!("…[truncated, {total} bytes in all]"));
}

#[cfg(test)]
mod tests {
    use super::cap;

    #[test]
    fn cap_cuts_on_a_char_boundary_and_says_so() {
        let mut s = "héllo".to_owned();
        cap(&mut s, 2);
        assert_eq!(s, "h…[truncated, 6 bytes in all]");
        let mut short = "ok".to_owned();
        cap(&mut short, 2);
        assert_eq!(short, "ok");
    }
}
