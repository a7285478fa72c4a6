//! ollabridge: the Ollama HTTP API over OpenAI-compatible backends or a real Ollama,
//! with every exchange recorded in SQLite or PostgreSQL.
//!
//! A request flows one way: edge (`api::edge`) → handler (`api::ollama`, or `api::openai`
//! and `api::anthropic` for `/v1`) → model map (`models`) → backend (`backend`) → chunk
//! stream → recorder (`api::exchange`) → client, and the recorder's one record goes to the
//! log writer (`store`) after the stream ends.
//!
//! Each dialect of the client API (`api::ollama`, `api::openai`, `api::anthropic`) stands
//! on `api::exchange` (the recorder, `ExchangeError` and the neutral answer) and, for the
//! pass-through ones, `api::passthrough`; the models clients are shown come from `models`;
//! what differs by backend (pass-through or translation, `/api/show`, `/api/ps`, `suffix`)
//! is asked of the backend. The dialects import neither each other nor a backend's kind.

pub mod admin;
pub mod api;
pub mod backend;
mod body_budget;
pub mod cache;
mod clock;
pub mod config;
mod http1;
mod json;
pub mod logging;
pub mod metrics;
pub mod models;
mod open_files;
pub mod reload;
pub mod store;
mod text;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use backend::{BackendError, Upstream};
use config::Config;
use models::Models;
use store::{Logger, StoreError, Writer};

/// Where each finished request goes: the log, the metrics, and the prices for its cost.
pub struct Telemetry {
    pub logger: Logger,
    pub metrics: metrics::Metrics,
    pub pricing: Vec<(String, config::Price)>,
    /// Cancelled when the shutdown grace period is over: answers still streaming end
    /// with an error line and are logged as cut off by the shutdown.
    pub cut_off: CancellationToken,
    /// Requests starting and ending, for live views (`/api/events` on admin).
    pub events: tokio::sync::broadcast::Sender<metrics::RequestEvent>,
    /// Each backend's health and breaker, by name; outlives config reloads.
    pub health: backend::health::HealthRegistry,
    /// The models each backend holds loaded for clients (llama-server routers), with
    /// their keep-alive timers; outlives config reloads, stopped at shutdown.
    pub keep_alive: backend::keep_alive::Books,
    /// Answers kept for identical requests (`cache`); its size is fixed at start.
    pub cache: cache::ResponseCache,
}

/// What every handler shares; replaced whole when the config is reloaded.
pub struct AppState {
    pub config: Config,
    /// The backends, in `config.backends` order (the first is the default).
    pub backends: Vec<Upstream>,
    pub models: Models,
    pub telemetry: Arc<Telemetry>,
    /// Reported as `modified_at` for models we describe ourselves.
    pub started_at: String,
}

impl AppState {
    pub fn new(config: Config, telemetry: Arc<Telemetry>, started_at: String) -> Result<AppState, BackendError> {
        let backends = config
            .backends
            .iter()
            .map(|b| Upstream::new(b.clone(), &telemetry.health, &telemetry.keep_alive))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(AppState {
            models: Models::new(&config.models, backends.len()),
            backends,
            config,
            telemetry,
            started_at,
        })
    }

