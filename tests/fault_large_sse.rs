//! One large SSE event from an OpenAI backend. An 8 MB event is read in time linear in its
//! size (it took seconds to minutes when every piece rescanned the event so far) while
//! other requests are served; an event over the 16 MiB limit, or a line that never ends,
//! ends the answer with an error naming the limit, on `/api/chat` and on the `/v1`
//! pass-through, and the log row holds that error.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

mod common;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{Uri, header};
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt;
use common::{Bridge, ndjson, post};
use serde_json::{Value, json};
use tokio::sync::Notify;

/// The bridge's limit on one event (`MAX_EVENT_BYTES`).
const LIMIT: usize = 16 << 20;
const PIECE: usize = 64 << 10;
/// Hang detection only: the streamed 8 MB answer takes 1.5 s in a debug build; it took
/// 50 s when every piece rescanned the event so far.
const BOUND: Duration = Duration::from_secs(20);
const LIMIT_ERROR: &str = "backend sent an invalid response: an SSE event longer than the limit of 16777216 bytes";

// ---------------------------------------------------------------------------------
// The mock backend
// ---------------------------------------------------------------------------------

#[derive(Clone)]
enum Piece {
    /// Bytes sent as one HTTP chunk.
    Data(Bytes),
    /// Signals `reached`, then waits for `resume` before the next piece.
    Pause { reached: Arc<Notify>, resume: Arc<Notify> },
    /// Never sends anything again, keeping the connection open.
    Hang,
}

enum Reply {
    Stream(Vec<Piece>),
    Json(Value),
}

type Script = dyn Fn(&Value) -> Reply + Send + Sync;

struct Shared {
    script: Box<Script>,
    /// Signalled when a streamed body is dropped before its end (the bridge hung up).
    body_dropped: Notify,
}

struct Mock {
    url: String,
    shared: Arc<Shared>,
}

impl Mock {
    /// A mock whose completion routes answer `script(request body)`.
    async fn start(script: impl Fn(&Value) -> Reply + Send + Sync + 'static) -> Mock {
        let shared = Arc::new(Shared {
            script: Box::new(script),
            body_dropped: Notify::new(),
        });
        let app = Router::new().fallback(mock_handler).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind mock");
        let url = format!("http://{}", listener.local_addr().expect("mock addr"));
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        tokio::spawn(async move { axum::serve(listener, app).await.expect("mock server") });
        Mock { url, shared }
    }

    async fn body_dropped(&self) {
        tokio::time::timeout(Duration::from_secs(5), self.shared.body_dropped.notified())
            .await
            .expect("the backend stream was still open 5 s after the answer ended");
    }
}

/// Signals `body_dropped` unless the body was sent to its end.
struct DropWatch {
    shared: Arc<Shared>,
    armed: bool,
}

impl DropWatch {
    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for DropWatch {
    fn drop(&mut self) {
        if self.armed {
            self.shared.body_dropped.notify_one();
        }
    }
}

async fn mock_handler(State(shared): State<Arc<Shared>>, uri: Uri, body: Bytes) -> Response {
    if uri.path() == "/v1/models" {
        return axum::Json(json!({"object": "list", "data": [
            {"id": "backend-model", "object": "model", "owned_by": "llamacpp"},
        ]}))
        .into_response();
    }
    if uri.path() != "/v1/chat/completions" {
        return axum::http::StatusCode::NOT_FOUND.into_response();
    }
    let request: Value = serde_json::from_slice(&body).expect("JSON request");
    match (shared.script)(&request) {
        Reply::Json(body) => axum::Json(body).into_response(),
        Reply::Stream(pieces) => {
            let watch = DropWatch { shared, armed: true };
            let body = futures::stream::unfold((pieces.into_iter(), watch), |(mut pieces, mut watch)| async move {
                loop {
                    match pieces.next() {
                        Some(Piece::Data(bytes)) => return Some((Ok::<_, Infallible>(bytes), (pieces, watch))),
                        Some(Piece::Pause { reached, resume }) => {
                            reached.notify_one();
                            resume.notified().await;
                        }
                        Some(Piece::Hang) => std::future::pending().await,
                        None => {
                            watch.disarm();
                            return None;
                        }
                    }
                }
            });
            ([(header::CONTENT_TYPE, "text/event-stream")], Body::from_stream(body)).into_response()
        }
    }
}

// ---------------------------------------------------------------------------------
// Upstream answers, llama-server style
// ---------------------------------------------------------------------------------

fn delta(delta: Value) -> Value {
    json!({
        "id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": "backend-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": null}],
    })
}

