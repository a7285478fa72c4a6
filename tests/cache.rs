//! The response cache over a counting mock: misses, expiry, bypass, sampling rules,
//! errors, cut-off streams and tool calls behave as stated. Hits counted at the real
//! llama-server, answered in the client's form, are in `tests/llama_features.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use common::{Bridge, ndjson, post};
use serde_json::{Value, json};

fn chat(model: &str, content: &str, stream: bool, options: Value) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": content}], "stream": stream, "options": options})
}

/// The answer text of a streamed or single answer.
fn text_of(body: &str, stream: bool) -> String {
    if stream {
        ndjson(body)
            .iter()
            .filter_map(|l| l["message"]["content"].as_str())
            .collect()
    } else {
        let v: Value = serde_json::from_str(body).unwrap();
        v["message"]["content"].as_str().unwrap().to_owned()
    }
}

/// An OpenAI-style mock counting its calls; "fail" answers 500, "tool" calls a tool,
/// "slow" streams one piece and then waits a long time.
struct Mock {
    url: String,
    calls: Arc<AtomicUsize>,
    _task: tokio::task::JoinHandle<()>,
}

async fn mock() -> Mock {
    async fn chat(State(calls): State<Arc<AtomicUsize>>, body: Bytes) -> Response {
        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
        let request: Value = serde_json::from_slice(&body).unwrap();
        let content = request["messages"][0]["content"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let chunk = |delta: Value, finish: Value| {
            json!({"object": "chat.completion.chunk", "model": "m",
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        };
        let answer = format!("answer {n}");
        let events: Vec<Value> = match content.as_str() {
            "fail" if n == 1 => {
                let error = json!({"error": {"message": "overloaded"}});
                return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, axum::Json(error)).into_response();
            }
            "tool" => vec![
                chunk(
                    json!({"tool_calls": [{"index": 0, "id": "c1", "type": "function",
                           "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]}),
                    Value::Null,
                ),
                chunk(json!({}), json!("tool_calls")),
            ],
            _ => vec![
                chunk(json!({"content": answer}), Value::Null),
                chunk(json!({}), json!("stop")),
            ],
        };
        if request["stream"] != true {
            let message = match content.as_str() {
                "tool" => json!({"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
                                 "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]}),
                _ => json!({"role": "assistant", "content": answer}),
            };
            let finish = if content == "tool" { "tool_calls" } else { "stop" };
            return axum::Json(json!({"object": "chat.completion", "model": "m",
                                      "choices": [{"index": 0, "message": message, "finish_reason": finish}]}))
            .into_response();
        }
        let mut sse: Vec<Result<String, std::io::Error>> =
            events.iter().map(|e| Ok(format!("data: {e}\n\n"))).collect();
        let slow = content == "slow";
        if !slow {
            sse.push(Ok("data: [DONE]\n\n".into()));
        }
        let body = futures::stream::iter(sse);
        let body = futures::StreamExt::chain(
            body,
            futures::stream::once(async move {
                if slow {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                }
                Ok(String::new())
            }),
        );
        (
            [(axum::http::header::CONTENT_TYPE, "text/event-stream")],
            axum::body::Body::from_stream(body),
        )
            .into_response()
    }
    let calls = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new()
        .route("/v1/chat/completions", axum::routing::post(chat))
        .with_state(calls.clone());
    let (url, task) = common::serve(app).await;
    Mock {
        url,
        calls,
        _task: task,
    }
}

async fn bridge_with(mock: &Mock, cache: Value) -> Bridge {
    Bridge::start(json!({
        "backend": {"type": "openai", "endpoint": mock.url},
        "models": {"mappings": {"m": "m", "other": "m"}},
        "cache": cache,
    }))
    .await
}

async fn ask(bridge: &Bridge, request: Value, no_cache: bool) -> (u16, String) {
    let mut call = reqwest::Client::new()
        .post(format!("{}/api/chat", bridge.url))
        .json(&request);
    if no_cache {
        call = call.header("X-Ollabridge-No-Cache", "true");
    }
    let r = call.send().await.unwrap();
    let status = r.status().as_u16();
    let stream = request["stream"] != false;
    let body = r.text().await.unwrap();
    let text = if status == 200 { text_of(&body, stream) } else { body };
    (status, text)
}

#[tokio::test]
async fn misses_expiry_bypass_and_sampling_rules() {
    let mock = mock().await;
    let calls = |m: &Mock| m.calls.load(Ordering::SeqCst);
    let bridge = bridge_with(&mock, json!({"models": ["m"], "ttl": 0.3})).await;
    let seeded = chat("m", "hello", false, json!({"seed": 42}));
    assert_eq!(ask(&bridge, seeded.clone(), false).await, (200, "answer 1".into()));
    assert_eq!(ask(&bridge, seeded.clone(), false).await, (200, "answer 1".into()));
    assert_eq!(calls(&mock), 1);
    // Bypass header: the backend answers, and its answer is not stored.
    assert_eq!(ask(&bridge, seeded.clone(), true).await, (200, "answer 2".into()));
    // A model not listed, or sampling that may vary: never cached.
    let other = chat("other", "hello", false, json!({"seed": 42}));
    assert_eq!(ask(&bridge, other.clone(), false).await, (200, "answer 3".into()));
    assert_eq!(ask(&bridge, other, false).await, (200, "answer 4".into()));
    let warm = chat("m", "hello", false, json!({"temperature": 0.8}));
    assert_eq!(ask(&bridge, warm.clone(), false).await, (200, "answer 5".into()));
    assert_eq!(ask(&bridge, warm, false).await, (200, "answer 6".into()));
    // Expiry.
    assert_eq!(ask(&bridge, seeded.clone(), false).await, (200, "answer 1".into()));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(ask(&bridge, seeded, false).await, (200, "answer 7".into()));
    assert_eq!(calls(&mock), 7);
}

#[tokio::test]
async fn errors_cut_off_streams_and_tool_calls_are_not_kept() {
    let mock = mock().await;
    let calls = |m: &Mock| m.calls.load(Ordering::SeqCst);
    let bridge = bridge_with(&mock, json!({"models": ["m"], "when": "always"})).await;
    // An error is not kept: the next identical request asks again, and that answer is.
    let fail = chat("m", "fail", false, json!({}));
    assert_eq!(ask(&bridge, fail.clone(), false).await.0, 500);
    assert_eq!(ask(&bridge, fail.clone(), false).await, (200, "answer 2".into()));
    assert_eq!(ask(&bridge, fail, false).await, (200, "answer 2".into()));
    assert_eq!(calls(&mock), 2);
    // A stream the client abandons is not kept.
    let slow = chat("m", "slow", true, json!({}));
    let response = reqwest::Client::new()
        .post(format!("{}/api/chat", bridge.url))
        .json(&slow)
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    let first = futures::StreamExt::next(&mut body).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("answer 3"));
    drop(body);
    let again = reqwest::Client::new()
        .post(format!("{}/api/chat", bridge.url))
        .json(&slow)
        .send()
        .await
        .unwrap();
    let mut body = again.bytes_stream();
    let first = futures::StreamExt::next(&mut body).await.unwrap().unwrap();
    assert!(
        String::from_utf8_lossy(&first).contains("answer 4"),
        "asked the backend again"
    );
    drop(body);
    // Tool calls: not kept unless cache.tool_calls.
    let tool = chat("m", "tool", false, json!({}));
    ask(&bridge, tool.clone(), false).await;
    ask(&bridge, tool.clone(), false).await;
    assert_eq!(calls(&mock), 6);
    let with_tools = bridge_with(&mock, json!({"models": ["m"], "when": "always", "tool_calls": true})).await;
    for _ in 0..2 {
        let (status, _, body) = post(&format!("{}/api/chat", with_tools.url), tool.clone()).await;
        assert_eq!(status, 200);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["message"]["tool_calls"][0]["function"]["name"], "get_weather");
    }
    assert_eq!(calls(&mock), 7);
}
