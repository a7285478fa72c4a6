//! What we know of each backend's health: the periodic check's last verdict and a
//! circuit breaker over real requests. Kept by backend name across config reloads.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use serde::Serialize;

use crate::config::Breaker;

pub struct Health {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The periodic check's verdict; `true` until a check fails.
    check_failed: bool,
    last_check: Option<Instant>,
    failures_in_a_row: u32,
    /// The breaker is open until then; past it, one trial request may go.
    open_until: Option<Instant>,
    trial_running: bool,
    last_error: Option<String>,
    requests_failed: u64,
}

/// For `/api/backends`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthReport {
    pub healthy: bool,
    /// `closed` (requests go), `open` (skipped), or `half_open` (a trial may go).
    pub breaker: &'static str,
    pub failures_in_a_row: u32,
    pub requests_failed: u64,
    pub last_error: Option<String>,
    pub seconds_since_check: Option<f64>,
}

impl Health {
    fn new() -> Health {
        Health {
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a request may go now. Past the cool-down, the first caller gets the
    /// half-open breaker's one trial.
    pub fn admit(&self, now: Instant) -> bool {
        let mut s = self.lock();
        if s.check_failed {
            return false;
        }
        match s.open_until {
            None => true,
            Some(until) if now < until => false,
            Some(_) if s.trial_running => false,
            Some(_) => {
                s.trial_running = true;
                true
            }
        }
    }

    pub fn succeeded(&self) {
        let mut s = self.lock();
        s.failures_in_a_row = 0;
        s.open_until = None;
        s.trial_running = false;
    }

    /// A request failed at the backend: a failed trial reopens the breaker, and
    /// `breaker.failures` in a row open it.
    pub fn failed(&self, breaker: &Breaker, error: String, now: Instant) {
        let mut s = self.lock();
        s.failures_in_a_row += 1;
        s.requests_failed += 1;
        s.last_error = Some(error);
        if s.trial_running || s.failures_in_a_row >= breaker.failures {
            if s.open_until.is_none() || s.trial_running {
                tracing::warn!(failures = s.failures_in_a_row, cooldown = ?breaker.cooldown, "backend circuit opened");
            }
            s.open_until = Some(now + breaker.cooldown);
            s.trial_running = false;
        }
    }

    /// The periodic check's outcome.
    pub fn checked(&self, outcome: Result<(), String>, now: Instant) {
        let mut s = self.lock();
        s.last_check = Some(now);
        match outcome {
            Ok(()) => s.check_failed = false,
            Err(e) => {
                s.check_failed = true;
                s.last_error = Some(e);
            }
        }
    }

    pub fn report(&self, now: Instant) -> HealthReport {
        let s = self.lock();
        HealthReport {
            healthy: !s.check_failed,
            breaker: match s.open_until {
                None => "closed",
                Some(until) if now < until => "open",
                Some(_) => "half_open",
            },
            failures_in_a_row: s.failures_in_a_row,
            requests_failed: s.requests_failed,
            last_error: s.last_error.clone(),
            seconds_since_check: s.last_check.map(|at| now.duration_since(at).as_secs_f64()),
        }
    }
}

/// Health by backend name, shared by every config generation.
#[derive(Default)]
pub struct HealthRegistry(Mutex<HashMap<String, Arc<Health>>>);

impl HealthRegistry {
    pub fn get(&self, name: &str) -> Arc<Health> {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.entry(name.to_owned())
            .or_insert_with(|| Arc::new(Health::new()))
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_breaker_opens_after_failures_in_a_row_and_half_opens_for_one_trial() {
        let breaker = Breaker {
            failures: 2,
            cooldown: Duration::from_secs(30),
        };
        let h = Health::new();
        let t0 = Instant::now();
        h.failed(&breaker, "boom".into(), t0);
        assert!(h.admit(t0), "one failure keeps it closed");
        h.failed(&breaker, "boom".into(), t0);
        assert!(!h.admit(t0 + Duration::from_secs(29)));
        assert_eq!(h.report(t0).breaker, "open");
        // Cool-down over: one trial, not two.
        let later = t0 + Duration::from_secs(31);
        assert_eq!(h.report(later).breaker, "half_open");
        assert!(h.admit(later));
        assert!(!h.admit(later));
        // The trial fails: open again for a full cool-down.
        h.failed(&breaker, "still down".into(), later);
        assert!(!h.admit(later + Duration::from_secs(29)));
        let again = later + Duration::from_secs(31);
        assert!(h.admit(again));
        h.succeeded();
        assert!(h.admit(again) && h.admit(again));
        let report = h.report(again);
        assert_eq!(
            (
                report.breaker,
                report.failures_in_a_row,
                report.requests_failed,
                report.last_error.as_deref()
            ),
            ("closed", 0, 3, Some("still down"))
        );
    }

    #[test]
    fn a_failed_check_keeps_requests_away_until_a_check_passes() {
        let h = Health::new();
        let now = Instant::now();
        h.checked(Err("connection refused".into()), now);
        assert!(!h.admit(now));
        assert!(!h.report(now).healthy);
        h.checked(Ok(()), now);
        assert!(h.admit(now));
    }
}