fn text(content: &str) -> Value {
    delta(json!({"content": content}))
}

fn finish() -> Value {
    json!({
        "id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": "backend-model",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11},
        "timings": {"prompt_n": 10, "prompt_ms": 1.5, "predicted_n": 1, "predicted_ms": 3.25},
    })
}

fn sse(events: &[Value]) -> String {
    events.iter().map(|e| format!("data: {e}\n\n")).collect()
}

const DONE: &str = "data: [DONE]\n\n";

/// The text cut into pieces of `n` bytes, regardless of lines.
fn every(n: usize, text: &[u8]) -> Vec<Piece> {
    text.chunks(n).map(|c| Piece::Data(Bytes::copy_from_slice(c))).collect()
}

/// `len` bytes of readable text without newlines.
fn filler(len: usize) -> String {
    "All work and no play makes Jack a dull boy. "
        .chars()
        .cycle()
        .take(len)
        .collect()
}

fn completion(content: &str) -> Value {
    json!({
        "id": "chatcmpl-mock", "object": "chat.completion", "created": 1_700_000_000, "model": "backend-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19},
        "timings": {"prompt_n": 12, "prompt_ms": 1.5, "predicted_n": 7, "predicted_ms": 3.25},
    })
}

// ---------------------------------------------------------------------------------
// Talking to the bridge, reading its rows
// ---------------------------------------------------------------------------------

async fn bridge(mock: &Mock) -> Bridge {
    Bridge::openai(&mock.url, json!({"alias": "backend-model"})).await
}

fn ask(content: &str, stream: bool) -> Value {
    json!({"model": "alias", "stream": stream, "messages": [{"role": "user", "content": content}]})
}

/// POSTs to the bridge, failing if the answer takes longer than [`BOUND`].
async fn within_bound(bridge: &Bridge, path: &str, body: Value) -> (u16, String) {
    let (status, _, body) = tokio::time::timeout(BOUND, post(&format!("{}{path}", bridge.url), body))
        .await
        .unwrap_or_else(|_| panic!("{path} did not answer within {BOUND:?}"));
    (status, body)
}

fn openai_error() -> Value {
    json!({"error": {"message": LIMIT_ERROR, "type": "api_error", "param": null, "code": null}})
}

fn parse(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|_| body.into())
}

/// `created_at` and `total_duration` depend on the clock: checked for shape, then fixed.
fn settle(mut line: Value) -> Value {
    if let Some(at) = line.get_mut("created_at") {
        assert!(at.as_str().is_some_and(|s| s.ends_with('Z')), "created_at {at}");
        *at = "<time>".into();
    }
    if let Some(total) = line.get_mut("total_duration") {
        assert!(total.is_u64(), "total_duration {total}");
        *total = "<measured>".into();
    }
    line
}

fn say(content: &str) -> Value {
    json!({"model": "alias", "created_at": "<time>",
        "message": {"role": "assistant", "content": content}, "done": false})
}

/// The final `/api/chat` object, `content` in it when the answer came whole.
fn done(content: &str, prompt: u64, completion: u64) -> Value {
    json!({
        "model": "alias", "created_at": "<time>", "message": {"role": "assistant", "content": content}, "done": true,
        "done_reason": "stop", "total_duration": "<measured>", "load_duration": 0,
        "prompt_eval_count": prompt, "prompt_eval_duration": 1_500_000,
        "eval_count": completion, "eval_duration": 3_250_000,
    })
}

const ROW_FIELDS: &[&str] = &[
    "endpoint",
    "stream",
    "status_code",
    "error",
    "response",
    "done_reason",
    "prompt_tokens",
    "completion_tokens",
];

fn project(row: &Value) -> Value {
    ROW_FIELDS.iter().map(|k| ((*k).to_owned(), row[*k].clone())).collect()
}

