//! Credentials in a backend's URL (`http://user:pass@host`, `?api_key=`) never leave the
//! config: not in client errors, log rows, the admin API, nor the process log.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Bridge;
use serde_json::{Value, json};

const PASSWORD: &str = "pw-4f1e9c";
const TOKEN: &str = "tok-77ab02";

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    common::free_port()
}

#[tokio::test]
async fn backend_credentials_are_masked_in_errors_rows_and_the_admin_api() {
    let first = format!("http://user:{PASSWORD}@127.0.0.1:{}", closed_port());
    let second = format!("http://127.0.0.1:{}/v1?api_key={TOKEN}&region=eu", closed_port());
    let mut bridge = Bridge::start(json!({
        "backends": {
            "first": {"type": "openai", "endpoint": first, "health_interval": 0},
            "second": {"type": "openai", "endpoint": second, "health_interval": 0},
        },
        "models": {"mappings": {"m": {"model": "m", "fallbacks": [{"backend": "second", "model": "m"}]}}},
    }))
    .await;
    let (status, _, body) = common::post(
        &format!("{}/api/chat", bridge.url),
        json!({"model": "m", "stream": false, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 502, "{body}");
    let error: Value = serde_json::from_str(&body).unwrap();
    let shown_second = format!("http://127.0.0.1:{}/v1?api_key=***&region=eu", port_of(&second));
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .starts_with(&format!("backend at {shown_second} is unreachable")),
        "{body}"
    );

    let (_, backends) = common::get_json(&format!("{}/api/backends", bridge.admin_url)).await;
    let endpoints: Vec<&str> = backends["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["endpoint"].as_str().unwrap())
        .collect();
    let shown_first = format!("http://user:***@127.0.0.1:{}/", port_of(&first));
    assert_eq!(endpoints, [shown_first.as_str(), shown_second.as_str()]);
    // The writer stores rows in batches: wait (bounded) for this one.
    let mut logs = Value::Null;
    for _ in 0..100 {
        logs = common::get_json(&format!("{}/api/logs", bridge.admin_url)).await.1;
        if logs["logs"][0]["id"].is_i64() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let id = logs["logs"][0]["id"].as_i64().expect("a row within 5 s");
    let (_, row) = common::get_json(&format!("{}/api/logs/{id}", bridge.admin_url)).await;

    let rows = bridge.rows().await;
    assert_eq!(rows.len(), 1);
    let attempts: Value = serde_json::from_str(rows[0]["attempts"].as_str().unwrap()).unwrap();
    assert!(
        attempts[0]["error"]
            .as_str()
            .unwrap()
            .starts_with(&format!("backend at {shown_first} is unreachable")),
        "{attempts}"
    );
    for shown in [
        body,
        backends.to_string(),
        logs.to_string(),
        row.to_string(),
        rows[0].to_string(),
    ] {
        for secret in [PASSWORD, TOKEN] {
            assert!(!shown.contains(secret), "{secret} leaked: {shown}");
        }
    }
}

fn port_of(url: &str) -> u16 {
    reqwest::Url::parse(url).unwrap().port().unwrap()
}

/// The periodic health check's warning names the backend, not its password.
#[test]
fn health_check_warnings_mask_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    let endpoint = format!("http://user:{PASSWORD}@127.0.0.1:{}", closed_port());
    let text = json!({
        "server": {"host": "127.0.0.1", "port": 0, "watch_config": false},
        "admin": {"enabled": false},
        "database": {"path": dir.path().join("log.db")},
        "backend": {"type": "openai", "endpoint": endpoint, "health_interval": 1},
    });
    std::fs::write(&config, text.to_string()).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ollabridge"))
        .arg("--config")
        .arg(&config)
        .env("OLLABRIDGE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The first check runs a second after start; its warning is flushed within ~1 s more.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&seen).contains("backend health check failed") {
                break;
            }
        }
        seen
    });
    while !reader.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let seen = String::from_utf8_lossy(&reader.join().unwrap()).into_owned();
    assert!(seen.contains("backend health check failed"), "{seen}");
    assert!(seen.contains("http://user:***@127.0.0.1:"), "{seen}");
    assert!(!seen.contains(PASSWORD), "{seen}");
}
