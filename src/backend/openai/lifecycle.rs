//! Loading and unloading models on a llama-server in router mode: whether the backend is
//! one, `POST /models/load` and `/models/unload`, waiting on `GET /models` for a load,
//! and the keep-alive lease each chat, generate and embed request holds
//! (`backend/keep_alive.rs` times them out).

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant, SystemTime};

use reqwest::Url;
use serde_json::Value;

use super::client::OpenAiBackend;
use super::router::{self, Change, RouterModel, State};
use super::types::{ModelList, Props};
use crate::backend::keep_alive::{self, Book, KeepAlive, Lease, Unloader};
use crate::backend::{BackendError, ChunkStream, Lifecycle, LoadedModel};

/// How often a load in progress is looked at.
const LOAD_POLL: Duration = Duration::from_millis(100);

/// What the backend needs to load and unload models, if it is a router (boxed in the
/// backend: most backends are not one).
pub(super) struct Router {
    /// Whether it is one: set by the config, else learnt from what it answers.
    configured: Option<bool>,
    /// 0: not known yet, 1: a router, 2: not one.
    detected: AtomicU8,
    /// The models it holds loaded for clients, and their keep-alive timers.
    book: Arc<Book>,
    /// `backend.timeout`, which also bounds the wait for a model to load.
    timeout: Duration,
}

impl Router {
    pub(super) fn new(configured: Option<bool>, book: Arc<Book>, timeout: Duration) -> Router {
        Router {
            configured,
            detected: AtomicU8::new(0),
            book,
            timeout,
        }
    }

    /// `None` while neither the config nor the backend told.
    fn known(&self) -> Option<bool> {
        self.configured.or(match self.detected.load(Ordering::Relaxed) {
            1 => Some(true),
            2 => Some(false),
            _ => None,
        })
    }

    fn learn(&self, router: bool) {
        self.detected.store(if router { 1 } else { 2 }, Ordering::Relaxed);
    }

    /// The book outlives reloads; its timers unload through the newest client.
    pub(super) fn attach(&self, unloader: Unloader) {
        self.book.attach(unloader);
    }
}

/// A model's lease and the time spent waiting for its load, for one request.
pub(super) type Held = Option<(Lease, Duration)>;

impl OpenAiBackend {
    /// What a model list says of the backend: a router's models carry a status.
    pub(super) fn note_list(&self, list: &ModelList) {
        self.router.learn(router::is_router_list(list));
    }

    /// What `/props` says of the backend.
    pub(super) fn note_props(&self, props: &Props) {
        self.router.learn(router::is_router_props(props));
    }

    /// Whether the backend is a router, asking its `/props` if nothing told yet.
    async fn is_router(&self) -> bool {
        if let Some(known) = self.router.known() {
            return known;
        }
        // `props` notes the answer; a backend that did not answer is taken for none, this time.
        self.props().await;
        self.router.known().unwrap_or(false)
    }

    /// The unloader the keep-alive timers call: `POST /models/unload`.
    pub(super) fn unloader(&self) -> Result<Unloader, BackendError> {
        let http = self.http.clone();
        let url = self.url("models/unload")?;
        let label = self.label().to_owned();
        Ok(Arc::new(move |model: String| {
            let (http, url, label) = (http.clone(), url.clone(), label.clone());
            Box::pin(async move {
                match change(&http, &url, &model, &label).await {
                    Ok(_) => tracing::info!(backend = %label, model, "keep_alive ran out: model unloaded"),
                    Err(e) => {
                        tracing::warn!(backend = %label, model, error = %e, "keep_alive ran out, but the unload failed")
                    }
                }
            })
        }))
    }

    /// For a request to `model` on a router: a lease keeping it loaded while the answer
    /// runs, after loading it if the book did not hold it (with the time that took).
    /// `None` for any other backend, and for a model the router does not list (its own
    /// error answers the request).
    pub(super) async fn lease(&self, model: &str, keep_alive: Option<&Value>) -> Result<Held, BackendError> {
        if self.router.known() != Some(true) {
            return Ok(None);
        }
        let keep_alive = refused(keep_alive::parse(keep_alive))?;
        let (lease, new) = self.router.book.begin(model, keep_alive);
        if !new {
            return Ok(Some((lease, Duration::ZERO)));
        }
        // Boxed: only a request that loads its model pays for the room loading takes in
        // every chat's future (it was ~1.1 KB of the 1.2 KB of `chat`'s).
        match Box::pin(self.ensure_loaded(model)).await {
            Ok(Some(waited)) => Ok(Some((lease, waited))),
            Ok(None) => {
                lease.forget();
                Ok(None)
            }
            Err(e) => {
                lease.forget();
                Err(e)
            }
        }
    }

