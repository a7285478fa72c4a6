//! HTTPS on the Ollama port with `server.tls` (Home Assistant users ask for it).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

mod common;

use common::Bridge;
use serde_json::json;

#[tokio::test]
async fn serves_https_with_the_configured_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, generated.cert.pem()).unwrap();
    std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();

    let bridge = Bridge::start(json!({
        "server": {"tls": {"cert": cert, "key": key}},
        "backend": {"type": "openai", "endpoint": "http://127.0.0.1:1"},
    }))
    .await;
    let addr: std::net::SocketAddr = bridge.url.trim_start_matches("http://").parse().unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(generated.cert.pem().as_bytes()).unwrap())
        .resolve("localhost", addr)
        .build()
        .unwrap();
    let https = format!("https://localhost:{}", addr.port());
    assert_eq!(
        client.get(&https).send().await.unwrap().text().await.unwrap(),
        "Ollama is running"
    );
    let version: serde_json::Value = client
        .get(format!("{https}/api/version"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(version, json!({"version": "0.12.0"}));
    // Plain HTTP on the TLS port gets no answer, and does not stop the server.
    assert!(reqwest::get(&bridge.url).await.is_err());
    assert_eq!(client.get(&https).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn a_missing_certificate_stops_start_up_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = ollabridge::config::Config::from_json(
        &json!({
            "server": {"host": "127.0.0.1", "port": 0, "tls": {"cert": "/nonexistent/cert.pem", "key": "/nonexistent/key.pem"}},
            "admin": {"enabled": false},
            "backend": {"type": "openai", "endpoint": "http://127.0.0.1:1"},
            "database": {"path": dir.path().join("log.db")},
        })
        .to_string(),
    )
    .unwrap();
    let err = ollabridge::start(config).await.err().expect("start must fail");
    assert!(
        err.to_string()
            .starts_with("server.tls.cert: cannot read /nonexistent/cert.pem"),
        "{err}"
    );
}