    /// The default backend.
    pub fn backend(&self) -> &Upstream {
        &self.backends[0]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("{0}")]
    Tls(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
}

/// A running server. Drop-in for tests: `start`, use `addr`, then `shutdown`.
pub struct Server {
    pub addr: SocketAddr,
    /// The admin listener (metrics, log API), when enabled.
    pub admin_addr: Option<SocketAddr>,
    stop: CancellationToken,
    grace: Duration,
    telemetry: Arc<Telemetry>,
    serving: Vec<JoinHandle<std::io::Result<()>>>,
    live: Arc<reload::Live>,
    /// Watches the config file while reloading is enabled.
    watcher: Option<reload::Watcher>,
    retention: Option<JoinHandle<()>>,
    health_checks: JoinHandle<()>,
    writer: Writer,
}

/// Longest wait for the log queue to drain at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn start(config: Config) -> Result<Server, StartError> {
    // First, so a bad certificate leaves nothing running.
    let acceptor = match &config.server.tls {
        Some(files) => Some(tls::acceptor(&files.cert, &files.key).map_err(StartError::Tls)?),
        None => None,
    };
    // Bound first: the address names this process on the rows it leaves in flight.
    let (listener, addr) = bind(&config.server.host, config.server.port).await?;
    let instance = store::Instance::new(addr);
    let store = store::Store::connect(&config.database, &instance).await?;
    let (logger, writer) = Writer::spawn_as(
        store.clone(),
        instance,
        config.database.queue_capacity,
        config.database.max_body_bytes,
    );
    let logger = logger.redacting(config.database.redact);
    let telemetry = Arc::new(Telemetry {
        logger,
        metrics: metrics::Metrics::new(),
        pricing: config.pricing.clone(),
        events: tokio::sync::broadcast::channel(1024).0,
        cut_off: CancellationToken::new(),
        health: Default::default(),
        keep_alive: Default::default(),
        cache: cache::ResponseCache::new(config.cache.max_entries, config.cache.max_bytes),
    });
    let stop = CancellationToken::new();
    let mut serving = Vec::new();
    let mut retention = None;

    if let Some(policy) = config.database.retention.clone() {
        retention = Some(store::spawn_retention(store.clone(), policy, stop.clone()));
    }
    let grace = config.server.shutdown_grace;
    // One budget for both listeners: the dashboard's playground takes bodies too.
    let body_budget = Arc::new(body_budget::BodyBudget::new(
        config.server.max_inflight_body_bytes,
        config.server.max_body_bytes,
    ));
    let limits = connection_limits(&config.server);
    let admin_config = config.admin.clone();
    let database = config.database.clone();
    let live = Arc::new(reload::Live::new(AppState::new(
        config,
        telemetry.clone(),
        clock::now_rfc3339(),
    )?));
    let health_checks = spawn_health_checks(live.clone(), stop.clone());
    let admin = if admin_config.enabled {
        let (admin_listener, admin_addr) = bind(&admin_config.host, admin_config.port).await?;
        // Its own read-only connections, so slow reads never hold up the log writer's.
        let reader = store::Store::reader(&database, 4).await?;
        let admin_state = Arc::new(admin::AdminState {
            telemetry: telemetry.clone(),
            pool: reader,
            write_pool: store.clone(),
            stop: stop.clone(),
            live: live.clone(),
        });
        serving.push(tokio::spawn(http1::serve(
            admin_listener,
            None,
            admin::router(admin_state),
            body_budget.clone(),
            stop.clone(),
            limits,
        )));
        tracing::info!(addr = %admin_addr, "admin listening (metrics, log API)");
        Some(admin_addr)
    } else {
        None
    };
    let app = api::router(live.clone());
    serving.push(tokio::spawn(http1::serve(
        listener,
        acceptor,
        app,
        body_budget,
        stop.clone(),
        limits,
    )));
    tracing::info!(addr = %addr, "ollabridge listening");
    Ok(Server {
        addr,
        admin_addr: admin,
        stop,
        grace,
        telemetry,
        live,
        watcher: None,
        serving,
        retention,
        health_checks,
        writer,
    })
}