    /// Ollama's load request (an empty chat or prompt): loads `model`, waiting until it
    /// is, or with `keep_alive` 0 unloads it. `None`: the backend does not load models.
    pub async fn load(&self, model: &str, keep_alive: Option<&Value>) -> Result<Option<Lifecycle>, BackendError> {
        if !self.is_router().await {
            return Ok(None);
        }
        let keep_alive = refused(keep_alive::parse(keep_alive))?;
        if keep_alive == KeepAlive::Unload {
            // In use, it is unloaded when its last request ends, as Ollama does.
            if !self.router.book.unload_when_idle(model) {
                let started = Instant::now();
                change(&self.http, &self.url("models/unload")?, model, self.label()).await?;
                // The router answers before the model's process has ended: a client's next
                // look (`/api/ps`) must not still find it.
                while matches!(self.state_of(model).await?, Some(State::Loaded | State::Sleeping)) {
                    self.poll_before(started).await?;
                }
            }
            return Ok(Some(Lifecycle::Unloaded));
        }
        let waited = self.ensure_loaded(model).await?.ok_or_else(|| BackendError::Status {
            status: 404,
            message: format!(
                "model \"{model}\" not found on the llama-server router at {}",
                self.label()
            ),
        })?;
        self.router.book.hold(model, keep_alive);
        Ok(Some(Lifecycle::Loaded { waited }))
    }

    /// The models a router has loaded, with when ollabridge unloads each; `None` for
    /// another backend.
    pub async fn loaded_models(&self) -> Result<Option<Vec<LoadedModel>>, BackendError> {
        if !self.is_router().await {
            return Ok(None);
        }
        let expiries = self.router.book.expiries(SystemTime::now());
        let loaded = self
            .router_models()
            .await?
            .into_iter()
            .filter(|m| m.state == State::Loaded)
            .map(|m| LoadedModel {
                // A model ollabridge did not load has no timer here: it stays loaded.
                expires_at: expiries.get(&m.id).copied().flatten(),
                size: m.size.unwrap_or(0),
                context_length: m.context_length,
                name: m.id,
            })
            .collect();
        Ok(Some(loaded))
    }

    async fn router_models(&self) -> Result<Vec<RouterModel>, BackendError> {
        let url = self.url("models")?;
        let body = self.exchange(|| self.http.get(url.clone())).await?;
        let list = router::read_list(&body, self.label())?;
        router::router_models(&list).ok_or_else(|| {
            BackendError::Protocol(format!(
                "{} lists its models without a status: not a llama-server router",
                self.label()
            ))
        })
    }

    /// Loads `model` unless it is loaded, and waits (at most `backend.timeout`) until it
    /// is: the time waited, `None` when the router does not list the model.
    async fn ensure_loaded(&self, model: &str) -> Result<Option<Duration>, BackendError> {
        let started = Instant::now();
        let state = self.state_of(model).await?;
        match state {
            None => return Ok(None),
            Some(State::Loaded) => return Ok(Some(Duration::ZERO)),
            Some(State::Loading) => {}
            Some(_) => {
                if change(&self.http, &self.url("models/load")?, model, self.label()).await? == Change::Already {
                    return Ok(Some(Duration::ZERO));
                }
            }
        }
        loop {
            match self.state_of(model).await? {
                Some(State::Loaded) => return Ok(Some(started.elapsed())),
                Some(State::Failed { exit_code }) => {
                    let code = exit_code.map(|c| format!(" (exit code {c})")).unwrap_or_default();
                    return Err(BackendError::Status {
                        status: 500,
                        message: format!(
                            "llama-server at {} could not load model \"{model}\"{code}",
                            self.label()
                        ),
                    });
                }
                None => return Ok(None),
                Some(_) => self.poll_before(started).await?,
            }
        }
    }

    /// Waits before looking at the router's list again; a timeout once the wait begun at
    /// `started` has lasted `backend.timeout`.
    async fn poll_before(&self, started: Instant) -> Result<(), BackendError> {
        if started.elapsed() >= self.router.timeout {
            return Err(BackendError::Timeout {
                endpoint: self.label().to_owned(),
            });
        }
        tokio::time::sleep(LOAD_POLL).await;
        Ok(())
    }

    async fn state_of(&self, model: &str) -> Result<Option<State>, BackendError> {
        Ok(self
            .router_models()
            .await?
            .into_iter()
            .find(|m| m.is_named(model))
            .map(|m| m.state))
    }
}

/// A keep_alive that is not a duration is the client's error (Ollama's 400).
fn refused(keep_alive: Result<KeepAlive, String>) -> Result<KeepAlive, BackendError> {
    keep_alive.map_err(|message| BackendError::Status { status: 400, message })
}

/// The answer's chunks, holding the request's lease (if any) until they end.
pub(super) fn held(chunks: ChunkStream, held: Held) -> ChunkStream {
    match held {
        Some((lease, waited)) => lease.hold(chunks, waited),
        None => chunks,
    }
}

/// `POST /models/load` or `/models/unload` for `model`.
async fn change(http: &reqwest::Client, url: &Url, model: &str, label: &str) -> Result<Change, BackendError> {
    let body = serde_json::json!({ "model": model });
    let response = crate::backend::send(|| http.post(url.clone()).json(&body), label).await?;
    let status = response.status().as_u16();
    let bytes = response
        .bytes()
        .await
        .map_err(|e| BackendError::from_reqwest(label, &e))?;
    router::read_change(status, &bytes)
}
