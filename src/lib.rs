//! ollabridge: the Ollama HTTP API over OpenAI-compatible backends or a real Ollama,
//! with every exchange recorded in SQLite.
//!
//! A request flows one way: handler (`ollama`) → model map (`models`) → backend
//! (`backend`) → chunk stream → recorder → client, and the recorder's one record
//! goes to the log writer (`store`) after the stream ends.

pub mod backend;
pub mod config;
mod json;
pub mod models;
pub mod ollama;
pub mod store;

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

/// What every handler shares.
pub struct AppState {
    pub config: Config,
    pub backend: AnyBackend,
    pub models: Models,
    pub logger: Logger,
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
    stop: CancellationToken,
    serve: JoinHandle<std::io::Result<()>>,
    writer: Writer,
}

/// Longest wait for the log queue to drain at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn start(config: Config) -> Result<Server, StartError> {
    let pool = store::open(&config.database.path).await?;
    let (logger, writer) = Writer::spawn(pool, config.database.queue_capacity, config.database.max_body_bytes);
    let backend = AnyBackend::new(&config.backend)?;
    let addr = format!("{}:{}", config.server.host, config.server.port);
    let listener = TcpListener::bind(&addr).await.map_err(|source| StartError::Bind {
        addr: addr.clone(),
        source,
    })?;
    let local = listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })?;
    // Without TCP_NODELAY, Nagle's algorithm meets delayed ACKs and stalls streams ~40 ms.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    let state = Arc::new(AppState {
        models: Models::new(&config.models),
        config,
        backend,
        logger,
        started_at: ollama::types::now_rfc3339(),
    });
    let app = ollama::router(state);
    let stop = CancellationToken::new();
    let serve = tokio::spawn(
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(stop.clone().cancelled_owned())
            .into_future(),
    );
    tracing::info!(addr = %local, "ollabridge listening");
    Ok(Server {
        addr: local,
        stop,
        serve,
        writer,
    })
}

impl Server {
    /// Stops accepting, lets requests in flight finish, then stores every queued log record.
    pub async fn shutdown(self) {
        self.stop.cancel();
        match self.serve.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "server stopped with an error"),
            Err(e) => tracing::error!(error = %e, "server task failed"),
        }
        if tokio::time::timeout(DRAIN_TIMEOUT, self.writer.close()).await.is_err() {
            tracing::error!("log queue did not drain within {DRAIN_TIMEOUT:?}");
        }
    }
}

use std::future::IntoFuture;