fn row(endpoint: &str, changes: Value) -> Value {
    let mut expected = json!({
        "endpoint": endpoint, "stream": 1, "status_code": 200, "error": null, "response": "",
        "done_reason": "stop", "prompt_tokens": null, "completion_tokens": null,
    });
    for (k, v) in changes.as_object().expect("changes object") {
        assert!(ROW_FIELDS.contains(&k.as_str()), "unknown row field {k}");
        expected[k] = v.clone();
    }
    expected
}

/// Compares without printing megabytes on a mismatch: each value with long strings cut.
fn assert_same(actual: &Value, expected: &Value, what: &str) {
    fn short(v: &Value) -> Value {
        match v {
            Value::String(s) if s.len() > 200 => {
                let tail = s.char_indices().rev().nth(60).map_or(0, |(i, _)| i);
                format!("{} … {} ({} bytes)", &s[..60], &s[tail..], s.len()).into()
            }
            Value::Array(a) => a.iter().map(short).collect(),
            Value::Object(o) => o.iter().map(|(k, v)| (k.clone(), short(v))).collect(),
            v => v.clone(),
        }
    }
    assert!(
        actual == expected,
        "{what}:\n  actual   {}\n  expected {}",
        short(actual),
        short(expected)
    );
}

// ---------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------

/// An 8 MB event in 64 KiB pieces is answered whole, streamed and not, in time. `/health`
/// answers throughout, and while the event is half read (the mock holds its second half
/// until it has).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_8_mb_event_is_answered_while_health_answers() {
    let big = filler(8_000_000);
    let (reached, resume) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let pause = Piece::Pause {
        reached: reached.clone(),
        resume: resume.clone(),
    };
    let content = big.clone();
    let mock = Mock::start(move |request| {
        if request["stream"] == false {
            return Reply::Json(completion(&content));
        }
        let mut pieces = every(PIECE, sse(&[text(&content)]).as_bytes());
        pieces.insert(pieces.len() / 2, pause.clone());
        pieces.push(Piece::Data(Bytes::from(sse(&[finish()]) + DONE)));
        Reply::Stream(pieces)
    })
    .await;
    // Room in the log for the whole answer (the default keeps its first 1 MiB).
    let mut bridge = Bridge::start(json!({
        "backend": {"type": "openai", "endpoint": mock.url, "timeout": 30},
        "models": {"mappings": {"alias": "backend-model"}},
        "database": {"max_body_bytes": 16 << 20},
    }))
    .await;
    let health_url = format!("{}/health", bridge.url);
    let health = move || {
        let url = health_url.clone();
        async move {
            let answer = tokio::time::timeout(Duration::from_secs(5), reqwest::get(&url))
                .await
                .expect("/health answered within 5 s")
                .expect("/health");
            assert_eq!(answer.status(), 200);
            assert_eq!(answer.text().await.expect("body"), r#"{"status":"ok"}"#);
        }
    };
    let poll = health.clone();
    let polling = tokio::spawn(async move {
        loop {
            poll().await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });

    let url = bridge.url.clone();
    let chat =
        tokio::spawn(
            async move { tokio::time::timeout(BOUND, post(&format!("{url}/api/chat"), ask("Hi", true))).await },
        );
    tokio::time::timeout(BOUND, reached.notified())
        .await
        .expect("the mock sent half the event");
    health().await;
    resume.notify_one();
    let (status, _, body) = chat.await.unwrap().expect("/api/chat answered within the bound");
    assert_eq!(status, 200);
    let lines: Vec<Value> = ndjson(&body).into_iter().map(settle).collect();
    assert_same(&json!(lines), &json!([say(&big), done("", 10, 1)]), "streamed answer");

    let (status, body) = within_bound(&bridge, "/api/chat", ask("Hi", false)).await;
    assert_eq!(status, 200);
    assert_same(
        &settle(serde_json::from_str(&body).unwrap()),
        &done(&big, 12, 7),
        "whole answer",
    );
    assert!(!polling.is_finished(), "/health failed: {:?}", polling.await);
    polling.abort();

    let rows: Vec<Value> = bridge.rows().await.iter().map(project).collect();
    let expected = [
        row(
            "/api/chat",
            json!({"response": big, "prompt_tokens": 10, "completion_tokens": 1}),
        ),
        row(
            "/api/chat",
            json!({"response": big, "prompt_tokens": 12, "completion_tokens": 7, "stream": 0}),
        ),
    ];
    assert_same(&json!(rows), &json!(expected), "rows");
}

/// An event over the limit (in 1 MiB pieces) before any output is a 502 naming the limit;
/// after output, the last NDJSON line. The rows hold the error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_over_the_limit_ends_an_api_chat_answer() {
    let mock = Mock::start(|request| {
        let over = text(&filler(LIMIT + (1 << 10)));
        let events = match request["messages"][0]["content"].as_str() {
            Some("late") => vec![text("Once"), over, finish()],
            _ => vec![over, finish()],
        };
        Reply::Stream(every(1 << 20, (sse(&events) + DONE).as_bytes()))
    })
    .await;
    let mut bridge = bridge(&mock).await;

    let (status, body) = within_bound(&bridge, "/api/chat", ask("Hi", true)).await;
    assert_same(
        &json!([status, parse(&body)]),
        &json!([502, {"error": LIMIT_ERROR}]),
        "early",
    );

    let (status, body) = within_bound(&bridge, "/api/chat", ask("late", true)).await;
    assert_eq!(status, 200);
    let lines: Vec<Value> = ndjson(&body).into_iter().map(settle).collect();
    assert_same(&json!(lines), &json!([say("Once"), {"error": LIMIT_ERROR}]), "late");

    let rows: Vec<Value> = bridge.rows().await.iter().map(project).collect();
    let expected = [
        row(
            "/api/chat",
            json!({"status_code": 502, "error": LIMIT_ERROR, "response": null, "done_reason": null}),
        ),
        row(
            "/api/chat",
            json!({"error": LIMIT_ERROR, "response": "Once", "done_reason": null}),
        ),
    ];
    assert_same(&json!(rows), &json!(expected), "rows");
}

