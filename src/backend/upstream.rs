//! The configured backends at run time, and routing a request over a model's targets:
//! the first that can take it answers; a backend that fails before anything reached
//! the client hands the request to the next target.

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::health::{Health, HealthRegistry};
use super::{AnyBackend, BackendError};
use crate::config::{BackendConfig, Target};

/// One backend: its client, its concurrency slots and its health.
pub struct Upstream {
    pub config: BackendConfig,
    pub client: AnyBackend,
    /// Free slots when `max_concurrent` is set.
    slots: Option<Arc<Semaphore>>,
    pub health: Arc<Health>,
}

impl Upstream {
    pub fn new(config: BackendConfig, health: &HealthRegistry) -> Result<Upstream, BackendError> {
        Ok(Upstream {
            client: AnyBackend::new(&config)?,
            slots: config.max_concurrent.map(|n| Arc::new(Semaphore::new(n))),
            health: health.get(&config.name),
            config,
        })
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Waits for a free slot when `max_concurrent` is set, so one client's burst queues
    /// instead of starving the others; a wait longer than `queue_timeout` is
    /// [`BackendError::Busy`].
    pub async fn slot(&self) -> Result<Option<OwnedSemaphorePermit>, BackendError> {
        let Some(slots) = &self.slots else {
            return Ok(None);
        };
        let wait = self.config.queue_timeout;
        match tokio::time::timeout(wait, slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Some(permit)),
            _ => Err(BackendError::Busy(format!(
                "backend busy: {} requests in flight and none finished within {}s; retry shortly",
                self.config.max_concurrent.unwrap_or_default(),
                wait.as_secs_f64()
            ))),
        }
    }
}

/// A target that failed before the one that answered (or before giving up).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attempt {
    pub backend: String,
    pub model: String,
    pub error: String,
}

/// Walks a model's targets for one request: the caller tries each target [`next_target`]
/// gives and reports how it went, until one answers or [`failed`] says to stop.
///
/// Targets whose backend is unhealthy or whose breaker is open are skipped while
/// another can be tried; when none is admitted, all are tried (a lone backend is never
/// refused without asking). Only failures that left nothing sent (unreachable, timeout,
/// 5xx, 429, busy) move on; a client mistake (4xx) is the answer.
///
/// [`next_target`]: Failover::next_target
/// [`failed`]: Failover::failed
pub struct Failover<'a> {
    upstreams: &'a [Upstream],
    candidates: Vec<Target>,
    tried: usize,
    /// The targets that failed so far, for the log row.
    pub attempts: Vec<Attempt>,
}

impl<'a> Failover<'a> {
    pub fn new(upstreams: &'a [Upstream], targets: &[Target]) -> Failover<'a> {
        let now = Instant::now();
        let admitted: Vec<Target> = targets
            .iter()
            .filter(|t| upstreams[t.backend].health.admit(now))
            .cloned()
            .collect();
        Failover {
            upstreams,
            candidates: if admitted.is_empty() {
                targets.to_vec()
            } else {
                admitted
            },
            tried: 0,
            attempts: Vec::new(),
        }
    }

    /// The next target to try, with its backend.
    pub fn next_target(&mut self) -> Option<(&'a Upstream, String)> {
        let target = self.candidates.get(self.tried)?;
        self.tried += 1;
        Some((&self.upstreams[target.backend], target.model.clone()))
    }

    pub fn succeeded(&self, upstream: &Upstream) {
        upstream.health.succeeded();
    }

    /// Records a failed try; returns the error to answer with when no other target
    /// should be tried.
    pub fn failed(&mut self, upstream: &Upstream, model: &str, error: BackendError) -> Option<BackendError> {
        let moves_on = error.may_fail_over();
        if moves_on && !matches!(error, BackendError::Busy(_)) {
            upstream
                .health
                .failed(&upstream.config.breaker, error.to_string(), Instant::now());
        }
        self.attempts.push(Attempt {
            backend: upstream.name().to_owned(),
            model: model.to_owned(),
            error: error.to_string(),
        });
        if !moves_on || self.tried >= self.candidates.len() {
            return Some(error);
        }
        tracing::warn!(backend = upstream.name(), model, error = %error, "failing over to the next target");
        None
    }
}
