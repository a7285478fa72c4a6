//! The configured backends at run time, and routing a request over a model's targets:
//! the first that can take it answers; a backend that fails before anything reached
//! the client hands the request to the next target.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::health::{Health, HealthRegistry, Pass};
use super::keep_alive::Books;
use super::{AnyBackend, BackendError};
use crate::config::{BackendConfig, MaxConcurrent, NativeRoute, Serves, Target};

/// One backend: its client, its concurrency slots and its health.
pub struct Upstream {
    pub config: BackendConfig,
    pub client: AnyBackend,
    slots: Slots,
    /// The first look at the backend's slot count (automatic `max_concurrent` only).
    first_detection: tokio::sync::OnceCell<()>,
    /// Whether the health checks started that first look.
    first_look_started: AtomicBool,
    pub health: Arc<Health>,
    /// [`NativeRoute`]s found unserved (`serves: "auto"`), by `NativeRoute as usize`.
    unserved: [AtomicBool; 2],
}

/// The concurrency limit in force. The semaphore is replaced when the limit shrinks:
/// requests holding the old one's permits finish on it.
#[derive(Default)]
struct Slots(std::sync::Mutex<Option<(Arc<Semaphore>, usize)>>);

impl Slots {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(Arc<Semaphore>, usize)>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn current(&self) -> Option<(Arc<Semaphore>, usize)> {
        self.lock().clone()
    }

    /// Sets the limit; whether it changed.
    fn resize(&self, size: usize) -> bool {
        let mut slots = self.lock();
        match &mut *slots {
            Some((_, old)) if *old == size => return false,
            Some((semaphore, old)) if *old < size => {
                semaphore.add_permits(size - *old);
                *old = size;
            }
            _ => *slots = Some((Arc::new(Semaphore::new(size)), size)),
        }
        true
    }
}

/// How long a request waits for the first look at a llama-server's slot count before it
/// goes without a limit; the look is one local `GET /props`.
const DETECTION_WAIT: Duration = Duration::from_secs(2);

/// Longest a look at the slot count may take.
const DETECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the limit in force comes from, for `/api/backends`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LimitSource {
    Config,
    LlamaServer,
    /// Automatic, but nothing read yet (or not a llama-server): no limit.
    Auto,
}

impl Upstream {
    pub fn new(config: BackendConfig, health: &HealthRegistry, books: &Books) -> Result<Upstream, BackendError> {
        let slots = Slots::default();
        if let MaxConcurrent::Limit(n) = config.max_concurrent {
            slots.resize(n);
        }
        Ok(Upstream {
            client: AnyBackend::new(&config, books.get(&config.name))?,
            slots,
            first_detection: tokio::sync::OnceCell::new(),
            first_look_started: AtomicBool::new(false),
            health: health.get(&config.name),
            unserved: Default::default(),
            config,
        })
    }

    /// Whether the backend is to be asked `route` itself: as configured, or, for
    /// `"auto"`, until it answered that it does not know the route.
    pub fn serves(&self, route: NativeRoute) -> bool {
        match self.config.serves.get(route) {
            Serves::Yes => true,
            Serves::No => false,
            Serves::Auto => !self.unserved[route as usize].load(Ordering::Relaxed),
        }
    }

