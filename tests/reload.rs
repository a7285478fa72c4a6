//! Hot reload on the real binary: the watched file, SIGHUP and `POST /api/reload`.
//! Streams in flight finish on the config they started with; new requests see the new
//! one; an invalid file changes nothing and says why.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

mod common;

use std::process::Stdio;
use std::time::Duration;

use axum::Router;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use common::free_port;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

/// An OpenAI backend streaming "0 1 2 … 9" slowly (100 ms a chunk), under any model
/// name; non-streamed requests get "ok" at once.
async fn slow_streaming_backend() -> String {
    let app = Router::new()
        .route(
            "/v1/models",
            get(|| async { axum::Json(json!({"data": [{"id": "backend-model"}]})) }),
        )
        .route(
            "/v1/chat/completions",
            post(|axum::Json(request): axum::Json<Value>| async move {
                if request["stream"] == false {
                    let answer =
                        json!({"choices": [{"index": 0, "message": {"content": "ok"}, "finish_reason": "stop"}]});
                    return axum::Json(answer).into_response();
                }
                let chunks = futures::stream::iter(0..11).then(|i| async move {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let event = if i < 10 {
                        json!({"choices": [{"index": 0, "delta": {"content": format!("{i} ")}}]})
                    } else {
                        json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
                    };
                    Ok::<_, std::io::Error>(format!("data: {event}\n\n"))
                });
                (
                    [("content-type", "text/event-stream")],
                    axum::body::Body::from_stream(chunks),
                )
                    .into_response()
            }),
        );
    let (url, _server) = common::serve(app).await;
    url
}

struct Binary {
    child: tokio::process::Child,
    url: String,
    admin: String,
    config: std::path::PathBuf,
    settings: Value,
    _dir: tempfile::TempDir,
}

impl Binary {
    async fn start(backend: &str, mappings: Value, watch: bool) -> Binary {
        let dir = tempfile::tempdir().unwrap();
        let (port, admin_port) = (free_port(), free_port());
        let config = dir.path().join("config.json");
        let settings = json!({
            "server": {"host": "127.0.0.1", "port": port, "watch_config": watch},
            "admin": {"host": "127.0.0.1", "port": admin_port},
            "backend": {"type": "openai", "endpoint": backend},
            "database": {"path": dir.path().join("log.db")},
            "models": {"mappings": mappings},
        });
        std::fs::write(&config, settings.to_string()).unwrap();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ollabridge"))
            .args(["--config", config.to_str().unwrap()])
            // tracing writes to stdout.
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let binary = Binary {
            child,
            url: format!("http://127.0.0.1:{port}"),
            admin: format!("http://127.0.0.1:{admin_port}"),
            config,
            settings,
            _dir: dir,
        };
        for _ in 0..200 {
            if reqwest::get(format!("{}/health", binary.url)).await.is_ok() {
                return binary;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("ollabridge did not start");
    }

    /// Rewrites the config file with other mappings.
    fn write_mappings(&self, mappings: Value) {
        let mut settings = self.settings.clone();
        settings["models"]["mappings"] = mappings;
        // Write then rename, as editors do, so the file is never seen half-written.
        let tmp = self.config.with_extension("tmp");
        std::fs::write(&tmp, settings.to_string()).unwrap();
        std::fs::rename(&tmp, &self.config).unwrap();
    }

    async fn status_of(&self, model: &str) -> u16 {
        let body = json!({"model": model, "stream": false, "messages": [{"role": "user", "content": "hi"}]});
        let r = reqwest::Client::new()
            .post(format!("{}/api/chat", self.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        r.status().as_u16()
    }

    /// Waits until `model` answers `status` (the watcher debounces for 300 ms).
    async fn wait_for(&self, model: &str, status: u16) {
        for _ in 0..100 {
            if self.status_of(model).await == status {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{model} never answered {status}");
    }

    async fn stop(mut self) -> String {
        let pid = self.child.id().unwrap().to_string();
        assert!(
            std::process::Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success());
        let mut log = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut log)
            .await
            .unwrap();
        log
    }
}

async fn stream_text(url: String, model: &str) -> String {
    let body = json!({"model": model, "messages": [{"role": "user", "content": "count"}]});
    let r = reqwest::Client::new()
        .post(format!("{url}/api/chat"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|v| {
            assert!(v.get("error").is_none(), "{v}");
            v["message"]["content"].as_str().unwrap().to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_the_file_swaps_the_map_while_50_streams_finish() {
    let backend = slow_streaming_backend().await;
    let bridge = Binary::start(&backend, json!({"old-name": "backend-model"}), true).await;
    let streams: Vec<_> = (0..50)
        .map(|_| tokio::spawn(stream_text(bridge.url.clone(), "old-name")))
        .collect();
    tokio::time::sleep(Duration::from_millis(150)).await;

    bridge.write_mappings(json!({"new-name": "backend-model"}));
    bridge.wait_for("new-name", 200).await;
    assert_eq!(bridge.status_of("old-name").await, 404);
    for stream in streams {
        assert_eq!(
            stream.await.unwrap(),
            "0 1 2 3 4 5 6 7 8 9 ",
            "streams in flight finish on the old config"
        );
    }

    // An invalid file keeps the config that works, and the log says why.
    std::fs::write(&bridge.config, "{ not json").unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(bridge.status_of("new-name").await, 200);
    let log = bridge.stop().await;
    assert!(log.contains("config not reloaded; keeping the previous one"), "{log}");
    assert!(log.contains("invalid JSON"), "{log}");
    // Its stdout is a pipe, not a terminal: plain text, no color codes.
    assert!(!log.contains('\u{1b}'), "{log:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_and_the_admin_route_reload() {
    let backend = slow_streaming_backend().await;
    let bridge = Binary::start(&backend, json!({"first": "backend-model"}), false).await;

    // Not watched: the file changes but nothing happens until SIGHUP.
    bridge.write_mappings(json!({"second": "backend-model"}));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(bridge.status_of("second").await, 404);
    let pid = bridge.child.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    bridge.wait_for("second", 200).await;

    bridge.write_mappings(json!({"third": "backend-model"}));
    let http = reqwest::Client::new();
    let reloaded: Value = http
        .post(format!("{}/api/reload", bridge.admin))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(reloaded, json!({"status": "reloaded", "needs_restart": []}));
    assert_eq!(bridge.status_of("third").await, 200);

    std::fs::write(
        &bridge.config,
        r#"{"backend": {"type": "nope", "endpoint": "http://x"}}"#,
    )
    .unwrap();
    let refused = http.post(format!("{}/api/reload", bridge.admin)).send().await.unwrap();
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .ends_with("backend.type: 'nope' is not a backend type (use openai or ollama)"),
        "{body}"
    );
    assert_eq!(bridge.status_of("third").await, 200, "the old config stays");
    bridge.stop().await;
}

/// Opening the file is reported to the watcher too: by `cat`, by another ollabridge
/// sharing the file, or by the reload itself. Only a changed file is reloaded, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_the_file_does_not_reload_it() {
    let backend = slow_streaming_backend().await;
    let bridge = Binary::start(&backend, json!({"first": "backend-model"}), true).await;
    for _ in 0..3 {
        std::fs::read(&bridge.config).unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    bridge.write_mappings(json!({"second": "backend-model"}));
    bridge.wait_for("second", 200).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let log = bridge.stop().await;
    assert_eq!(log.matches("config reloaded").count(), 1, "{log}");
}