/// On the `/v1` pass-through, an event over the limit before any output is a 502 in
/// OpenAI's shape, logged with the same error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_over_the_limit_ends_a_v1_answer() {
    let mock = Mock::start(|_| {
        let events = sse(&[text(&filler(LIMIT + (1 << 10))), finish()]) + DONE;
        Reply::Stream(every(1 << 20, events.as_bytes()))
    })
    .await;
    let mut bridge = bridge(&mock).await;

    let (status, body) = within_bound(&bridge, "/v1/chat/completions", ask("Hi", true)).await;
    assert_same(&json!([status, parse(&body)]), &json!([502, openai_error()]), "answer");

    let rows: Vec<Value> = bridge.rows().await.iter().map(project).collect();
    let expected = row(
        "/v1/chat/completions",
        json!({"status_code": 502, "error": LIMIT_ERROR, "response": null, "done_reason": null}),
    );
    assert_same(&json!(rows), &json!([expected]), "rows");
}

/// A line that never ends, after output on `/v1`, stops at the limit (the mock sends 1 MiB
/// more, then holds the connection open) with an error event; the backend stream is
/// closed and the row holds the error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_line_on_v1_stops_at_the_limit() {
    let mock = Mock::start(|_| {
        let mut pieces = every(1 << 20, (sse(&[text("Once")]) + "data: " + &filler(LIMIT)).as_bytes());
        pieces.push(Piece::Hang);
        Reply::Stream(pieces)
    })
    .await;
    let mut bridge = bridge(&mock).await;

    let (status, body) = within_bound(&bridge, "/v1/chat/completions", ask("Hi", true)).await;
    assert_eq!(status, 200);
    let expected = sse(&[text("Once")]) + &format!("data: {}\n\n", openai_error());
    assert_same(&json!(body), &json!(expected), "answer");
    mock.body_dropped().await;

    let rows: Vec<Value> = bridge.rows().await.iter().map(project).collect();
    let expected = row(
        "/v1/chat/completions",
        json!({"error": LIMIT_ERROR, "response": "Once", "done_reason": null}),
    );
    assert_same(&json!(rows), &json!([expected]), "rows");
}
