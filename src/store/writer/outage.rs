//! The writer's view of the database's health: whether a failed write may pass
//! ([`transient`]), and the outage it starts (logged once at each end, with backoff
//! between tries, and `ollabridge_log_store_up` at 0 meanwhile).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// First wait before a failed batch is tried again; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Whether the database takes writes, and since when it does not.
pub(super) struct Health {
    pub(super) up: Arc<AtomicBool>,
    pub(super) outage: Option<Outage>,
}

pub(super) struct Outage {
    since: Instant,
    failures: u32,
    /// Not before this is the database tried again.
    retry_at: Instant,
}

impl Health {
    /// A write failed: the first failure of an outage is logged, the others only at
    /// debug level. Returns when to try again.
    pub(super) fn failed(&mut self, error: &sqlx::Error, holding: usize) -> Instant {
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
    pub(super) fn ok(&mut self) {
        if let Some(outage) = self.outage.take() {
            self.up.store(true, Ordering::Relaxed);
            tracing::warn!(
                after = ?outage.since.elapsed(),
                failed_tries = outage.failures,
                "log database available again; the records held meanwhile are being written"
            );
        }
    }

    pub(super) fn retry_at(&self) -> Option<Instant> {
        self.outage.as_ref().map(|o| o.retry_at)
    }
}

/// Whether a failed write may go through later as it is: the database is busy,
/// unreachable, out of space or failing I/O. Anything else (a constraint, a value the
/// database will not take) fails the same way every time.
pub(super) fn transient(error: &sqlx::Error) -> bool {
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
