//! The streaming smoke guard of the performance issue: a streamed answer through
//! ollabridge arrives within direct + 5 ms (a stream held back by Nagle's algorithm, ~40 ms
//! per stall, would not), and its NDJSON lines carry exactly the SSE chunks' text, one
//! line per chunk. Against a paced mock OpenAI backend (every token its own write, 2 ms
//! apart, as a real model sends them), medians of 20 requests each way, interleaved.
//! (To see the times of each request: `GUARD_DEBUG=1 cargo test --test stream_guard -- --nocapture`.)
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

mod common;

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use common::Bridge;
use futures::StreamExt;
use serde_json::{Value, json};

/// The tokens every answer streams: plain text, JSON escapes, multi-byte characters.
const TOKENS: &[&str] = &[
    "Hello",
    ",",
    " world",
    "!",
    " \"quoted\"",
    " back\\slash",
    "\n",
    "new line",
    "\t",
    " é",
    " 日本",
    " 🦀",
    " {\"not\": \"json\"}",
    " <think>",
    " end",
    ".",
];
const PACE: Duration = Duration::from_millis(2);
const RUNS: usize = 20;
const ALLOWED: Duration = Duration::from_millis(5);

fn event(value: &Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

fn chunk(delta: Value, finish_reason: Value) -> Value {
    json!({"id": "chatcmpl-guard", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": "guard",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]})
}

/// llama-server's shape: role, one event per token (each after `PACE`), finish, usage, `[DONE]`.
async fn completions() -> Response {
    let head = stream_of(vec![event(&chunk(
        json!({"role": "assistant", "content": null}),
        Value::Null,
    ))]);
    // On a fixed schedule (token i at i × PACE), so a busy moment delays one token, not all
    // that follow: the mock shares the runtime with ollabridge and the client.
    let start = tokio::time::Instant::now();
    let tokens = futures::stream::iter(TOKENS.iter().enumerate()).then(move |(i, token)| async move {
        tokio::time::sleep_until(start + PACE * (i as u32 + 1)).await;
        event(&chunk(json!({"content": token}), Value::Null))
    });
    let usage = json!({"id": "chatcmpl-guard", "object": "chat.completion.chunk", "choices": [],
        "usage": {"prompt_tokens": 5, "completion_tokens": TOKENS.len(), "total_tokens": 5 + TOKENS.len()}});
    let tail = stream_of(vec![
        event(&chunk(json!({}), "stop".into())),
        event(&usage),
        Bytes::from_static(b"data: [DONE]\n\n"),
    ]);
    let body = head.chain(tokens).chain(tail).map(Ok::<_, Infallible>);
    ([(header::CONTENT_TYPE, "text/event-stream")], Body::from_stream(body)).into_response()
}

fn stream_of(events: Vec<Bytes>) -> futures::stream::Iter<std::vec::IntoIter<Bytes>> {
    futures::stream::iter(events)
}

async fn mock() -> String {
    let app = Router::new().route("/v1/chat/completions", post(completions)).route(
        "/v1/models",
        get(|| async { axum::Json(json!({"object": "list", "data": [{"id": "guard", "object": "model"}]})) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind mock");
    let url = format!("http://{}", listener.local_addr().expect("mock addr"));
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move { axum::serve(listener, app).await.expect("mock server") });
    url
}

/// Reads a streamed body; returns the time its last byte came and the texts it carried,
/// split by `texts` from the whole body.
async fn timed(request: reqwest::RequestBuilder, texts: fn(&str) -> Vec<String>) -> (Duration, Vec<String>) {
    let start = Instant::now();
    let response = request.send().await.expect("request");
    assert_eq!(response.status(), 200);
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    let mut first = None;
    while let Some(piece) = stream.next().await {
        first.get_or_insert_with(|| start.elapsed());
        body.extend_from_slice(&piece.expect("body"));
    }
    let elapsed = start.elapsed();
    if std::env::var_os("GUARD_DEBUG").is_some() {
        eprintln!("first {:?} total {:?}", first.unwrap_or_default(), elapsed);
    }
    (elapsed, texts(std::str::from_utf8(&body).expect("utf-8 body")))
}

/// The content of each SSE event that has some.
fn sse_texts(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|event| event.strip_prefix("data: "))
        .filter(|data| *data != "[DONE]")
        .map(|data| serde_json::from_str::<Value>(data).expect("SSE JSON"))
        .filter_map(|v| v["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
        .collect()
}

/// The content of each NDJSON line before the final one, which must be `done` and empty.
fn ndjson_texts(body: &str) -> Vec<String> {
    let mut lines = common::ndjson(body);
    let last = lines.pop().expect("a final line");
    assert_eq!(last["done"], true, "{last}");
    assert_eq!(last["message"]["content"], "", "{last}");
    lines
        .iter()
        .map(|line| {
            assert_eq!(line["done"], false, "{line}");
            line["message"]["content"].as_str().expect("content").to_owned()
        })
        .collect()
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_answer_through_ollabridge_is_within_direct_plus_5ms_and_carries_the_same_chunks() {
    let backend = mock().await;
    let mut bridge = Bridge::openai(&backend, json!({"guard": "guard"})).await;
    let http = reqwest::Client::builder().tcp_nodelay(true).build().expect("client");
    let direct = || {
        http.post(format!("{backend}/v1/chat/completions")).json(&json!({
            "model": "guard", "stream": true, "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "hi"}],
        }))
    };
    let through = || {
        http.post(format!("{}/api/chat", bridge.url))
            .json(&json!({"model": "guard", "messages": [{"role": "user", "content": "hi"}]}))
    };
    let expected: Vec<String> = TOKENS.iter().map(|t| (*t).to_owned()).collect();
    // Warm both connections up.
    timed(direct(), sse_texts).await;
    timed(through(), ndjson_texts).await;
    let (mut direct_times, mut through_times) = (Vec::new(), Vec::new());
    for run in 0..RUNS {
        // Alternate the order so drift on a busy machine falls on both sides alike.
        for side in if run % 2 == 0 { [0, 1] } else { [1, 0] } {
            if side == 0 {
                let (time, texts) = timed(direct(), sse_texts).await;
                assert_eq!(texts, expected, "the mock's own stream");
                direct_times.push(time);
            } else {
                let (time, texts) = timed(through(), ndjson_texts).await;
                assert_eq!(texts, expected, "one NDJSON line per SSE chunk, with its exact text");
                through_times.push(time);
            }
        }
    }
    let (direct, through) = (median(direct_times), median(through_times));
    eprintln!("streamed answer, median of {RUNS}: direct {direct:?}, through ollabridge {through:?}");
    assert!(
        through <= direct + ALLOWED,
        "through ollabridge {through:?} > direct {direct:?} + {ALLOWED:?}: is a stream held back (Nagle, buffering)?"
    );
    let rows = bridge.rows().await;
    assert_eq!(
        rows.len(),
        RUNS + 1,
        "one log row per request through ollabridge (and the warm-up)"
    );
    assert!(rows.iter().all(|r| r["error"].is_null() && r["status_code"] == 200));
}