    /// The backend answered `route` with "no such route": with `"auto"` it is not asked
    /// again (until a reload builds the backends anew), and true is returned; `true`
    /// means the backend serves the route, so its answer stands (false).
    pub fn learned_unserved(&self, route: NativeRoute) -> bool {
        if self.config.serves.get(route) != Serves::Auto {
            return false;
        }
        if !self.unserved[route as usize].swap(true, Ordering::Relaxed) {
            tracing::info!(
                backend = self.name(),
                route = route.key(),
                "backend does not serve the route; not asked again"
            );
        }
        true
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The limit in force (`None`: none) and where it comes from.
    pub fn max_concurrent(&self) -> (Option<usize>, LimitSource) {
        let size = self.slots.current().map(|(_, size)| size);
        let source = match self.config.max_concurrent {
            MaxConcurrent::Auto if size.is_some() => LimitSource::LlamaServer,
            MaxConcurrent::Auto => LimitSource::Auto,
            MaxConcurrent::Unlimited | MaxConcurrent::Limit(_) => LimitSource::Config,
        };
        (size, source)
    }

    /// Reads a llama-server's slot count and makes it the limit, when `max_concurrent`
    /// is automatic; at start and with every health check. A backend that does not tell
    /// (not a llama-server, or unreachable now) keeps the limit it has.
    pub async fn detect_limit(&self) {
        if self.config.max_concurrent != MaxConcurrent::Auto {
            return;
        }
        let AnyBackend::OpenAi(backend) = &self.client else {
            return;
        };
        let Ok(Some(size)) = tokio::time::timeout(DETECTION_TIMEOUT, backend.total_slots()).await else {
            return;
        };
        if self.slots.resize(size) {
            tracing::info!(
                backend = self.name(),
                max_concurrent = size,
                "llama-server has {size} slots: sending it at most {size} requests at once"
            );
        }
    }

    /// Whether the first look at the slot count is still to be started (`true` once).
    pub fn first_look_due(&self) -> bool {
        self.config.max_concurrent == MaxConcurrent::Auto && !self.first_look_started.swap(true, Ordering::Relaxed)
    }

    /// The first [`Upstream::detect_limit`]; whoever comes first runs it, the rest wait.
    pub async fn detect_limit_once(&self) {
        self.first_detection.get_or_init(|| self.detect_limit()).await;
    }

    /// Waits for a free slot when there is a limit, so one client's burst queues
    /// instead of starving the others; a wait longer than `queue_timeout` is
    /// [`BackendError::Busy`].
    pub async fn slot(&self) -> Result<Option<OwnedSemaphorePermit>, BackendError> {
        // The waits below are boxed: a request that finds a slot free (nearly all of them)
        // carries no room for a timer or the first look at the slot count in its future.
        if self.config.max_concurrent == MaxConcurrent::Auto && !self.first_detection.initialized() {
            // Past the wait the request goes unlimited; the look goes on for the next.
            let _ = Box::pin(tokio::time::timeout(DETECTION_WAIT, self.detect_limit_once())).await;
        }
        let Some((slots, size)) = self.slots.current() else {
            return Ok(None);
        };
        // A free permit goes to queued requests first, so taking one here jumps no queue.
        if let Ok(permit) = slots.clone().try_acquire_owned() {
            return Ok(Some(permit));
        }
        let wait = self.config.queue_timeout;
        match Box::pin(tokio::time::timeout(wait, slots.acquire_owned())).await {
            Ok(Ok(permit)) => Ok(Some(permit)),
            _ => Err(BackendError::Busy(format!(
                "backend busy: {size} requests in flight and none finished within {}s; retry shortly",
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

/// A target that answered: its backend, the model name it was asked for, its answer,
/// and the targets that failed before it.
pub struct Routed<'a, T> {
    pub upstream: &'a Upstream,
    pub model: String,
    pub answer: T,
    pub attempts: Vec<Attempt>,
}

/// No target answered: the error to answer the client with, and every failed target.
pub struct Unrouted<E> {
    pub error: E,
    pub attempts: Vec<Attempt>,
}

/// What one try can fail with: a backend's error, with whatever else the caller keeps
/// of it (the `/v1` routes keep the backend's error object and the bytes exchanged).
pub trait TryError: From<BackendError> {
    fn backend_error(&self) -> &BackendError;

    /// False when ollabridge refused the request before asking the backend (a request
    /// it cannot translate): the walk ends with it, and the backend is neither counted
    /// as an attempt nor judged.
    fn asked_backend(&self) -> bool {
        true
    }
}

impl TryError for BackendError {
    fn backend_error(&self) -> &BackendError {
        self
    }
}

/// Walks a model's targets for one request ([`Failover::run`]): each target is tried
/// until one answers or a failure says to stop.
///
/// Targets whose backend is unhealthy or whose breaker is open are skipped while
/// another can be tried; when none is admitted, all are tried (a lone backend is never
/// refused without asking). Only failures that left nothing sent (unreachable, timeout,
/// 5xx, 429, busy) move on; a client mistake (4xx) is the answer.
///
/// A half-open breaker's one trial is taken only when its target is really tried, and
/// given back when the try ends without a verdict (the walk dropped, a busy backend, a
/// client mistake): a target never tried would otherwise keep its trial forever.
///
pub struct Failover<'a> {
    upstreams: &'a [Upstream],
    candidates: Vec<Target>,
    tried: usize,
    /// No candidate was admitted when the walk began: all are tried regardless.
    forced: bool,
    /// The pass of the target being tried.
    pass: Option<Pass<'a>>,
    /// The targets that failed so far, for the log row.
    pub attempts: Vec<Attempt>,
}

impl<'a> Failover<'a> {
    pub fn new(upstreams: &'a [Upstream], targets: &[Target]) -> Failover<'a> {
        let now = Instant::now();
        let admitted: Vec<Target> = targets
            .iter()
            .filter(|t| {
                let upstream = &upstreams[t.backend];
                upstream.health.may_admit(&upstream.config.breaker, now)
            })
            .cloned()
            .collect();
        let forced = admitted.is_empty();
        Failover {
            upstreams,
            candidates: if forced { targets.to_vec() } else { admitted },
            tried: 0,
            forced,
            pass: None,
            attempts: Vec::new(),
        }
    }

    /// Tries the targets in turn with `attempt` (given the backend and the model name on
    /// it) until one answers. A try still waiting when the shutdown's grace period ends
    /// (`cut_off`) fails with [`BackendError::ShuttingDown`], which moves on to no other.
    /// Every route that answers from a model's targets goes through here: chat and
    /// generate, embeddings, the `/v1` pass-through.
    ///
    /// `attempt` returns a future that owns what it borrows for longer than the call (an
    /// async closure would do, but its future cannot be shown to be `Send`).
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn keeps its arguments twice in its future (~120 bytes per waiting request)"
    )]
    pub fn run<'c, T, E: TryError, F: Future<Output = Result<T, E>>>(
        mut self,
        cut_off: &'c CancellationToken,
        mut attempt: impl FnMut(&'a Upstream, String) -> F + 'c,
    ) -> impl Future<Output = Result<Routed<'a, T>, Unrouted<E>>> + 'c
    where
        'a: 'c,
    {
        async move {
            while let Some((upstream, model)) = self.next_target() {
                // A select, not `CancellationToken::run_until_cancelled`: that async fn keeps the
                // future it is given twice in its own (1.4 KB more for each request waiting on
                // its backend).
                let tried = tokio::select! {
                    tried = attempt(upstream, model.clone()) => tried,
                    () = cut_off.cancelled() => Err(E::from(BackendError::ShuttingDown)),
                };
                let error = match tried {
                    Ok(answer) => {
                        self.succeeded(upstream);
                        return Ok(Routed {
                            upstream,
                            model,
                            answer,
                            attempts: self.attempts,
                        });
                    }
                    Err(error) if !error.asked_backend() => {
                        // No verdict: the pass dropped gives a half-open breaker's trial back.
                        self.pass = None;
                        return Err(Unrouted {
                            error,
                            attempts: self.attempts,
                        });
                    }
                    Err(error) => error,
                };
                if self.failed(upstream, &model, error.backend_error().clone()).is_some() {
                    return Err(Unrouted {
                        error,
                        attempts: self.attempts,
                    });
                }
            }
            // A model always has a target; kept as an answer rather than a panic.
            Err(Unrouted {
                error: E::from(BackendError::Config("no backend to ask for this model".into())),
                attempts: self.attempts,
            })
        }
    }

    /// The next target to try, with its backend.
    fn next_target(&mut self) -> Option<(&'a Upstream, String)> {
        // A try not reported ends here, without a verdict.
        self.pass = None;
        while let Some(target) = self.candidates.get(self.tried) {
            self.tried += 1;
            let upstream = &self.upstreams[target.backend];
            let health = &*upstream.health;
            let pass = match health.admit(&upstream.config.breaker, Instant::now()) {
                Some(pass) => pass,
                // Admitted when the walk began, but its trial went to another request
                // meanwhile: skipped while a later target remains.
                None if !self.forced && self.tried < self.candidates.len() => continue,
                None => health.bypass(),
            };
            self.pass = Some(pass);
            return Some((upstream, target.model.clone()));
        }
        None
    }

    /// The target being tried answered.
    fn succeeded(&mut self, upstream: &Upstream) {
        match self.pass.take() {
            Some(pass) => pass.succeeded(),
            None => upstream.health.bypass().succeeded(),
        }
    }

    /// Records a failed try; returns the error to answer with when no other target
    /// should be tried.
    fn failed(&mut self, upstream: &Upstream, model: &str, error: BackendError) -> Option<BackendError> {
        let moves_on = error.may_fail_over();
        // A busy backend or a refused request says nothing of its health: the pass is
        // dropped, giving a trial back.
        let pass = self.pass.take();
        if moves_on && !matches!(error, BackendError::Busy(_)) {
            let pass = pass.unwrap_or_else(|| upstream.health.bypass());
            pass.failed(&upstream.config.breaker, error.to_string(), Instant::now());
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// Backends `a` and `b` (nothing listens), B's breaker open after one failure with
    /// `cooldown` seconds.
    fn two_backends(cooldown: f64) -> (Vec<Upstream>, HealthRegistry) {
        let config = Config::from_json(&format!(
            r#"{{"backends": {{
                "a": {{"type": "openai", "endpoint": "http://127.0.0.1:9"}},
                "b": {{"type": "openai", "endpoint": "http://127.0.0.1:9", "breaker": {{"failures": 1, "cooldown": {cooldown}}}}}
            }}}}"#
        ))
        .unwrap();
        let registry = HealthRegistry::default();
        let upstreams: Vec<Upstream> = config
            .backends
            .iter()
            .map(|b| Upstream::new(b.clone(), &registry, &Books::default()).unwrap())
            .collect();
        assert_eq!((upstreams[0].name(), upstreams[1].name()), ("a", "b"));
        (upstreams, registry)
    }

    fn targets(backends: &[usize]) -> Vec<Target> {
        backends
            .iter()
            .map(|&backend| Target {
                backend,
                model: "m".into(),
            })
            .collect()
    }

    fn down(b: &Upstream) -> BackendError {
        BackendError::Unreachable {
            endpoint: b.client.label().to_owned(),
            reason: "connection refused".into(),
        }
    }

    /// Opens B's breaker (one failure) and waits out its cool-down.
    async fn half_open(upstreams: &[Upstream]) {
        let mut walk = Failover::new(upstreams, &targets(&[1]));
        let (b, model) = walk.next_target().unwrap();
        assert!(walk.failed(b, &model, down(b)).is_some());
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(upstreams[1].health.report(Instant::now()).breaker, "half_open");
    }

    /// Which backend a new walk over `targets` tries first.
    fn first_tried(upstreams: &[Upstream], backends: &[usize]) -> String {
        let mut walk = Failover::new(upstreams, &targets(backends));
        let (upstream, _) = walk.next_target().unwrap();
        upstream.name().to_owned()
    }

    #[test]
    fn the_limit_grows_in_place_and_shrinks_into_a_new_semaphore() {
        let slots = Slots::default();
        assert!(slots.current().is_none());
        assert!(slots.resize(2));
        let (first, _) = slots.current().unwrap();
        let held = first.clone().try_acquire_owned().unwrap();
        assert!(!slots.resize(2));
        assert!(slots.resize(4));
        let (grown, size) = slots.current().unwrap();
        assert!(Arc::ptr_eq(&first, &grown));
        assert_eq!((size, grown.available_permits()), (4, 3));
        // Shrunk: a new semaphore, whole; the permit held is given back to the old one.
        assert!(slots.resize(1));
        let (shrunk, size) = slots.current().unwrap();
        assert!(!Arc::ptr_eq(&first, &shrunk));
        assert_eq!((size, shrunk.available_permits()), (1, 1));
        drop(held);
        assert_eq!(first.available_permits(), 4);
    }

    #[tokio::test]
    async fn a_later_target_keeps_its_trial_when_an_earlier_one_answers() {
        let (upstreams, _registry) = two_backends(0.05);
        half_open(&upstreams).await;
        let mut walk = Failover::new(&upstreams, &targets(&[0, 1]));
        let (a, _) = walk.next_target().unwrap();
        assert_eq!(a.name(), "a");
        walk.succeeded(a);
        drop(walk);
        // B was never tried, so its trial is still to be had.
        let mut walk = Failover::new(&upstreams, &targets(&[1, 0]));
        let (b, _) = walk.next_target().unwrap();
        assert_eq!(b.name(), "b");
        walk.succeeded(b);
        assert_eq!(upstreams[1].health.report(Instant::now()).breaker, "closed");
    }

    #[tokio::test]
    async fn a_trial_given_up_or_ending_without_a_verdict_is_given_back() {
        let (upstreams, _registry) = two_backends(60.0);
        let (b, a) = (&upstreams[1], &upstreams[0]);
        // Opened, and half-open at once: the cool-down is faked by a past failure.
        b.health.bypass().failed(
            &b.config.breaker,
            "boom".into(),
            Instant::now() - Duration::from_secs(61),
        );
        // The request is cancelled while B is tried (the walk dropped).
        let mut walk = Failover::new(&upstreams, &targets(&[1, 0]));
        assert_eq!(walk.next_target().unwrap().0.name(), "b");
        assert_eq!(first_tried(&upstreams, &[1, 0]), "a", "the trial is taken meanwhile");
        drop(walk);
        // B is busy: the next target answers, and B's trial is back.
        let mut walk = Failover::new(&upstreams, &targets(&[1, 0]));
        let (tried, model) = walk.next_target().unwrap();
        assert_eq!(tried.name(), "b");
        assert!(walk.failed(tried, &model, BackendError::Busy("busy".into())).is_none());
        let (next, _) = walk.next_target().unwrap();
        assert_eq!(next.name(), "a");
        walk.succeeded(a);
        drop(walk);
        // B refuses the request as the client's mistake: no verdict either.
        let mut walk = Failover::new(&upstreams, &targets(&[1, 0]));
        let (tried, model) = walk.next_target().unwrap();
        let refused = BackendError::Status {
            status: 400,
            message: "bad".into(),
        };
        assert!(walk.failed(tried, &model, refused).is_some());
        drop(walk);
        assert_eq!(first_tried(&upstreams, &[1, 0]), "b");
    }
}
