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
    check(
        "server.max_inflight_body_bytes",
        old.server.max_inflight_body_bytes != new.server.max_inflight_body_bytes,
    );
    check("server.enable_cors", old.server.enable_cors != new.server.enable_cors);
    check("server.tls", old.server.tls != new.server.tls);
    check(
        "server.header_read_timeout",
        old.server.header_read_timeout != new.server.header_read_timeout,
    );
    check(
        "server.max_connections",
        old.server.max_connections != new.server.max_connections,
    );
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

/// Watches the config file and reloads when it changes. Its metadata (modification time,
/// size, inode) is read every [`POLL`]; a change is read [`SETTLE`] later, so a file
/// being written is not read half-way, and an editor that replaces the file, a deleted
/// and recreated file or a swapped symlink are all seen. Watching the directory with
/// inotify instead woke a thread on every write to the request log when the database
/// sits beside the config (the default): ~15 µs CPU per request at 10k req/s. Polling one
/// file costs a `stat` four times a second. Dropping the watcher stops it.
pub struct Watcher {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How often the config file's metadata is read.
pub const POLL: Duration = Duration::from_millis(250);
/// How long after a change was seen the file is read.
const SETTLE: Duration = Duration::from_millis(100);

/// What tells one version of the file from another.
#[derive(Debug, PartialEq, Eq)]
struct Stamp {
    modified: Option<std::time::SystemTime>,
    len: u64,
    inode: u64,
}

/// The file's stamp; `None` while it cannot be read (a change too).
fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Some(Stamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode,
    })
}

pub fn watch(live: Arc<Live>, path: &Path) -> Result<Watcher, std::io::Error> {
    std::fs::metadata(path)?;
    let path = path.to_owned();
    let mut seen = stamp(&path);
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if stamp(&path) == seen {
                continue;
            }
            tokio::time::sleep(SETTLE).await;
            seen = stamp(&path);
            let live = live.clone();
            // Building the backend's HTTP client may block briefly: off the runtime's workers.
            let _ = tokio::task::spawn_blocking(move || live.reload_logged()).await;
        }
    });
    Ok(Watcher { task })
}

/// Extractor: the state current when the request arrived.
pub struct Snapshot(pub Arc<AppState>);

impl FromRequestParts<Arc<Live>> for Snapshot {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(_: &mut Parts, live: &Arc<Live>) -> Result<Self, Self::Rejection> {
        Ok(Snapshot(live.load()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        let backend = r#""backend": {"type": "openai", "endpoint": "http://localhost:8080"}"#;
        Config::from_json(&format!("{{{backend}{extra}}}")).unwrap()
    }

    #[test]
    fn the_body_budget_needs_a_restart_and_the_edge_lists_do_not() {
        let old = config("");
        let budget = config(r#", "server": {"max_inflight_body_bytes": 1073741824}"#);
        assert_eq!(needs_restart(&old, &budget), ["server.max_inflight_body_bytes"]);
        // Read by every request from the live config.
        let lists = config(
            r#", "server": {"allowed_origins": ["https://app.example.com"]},
                 "admin": {"allowed_hosts": ["dash.example.net"], "token": "a-new-admin-token"}"#,
        );
        assert_eq!(needs_restart(&old, &lists), Vec::<String>::new());
    }

    fn with_server(server: &str) -> Config {
        let text =
            format!(r#"{{"backend": {{"type": "openai", "endpoint": "http://127.0.0.1:1"}}, "server": {server}}}"#);
        Config::from_json(&text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn listener_settings_need_a_restart() {
        let old = with_server("{}");
        assert_eq!(needs_restart(&old, &with_server("{}")), Vec::<String>::new());
        assert_eq!(
            needs_restart(
                &old,
                &with_server(
                    r#"{"header_read_timeout": 5, "max_connections": 64,
                        "tls": {"cert": "/c.pem", "key": "/k.pem"}}"#
                )
            ),
            ["server.tls", "server.header_read_timeout", "server.max_connections"]
        );
    }
}
