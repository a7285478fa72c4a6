//! The real binary under SIGTERM: requests that completed are all in the log, because
//! shutdown drains the log queue before the process exits.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{LlamaServer, free_port, query_rows, script};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_right_after_100_concurrent_requests_loses_no_rows() {
    let llama = LlamaServer::start("tiny-chat").await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ollabridge.db");
    let port = free_port();
    let config = dir.path().join("config.json");
    std::fs::write(
        &config,
        json!({
            "server": {"host": "127.0.0.1", "port": port},
            "backend": {"type": "openai", "endpoint": llama.url},
            "database": {"path": db},
            "admin": {"host": "127.0.0.1", "port": 0},
            "models": {"mappings": {"tiny": "tiny-chat"}},
        })
        .to_string(),
    )
    .unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ollabridge"))
        .args(["--config", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let mut up = false;
    for _ in 0..200 {
        if http.get(&url).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(up, "ollabridge did not start");

    let expected = script("tiny-chat")["text"].as_str().unwrap().to_owned();
    let requests = (0..100).map(|i| {
        let http = http.clone();
        let url = format!("{url}/api/chat");
        async move {
            let body = json!({"model": "tiny", "stream": i % 2 == 0,
                "messages": [{"role": "user", "content": format!("request {i}")}]});
            let r = http.post(url).json(&body).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.text().await.unwrap()
        }
    });
    let bodies = futures::future::join_all(requests).await;
    for body in &bodies {
        let text: String = body
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["message"]["content"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(text, expected);
    }

    let pid = child.id().unwrap().to_string();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("exits")
        .unwrap();
    assert!(status.success(), "exit status {status}");

    let rows = query_rows(&db, "SELECT COUNT(*) AS n, SUM(error IS NULL) AS ok FROM logs");
    assert_eq!(rows[0], json!({"n": 100, "ok": 100}));
    // The README's example query.
    let per_model = query_rows(
        &db,
        "SELECT model, AVG(latency_ms) AS avg_ms, COUNT(*) AS n FROM logs WHERE error IS NULL GROUP BY model",
    );
    assert_eq!(per_model.len(), 1);
    assert_eq!(per_model[0]["model"], "tiny");
    assert_eq!(per_model[0]["n"], 100);
}
