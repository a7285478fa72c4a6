//! The web dashboard (`web/`) in a real browser: Debian's chromium driven by
//! playwright-core (`tests/dashboard/dashboard.mjs`, installed by
//! `scripts/client-envs.sh`) against an ollabridge over the llama-server bench, with
//! `database.store_bodies` on and an `admin.token` set. The script sends traffic with
//! the `ollama` npm client and checks the token prompt, the live table, the inspector,
//! replay, starring, the playground and the overview; it saves screenshots to
//! `target/dashboard-screenshots/` (and to `docs/screenshots/` with
//! `OLLABRIDGE_UPDATE_SCREENSHOTS=1`).
//!
//! Between the bridge and llama-server sits a pass-through proxy that slows down the
//! answers to requests containing [`SLOW_MARKER`] (one SSE event per 300 ms): the scripted
//! model answers in milliseconds, too fast to watch a request in flight.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use common::{Bridge, LlamaServer, query_rows, repo_root, tiny_models_dir};
use futures::{Stream, StreamExt};
use serde_json::json;

const TOKEN: &str = "dashboard-test-token";
const MODEL: &str = "tiny-chat";
const SLOW_MARKER: &str = "slowly please";
const SLOW_EVENT_DELAY: Duration = Duration::from_millis(300);

/// Node and the dashboard test's directory (with its `node_modules`), from
/// `scripts/client-envs.sh`.
async fn dashboard_env() -> (PathBuf, PathBuf) {
    let out = tokio::process::Command::new("bash")
        .arg(repo_root().join("scripts/client-envs.sh"))
        .current_dir(repo_root())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .await
        .expect("run scripts/client-envs.sh");
    assert!(out.status.success(), "scripts/client-envs.sh failed ({})", out.status);
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let paths: HashMap<&str, PathBuf> = stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k, PathBuf::from(v)))
        .collect();
    let path = |key: &str| {
        paths
            .get(key)
            .cloned()
            .unwrap_or_else(|| panic!("{key} missing in: {stdout}"))
    };
    (path("NODE"), path("DASHBOARD_DIR"))
}

/// `$OLLABRIDGE_CHROMIUM`, or `chromium` on the PATH.
fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("OLLABRIDGE_CHROMIUM").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("chromium"))
        .find(|p| p.is_file())
        .expect("chromium not found: apt-get install chromium, or set OLLABRIDGE_CHROMIUM")
}

type Upstream = Arc<(String, reqwest::Client)>;

