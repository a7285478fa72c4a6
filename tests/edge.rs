//! The HTTP edge: the budget for request bodies in flight, web pages kept out by
//! `Origin` (client port) and by `Host`/`Origin` (token-less admin listener), the admin
//! token applied on reload, and the admin listener's 413s in JSON.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

mod common;

use axum::Router;
use axum::routing::{get, post};
use common::Bridge;
use common::holding::mock;
use futures::StreamExt;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Status, `Retry-After` and JSON body of a response.
async fn outcome(response: reqwest::Response) -> (u16, Option<String>, Value) {
    let status = response.status().as_u16();
    let retry = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, retry, body)
}

const BUDGET: usize = 1 << 20;

fn budget_message() -> String {
    format!(
        "server busy: request bodies in flight would exceed server.max_inflight_body_bytes ({BUDGET} bytes); retry \
         shortly"
    )
}

/// Two 600 KiB bodies do not fit a 1 MiB budget: while one is held (its answer still
/// streaming), the other is refused at once, whatever its shape; once the answer has
/// ended, the budget is free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_in_flight_stay_within_the_budget() {
    let mock = mock().await;
    let mut bridge = Bridge::start(json!({
        "server": {"max_body_bytes": BUDGET, "max_inflight_body_bytes": BUDGET},
        "backend": {"type": "openai", "endpoint": mock.url, "timeout": 30},
        "models": {"mappings": {"m": "mock-model"}},
    }))
    .await;
    let http = reqwest::Client::new();
    let padding = "x".repeat(600 << 10);
    let chat = format!("{}/api/chat", bridge.url);

    // Held open by the backend after its first piece: its body stays reserved meanwhile.
    let held = http
        .post(&chat)
        .json(&json!({"model": "m", "messages": [
            {"role": "user", "content": "hold"}, {"role": "user", "content": padding}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(held.status(), 200);
    let mut held = held.bytes_stream();
    let first = held.next().await.unwrap().unwrap();
    assert!(std::str::from_utf8(&first).unwrap().contains("\"Hi\""), "{first:?}");

    let big = json!({"model": "m", "stream": false, "messages": [{"role": "user", "content": padding}]});
    let refused = http.post(&chat).json(&big).send().await.unwrap();
    assert_eq!(
        outcome(refused).await,
        (503, Some("1".into()), json!({"error": budget_message()}))
    );
    // OpenAI's and Anthropic's clients get their API's shape, and may retry as well.
    for (path, shape) in [
        (
            "/v1/chat/completions",
            json!({"error": {"message": budget_message(), "type": "api_error", "param": null, "code": null}}),
        ),
        (
            "/v1/messages",
            json!({"type": "error", "error": {"type": "overloaded_error", "message": budget_message()}}),
        ),
    ] {
        let refused = http
            .post(format!("{}{path}", bridge.url))
            .json(&big)
            .send()
            .await
            .unwrap();
        assert_eq!(outcome(refused).await, (503, Some("1".into()), shape), "{path}");
    }
    // Without a Content-Length, counted as it is read.
    let text = big.to_string().into_bytes();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = text.chunks(16 << 10).map(|c| Ok(c.to_vec())).collect();
    let refused = http
        .post(&chat)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(
        outcome(refused).await,
        (503, Some("1".into()), json!({"error": budget_message()}))
    );
    // Small bodies still fit.
    let small = json!({"model": "m", "stream": false, "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(http.post(&chat).json(&small).send().await.unwrap().status(), 200);

    mock.release.notify_one();
    let mut rest = Vec::new();
    while let Some(piece) = held.next().await {
        rest.extend_from_slice(&piece.unwrap());
    }
    assert!(String::from_utf8(rest).unwrap().contains("\"done\":true"));
    // The streamed answer has ended: its reservation is given back.
    let (status, _, answer) = outcome(http.post(&chat).json(&big).send().await.unwrap()).await;
    assert_eq!(
        (status, &answer["message"]["content"]),
        (200, &json!("Hi from the mock. (mock-model)"))
    );

    // The refusals reached no backend and left no row.
    let rows = bridge.rows().await;
    let statuses: Vec<&Value> = rows.iter().map(|r| &r["status_code"]).collect();
    assert_eq!(statuses, [&json!(200), &json!(200), &json!(200)]);
}

/// An OpenAI backend answering "ok" that counts the requests it got.
async fn counting_backend() -> (String, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let app = Router::new()
        .route("/v1/models", get(|| async { axum::Json(json!({"data": [{"id": "m"}]})) }))
        .route(
            "/v1/chat/completions",
            post(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                async {
                    axum::Json(json!({
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1}
                    }))
                }
            }),
        );
    let (url, _server) = common::serve(app).await;
    (url, calls)
}

const CHAT: &str = r#"{"model": "m", "stream": false, "messages": [{"role": "user", "content": "hi"}]}"#;

/// A chat as a web page can send it without a preflight: `text/plain`.
async fn page_post(url: &str, origin: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(url)
        .header("content-type", "text/plain")
        .body(CHAT);
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    let (status, _, body) = outcome(request.send().await.unwrap()).await;
    (status, body)
}

#[tokio::test]
async fn pages_from_other_sites_cannot_call_the_client_port() {
    let (backend, calls) = counting_backend().await;
    let bridge = Bridge::start(json!({
        "server": {"allowed_origins": ["https://*.example.com"]},
        "backend": {"type": "openai", "endpoint": backend},
    }))
    .await;
    let chat = format!("{}/api/chat", bridge.url);
    assert_eq!(
        page_post(&chat, Some("https://evil.example")).await,
        (
            403,
            json!({"error": "origin 'https://evil.example' is not allowed (add it to server.allowed_origins)"})
        )
    );
    assert_eq!(
        page_post(
            &format!("{}/v1/chat/completions", bridge.url),
            Some("http://localhost.evil.example")
        )
        .await,
        (
            403,
            json!({"error": {"message": "origin 'http://localhost.evil.example' is not allowed (add it to \
                server.allowed_origins)", "type": "permission_error", "param": null, "code": null}})
        )
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0, "refused before the backend");

    // Ollama's defaults, the configured pattern, and clients that send no Origin.
    for origin in [
        Some("http://localhost:3000"),
        Some("http://127.0.0.1"),
        Some("vscode-webview://abc123"),
        Some("https://app.example.com"),
        None,
    ] {
        let (status, body) = page_post(&chat, origin).await;
        assert_eq!((status, &body["message"]["content"]), (200, &json!("ok")), "{origin:?}");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 5);
}

/// A CORS preflight from `origin`: the `Access-Control-Allow-Origin` it gets.
async fn preflight(url: &str, origin: &str) -> Option<String> {
    let response = reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, format!("{url}/api/chat"))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    response
        .headers()
        .get("access-control-allow-origin")
        .map(|v| v.to_str().unwrap().to_owned())
}

#[tokio::test]
async fn cors_answers_allowed_origins_only() {
    let (backend, _) = counting_backend().await;
    let bridge = Bridge::start(json!({
        "server": {"enable_cors": true},
        "backend": {"type": "openai", "endpoint": backend},
    }))
    .await;
    assert_eq!(
        preflight(&bridge.url, "http://localhost:8080").await.as_deref(),
        Some("http://localhost:8080")
    );
    assert_eq!(preflight(&bridge.url, "https://evil.example").await, None);
}

/// A request to the admin listener with these headers: status and JSON body.
async fn admin_call(
    method: reqwest::Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<String>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new().request(method, url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request.header("content-type", "application/json").body(body);
    }
    let (status, _, body) = outcome(request.send().await.unwrap()).await;
    (status, body)
}

/// Without a token, the admin listener answers its own host names and the dashboard's
/// own pages only: not a DNS name rebound to 127.0.0.1, not another site's page.
#[tokio::test]
async fn the_tokenless_admin_listener_keeps_other_sites_out() {
    let (backend, calls) = counting_backend().await;
    let bridge = Bridge::start(json!({
        "backend": {"type": "openai", "endpoint": backend},
        "admin": {"host": "127.0.0.1", "port": 0, "allowed_hosts": ["dash.example.net"]},
    }))
    .await;
    let admin = &bridge.admin_url;
    let port = admin.rsplit(':').next().unwrap();
    let logs = format!("{admin}/api/logs");
    let get = reqwest::Method::GET;
    // Names a page can rebind to 127.0.0.1.
    for name in ["evil.example", "127.0.0.1.nip.io", "localhost.evil.example"] {
        let rebound = format!("{name}:{port}");
        let message = format!(
            "host '{name}' is not allowed on the admin listener (add it to admin.allowed_hosts, or set admin.token)"
        );
        assert_eq!(
            admin_call(get.clone(), &logs, &[("host", &rebound)], None).await,
            (403, json!({"error": message}))
        );
    }
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("LOCALHOST.:{port}"),
        format!("dashboard.localhost:{port}"),
        format!("[::1]:{port}"),
        format!("dash.example.net:{port}"),
    ] {
        let (status, _) = admin_call(get.clone(), &logs, &[("host", &host)], None).await;
        assert_eq!(status, 200, "{host}");
    }

    // The dashboard's playground, from its own page (a same-origin POST sends Origin).
    let playground = format!("{admin}/ollama/api/chat");
    let post = reqwest::Method::POST;
    let own_page = format!("http://127.0.0.1:{port}");
    let (status, answer) = admin_call(post.clone(), &playground, &[("origin", &own_page)], Some(CHAT.into())).await;
    assert_eq!((status, &answer["message"]["content"]), (200, &json!("ok")));
    let refused_origin = |origin: &str| {
        json!({"error": format!("origin '{origin}' is not allowed on the admin listener: only the dashboard's own \
            pages may call it (add its host to admin.allowed_hosts, or set admin.token)")})
    };
    // Another page, even one the client port lets in.
    for origin in ["https://evil.example", "http://localhost:3000"] {
        assert_eq!(
            admin_call(post.clone(), &playground, &[("origin", origin)], Some(CHAT.into())).await,
            (403, refused_origin(origin))
        );
    }
    assert_eq!(
        admin_call(
            reqwest::Method::PUT,
            &format!("{admin}/api/logs/1/starred"),
            &[("origin", "https://evil.example")],
            Some(r#"{"starred": true}"#.into())
        )
        .await,
        (403, refused_origin("https://evil.example"))
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "only the dashboard's own chat reached the backend"
    );
}

/// With a token the token decides: a page cannot send it, and the names the listener
/// is reached by (a container network, a proxy) need no list.
#[tokio::test]
async fn with_a_token_hosts_are_not_checked() {
    let (backend, _) = counting_backend().await;
    let bridge = Bridge::start(json!({
        "backend": {"type": "openai", "endpoint": backend},
        "admin": {"host": "127.0.0.1", "port": 0, "token": "secret-token"},
    }))
    .await;
    let logs = format!("{}/api/logs", bridge.admin_url);
    let headers = [("host", "ollabridge:11435"), ("authorization", "Bearer secret-token")];
    let (status, _) = admin_call(reqwest::Method::GET, &logs, &headers, None).await;
    assert_eq!(status, 200);
}

/// Bodies too large for the admin listener are refused in JSON, as everything else there.
#[tokio::test]
async fn admin_bodies_too_large_are_413_in_json() {
    let (backend, calls) = counting_backend().await;
    let bridge = Bridge::start(json!({
        "server": {"max_body_bytes": 1000},
        "backend": {"type": "openai", "endpoint": backend},
    }))
    .await;
    let admin = &bridge.admin_url;
    let huge = format!(r#"{{"starred": true, "padding": "{}"}}"#, "x".repeat(3 << 20));
    assert_eq!(
        admin_call(
            reqwest::Method::PUT,
            &format!("{admin}/api/logs/1/starred"),
            &[],
            Some(huge.clone())
        )
        .await,
        (
            413,
            json!({"error": "request body is larger than the admin API accepts (2097152 bytes)"})
        )
    );
    assert_eq!(
        admin_call(reqwest::Method::POST, &format!("{admin}/api/replay/1"), &[], Some(huge)).await,
        (
            413,
            json!({"error": "request body is larger than the admin API accepts (2097152 bytes)"})
        )
    );
    let chat = json!({"model": "m", "messages": [{"role": "user", "content": "x".repeat(2000)}]}).to_string();
    assert_eq!(
        admin_call(
            reqwest::Method::POST,
            &format!("{admin}/ollama/api/chat"),
            &[],
            Some(chat)
        )
        .await,
        (
            413,
            json!({"error": "request body is larger than server.max_body_bytes (1000 bytes)"})
        )
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

/// A new `admin.token` applies on reload: the old one is refused at once, the new one
/// accepted.
#[tokio::test]
async fn a_reloaded_admin_token_replaces_the_old_one() {
    let (backend, _) = counting_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    let settings = |token: &str| {
        json!({
            "server": {"host": "127.0.0.1", "port": 0, "watch_config": false},
            "admin": {"host": "127.0.0.1", "port": 0, "token": token},
            "backend": {"type": "openai", "endpoint": backend},
            "database": {"path": dir.path().join("log.db")},
        })
        .to_string()
    };
    std::fs::write(&path, settings("first-token")).unwrap();
    let config = ollabridge::config::Config::load(&path).unwrap();
    let mut server = ollabridge::start(config).await.unwrap();
    server.enable_reload(&path).unwrap();
    let admin = format!("http://{}", server.admin_addr.unwrap());
    let logs = format!("{admin}/api/logs");
    let get = |token: &'static str| {
        let logs = logs.clone();
        async move { admin_call(reqwest::Method::GET, &logs, &[("authorization", token)], None).await }
    };
    assert_eq!(get("Bearer first-token").await.0, 200);

    std::fs::write(&path, settings("second-token")).unwrap();
    let reloaded = admin_call(
        reqwest::Method::POST,
        &format!("{admin}/api/reload"),
        &[("authorization", "Bearer first-token")],
        None,
    )
    .await;
    assert_eq!(reloaded, (200, json!({"status": "reloaded", "needs_restart": []})));
    assert_eq!(
        get("Bearer first-token").await,
        (
            401,
            json!({"error": "unauthorized: invalid admin token (send Authorization: Bearer <key>)"})
        )
    );
    assert_eq!(get("Bearer second-token").await.0, 200);
    server.shutdown().await;
}
