//! Limits that keep one client from hurting the others: the request body size, and
//! the number of requests sent to the backend at once (with a bounded queue wait).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

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

/// A streamed answer holds its backend slot until it has ended, on each path an answer
/// takes (Ollama's NDJSON, the `/v1` byte relay, a dialect translated onto a chat): with
/// `max_concurrent: 1` the next request waits while the first is still being sent, and
/// goes on as soon as it ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_answer_holds_its_slot_until_it_ends() {
    let mock = common::holding::mock().await;
    let mut bridge = Bridge::start(json!({
        "backend": {"type": "openai", "endpoint": mock.url, "timeout": 30, "max_concurrent": 1,
                    "queue_timeout": 10, "serves": {"messages": false}},
        "models": {"mappings": {"m": "mock-model"}},
    }))
    .await;
    let http = reqwest::Client::new();
    // Path, what the last line of its stream says, and where a whole answer has its text.
    let paths = [
        (
            "/api/chat",
            r#""content":""},"done":true,"done_reason":"stop""#,
            "/message/content",
        ),
        ("/v1/chat/completions", "data: [DONE]", "/choices/0/message/content"),
        ("/v1/messages", r#"data: {"type":"message_stop"}"#, "/content/0/text"),
    ];
    for (path, last, text) in paths {
        let url = format!("{}{path}", bridge.url);
        // `max_tokens`: Anthropic's API requires it; the others let it be.
        let body = |content: &str, stream: bool| {
            let messages = json!([{"role": "user", "content": content}]);
            json!({"model": "m", "max_tokens": 64, "stream": stream, "messages": messages})
        };
        // The backend sends its first piece, then holds the answer open.
        let held = http.post(&url).json(&body("hold", true)).send().await.unwrap();
        assert_eq!(held.status(), 200, "{path}");
        let mut held = held.bytes_stream();
        let mut streamed = held.next().await.unwrap().unwrap().to_vec();
        assert!(
            String::from_utf8_lossy(&streamed).contains("Hi"),
            "{path}: {streamed:?}"
        );

        let next = http.post(&url).json(&body("hi", false)).send();
        tokio::pin!(next);
        let waited = tokio::time::timeout(Duration::from_millis(300), &mut next).await;
        assert!(waited.is_err(), "{path}: answered while the first answer held the slot");

        mock.release.notify_one();
        while let Some(piece) = held.next().await {
            streamed.extend_from_slice(&piece.unwrap());
        }
        let streamed = String::from_utf8(streamed).unwrap();
        let last_line = streamed.trim_end().lines().last().unwrap();
        assert!(last_line.contains(last), "{path}: {streamed}");
        let next = next.await.unwrap();
        assert_eq!(next.status(), 200, "{path}");
        let answer: Value = next.json().await.unwrap();
        assert_eq!(
            answer.pointer(text),
            Some(&json!(common::holding::ANSWER.to_owned() + " (mock-model)")),
            "{path}: {answer}"
        );
    }
    let rows = bridge.rows().await;
    let logged: Vec<Value> = rows.iter().map(|r| json!([r["endpoint"], r["status_code"]])).collect();
    let expected: Vec<Value> = paths
        .iter()
        .flat_map(|(path, _, _)| [json!([path, 200]), json!([path, 200])])
        .collect();
    assert_eq!(logged, expected);
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
async fn an_oversized_body_is_413_in_its_api_s_shape() {
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
    // The other APIs on the port answer in their own shapes.
    let message = "request body is larger than server.max_body_bytes (1000 bytes)";
    for (path, shape) in [
        (
            "/v1/chat/completions",
            json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": null}}),
        ),
        (
            "/v1/messages",
            json!({"type": "error", "error": {"type": "request_too_large", "message": message}}),
        ),
    ] {
        let r = reqwest::Client::new()
            .post(format!("{}{path}", bridge.url))
            .json(&json!({"model": "m", "messages": [{"role": "user", "content": big}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            (r.status().as_u16(), r.json::<Value>().await.unwrap()),
            (413, shape),
            "{path}"
        );
    }
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

/// A backend that takes requests and never answers them.
async fn silent_backend() -> String {
    let app = Router::new().fallback(|| async {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        "never"
    });
    let (url, _server) = common::serve(app).await;
    url
}

/// Regression: a request still waiting for its backend's answer held the shutdown for
/// the whole `backend.timeout` (the systemd unit's stop timeout would SIGKILL it). The
/// grace period cuts it off like a stream: 503, and a log row saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_cuts_off_requests_waiting_on_a_stalled_backend() {
    let backend = silent_backend().await;
    let mut bridge = Bridge::start(json!({
        "server": {"shutdown_grace": 0.3},
        "backend": {"type": "openai", "endpoint": backend, "timeout": 120},
        "models": {"mappings": {"m": "m"}},
    }))
    .await;
    let url = bridge.url.clone();
    let requests = [
        (
            "/api/chat",
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
        ),
        ("/api/generate", json!({"model": "m", "prompt": "hi"})),
        ("/api/embed", json!({"model": "m", "input": "hi"})),
        (
            "/v1/chat/completions",
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
        ),
    ];
    let waiting = tokio::spawn(async move {
        futures::future::join_all(requests.iter().map(|(path, body)| {
            let url = format!("{url}{path}");
            async move {
                let r = reqwest::Client::new().post(url).json(body).send().await.unwrap();
                (r.status().as_u16(), r.json::<Value>().await.unwrap())
            }
        }))
        .await
    });
    // Every request has reached the backend (its in-flight rows appear after a second).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    bridge.stop().await;
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(5),
        "waited for the stalled backend: {waited:?}"
    );
    let cut = "the server is shutting down; the answer was cut off";
    let answers = waiting.await.unwrap();
    assert_eq!(
        answers,
        [
            (503, json!({"error": cut})),
            (503, json!({"error": cut})),
            (503, json!({"error": cut})),
            (
                503,
                json!({"error": {"message": cut, "type": "api_error", "param": null, "code": null}})
            ),
        ]
    );
    let rows = bridge.rows().await;
    let mut logged: Vec<(String, i64, String)> = rows
        .iter()
        .map(|r| {
            (
                r["endpoint"].as_str().unwrap().to_owned(),
                r["status_code"].as_i64().unwrap(),
                r["error"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    logged.sort();
    let expected: Vec<(String, i64, String)> = ["/api/chat", "/api/embed", "/api/generate", "/v1/chat/completions"]
        .iter()
        .map(|e| (e.to_string(), 503, cut.to_owned()))
        .collect();
    assert_eq!(logged, expected);
}

/// Regression: a 30 MiB model name was echoed in the 404, stored whole in `model` and
/// `error`, and made `/api/logs` answers 189 MB. Names longer than any model's are a 400
/// on every route that takes one, and what the row keeps is capped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absurd_model_name_is_refused_and_never_stored_whole() {
    let (backend, _) = slow_backend(Duration::ZERO).await;
    let mut bridge = Bridge::start(json!({
        "backend": {"type": "openai", "endpoint": backend},
        "models": {"mappings": {"m": "m"}},
    }))
    .await;
    let name = "x".repeat(2 << 20);
    let too_long = format!("model name is {} bytes long; at most 1024 are accepted", 2 << 20);
    let client = reqwest::Client::new();
    let message = json!({"role": "user", "content": "hi"});
    for (path, body) in [
        ("/api/chat", json!({"model": name, "messages": [message]})),
        ("/api/generate", json!({"model": name, "prompt": "hi"})),
        ("/api/embed", json!({"model": name, "input": "hi"})),
        ("/api/show", json!({"model": name})),
        ("/v1/chat/completions", json!({"model": name, "messages": [message]})),
    ] {
        let r = client
            .post(format!("{}{path}", bridge.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{path}");
        let body: Value = r.json().await.unwrap();
        let error = body["error"]["message"].as_str().or(body["error"].as_str());
        assert_eq!(error, Some(too_long.as_str()), "{path}: {body}");
    }
    // A name just long enough to be a name is still looked up (and not found).
    let long = "y".repeat(1024);
    let r = client
        .post(format!("{}/api/chat", bridge.url))
        .json(&json!({"model": long, "messages": [message]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let metrics = common::get_text(&format!("{}/metrics", bridge.admin_url)).await;
    assert!(
        !metrics.contains("xxxx") && !metrics.contains("yyyy"),
        "a client's name became a label"
    );
    assert!(
        metrics.contains(r#"ollabridge_requests_total{model="",backend="",endpoint="/api/chat",status="404"} 1"#),
        "{metrics}"
    );
    let rows = bridge.rows().await;
    // (`/api/show` answers without a row, as it always did.)
    assert_eq!(rows.len(), 5);
    for row in &rows {
        assert!(row["model"].as_str().unwrap().len() <= 1024, "{}", row["endpoint"]);
        assert!(row["error"].as_str().unwrap().len() <= 8192, "{}", row["endpoint"]);
    }
    let note = format!("…[truncated, {} bytes in all]", 2 << 20);
    assert_eq!(
        rows[0]["model"].as_str().unwrap(),
        format!("{}{note}", "x".repeat(1024 - note.len()))
    );
}

/// Regression: bodies were capped by the recorder and again by the logger, so a row
/// said "96 bytes in all" of a 370-byte request. Each stored body is cut once, to at
/// most `database.max_body_bytes`, and names its true length.
#[tokio::test]
async fn a_stored_body_names_its_true_length() {
    let (backend, _) = slow_backend(Duration::ZERO).await;
    let mut bridge = Bridge::start(json!({
        "backend": {"type": "openai", "endpoint": backend},
        "database": {"max_body_bytes": 64, "store_bodies": true},
    }))
    .await;
    let content = "z".repeat(300);
    let body = json!({"model": "m", "stream": false, "messages": [{"role": "user", "content": content}]}).to_string();
    let r = reqwest::Client::new()
        .post(format!("{}/api/chat", bridge.url))
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let rows = bridge.rows().await;
    let stored = rows[0]["request_body"].as_str().unwrap();
    let note = format!("…[truncated, {} bytes in all]", body.len());
    assert_eq!(stored, format!("{}{note}", &body[..64 - note.len()]));
}