/// Starts the pass-through proxy to `upstream`; answers its URL.
async fn slow_proxy(upstream: &str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let addr = listener.local_addr().expect("proxy addr");
    let state: Upstream = Arc::new((upstream.trim_end_matches('/').to_owned(), reqwest::Client::new()));
    let app = axum::Router::new().fallback(forward).with_state(state);
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

async fn forward(State(upstream): State<Upstream>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, usize::MAX).await else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let slow = body.windows(SLOW_MARKER.len()).any(|w| w == SLOW_MARKER.as_bytes());
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut sent = upstream.1.request(parts.method, format!("{}{path}", upstream.0));
    for (name, value) in &parts.headers {
        if name != header::HOST && name != header::CONTENT_LENGTH {
            sent = sent.header(name, value);
        }
    }
    let answer = match sent.body(body).send().await {
        Ok(answer) => answer,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let status = answer.status();
    let content_type = answer.headers().get(header::CONTENT_TYPE).cloned();
    let stream = answer.bytes_stream();
    let body = if slow {
        Body::from_stream(paced(Box::pin(stream)))
    } else {
        Body::from_stream(stream)
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    if let Some(content_type) = content_type {
        response.headers_mut().insert(header::CONTENT_TYPE, content_type);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// The upstream bytes cut at SSE event boundaries (blank lines), one event per
/// [`SLOW_EVENT_DELAY`].
fn paced(upstream: ByteStream) -> impl Stream<Item = std::io::Result<Bytes>> + Send {
    futures::stream::unfold(
        (upstream, Vec::new(), false),
        |(mut upstream, mut buffer, mut ended)| async move {
            loop {
                if let Some(end) = buffer.windows(2).position(|w| w == b"\n\n") {
                    let event: Vec<u8> = buffer.drain(..end + 2).collect();
                    tokio::time::sleep(SLOW_EVENT_DELAY).await;
                    return Some((Ok(Bytes::from(event)), (upstream, buffer, ended)));
                }
                if ended {
                    if buffer.is_empty() {
                        return None;
                    }
                    let rest = std::mem::take(&mut buffer);
                    return Some((Ok(Bytes::from(rest)), (upstream, buffer, ended)));
                }
                match upstream.next().await {
                    Some(Ok(bytes)) => buffer.extend_from_slice(&bytes),
                    Some(Err(e)) => return Some((Err(std::io::Error::other(e)), (upstream, buffer, true))),
                    None => ended = true,
                }
            }
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_chromium() {
    let chromium = chromium();
    let (node, dir) = dashboard_env().await;
    let llama = LlamaServer::start(MODEL).await;
    let proxy = slow_proxy(&llama.url).await;
    let mut bridge = Bridge::start(json!({
        "backend": {"type": "openai", "endpoint": proxy, "timeout": 30},
        "models": {"mappings": {MODEL: MODEL}},
        "database": {"store_bodies": true},
        "admin": {"host": "127.0.0.1", "port": 0, "token": TOKEN},
        "pricing": {MODEL: {"input": 0.15, "output": 0.6}},
    }))
    .await;

    let screenshots = repo_root().join("target/dashboard-screenshots");
    let mut command = tokio::process::Command::new(node);
    command
        .arg(dir.join("dashboard.mjs"))
        .current_dir(&dir)
        .env("OLLABRIDGE_URL", &bridge.url)
        .env("OLLABRIDGE_ADMIN_URL", &bridge.admin_url)
        .env("OLLABRIDGE_ADMIN_TOKEN", TOKEN)
        .env("OLLABRIDGE_CHROMIUM", &chromium)
        .env("OLLABRIDGE_MODEL", MODEL)
        .env("OLLABRIDGE_SCRIPT_JSON", tiny_models_dir().join("script.json"))
        .env("OLLABRIDGE_SLOW_MARKER", SLOW_MARKER)
        .env("OLLABRIDGE_SCREENSHOTS", &screenshots)
        .env("NO_PROXY", "127.0.0.1,localhost")
        .kill_on_drop(true);
    if std::env::var_os("OLLABRIDGE_UPDATE_SCREENSHOTS").is_some_and(|v| v == "1") {
        command.env("OLLABRIDGE_DOCS_SCREENSHOTS", repo_root().join("docs/screenshots"));
    }
    let out = tokio::time::timeout(Duration::from_secs(240), command.output())
        .await
        .expect("the dashboard test took longer than 4 minutes")
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.ends_with("all checks passed\n"),
        "dashboard.mjs failed ({}); screenshots in {}:\n{stdout}\n{stderr}",
        out.status,
        screenshots.display()
    );
    let checks = stdout.lines().filter(|l| l.starts_with("ok ")).count();
    assert_eq!(checks, 23, "every check ran:\n{stdout}");

    // What the browser did is in the database.
    bridge.stop().await;
    let starred = query_rows(&bridge.db, "SELECT id FROM logs WHERE starred = 1");
    assert_eq!(starred.len(), 1, "{starred:?}");
    let replays = query_rows(
        &bridge.db,
        "SELECT r.id, r.response, o.response AS original FROM logs r JOIN logs o ON o.id = r.replay_of",
    );
    assert_eq!(replays.len(), 1, "{replays:?}");
    assert_eq!(replays[0]["response"], replays[0]["original"]);
    let dashboard = query_rows(
        &bridge.db,
        "SELECT id FROM logs WHERE client_key = 'dashboard' AND endpoint = '/api/chat'",
    );
    assert!(dashboard.len() >= 3, "playground rows: {dashboard:?}");
    let running = query_rows(&bridge.db, "SELECT id FROM logs WHERE in_flight = 1");
    assert!(running.is_empty(), "rows left in flight: {running:?}");
}
