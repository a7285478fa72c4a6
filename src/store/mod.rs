//! The request log. Handlers hand one [`LogRecord`] per request to a [`Logger`], which
//! never blocks: records queue in a bounded channel and a single writer task stores
//! them in batches. Shutting down drains the queue before the process exits.

pub mod query;
pub mod retention;
mod writer;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;

pub use retention::spawn_retention;
pub use writer::{StoreError, Writer, open};

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
}

pub fn timestamp_now() -> String {
    chrono::Utc::now().format("%Y-%m-%d %H:%M:%S%.3f").to_string()
}

/// The request path's handle on the log: cheap to clone, never waits.
#[derive(Clone)]
pub struct Logger {
    tx: mpsc::Sender<LogRecord>,
    dropped: Arc<AtomicU64>,
    max_body_bytes: usize,
    redact: bool,
}

impl Logger {
    /// With `database.redact`, rows keep metadata only.
    pub fn redacting(mut self, redact: bool) -> Logger {
        self.redact = redact;
        self
    }

    /// Cuts prompt, response and thinking to `database.max_body_bytes`, or drops them
    /// (and the tool calls) when redacting.
    pub fn cap_bodies(&self, record: &mut LogRecord) {
        if self.redact {
            record.prompt = None;
            record.response = None;
            record.thinking = None;
            record.tool_calls = None;
            return;
        }
        for text in [&mut record.prompt, &mut record.response, &mut record.thinking]
            .into_iter()
            .flatten()
        {
            cap(text, self.max_body_bytes);
        }
    }

    pub fn log(&self, mut record: LogRecord) {
        self.cap_bodies(&mut record);
        match self.tx.try_send(record) {
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
