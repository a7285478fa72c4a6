//! Limits that keep one client from hurting the others: the request body size, and
//! the number of requests sent to the backend at once (with a bounded queue wait).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use common::Bridge;
use futures::StreamExt;
use serde_json::{Value, json};

/// An OpenAI backend that takes `delay` per answer and records how many requests it
/// served at once, at most.
async fn slow_backend(delay: Duration) -> (String, Arc<AtomicUsize>) {
    let (now, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (n, p) = (now.clone(), peak.clone());
    let app = Router::new()
        .route("/v1/models", get(|| async { axum::Json(json!({"data": [{"id": "m"}]})) }))
        .route(
            "/v1/chat/completions",
            post(move || {
                let (now, peak) = (n.clone(), p.clone());
                async move {
                    let current = now.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(current, Ordering::SeqCst);
                    tokio::time::sleep(delay).await;
                    now.fetch_sub(1, Ordering::SeqCst);
                    axum::Json(json!({
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1}
                    }))
                }
            }),
        );
    let (url, _server) = common::serve(app).await;
    (url, peak)
}

async fn chat(url: &str) -> (u16, Option<String>, Value) {
    let r = reqwest::Client::new()
        .post(format!("{url}/api/chat"))
        .json(&json!({"model": "m", "stream": false, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
    (status, retry, r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_concurrency_is_capped_and_the_queue_waits() {
    let (backend, peak) = slow_backend(Duration::from_millis(100)).await;
    let mut bridge = Bridge::start(json!({
        "backend": {"type": "openai", "endpoint": backend, "max_concurrent": 2, "queue_timeout": 10},
    }))
    .await;
    let results = futures::future::join_all((0..6).map(|_| chat(&bridge.url))).await;
    assert!(results.iter().all(|(status, _, _)| *status == 200), "{results:?}");
    assert_eq!(
        peak.load(Ordering::SeqCst),
        2,
        "never more than max_concurrent at the backend"
    );
    assert_eq!(bridge.rows().await.len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_503_with_retry_after() {
    let (backend, served) = slow_backend(Duration::from_millis(600)).await;
    let mut bridge = Bridge::start(json!({
        "backend": {"type": "openai", "endpoint": backend, "max_concurrent": 1, "queue_timeout": 0.1},
    }))
    .await;
    let (first, second) = tokio::join!(chat(&bridge.url), async {
        // Only once the first request holds the one slot (the backend has it).
        while served.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        chat(&bridge.url).await
    });
    assert_eq!(first.0, 200);
    assert_eq!(
        second,
        (
            503,
            Some("1".to_owned()),
            json!({"error": "backend busy: 1 requests in flight and none finished within 0.1s; retry shortly"})
        )
    );
    let rows = bridge.rows().await;
    let statuses: Vec<&Value> = rows.iter().map(|r| &r["status_code"]).collect();
    assert_eq!(statuses, [&json!(503), &json!(200)]);
}

/// A llama-server-like backend: `/props` tells `slots` as `total_slots`; answers take
/// `delay`; `peak` records the most requests it served at once.
async fn llama_like_backend(slots: Arc<AtomicUsize>, delay: Duration) -> (String, Arc<AtomicUsize>) {
    let (now, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (n, p) = (now.clone(), peak.clone());
    let app = Router::new()
        .route("/v1/models", get(|| async { axum::Json(json!({"data": [{"id": "m"}]})) }))
        .route(
            "/props",
            get(move || {
                let slots = slots.load(Ordering::SeqCst);
                async move { axum::Json(json!({"total_slots": slots, "model_alias": "m"})) }
            }),
        )
        .route(
            "/v1/chat/completions",
            post(move || {
                let (now, peak) = (n.clone(), p.clone());
                async move {
                    let current = now.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(current, Ordering::SeqCst);
                    tokio::time::sleep(delay).await;
                    now.fetch_sub(1, Ordering::SeqCst);
                    axum::Json(json!({
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1}
                    }))
                }
            }),
        );
    let (url, _server) = common::serve(app).await;
    (url, peak)
}

/// `(max_concurrent, max_concurrent_source)` of the first backend in `/api/backends`.
async fn limit_shown(bridge: &Bridge) -> (Value, Value) {
    let (_, backends) = common::get_json(&format!("{}/api/backends", bridge.admin_url)).await;
    let backend = &backends["backends"][0];
    (
        backend["max_concurrent"].clone(),
        backend["max_concurrent_source"].clone(),
    )
}

/// Waits (bounded) until `/api/backends` shows `limit`, read by a health check.
async fn until_limit_shown(bridge: &Bridge, limit: usize) {
    for _ in 0..100 {
        if limit_shown(bridge).await.0 == json!(limit) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("max_concurrent {limit} never shown: {:?}", limit_shown(bridge).await);
}

/// Without `max_concurrent`, a llama-server gets as many requests at once as it has
/// slots, read at start and again by each health check (growing or shrinking).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_max_concurrent_a_llama_server_gets_as_many_requests_as_it_has_slots() {
    let slots = Arc::new(AtomicUsize::new(2));
    let (backend, peak) = llama_like_backend(slots.clone(), Duration::from_millis(200)).await;
    let mut bridge = Bridge::start(json!({
        "backend": {"type": "openai", "endpoint": backend, "health_interval": 1},
    }))
    .await;
    let burst = |n: usize| futures::future::join_all((0..n).map(|_| chat(&bridge.url)));
    let results = burst(6).await;
    assert!(results.iter().all(|(status, _, _)| *status == 200), "{results:?}");
    assert_eq!(peak.swap(0, Ordering::SeqCst), 2);
    assert_eq!(limit_shown(&bridge).await, (json!(2), json!("llama-server")));
    // Restarted with more slots, then fewer: the health checks follow.
    for more_or_fewer in [3, 1] {
        slots.store(more_or_fewer, Ordering::SeqCst);
        until_limit_shown(&bridge, more_or_fewer).await;
        let results = burst(6).await;
        assert!(results.iter().all(|(status, _, _)| *status == 200), "{results:?}");
        assert_eq!(peak.swap(0, Ordering::SeqCst), more_or_fewer);
    }
    // A refresh of `/api/backends` reads it again at once.
    slots.store(5, Ordering::SeqCst);
    let (_, backends) = common::get_json(&format!("{}/api/backends?refresh=true", bridge.admin_url)).await;
    assert_eq!(backends["backends"][0]["max_concurrent"], 5);
    assert_eq!(bridge.rows().await.len(), 18);
}

/// An explicit `max_concurrent: 0` is no limit, whatever the backend says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrent_zero_is_no_limit_even_for_a_llama_server() {
    let (backend, peak) = llama_like_backend(Arc::new(AtomicUsize::new(2)), Duration::from_millis(400)).await;
    let mut bridge = Bridge::start(json!({
        "backend": {"type": "openai", "endpoint": backend, "max_concurrent": 0, "health_interval": 1},
    }))
    .await;
    let results = futures::future::join_all((0..6).map(|_| chat(&bridge.url))).await;
    assert!(results.iter().all(|(status, _, _)| *status == 200), "{results:?}");
    assert_eq!(peak.load(Ordering::SeqCst), 6);
    assert_eq!(limit_shown(&bridge).await, (Value::Null, json!("config")));
    assert_eq!(bridge.rows().await.len(), 6);
}

#[tokio::test]
async fn an_oversized_body_is_413_in_ollamas_shape() {
    let (backend, _) = slow_backend(Duration::ZERO).await;
    let bridge = Bridge::start(json!({
        "server": {"max_body_bytes": 1000},
        "backend": {"type": "openai", "endpoint": backend},
    }))
    .await;
    let big = "x".repeat(2000);
    let r = reqwest::Client::new()
        .post(format!("{}/api/chat", bridge.url))
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": big}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body,
        json!({"error": "request body is larger than server.max_body_bytes (1000 bytes)"})
    );
    let (status, _, _) = chat(&bridge.url).await;
    assert_eq!(status, 200, "small bodies still pass");
}

/// A backend that sends one chunk, then goes quiet for a long time.
async fn stalling_backend() -> String {
    let app = Router::new().route(
        "/v1/chat/completions",
        post(|| async {
            let first = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Once\"}}]}\n\n";
            let body = futures::stream::once(async move { Ok::<_, std::io::Error>(first.to_owned()) }).chain(
                futures::stream::once(async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    Ok("data: [DONE]\n\n".to_owned())
                }),
            );
            (
                [("content-type", "text/event-stream")],
                axum::body::Body::from_stream(body),
            )
        }),
    );
    let (url, _server) = common::serve(app).await;
    url
}

/// Shutdown waits for answers in flight, but only for `server.shutdown_grace`: then
/// they end with an error line and are logged as cut off, and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_cuts_off_streams_after_the_grace_period() {
    let backend = stalling_backend().await;
    let mut bridge = Bridge::start(json!({
        "server": {"shutdown_grace": 0.3},
        "backend": {"type": "openai", "endpoint": backend},
        "models": {"mappings": {"m": "m"}},
    }))
    .await;
    let response = reqwest::Client::new()
        .post(format!("{}/api/chat", bridge.url))
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(std::str::from_utf8(&first).unwrap().contains("\"Once\""));

    let started = std::time::Instant::now();
    let reader = tokio::spawn(async move {
        let mut rest = Vec::new();
        while let Some(Ok(bytes)) = body.next().await {
            rest.extend_from_slice(&bytes);
        }
        String::from_utf8(rest).unwrap()
    });
    bridge.stop().await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(300),
        "waited the grace period: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(5),
        "did not wait for the stalled backend: {waited:?}"
    );
    assert_eq!(
        reader.await.unwrap(),
        "{\"error\":\"the server is shutting down; the answer was cut off\"}\n"
    );

    let rows = bridge.rows().await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["error"], "the server is shutting down; the answer was cut off");
    assert_eq!(rows[0]["response"], "Once");
}
