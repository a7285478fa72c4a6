//! Several backends at once over mocks: the circuit breaker over a mock that fails on
//! demand, backend quirks, embeddings failing over. Routing over two real llama-servers
//! (merged `/api/tags`, failover when one is killed) is in `tests/llama_features.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use common::{Bridge, get_json, post, query_rows, repo_root};
use serde_json::{Value, json};

/// Chat through the bridge, not streamed; (status, answer text or error).
async fn ask(bridge: &Bridge, model: &str) -> (u16, String) {
    let (status, _, body) = post(
        &format!("{}/api/chat", bridge.url),
        json!({"model": model, "messages": [{"role": "user", "content": "Hi"}], "stream": false, "think": false}),
    )
    .await;
    let body: Value = serde_json::from_str(&body).unwrap();
    let text = body["message"]["content"]
        .as_str()
        .or(body["error"].as_str())
        .unwrap_or_default();
    (status, text.to_owned())
}

/// An OpenAI-style backend that answers 500 while `failing` is set, counting calls.
struct Flaky {
    url: String,
    failing: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
    _task: tokio::task::JoinHandle<()>,
}

async fn flaky(answer: &'static str) -> Flaky {
    #[derive(Clone)]
    struct Shared {
        failing: Arc<AtomicBool>,
        calls: Arc<AtomicUsize>,
        answer: &'static str,
    }
    async fn chat(State(shared): State<Shared>, body: Bytes) -> Response {
        shared.calls.fetch_add(1, Ordering::SeqCst);
        if shared.failing.load(Ordering::SeqCst) {
            let error = json!({"error": {"message": "model crashed", "type": "server_error"}});
            return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, axum::Json(error)).into_response();
        }
        let request: Value = serde_json::from_slice(&body).unwrap();
        axum::Json(json!({
            "object": "chat.completion", "model": request["model"],
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": shared.answer}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }))
        .into_response()
    }
    let shared = Shared {
        failing: Arc::new(AtomicBool::new(false)),
        calls: Arc::new(AtomicUsize::new(0)),
        answer,
    };
    let app = axum::Router::new()
        .route(
            "/v1/models",
            axum::routing::get(|| async { axum::Json(json!({"object": "list", "data": [{"id": "mock"}]})) }),
        )
        .route("/v1/chat/completions", axum::routing::post(chat))
        .with_state(shared.clone());
    let (url, task) = common::serve(app).await;
    Flaky {
        url,
        failing: shared.failing,
        calls: shared.calls,
        _task: task,
    }
}

#[tokio::test]
async fn the_breaker_opens_after_failures_and_closes_after_a_good_trial() {
    let first = flaky("from first").await;
    let second = flaky("from second").await;
    let bridge = Bridge::start(json!({
        "backends": {
            "first": {"type": "openai", "endpoint": first.url, "breaker": {"failures": 2, "cooldown": 0.5},
                      "health_interval": 0},
            "second": {"type": "openai", "endpoint": second.url, "health_interval": 0},
        },
        "models": {"mappings": {"m": {"model": "mock", "fallbacks": [{"backend": "second", "model": "mock"}]}}},
    }))
    .await;
    let calls = |f: &Flaky| f.calls.load(Ordering::SeqCst);
    assert_eq!(ask(&bridge, "m").await, (200, "from first".to_owned()));
    first.failing.store(true, Ordering::SeqCst);
    // Two failures in a row open it; each of those requests was still answered.
    for _ in 0..2 {
        assert_eq!(ask(&bridge, "m").await, (200, "from second".to_owned()));
    }
    assert_eq!((calls(&first), calls(&second)), (3, 2));
    // Open: "first" is not asked at all.
    for _ in 0..3 {
        assert_eq!(ask(&bridge, "m").await, (200, "from second".to_owned()));
    }
    assert_eq!((calls(&first), calls(&second)), (3, 5));
    // After the cool-down one trial goes to "first"; it fails, so it opens again.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(ask(&bridge, "m").await, (200, "from second".to_owned()));
    assert_eq!((calls(&first), calls(&second)), (4, 6));
    assert_eq!(ask(&bridge, "m").await, (200, "from second".to_owned()));
    assert_eq!(calls(&first), 4, "reopened after the failed trial");
    // Recovered: the next trial succeeds and closes it.
    first.failing.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(600)).await;
    for _ in 0..2 {
        assert_eq!(ask(&bridge, "m").await, (200, "from first".to_owned()));
    }
    assert_eq!((calls(&first), calls(&second)), (6, 7));
    let (_, backends) = get_json(&format!("{}/api/backends", bridge.admin_url)).await;
    assert_eq!(backends["backends"][0]["health"]["breaker"], "closed");

    // When every target fails, the client gets the last error and the row lists all.
    first.failing.store(true, Ordering::SeqCst);
    second.failing.store(true, Ordering::SeqCst);
    assert_eq!(ask(&bridge, "m").await, (500, "model crashed".to_owned()));
    let db = bridge.db.clone();
    let mut rows = Vec::new();
    for _ in 0..200 {
        rows = query_rows(
            &db,
            "SELECT attempts, backend, status_code FROM logs WHERE status_code = 500",
        );
        if !rows.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let attempts: Value = serde_json::from_str(rows[0]["attempts"].as_str().unwrap()).unwrap();
    assert_eq!(
        attempts,
        json!([
            {"backend": "first", "model": "mock", "error": "model crashed"},
            {"backend": "second", "model": "mock", "error": "model crashed"},
        ])
    );
    assert_eq!(rows[0]["backend"], "second");
}

/// A half-open breaker's one trial goes to the request that really tries its backend:
/// a request answered by an earlier target must not take it and keep it forever.
#[tokio::test]
async fn a_half_open_backend_behind_one_that_answers_keeps_its_trial() {
    let a = flaky("from a").await;
    let b = flaky("from b").await;
    let bridge = Bridge::start(json!({
        "backends": {
            "a": {"type": "openai", "endpoint": a.url, "health_interval": 0},
            "b": {"type": "openai", "endpoint": b.url, "breaker": {"failures": 1, "cooldown": 0.5},
                  "health_interval": 0},
        },
        "models": {"mappings": {
            "ab": {"backend": "a", "model": "mock", "fallbacks": [{"backend": "b", "model": "mock"}]},
            "ba": {"backend": "b", "model": "mock", "fallbacks": [{"backend": "a", "model": "mock"}]},
            "only-b": {"backend": "b", "model": "mock"},
        }},
    }))
    .await;
    let breaker_of_b = || async {
        let (_, backends) = get_json(&format!("{}/api/backends", bridge.admin_url)).await;
        backends["backends"][1]["health"]["breaker"].clone()
    };
    b.failing.store(true, Ordering::SeqCst);
    assert_eq!(ask(&bridge, "only-b").await, (500, "model crashed".to_owned()));
    assert_eq!(breaker_of_b().await, "open");
    b.failing.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(breaker_of_b().await, "half_open");
    // "a" answers; "b" is not tried, so its trial stays free.
    assert_eq!(ask(&bridge, "ab").await, (200, "from a".to_owned()));
    assert_eq!(b.calls.load(Ordering::SeqCst), 1);
    // The next request whose first target is "b" is its trial, and closes the breaker.
    assert_eq!(ask(&bridge, "ba").await, (200, "from b".to_owned()));
    assert_eq!(breaker_of_b().await, "closed");
    assert_eq!(ask(&bridge, "only-b").await, (200, "from b".to_owned()));
    assert_eq!((a.calls.load(Ordering::SeqCst), b.calls.load(Ordering::SeqCst)), (1, 3));
}

#[tokio::test]
async fn a_lone_backend_is_asked_even_with_its_breaker_open() {
    let only = flaky("alone").await;
    only.failing.store(true, Ordering::SeqCst);
    let bridge = Bridge::start(json!({
        "backend": {"type": "openai", "endpoint": only.url, "breaker": {"failures": 1, "cooldown": 60}},
        "models": {"mappings": {"m": "mock"}},
    }))
    .await;
    assert_eq!(ask(&bridge, "m").await, (500, "model crashed".to_owned()));
    only.failing.store(false, Ordering::SeqCst);
    assert_eq!(ask(&bridge, "m").await, (200, "alone".to_owned()));
    assert_eq!(only.calls.load(Ordering::SeqCst), 2);
}

#[test]
fn the_single_backend_example_config_still_loads() {
    let config = ollabridge::config::Config::load(&repo_root().join("config.example.json")).unwrap();
    assert_eq!(config.backends.len(), 1);
    assert_eq!(config.backend().name, config.backend().kind.as_str());
    let several = ollabridge::config::Config::from_json(
        r#"{"backend": {"type": "openai", "endpoint": "http://a"}, "backends": {"b": {"type": "openai", "endpoint": "http://b"}}}"#,
    )
    .unwrap_err();
    assert_eq!(
        several.to_string(),
        "invalid config <inline>: backend, backends: use one of them, not both"
    );
    let unknown = ollabridge::config::Config::from_json(
        r#"{"backends": {"a": {"type": "openai", "endpoint": "http://a"}},
            "models": {"mappings": {"m": {"model": "x", "fallbacks": [{"backend": "b", "model": "y"}]}}}}"#,
    )
    .unwrap_err();
    assert_eq!(
        unknown.to_string(),
        "invalid config <inline>: models.mappings.m.fallbacks[0].backend: no backend named 'b' (backends: a)"
    );
}

#[tokio::test]
async fn backend_quirks_extra_headers_and_the_max_tokens_field() {
    type Seen = Arc<std::sync::Mutex<Vec<(Option<String>, Value)>>>;
    async fn chat(State(seen): State<Seen>, headers: axum::http::HeaderMap, body: Bytes) -> Response {
        let request: Value = serde_json::from_slice(&body).unwrap();
        let title = headers.get("x-title").map(|v| v.to_str().unwrap().to_owned());
        seen.lock().unwrap().push((title, request.clone()));
        axum::Json(json!({
            "object": "chat.completion", "model": request["model"],
            "choices": [{"index": 0, "finish_reason": "length", "message": {"role": "assistant", "content": "ok"}}],
        }))
        .into_response()
    }
    let seen: Seen = Default::default();
    let app = axum::Router::new()
        .route("/v1/chat/completions", axum::routing::post(chat))
        .with_state(seen.clone());
    let (url, _server) = common::serve(app).await;
    let bridge = Bridge::start(json!({
        "backends": {
            "plain": {"type": "openai", "endpoint": url},
            "newer": {"type": "openai", "endpoint": url, "max_tokens_field": "max_completion_tokens",
                      "headers": {"X-Title": "ollabridge"}},
        },
        "models": {"mappings": {"a": "m1", "b": {"backend": "newer", "model": "m2"}}},
    }))
    .await;
    for model in ["a", "b"] {
        let (status, _, _) = post(
            &format!("{}/api/chat", bridge.url),
            json!({"model": model, "messages": [{"role": "user", "content": "Hi"}], "stream": false,
                   "options": {"num_predict": 7}}),
        )
        .await;
        assert_eq!(status, 200);
    }
    let seen = seen.lock().unwrap().clone();
    let sent: Vec<(Option<&str>, &Value, &Value, &Value)> = seen
        .iter()
        .map(|(title, body)| {
            (
                title.as_deref(),
                &body["model"],
                &body["max_tokens"],
                &body["max_completion_tokens"],
            )
        })
        .collect();
    assert_eq!(
        sent,
        [
            (None, &json!("m1"), &json!(7), &Value::Null),
            (Some("ollabridge"), &json!("m2"), &Value::Null, &json!(7)),
        ]
    );
}

/// Regression: an Ollama as an embedding model's fallback answered a misleading 500
/// ("embeddings go to it only as a model's first target") that hid the first target's
/// real failure. The fallback now answers, through its own `/api/embed`.
#[tokio::test]
async fn embeddings_fail_over_to_an_ollama_fallback() {
    let ollama = axum::Router::new().route(
        "/api/embed",
        axum::routing::post(|axum::Json(body): axum::Json<Value>| async move {
            assert_eq!(body, json!({"model": "nomic", "input": ["hi"]}));
            axum::Json(json!({"model": "nomic", "embeddings": [[3.0, 4.0]], "prompt_eval_count": 2}))
        }),
    );
    let (ollama_url, _server) = common::serve(ollama).await;
    let gone = format!("http://127.0.0.1:{}", common::free_port());
    let mut bridge = Bridge::start(json!({
        "backends": {
            "llama": {"type": "openai", "endpoint": gone, "health_interval": 0},
            "ollama": {"type": "ollama", "endpoint": ollama_url, "health_interval": 0},
        },
        "models": {"mappings": {"e": {"model": "e", "fallbacks": [{"backend": "ollama", "model": "nomic"}]}}},
    }))
    .await;
    let (status, _, body) = common::post(
        &format!("{}/api/embed", bridge.url),
        json!({"model": "e", "input": "hi"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (body["model"].clone(), body["embeddings"].clone()),
        (json!("e"), json!([[0.6, 0.8]]))
    );
    let rows = bridge.rows().await;
    assert_eq!(
        (
            rows[0]["status_code"].clone(),
            rows[0]["backend"].clone(),
            rows[0]["backend_model"].clone()
        ),
        (json!(200), json!("ollama"), json!("nomic"))
    );
    let attempts: Value = serde_json::from_str(rows[0]["attempts"].as_str().unwrap()).unwrap();
    assert_eq!(attempts[0]["backend"], "llama");
}
