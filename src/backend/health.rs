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
    /// The half-open breaker's trial in flight: its number and when it began.
    trial: Option<(u64, Instant)>,
    trials_begun: u64,
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

impl State {
    /// A trial is in flight until it ends; one running longer than the cool-down is
    /// taken as lost (a request that hangs), so another may go.
    fn trial_in_flight(&self, breaker: &Breaker, now: Instant) -> bool {
        self.trial
            .is_some_and(|(_, began)| now.saturating_duration_since(began) < breaker.cooldown)
    }
}

/// Leave for one request to go to the backend; see [`Health::admit`].
#[must_use = "a pass reports how the request went; dropped, it releases its trial"]
pub struct Pass<'a> {
    health: &'a Health,
    /// The half-open breaker's trial this request is, if it is one.
    trial: Option<u64>,
}

impl Pass<'_> {
    /// The backend answered: the breaker closes.
    pub fn succeeded(mut self) {
        self.trial = None;
        self.health.succeeded();
    }

    /// The backend failed the request.
    pub fn failed(mut self, breaker: &Breaker, error: String, now: Instant) {
        let trial = self.trial.take();
        self.health.failed(breaker, error, now, trial);
    }

    pub fn is_trial(&self) -> bool {
        self.trial.is_some()
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        if let Some(trial) = self.trial {
            self.health.release(trial);
        }
    }
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

    /// Whether a request could go now, without taking anything: for choosing which
    /// targets to walk. [`Health::admit`] decides when a target is really tried.
    pub fn may_admit(&self, breaker: &Breaker, now: Instant) -> bool {
        let s = self.lock();
        !s.check_failed
            && match s.open_until {
                None => true,
                Some(until) => now >= until && !s.trial_in_flight(breaker, now),
            }
    }

    /// A pass for a request going now, or `None` when none may. Past the cool-down the
    /// first caller gets the half-open breaker's one trial, which ends with the pass:
    /// reported as a success or failure, or released when the pass is dropped (the
    /// request was cancelled or ended in a way that says nothing about the backend).
    pub fn admit(&self, breaker: &Breaker, now: Instant) -> Option<Pass<'_>> {
        let mut s = self.lock();
        if s.check_failed {
            return None;
        }
        let trial = match s.open_until {
            None => None,
            Some(until) if now < until => return None,
            Some(_) if s.trial_in_flight(breaker, now) => return None,
            Some(_) => {
                s.trials_begun += 1;
                s.trial = Some((s.trials_begun, now));
                Some(s.trials_begun)
            }
        };
        Some(Pass { health: self, trial })
    }

    /// A pass without the trial, for a request sent whatever the breaker says (a
    /// target tried because no other can be).
    pub fn bypass(&self) -> Pass<'_> {
        Pass {
            health: self,
            trial: None,
        }
    }

    fn succeeded(&self) {
        let mut s = self.lock();
        s.failures_in_a_row = 0;
        s.open_until = None;
        s.trial = None;
    }

    /// A request failed at the backend: a failed trial reopens the breaker, and
    /// `breaker.failures` in a row open it.
    fn failed(&self, breaker: &Breaker, error: String, now: Instant, trial: Option<u64>) {
        let mut s = self.lock();
        s.failures_in_a_row += 1;
        s.requests_failed += 1;
        s.last_error = Some(error);
        let trial_failed = trial.is_some() && s.trial.map(|(id, _)| id) == trial;
        if trial_failed || s.failures_in_a_row >= breaker.failures {
            if s.open_until.is_none() || trial_failed {
                tracing::warn!(failures = s.failures_in_a_row, cooldown = ?breaker.cooldown, "backend circuit opened");
            }
            s.open_until = Some(now + breaker.cooldown);
            s.trial = None;
        }
    }

    /// A trial that ended without a verdict: the next request may try again.
    fn release(&self, trial: u64) {
        let mut s = self.lock();
        if s.trial.map(|(id, _)| id) == Some(trial) {
            s.trial = None;
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

    fn breaker() -> Breaker {
        Breaker {
            failures: 2,
            cooldown: Duration::from_secs(30),
        }
    }

    /// Opens `h`'s breaker at `t0` with two failures.
    fn open(h: &Health, t0: Instant) {
        h.bypass().failed(&breaker(), "boom".into(), t0);
        h.bypass().failed(&breaker(), "boom".into(), t0);
    }

    #[test]
    fn the_breaker_opens_after_failures_in_a_row_and_half_opens_for_one_trial() {
        let breaker = breaker();
        let h = Health::new();
        let t0 = Instant::now();
        h.bypass().failed(&breaker, "boom".into(), t0);
        assert!(
            h.admit(&breaker, t0).is_some_and(|p| !p.is_trial()),
            "one failure keeps it closed"
        );
        h.bypass().failed(&breaker, "boom".into(), t0);
        assert!(h.admit(&breaker, t0 + Duration::from_secs(29)).is_none());
        assert!(!h.may_admit(&breaker, t0 + Duration::from_secs(29)));
        assert_eq!(h.report(t0).breaker, "open");
        // Cool-down over: one trial, not two.
        let later = t0 + Duration::from_secs(31);
        assert_eq!(h.report(later).breaker, "half_open");
        assert!(h.may_admit(&breaker, later));
        let trial = h.admit(&breaker, later).expect("the trial");
        assert!(trial.is_trial());
        assert!(h.admit(&breaker, later).is_none());
        assert!(!h.may_admit(&breaker, later));
        // The trial fails: open again for a full cool-down.
        trial.failed(&breaker, "still down".into(), later);
        assert!(h.admit(&breaker, later + Duration::from_secs(29)).is_none());
        let again = later + Duration::from_secs(31);
        h.admit(&breaker, again).expect("the next trial").succeeded();
        assert!(h.admit(&breaker, again).is_some_and(|p| !p.is_trial()));
        assert!(h.admit(&breaker, again).is_some_and(|p| !p.is_trial()));
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
    fn looking_whether_a_target_may_go_does_not_take_its_trial() {
        let h = Health::new();
        let t0 = Instant::now();
        open(&h, t0);
        let later = t0 + Duration::from_secs(31);
        assert!(h.may_admit(&breaker(), later) && h.may_admit(&breaker(), later));
        assert!(h.admit(&breaker(), later).is_some_and(|p| p.is_trial()));
    }

    #[test]
    fn a_trial_dropped_without_a_verdict_is_released_for_the_next_request() {
        let h = Health::new();
        let t0 = Instant::now();
        open(&h, t0);
        let later = t0 + Duration::from_secs(31);
        let trial = h.admit(&breaker(), later).expect("the trial");
        assert!(h.admit(&breaker(), later).is_none());
        drop(trial);
        assert_eq!(h.report(later).breaker, "half_open", "still unproven");
        h.admit(&breaker(), later).expect("a new trial").succeeded();
        assert_eq!(h.report(later).breaker, "closed");
    }

    #[test]
    fn a_trial_running_longer_than_the_cool_down_is_taken_as_lost() {
        let h = Health::new();
        let t0 = Instant::now();
        open(&h, t0);
        let later = t0 + Duration::from_secs(31);
        let hung = h.admit(&breaker(), later).expect("the trial");
        assert!(h.admit(&breaker(), later + Duration::from_secs(29)).is_none());
        let next = h
            .admit(&breaker(), later + Duration::from_secs(30))
            .expect("a new trial");
        // The lost trial ending late releases nothing: the new one still runs.
        drop(hung);
        assert!(h.admit(&breaker(), later + Duration::from_secs(30)).is_none());
        next.succeeded();
        assert_eq!(h.report(later).breaker, "closed");
    }

    #[test]
    fn a_failed_check_keeps_requests_away_until_a_check_passes() {
        let h = Health::new();
        let now = Instant::now();
        h.checked(Err("connection refused".into()), now);
        assert!(h.admit(&breaker(), now).is_none());
        assert!(!h.may_admit(&breaker(), now));
        assert!(!h.report(now).healthy);
        h.checked(Ok(()), now);
        assert!(h.admit(&breaker(), now).is_some());
    }
}
