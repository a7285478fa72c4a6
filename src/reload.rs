//! Hot reload. Handlers read the config, backend and model map through a [`Live`]
//! pointer swapped atomically: a new request uses the new config, an answer in flight
//! finishes on the one it started with, and nothing is dropped. An invalid file keeps
//! the old config and says exactly why. Listener and database settings need a restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::AppState;
use crate::config::Config;

/// The current [`AppState`], swapped whole on reload.
pub struct Live {
    current: ArcSwap<AppState>,
    /// The file reloads read; set when reloading is enabled.
    path: Mutex<Option<PathBuf>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("reload is not enabled (the server was not started from a config file)")]
    NoFile,
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("{0}")]
    Backend(#[from] crate::backend::BackendError),
}

impl Live {
    pub fn new(state: AppState) -> Live {
        Live {
            current: ArcSwap::from_pointee(state),
            path: Mutex::new(None),
        }
    }

    pub fn load(&self) -> Arc<AppState> {
        self.current.load_full()
    }

    pub fn set_path(&self, path: &Path) {
        if let Ok(mut p) = self.path.lock() {
            *p = Some(path.to_owned());
        }
    }

    /// Reads the file again; if it is valid, new requests use it. Returns what could
    /// not be applied without a restart.
    pub fn reload(&self) -> Result<Vec<String>, ReloadError> {
        let path = self
            .path
            .lock()
            .ok()
            .and_then(|p| p.clone())
            .ok_or(ReloadError::NoFile)?;
        let config = Config::load(&path)?;
        let old = self.load();
        let needs_restart = needs_restart(&old.config, &config);
        let state = AppState::new(config, old.telemetry.clone(), old.started_at.clone())?;
        self.current.store(Arc::new(state));
        for what in &needs_restart {
            tracing::warn!(setting = %what, "config reloaded, but this change needs a restart");
        }
        tracing::info!(file = %path.display(), "config reloaded");
        Ok(needs_restart)
    }

    /// Reloads and logs the outcome; for the watcher and SIGHUP.
    pub fn reload_logged(&self) {
        if let Err(e) = self.reload() {
            tracing::error!(error = %e, "config not reloaded; keeping the previous one");
        }
    }
}

/// Settings read once at start: listeners, the database, limits built into the router.
fn needs_restart(old: &Config, new: &Config) -> Vec<String> {
    let mut changed = Vec::new();
    let mut check = |name: &str, differs: bool| {
        if differs {
            changed.push(name.to_owned());
        }
    };
    check(
        "server.host/port",
        (&old.server.host, old.server.port) != (&new.server.host, new.server.port),
    );
    check(
        "server.max_body_bytes",
        old.server.max_body_bytes != new.server.max_body_bytes,
    );
    check("server.enable_cors", old.server.enable_cors != new.server.enable_cors);
    check(
        "admin",
        (old.admin.enabled, &old.admin.host, old.admin.port) != (new.admin.enabled, &new.admin.host, new.admin.port),
    );
    check("database", old.database != new.database);
    check("pricing", old.pricing != new.pricing);
    check(
        "cache.max_entries/max_bytes",
        (old.cache.max_entries, old.cache.max_bytes) != (new.cache.max_entries, new.cache.max_bytes),
    );
    changed
}

/// Watches the config file (debounced) and reloads on change. Editors that replace
/// the file are handled by watching its directory.
pub type Watcher = notify_debouncer_mini::Debouncer<notify_debouncer_mini::notify::RecommendedWatcher>;

pub fn watch(live: Arc<Live>, path: &Path) -> Result<Watcher, notify_debouncer_mini::notify::Error> {
    use notify_debouncer_mini::notify::RecursiveMode;
    let file = path.file_name().map(ToOwned::to_owned);
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_owned();
    let handle = tokio::runtime::Handle::current();
    // The watcher also reports the file being opened, by anyone: by `cat`, by another
    // ollabridge sharing the file, by our own reload, which would then reload again
    // forever. Only a file whose size, time or inode changed is read again (`stat` is
    // no open, so checking reports nothing).
    let watched = path.to_owned();
    let mut last = stamp(&watched);
    let mut debouncer = notify_debouncer_mini::new_debouncer(
        Duration::from_millis(300),
        move |events: notify_debouncer_mini::DebounceEventResult| {
            let Ok(events) = events else { return };
            let ours = events
                .iter()
                .any(|e: &notify_debouncer_mini::DebouncedEvent| e.path.file_name() == file.as_deref());
            if !ours {
                return;
            }
            let now = stamp(&watched);
            if now != last {
                last = now;
                let live = live.clone();
                // Building the backend's HTTP client may block briefly; off the watcher thread.
                handle.spawn_blocking(move || live.reload_logged());
            }
        },
    )?;
    debouncer.watcher().watch(&dir, RecursiveMode::NonRecursive)?;
    Ok(debouncer)
}

/// What tells a changed config file: size, modification time, inode (an editor or a
/// Kubernetes ConfigMap replacing it).
fn stamp(path: &Path) -> Option<(u64, Option<std::time::SystemTime>, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Some((meta.len(), meta.modified().ok(), inode))
}

/// Extractor: the state current when the request arrived.
pub struct Snapshot(pub Arc<AppState>);

impl FromRequestParts<Arc<Live>> for Snapshot {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(_: &mut Parts, live: &Arc<Live>) -> Result<Self, Self::Rejection> {
        Ok(Snapshot(live.load()))
    }
}
