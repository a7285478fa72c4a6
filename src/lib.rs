//! ollabridge: the Ollama HTTP API over OpenAI-compatible backends or a real Ollama,
//! with every exchange recorded in SQLite.
//!
//! A request flows one way: handler (`ollama`) → model map (`models`) → backend
//! (`backend`) → chunk stream → recorder → client, and the recorder's one record
//! goes to the log writer (`store`) after the stream ends.

pub mod admin;
pub mod backend;
pub mod config;
mod json;
pub mod metrics;
pub mod models;
pub mod ollama;
pub mod store;

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use backend::{AnyBackend, BackendError};
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
}

/// What every handler shares.
pub struct AppState {
    pub config: Config,
    pub backend: AnyBackend,
    pub models: Models,
    pub telemetry: Arc<Telemetry>,
    /// Free backend slots when `backend.max_concurrent` is set.
    pub backend_slots: Option<Arc<tokio::sync::Semaphore>>,
    /// Reported as `modified_at` for models we describe ourselves.
    pub started_at: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Backend(#[from] BackendError),
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
    retention: Option<JoinHandle<()>>,
    writer: Writer,
}

/// Longest wait for the log queue to drain at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn start(config: Config) -> Result<Server, StartError> {
    let pool = store::open(&config.database.path).await?;
    let (logger, writer) = Writer::spawn(
        pool.clone(),
        config.database.queue_capacity,
        config.database.max_body_bytes,
    );
    let logger = logger.redacting(config.database.redact);
    let backend = AnyBackend::new(&config.backend)?;
    let telemetry = Arc::new(Telemetry {
        logger,
        metrics: metrics::Metrics::new(),
        pricing: config.pricing.clone(),
        events: tokio::sync::broadcast::channel(1024).0,
        cut_off: CancellationToken::new(),
    });
    let stop = CancellationToken::new();
    let mut serving = Vec::new();
    let mut retention = None;

    if let Some(policy) = config.database.retention.clone() {
        retention = Some(store::spawn_retention(pool.clone(), policy, stop.clone()));
    }
    let (listener, addr) = bind(&config.server.host, config.server.port).await?;
    let admin = if config.admin.enabled {
        let (admin_listener, admin_addr) = bind(&config.admin.host, config.admin.port).await?;
        // Its own read-only connections, so slow reads never hold up the log writer's.
        let reader = store::query::open_reader(&config.database.path, 4).await?;
        let admin_state = Arc::new(admin::AdminState {
            telemetry: telemetry.clone(),
            pool: reader,
            stop: stop.clone(),
            token: config.admin.token.clone(),
        });
        serving.push(serve(admin_listener, admin::router(admin_state), &stop));
        tracing::info!(addr = %admin_addr, "admin listening (metrics, log API)");
        Some(admin_addr)
    } else {
        None
    };
    let grace = config.server.shutdown_grace;
    let server_telemetry = telemetry.clone();
    let state = Arc::new(AppState {
        backend_slots: config
            .backend
            .max_concurrent
            .map(|n| Arc::new(tokio::sync::Semaphore::new(n))),
        models: Models::new(&config.models),
        config,
        backend,
        telemetry,
        started_at: ollama::types::now_rfc3339(),
    });
    serving.push(serve(listener, ollama::router(state), &stop));
    tracing::info!(addr = %addr, "ollabridge listening");
    Ok(Server {
        addr,
        admin_addr: admin,
        stop,
        grace,
        telemetry: server_telemetry,
        serving,
        retention,
        writer,
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

fn serve(listener: TcpListener, app: axum::Router, stop: &CancellationToken) -> JoinHandle<std::io::Result<()>> {
    // Without TCP_NODELAY, Nagle's algorithm meets delayed ACKs and stalls streams ~40 ms.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    tokio::spawn(
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(stop.clone().cancelled_owned())
            .into_future(),
    )
}

impl Server {
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
        drop(self.telemetry);
        if let Some(retention) = self.retention {
            let _ = retention.await;
        }
        if tokio::time::timeout(DRAIN_TIMEOUT, self.writer.close()).await.is_err() {
            tracing::error!("log queue did not drain within {DRAIN_TIMEOUT:?}");
        }
    }
}