/// Longest a health check may take; a backend slower than this to list its models
/// counts as down.
const HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Checks each backend every `health_interval` (the first check one interval after
/// start) by listing its models, which also refreshes the list clients are offered, and
/// reads a llama-server's slot count again (automatic `max_concurrent`), which is first
/// read at start.
fn spawn_health_checks(live: Arc<reload::Live>, stop: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut last_checks: std::collections::HashMap<String, std::time::Instant> = Default::default();
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let state = live.load();
            let now = std::time::Instant::now();
            for (index, upstream) in state.backends.iter().enumerate() {
                // A llama-server's slot count, read at once for each new config.
                if upstream.first_look_due() {
                    let state = state.clone();
                    let look = async move { state.backends[index].detect_limit_once().await };
                    // Ended at shutdown: it holds the state, and with it a handle on the log writer.
                    tokio::spawn(stop.clone().run_until_cancelled_owned(look));
                }
                let Some(interval) = upstream.config.health_interval else {
                    continue;
                };
                let last = last_checks.entry(upstream.name().to_owned()).or_insert(now);
                if now.duration_since(*last) < interval {
                    continue;
                }
                *last = now;
                let state = state.clone();
                let check = async move {
                    let check = state.models.offered(&state.backends, index, true);
                    let outcome = match tokio::time::timeout(HEALTH_CHECK_TIMEOUT, check).await {
                        Ok(Ok(_)) => Ok(()),
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(_) => Err(format!("no model list within {HEALTH_CHECK_TIMEOUT:?}")),
                    };
                    let upstream = &state.backends[index];
                    if let Err(e) = &outcome {
                        tracing::warn!(backend = upstream.name(), error = %e, "backend health check failed");
                    }
                    let healthy = outcome.is_ok();
                    upstream.health.checked(outcome, std::time::Instant::now());
                    if healthy {
                        upstream.detect_limit().await;
                    }
                };
                tokio::spawn(stop.clone().run_until_cancelled_owned(check));
            }
        }
    })
}

async fn bind(host: &str, port: u16) -> Result<(TcpListener, SocketAddr), StartError> {
    let addr = format!("{host}:{port}");
    let listener = TcpListener::bind(&addr).await.map_err(|source| StartError::Bind {
        addr: addr.clone(),
        source,
    })?;
    let local = listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })?;
    Ok((listener, local))
}

/// The limits of both listeners; raises the open-file limit the default cap comes from.
fn connection_limits(server: &config::ServerConfig) -> http1::Limits {
    let open_files = open_files::raise_soft_limit();
    let max_connections = server
        .max_connections
        .unwrap_or_else(|| open_files::default_max_connections(open_files));
    if open_files::too_many_for(max_connections, open_files) {
        tracing::warn!(
            max_connections,
            open_files = open_files.unwrap_or_default(),
            "server.max_connections is high for the open-file limit: connections may fail with \"too many open files\""
        );
    }
    tracing::info!(
        max_connections,
        header_read_timeout = ?server.header_read_timeout,
        open_files = open_files.map(|n| n.to_string()).unwrap_or_else(|| "unlimited".into()),
        "connection limits (each port)"
    );
    http1::Limits {
        header_read_timeout: server.header_read_timeout,
        max_connections,
    }
}

impl Server {
    /// Reloads `path` when it changes (and on [`Server::reload`]): new requests use the
    /// new config, answers in flight finish on the old one.
    pub fn enable_reload(&mut self, path: &std::path::Path) -> Result<(), String> {
        self.live.set_path(path);
        if !self.live.load().config.server.watch_config {
            return Ok(());
        }
        let watcher =
            reload::watch(self.live.clone(), path).map_err(|e| format!("cannot watch {}: {e}", path.display()))?;
        self.watcher = Some(watcher);
        Ok(())
    }

    /// Reads the config file again now (SIGHUP).
    pub fn reload(&self) {
        self.live.reload_logged();
    }

    /// Stops accepting, lets requests in flight finish, then stores every queued log record.
    pub async fn shutdown(self) {
        self.stop.cancel();
        let mut serving = futures::future::join_all(self.serving);
        let results = match tokio::time::timeout(self.grace, &mut serving).await {
            Ok(results) => results,
            Err(_) => {
                tracing::warn!(grace = ?self.grace, "requests still running after the shutdown grace period; cutting them off");
                self.telemetry.cut_off.cancel();
                serving.await
            }
        };
        for result in results {
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "server stopped with an error"),
                Err(e) => tracing::error!(error = %e, "server task failed"),
            }
        }
        self.telemetry.keep_alive.stop();
        // The writer ends when the last logger handle is gone: the watcher's and the
        // live config's hold one too.
        let _ = self.health_checks.await;
        drop(self.watcher);
        drop(self.live);
        drop(self.telemetry);
        if let Some(retention) = self.retention {
            let _ = retention.await;
        }
        if tokio::time::timeout(DRAIN_TIMEOUT, self.writer.close()).await.is_err() {
            tracing::error!("log queue did not drain within {DRAIN_TIMEOUT:?}");
        }
    }
}
