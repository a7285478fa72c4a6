//! Fast in-process integration tests: ollabridge in front of a scripted mock
//! OpenAI-compatible backend, for the failure and edge cases a real llama-server
//! cannot be made to produce on demand.
//!
//! Each test starts its own mock (an axum server on 127.0.0.1:0 whose answer is a
//! closure of the upstream request) and its own bridge, talks to the bridge over HTTP,
//! then checks three things exactly: what the client got, what the mock was sent, and
//! the one SQLite log row the exchange left.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

mod common;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt;
use common::{Bridge, ndjson, post};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------
// The mock backend
// ---------------------------------------------------------------------------------

/// One step of a scripted response body.
#[derive(Debug, Clone)]
enum Piece {
    /// Bytes sent as one HTTP chunk (hyper hands each chunk to the reader separately,
    /// so a split here is a split the bridge's SSE parser really sees).
    Data(Bytes),
    /// A pause before the next piece.
    Wait(Duration),
    /// Never send anything again, but keep the connection open.
    Hang,
}

/// What the mock answers to one `/v1/chat/completions` or `/v1/completions` request.
#[derive(Debug, Clone)]
enum Reply {
    /// 200 `text/event-stream` made of these pieces.
    Stream(Vec<Piece>),
    /// A JSON body with this status.
    Json(u16, Value),
    /// A `text/plain` body with this status.
    Text(u16, &'static str),
    /// Waits this long before sending any header, then answers.
    After(Duration, Box<Reply>),
}

/// A request the mock received: its path and its JSON body.
#[derive(Debug, Clone)]
struct Upstream {
    path: String,
    body: Value,
}

type Script = dyn Fn(&Upstream) -> Reply + Send + Sync;

struct Shared {
    script: Box<Script>,
    /// What `GET /v1/models` answers.
    models: Value,
    /// What `GET /props` answers (llama.cpp's model description); 404 when `None`.
    props: Option<Value>,
    /// Completion requests (chat and text), not counting model lists.
    hits: AtomicUsize,
    model_lists: AtomicUsize,
    requests: Mutex<Vec<Upstream>>,
    /// Response bodies dropped before their last piece (the bridge hung up).
    bodies_dropped: AtomicUsize,
    /// Handlers dropped while still waiting to answer (the bridge hung up earlier).
    handlers_dropped: AtomicUsize,
}

struct Mock {
    url: String,
    shared: Arc<Shared>,
}

/// The models the mock's `/v1/models` offers, llama-server style.
fn models_list() -> Value {
    json!({
        "object": "list",
        "data": [
            {"id": "backend-model", "object": "model", "owned_by": "llamacpp",
                "meta": {"n_ctx": 4096, "n_ctx_train": 32768}},
            {"id": "Other-Model", "object": "model", "owned_by": "llamacpp"},
        ],
    })
}

impl Mock {
    /// Starts a mock whose completion routes answer with `script(request)`.
    async fn start(script: impl Fn(&Upstream) -> Reply + Send + Sync + 'static) -> Mock {
        Mock::serving(models_list(), None, script).await
    }

    /// A mock with its own `/v1/models` list and `/props` answer (`None`: 404, as
    /// servers other than llama.cpp answer).
    async fn serving(
        models: Value,
        props: Option<Value>,
        script: impl Fn(&Upstream) -> Reply + Send + Sync + 'static,
    ) -> Mock {
        let shared = Arc::new(Shared {
            script: Box::new(script),
            models,
            props,
            hits: AtomicUsize::new(0),
            model_lists: AtomicUsize::new(0),
            requests: Mutex::new(Vec::new()),
            bodies_dropped: AtomicUsize::new(0),
            handlers_dropped: AtomicUsize::new(0),
        });
        let app = Router::new().fallback(mock_handler).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind mock");
        let url = format!("http://{}", listener.local_addr().expect("mock addr"));
        // Small SSE pieces must not wait for Nagle's algorithm.
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        tokio::spawn(async move { axum::serve(listener, app).await.expect("mock server") });
        Mock { url, shared }
    }

    /// A mock that streams the same pieces for every request.
    async fn streaming(pieces: Vec<Piece>) -> Mock {
        Mock::start(move |_| Reply::Stream(pieces.clone())).await
    }

    fn hits(&self) -> usize {
        self.shared.hits.load(Ordering::SeqCst)
    }

    fn requests(&self) -> Vec<Upstream> {
        self.shared.requests.lock().expect("requests").clone()
    }

    /// The one completion request the mock got.
    fn only_request(&self) -> Upstream {
        let requests = self.requests();
        assert_eq!(
            requests.len(),
            1,
            "expected exactly one upstream request: {requests:#?}"
        );
        requests.into_iter().next().expect("one request")
    }

    /// Waits up to `limit` for `counter` to reach 1 or more; returns whether it did.
    async fn saw(&self, counter: fn(&Shared) -> &AtomicUsize, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if counter(&self.shared).load(Ordering::SeqCst) > 0 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        false
    }
}

/// Counts a handler (or body) dropped before it finished; disarmed when it finishes.
struct DropWatch {
    shared: Arc<Shared>,
    counter: fn(&Shared) -> &AtomicUsize,
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
            (self.counter)(&self.shared).fetch_add(1, Ordering::SeqCst);
        }
    }
}

async fn mock_handler(State(shared): State<Arc<Shared>>, uri: Uri, body: Bytes) -> Response {
    if uri.path() == "/v1/models" {
        shared.model_lists.fetch_add(1, Ordering::SeqCst);
        return axum::Json(shared.models.clone()).into_response();
    }
    if uri.path() == "/props" {
        return match &shared.props {
            Some(props) => axum::Json(props.clone()).into_response(),
            None => (
                StatusCode::NOT_FOUND,
                axum::Json(json!({"error": {"code": 404, "message": "File Not Found", "type": "not_found_error"}})),
            )
                .into_response(),
        };
    }
    let request = Upstream {
        path: uri.path().to_owned(),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    };
    shared.hits.fetch_add(1, Ordering::SeqCst);
    shared.requests.lock().expect("requests").push(request.clone());
    let mut reply = (shared.script)(&request);
    let mut watch = DropWatch {
        shared: shared.clone(),
        counter: |s| &s.handlers_dropped,
        armed: true,
    };
    while let Reply::After(delay, inner) = reply {
        tokio::time::sleep(delay).await;
        reply = *inner;
    }
    watch.disarm();
    match reply {
        Reply::Json(status, body) => (status_code(status), axum::Json(body)).into_response(),
        Reply::Text(status, text) => (status_code(status), text).into_response(),
        Reply::Stream(pieces) => {
            let watch = DropWatch {
                shared,
                counter: |s| &s.bodies_dropped,
                armed: true,
            };
            let body = futures::stream::unfold((pieces.into_iter(), watch), |(mut pieces, mut watch)| async move {
                loop {
                    match pieces.next() {
                        Some(Piece::Data(bytes)) => return Some((Ok::<_, Infallible>(bytes), (pieces, watch))),
                        Some(Piece::Wait(delay)) => tokio::time::sleep(delay).await,
                        Some(Piece::Hang) => std::future::pending::<()>().await,
                        None => {
                            watch.disarm();
                            return None;
                        }
                    }
                }
            });
            ([(header::CONTENT_TYPE, "text/event-stream")], Body::from_stream(body)).into_response()
        }
        Reply::After(..) => unreachable!("unwrapped above"),
    }
}

fn status_code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).expect("valid status")
}

// ---------------------------------------------------------------------------------
// Building upstream answers
// ---------------------------------------------------------------------------------

/// A `chat.completion.chunk` with this delta, llama-server style.
fn delta(delta: Value) -> Value {
    json!({
        "id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": "backend-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": null}],
    })
}

/// The role-only first chunk every llama-server stream starts with.
fn role() -> Value {
    delta(json!({"role": "assistant", "content": null}))
}

fn text(content: &str) -> Value {
    delta(json!({"content": content}))
}

fn finish(reason: &str) -> Value {
    json!({
        "id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": "backend-model",
        "choices": [{"index": 0, "delta": {}, "finish_reason": reason}],
    })
}

/// llama-server's last chunk: no choices, `usage` and `timings` (ms).
fn usage(prompt: u64, completion: u64) -> Value {
    json!({
        "id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": "backend-model",
        "choices": [],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
        "timings": {"prompt_n": prompt, "prompt_ms": 1.5, "predicted_n": completion, "predicted_ms": 3.25},
    })
}

/// One streamed tool-call fragment.
fn call_fragment(fragment: Value) -> Value {
    delta(json!({"tool_calls": [fragment]}))
}

/// SSE text: one `data:` event per value, LF line endings.
fn sse(events: &[Value]) -> String {
    events.iter().map(|e| format!("data: {e}\n\n")).collect()
}

const DONE: &str = "data: [DONE]\n\n";

/// The whole text as one piece.
fn whole(text: impl Into<String>) -> Vec<Piece> {
    vec![Piece::Data(Bytes::from(text.into()))]
}

/// The text cut into pieces of `n` bytes, regardless of lines or characters.
fn every(n: usize, text: impl AsRef<[u8]>) -> Vec<Piece> {
    text.as_ref()
        .chunks(n)
        .map(|c| Piece::Data(Bytes::copy_from_slice(c)))
        .collect()
}

/// A complete, well-formed streamed chat answer saying `parts`.
fn said(parts: &[&str]) -> Vec<Piece> {
    let mut events = vec![role()];
    events.extend(parts.iter().map(|p| text(p)));
    events.extend([finish("stop"), usage(10, parts.len() as u64)]);
    whole(sse(&events) + DONE)
}

/// A non-streamed `chat.completion` body.
fn completion(message: Value, finish_reason: &str) -> Value {
    json!({
        "id": "chatcmpl-mock", "object": "chat.completion", "created": 1_700_000_000, "model": "backend-model",
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19},
        "timings": {"prompt_n": 12, "prompt_ms": 1.5, "predicted_n": 7, "predicted_ms": 3.25},
    })
}

// ---------------------------------------------------------------------------------
// Talking to the bridge and reading what it did
// ---------------------------------------------------------------------------------

/// The bridge in front of `mock`, with client name `alias` mapped to `backend-model`.
async fn bridge(mock: &Mock) -> Bridge {
    Bridge::openai(&mock.url, json!({"alias": "backend-model"})).await
}

async fn chat(bridge: &Bridge, body: Value) -> (u16, String, String) {
    post(&format!("{}/api/chat", bridge.url), body).await
}

async fn generate(bridge: &Bridge, body: Value) -> (u16, String, String) {
    post(&format!("{}/api/generate", bridge.url), body).await
}

async fn post_raw(url: &str, body: &'static str) -> (u16, String) {
    let r = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    (status, r.text().await.expect("body"))
}

fn parse(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"))
}

/// Response fields that depend on the clock, checked for shape then replaced, so
/// whole objects can be compared exactly: `created_at` must be RFC 3339 in UTC with
/// `Z`, and each of `measured` must be a non-negative integer (nanoseconds).
fn settle(mut v: Value, measured: &[&str]) -> Value {
    let obj = v.as_object_mut().unwrap_or_else(|| panic!("expected an object"));
    if let Some(at) = obj.get_mut("created_at") {
        let s = at.as_str().expect("created_at is a string");
        assert!(
            s.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(s).is_ok(),
            "created_at is not RFC 3339 UTC: {s:?}"
        );
        *at = "<time>".into();
    }
    for key in measured {
        if let Some(d) = obj.get_mut(*key) {
            assert!(d.is_u64(), "{key} must be an integer: {d}");
            *d = "<measured>".into();
        }
    }
    v
}

/// Only `total_duration` is measured when the backend sent `timings`.
const TOTAL: &[&str] = &["total_duration"];
/// Without `timings`, all three durations are measured by the bridge.
const ALL_MEASURED: &[&str] = &["total_duration", "prompt_eval_duration", "eval_duration"];

/// NDJSON body → settled objects.
fn lines(body: &str, measured: &[&str]) -> Vec<Value> {
    ndjson(body).into_iter().map(|v| settle(v, measured)).collect()
}

/// A streamed `/api/chat` content line for client model `alias`.
fn say(content: &str) -> Value {
    json!({"model": "alias", "created_at": "<time>",
        "message": {"role": "assistant", "content": content}, "done": false})
}

fn think(thinking: &str) -> Value {
    json!({"model": "alias", "created_at": "<time>",
        "message": {"role": "assistant", "content": "", "thinking": thinking}, "done": false})
}

/// The final `/api/chat` line when the backend reported `usage(prompt, completion)`.
fn done_line(prompt: u64, completion: u64) -> Value {
    json!({
        "model": "alias", "created_at": "<time>", "message": {"role": "assistant", "content": ""}, "done": true,
        "done_reason": "stop", "total_duration": "<measured>", "load_duration": 0,
        "prompt_eval_count": prompt, "prompt_eval_duration": 1_500_000,
        "eval_count": completion, "eval_duration": 3_250_000,
    })
}

/// The final line when the backend reported nothing: counts fall back to 0 and the
/// number of output chunks, durations to the bridge's own clock.
fn measured_done_line(output_chunks: u64) -> Value {
    json!({
        "model": "alias", "created_at": "<time>", "message": {"role": "assistant", "content": ""}, "done": true,
        "done_reason": "stop", "total_duration": "<measured>", "load_duration": 0,
        "prompt_eval_count": 0, "prompt_eval_duration": "<measured>",
        "eval_count": output_chunks, "eval_duration": "<measured>",
    })
}

/// The log row fields every test checks.
const ROW_FIELDS: &[&str] = &[
    "endpoint",
    "method",
    "backend_type",
    "model",
    "backend_model",
    "stream",
    "status_code",
    "error",
    "response",
    "thinking",
    "tool_calls",
    "done_reason",
    "prompt_tokens",
    "completion_tokens",
];

/// A log row projected to `ROW_FIELDS`, after checking the clock fields' shape.
fn project(row: &Value) -> Value {
    let ts = row["timestamp"].as_str().expect("timestamp");
    assert!(
        chrono::NaiveDateTime::parse_from_str(ts, "%Y-%m-%d %H:%M:%S%.3f").is_ok(),
        "timestamp {ts:?}"
    );
    assert!(row["latency_ms"].is_u64(), "latency_ms {}", row["latency_ms"]);
    ROW_FIELDS.iter().map(|k| ((*k).to_owned(), row[*k].clone())).collect()
}

/// The exchange's single log row, projected.
fn only_row(rows: &[Value]) -> Value {
    assert_eq!(rows.len(), 1, "expected exactly one log row: {rows:#?}");
    project(&rows[0])
}

/// The expected row: a successful streamed `/api/chat` for `alias`, with `changes` applied.
fn row(changes: Value) -> Value {
    let mut expected = json!({
        "endpoint": "/api/chat", "method": "POST", "backend_type": "openai",
        "model": "alias", "backend_model": "backend-model", "stream": 1, "status_code": 200,
        "error": null, "response": "", "thinking": null, "tool_calls": null,
        "done_reason": "stop", "prompt_tokens": null, "completion_tokens": null,
    });
    for (k, v) in changes.as_object().expect("changes object") {
        assert!(ROW_FIELDS.contains(&k.as_str()), "unknown row field {k}");
        expected[k] = v.clone();
    }
    expected
}

fn hi() -> Value {
    json!([{"role": "user", "content": "Hi"}])
}

/// Checks an id has Ollama's shape: `call_` and 8 lowercase alphanumerics.
fn assert_ollama_call_id(id: &str) {
    let tail = id
        .strip_prefix("call_")
        .unwrap_or_else(|| panic!("id {id:?} lacks call_"));
    assert!(
        tail.len() == 8 && tail.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
        "id {id:?} is not call_ + 8 lowercase alphanumerics"
    );
}

// ---------------------------------------------------------------------------------
// 1-2. Streaming text
// ---------------------------------------------------------------------------------

/// The everyday path: every Ollama client parses these lines, so each field, the
/// content type and the integer metrics must be exactly Ollama's, and the upstream
/// request must carry the mapped model, `max_tokens` and usage reporting.
#[tokio::test]
async fn streaming_chat_happy_path() {
    let mock = Mock::streaming(said(&["Hello", " there"])).await;
    let mut bridge = bridge(&mock).await;
    let (status, content_type, body) = chat(
        &bridge,
        json!({"model": "alias", "messages": hi(),
            "options": {"num_predict": 32, "temperature": 0.5, "num_ctx": 8192}}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "application/x-ndjson");
    assert_eq!(
        lines(&body, TOTAL),
        [say("Hello"), say(" there"), done_line(10, 2)],
        "the role-only first delta, the finish chunk and the usage chunk make no lines of their own"
    );

    let upstream = mock.only_request();
    assert_eq!(upstream.path, "/v1/chat/completions");
    assert_eq!(
        upstream.body,
        json!({
            "model": "backend-model", "messages": [{"role": "user", "content": "Hi"}],
            "stream": true, "stream_options": {"include_usage": true},
            "temperature": 0.5, "max_tokens": 32,
        })
    );
    let rows = bridge.rows().await;
    assert_eq!(
        only_row(&rows),
        row(json!({"response": "Hello there", "prompt_tokens": 10, "completion_tokens": 2}))
    );
    assert_eq!(rows[0]["prompt"], json!(r#"[{"role":"user","content":"Hi"}]"#));
}

/// Networks and proxies split SSE anywhere: inside a UTF-8 character, between CR and
/// LF, inside the JSON. Keep-alive comments and CRLF are legal SSE. The text must
/// come out byte-exact, and `usage` may ride on a content chunk.
#[tokio::test]
async fn sse_split_at_every_byte_with_comments_and_crlf() {
    let mut with_usage = text("✓");
    with_usage["usage"] = json!({"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8});
    let events = [role(), text("hé"), text("llo "), with_usage, finish("stop")];
    let mut stream = String::from(": keep-alive\r\n\r\n");
    for event in &events {
        stream += &format!("data: {event}\r\n\r\n: keep-alive\r\n\r\n");
    }
    stream += "data: [DONE]\r\n\r\n";
    let mock = Mock::streaming(every(1, stream)).await;
    let mut bridge = bridge(&mock).await;
    let (status, _, body) = chat(&bridge, json!({"model": "alias", "messages": hi()})).await;
    assert_eq!(status, 200);
    let mut done = measured_done_line(3);
    done["prompt_eval_count"] = 5.into();
    assert_eq!(lines(&body, ALL_MEASURED), [say("hé"), say("llo "), say("✓"), done]);
    assert_eq!(
        only_row(&bridge.rows().await),
        row(json!({"response": "héllo ✓", "prompt_tokens": 5, "completion_tokens": 3}))
    );
}

/// A real llama-server capture (thinking model), replayed one byte per HTTP chunk:
/// thinking and content must reassemble exactly and the metrics come from its usage.
#[tokio::test]
async fn real_llama_server_capture_replayed_byte_by_byte() {
    let capture = std::fs::read(common::repo_root().join("fixtures/llama-server/think.sse")).expect("fixture");
    let mock = Mock::streaming(every(1, capture)).await;
    let mut bridge = bridge(&mock).await;
    let (status, _, body) = chat(&bridge, json!({"model": "alias", "messages": hi()})).await;
    assert_eq!(status, 200);
    let mut lines = lines(&body, TOTAL);
    let last = lines.pop().expect("final line");
    assert_eq!(
        last,
        json!({
            "model": "alias", "created_at": "<time>", "message": {"role": "assistant", "content": ""}, "done": true,
            "done_reason": "stop", "total_duration": "<measured>", "load_duration": 0,
            "prompt_eval_count": 26, "prompt_eval_duration": 1_764_000, "eval_count": 21, "eval_duration": 2_545_000,
        })
    );
    let joined = |key: &str| -> String {
        lines
            .iter()
            .map(|l| l["message"][key].as_str().unwrap_or_default())
            .collect()
    };
    assert_eq!(joined("thinking"), "The user greets me, so I greet back.\n");
    assert_eq!(joined("content"), "Hello from the tiny thinking model.");
    assert_eq!(lines.len(), 17, "one line per reasoning or content token");
    assert!(lines.iter().all(|l| l["done"] == false));
    assert_eq!(
        only_row(&bridge.rows().await),
        row(json!({
            "response": "Hello from the tiny thinking model.", "thinking": "The user greets me, so I greet back.\n",
            "prompt_tokens": 26, "completion_tokens": 21,
        }))
    );
}

// ---------------------------------------------------------------------------------
// 3-4. Tool calls
// ---------------------------------------------------------------------------------

fn weather_tool() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])
}

/// Ollama clients only understand whole tool calls with object arguments. Fragments
/// (split again at every byte on the wire) must become one `done:false` line with
/// Ollama-shaped ids, before the final line.
#[tokio::test]
async fn streamed_tool_call_fragments_become_one_call() {
    let events = [
        role(),
        call_fragment(
            json!({"index": 0, "id": "FAC2m7U5tf5QhKxqR3GJhBzQXlgdsfmY", "type": "function",
            "function": {"name": "get_weather", "arguments": "{"}}),
        ),
        call_fragment(json!({"index": 0, "function": {"arguments": "\""}})),
        call_fragment(json!({"index": 0, "function": {"arguments": "city"}})),
        call_fragment(json!({"index": 0, "function": {"arguments": "\": \""}})),
        call_fragment(json!({"index": 0, "function": {"arguments": "Paris"}})),
        call_fragment(json!({"index": 0, "function": {"arguments": "\"}"}})),
        finish("tool_calls"),
        usage(40, 16),
    ];
    let mock = Mock::streaming(every(1, sse(&events) + DONE)).await;
    let mut bridge = bridge(&mock).await;
    let (status, _, body) = chat(
        &bridge,
        json!({"model": "alias", "messages": hi(), "tools": weather_tool()}),
    )
    .await;
    assert_eq!(status, 200);
    let call =
        json!({"id": "call_p9ahsocm", "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}}});
    assert_ollama_call_id(call["id"].as_str().expect("id"));
    let calls_line = json!({"model": "alias", "created_at": "<time>",
        "message": {"role": "assistant", "content": "", "tool_calls": [call]}, "done": false});
    assert_eq!(lines(&body, TOTAL), [calls_line, done_line(40, 16)]);
    assert_eq!(mock.only_request().body["tools"], weather_tool());
    assert_eq!(
        only_row(&bridge.rows().await),
        row(json!({
            "tool_calls": json!([call]).to_string(), "prompt_tokens": 40, "completion_tokens": 16,
        }))
    );
}

/// Parallel calls arrive interleaved by `index`; each must come out whole, in index
/// order, numbered 0 and 1, with distinct ids.
#[tokio::test]
async fn parallel_tool_calls_get_indexes_0_and_1() {
    let events = [
        role(),
        call_fragment(json!({"index": 0, "id": "Ab1Cd2Ef3Gh4Ij5Kl6", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"ci"}})),
        call_fragment(json!({"index": 1, "id": "Zy9Xw8Vu7Ts6Rq5", "type": "function",
            "function": {"name": "get_time", "arguments": "{\"zo"}})),
        call_fragment(json!({"index": 0, "function": {"arguments": "ty\": \"Paris\"}"}})),
        call_fragment(json!({"index": 1, "function": {"arguments": "ne\": \"CET\"}"}})),
        finish("tool_calls"),
        usage(40, 30),
    ];
    let mock = Mock::streaming(every(5, sse(&events) + DONE)).await;
    let mut bridge = bridge(&mock).await;
    let (status, _, body) = chat(
        &bridge,
        json!({"model": "alias", "messages": hi(), "tools": weather_tool()}),
    )
    .await;
    assert_eq!(status, 200);
    let calls = json!([
        {"id": "call_z5kk746n", "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}}},
        {"id": "call_egs14y60", "function": {"index": 1, "name": "get_time", "arguments": {"zone": "CET"}}},
    ]);
    let calls_line = json!({"model": "alias", "created_at": "<time>",
        "message": {"role": "assistant", "content": "", "tool_calls": calls}, "done": false});
    assert_eq!(lines(&body, TOTAL), [calls_line, done_line(40, 30)]);
    assert_eq!(
        only_row(&bridge.rows().await),
        row(json!({"tool_calls": calls.to_string(), "prompt_tokens": 40, "completion_tokens": 30}))
    );
}

/// vLLM names its calls `chatcmpl-tool-<uuid>`: ids that differ only after a shared
/// prefix. Parallel calls must still get distinct ids, or the client's tool results
/// cannot be told apart on the next turn.
#[tokio::test]
async fn parallel_tool_calls_with_vllm_ids_get_distinct_ids() {
    let events = [
        role(),
        call_fragment(
            json!({"index": 0, "id": "chatcmpl-tool-8c2c4b4a2f1e4a43b0b6b3a1d0c9e8f7", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}),
        ),
        call_fragment(
            json!({"index": 1, "id": "chatcmpl-tool-1f0e9d8c7b6a45f4a3b2c1d0e9f8a7b6", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}}),
        ),
        finish("tool_calls"),
    ];
    let mock = Mock::streaming(whole(sse(&events) + DONE)).await;
    let bridge = bridge(&mock).await;
    let (status, _, body) = chat(
        &bridge,
        json!({"model": "alias", "messages": hi(), "tools": weather_tool()}),
    )
    .await;
    assert_eq!(status, 200);
    let lines = lines(&body, ALL_MEASURED);
    let calls = lines[0]["message"]["tool_calls"]
        .as_array()
        .expect("tool calls")
        .clone();
    assert_eq!(calls.len(), 2);
    let (a, b) = (
        calls[0]["id"].as_str().expect("id"),
        calls[1]["id"].as_str().expect("id"),
    );
    assert_ollama_call_id(a);
    assert_ollama_call_id(b);
    assert_ne!(a, b, "two calls in one answer share an id");
}

/// Google's OpenAI-compatible endpoint streams each parallel call as one complete
/// fragment with its own id but without `index`. A new id is a new call: merging
/// them would glue two argument objects into invalid JSON and lose both calls.
#[tokio::test]
async fn parallel_tool_calls_without_index_stay_separate() {
    let events = [
        role(),
        call_fragment(json!({"id": "function-call-1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}})),
        call_fragment(json!({"id": "function-call-2", "type": "function",
            "function": {"name": "get_time", "arguments": "{\"zone\":\"CET\"}"}})),
        finish("stop"),
    ];
    let mock = Mock::streaming(whole(sse(&events) + DONE)).await;
    let bridge = bridge(&mock).await;
    let (status, _, body) = chat(
        &bridge,
        json!({"model": "alias", "messages": hi(), "tools": weather_tool()}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let lines = lines(&body, ALL_MEASURED);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    let calls = lines[0]["message"]["tool_calls"]
        .as_array()
        .expect("tool calls")
        .clone();
    let functions: Vec<Value> = calls.iter().map(|c| c["function"].clone()).collect();
    assert_eq!(
        functions,
        [
            json!({"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}}),
            json!({"index": 1, "name": "get_time", "arguments": {"zone": "CET"}}),
        ]
    );
    assert_ne!(calls[0]["id"], calls[1]["id"]);
    assert_eq!(lines[1]["done"], true);
}

/// A model can emit arguments that are not JSON. The bridge must not panic or send a
/// broken call: streaming clients get an error line naming the tool after the text
/// already sent; before any output, and for `stream: false`, an HTTP 502.
#[tokio::test]
async fn unparseable_tool_arguments_are_an_error_naming_the_tool() {
    let bad_call = call_fragment(json!({"index": 0, "id": "FAC2m7U5tf5QhKxqR3GJ", "type": "function",
        "function": {"name": "get_weather", "arguments": "{\"city\": Paris}"}}));
    let with_text = sse(&[role(), text("Checking."), bad_call.clone(), finish("tool_calls")]) + DONE;
    let tool_only = sse(&[role(), bad_call.clone(), finish("tool_calls")]) + DONE;
    let mock = Mock::start(move |req| {
        if req.body["stream"] == false {
            let message = json!({"role": "assistant", "content": "", "tool_calls": [{"id": "FAC2m7U5tf5QhKxqR3GJ",
                "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": Paris}"}}]});
            Reply::Json(200, completion(message, "tool_calls"))
        } else if req.body["messages"][0]["content"] == "text first" {
            Reply::Stream(every(3, with_text.clone()))
        } else {
            Reply::Stream(whole(tool_only.clone()))
        }
    })
    .await;
    let mut bridge = bridge(&mock).await;
    let error = "backend sent an invalid response: tool call 'get_weather' has arguments that are not valid JSON \
                 (expected value at line 1 column 10): {\"city\": Paris}";

    let ask = |content: &str, stream: bool| {
        json!({"model": "alias", "messages": [{"role": "user", "content": content}],
            "tools": weather_tool(), "stream": stream})
    };
    let (status, content_type, body) = chat(&bridge, ask("text first", true)).await;
    assert_eq!((status, content_type.as_str()), (200, "application/x-ndjson"));
    assert_eq!(lines(&body, TOTAL), [say("Checking."), json!({"error": error})]);

    let (status, _, body) = chat(&bridge, ask("tool only", true)).await;
    assert_eq!(status, 502);
    assert_eq!(parse(&body), json!({"error": error}));

    let (status, _, body) = chat(&bridge, ask("not streamed", false)).await;
    assert_eq!(status, 502);
    assert_eq!(parse(&body), json!({"error": error}));

    let rows: Vec<Value> = bridge.rows().await.iter().map(project).collect();
    let failed = |changes: Value| {
        let mut r = row(json!({"error": error, "done_reason": null, "response": null}));
        for (k, v) in changes.as_object().expect("object") {
            r[k] = v.clone();
        }
        r
    };
    assert_eq!(
        rows,
        [
            failed(json!({"response": "Checking."})),
            failed(json!({"status_code": 502})),
            failed(json!({"status_code": 502, "stream": 0})),
        ]
    );
}

// ---------------------------------------------------------------------------------
// 5-10. Backend failures
// ---------------------------------------------------------------------------------

/// A stream cut off without finish_reason or `[DONE]` (backend crash, proxy timeout)
/// must not look finished: the last line is an error, and the log keeps the partial
/// text. Cut off before any output, it is an HTTP 502.
#[tokio::test]
async fn truncated_stream_ends_with_an_error_line() {
    let mock = Mock::start(|req| {
        if req.body["messages"][0]["content"] == "nothing" {
            Reply::Stream(whole(sse(&[role()])))
        } else {
            Reply::Stream(whole(sse(&[role(), text("Once"), text(" upon")])))
        }
    })
    .await;
    let mut bridge = bridge(&mock).await;
    let truncated = "backend stream ended before the response was complete";

    let (status, _, body) = chat(&bridge, json!({"model": "alias", "messages": hi()})).await;
    assert_eq!(status, 200);
    let lines = lines(&body, ALL_MEASURED);
    assert_eq!(lines, [say("Once"), say(" upon"), json!({"error": truncated})]);
    assert!(lines.iter().all(|l| l.get("done") != Some(&json!(true))));

    let (status, _, body) = chat(
        &bridge,
        json!({"model": "alias", "messages": [{"role": "user", "content": "nothing"}]}),
    )
    .await;
    assert_eq!(status, 502);
    assert_eq!(parse(&body), json!({"error": truncated}));

    let rows: Vec<Value> = bridge.rows().await.iter().map(project).collect();
    assert_eq!(
        rows,
        [
            row(json!({"error": truncated, "response": "Once upon", "done_reason": null})),
            row(json!({"error": truncated, "response": null, "done_reason": null, "status_code": 502})),
        ]
    );
}

/// llama-server reports failures inside a started stream as an `error` object; the
/// client must get the backend's own message as the last line.
#[tokio::test]
async fn error_event_mid_stream_becomes_the_last_line() {
    let stream = sse(&[role(), text("Once"), json!({"error": {"message": "boom", "code": 500}})]);
    let mock = Mock::streaming(whole(stream)).await;
    let mut bridge = bridge(&mock).await;
    let (status, _, body) = chat(&bridge, json!({"model": "alias", "messages": hi()})).await;
    assert_eq!(status, 200);
    assert_eq!(lines(&body, ALL_MEASURED), [say("Once"), json!({"error": "boom"})]);
    assert_eq!(
        only_row(&bridge.rows().await),
        row(json!({"error": "boom", "response": "Once", "done_reason": null}))
    );
}

/// A context overflow is the client's problem (400), not a broken stream: the status
/// and llama-server's message must reach the client, whether the backend refuses
/// with an HTTP 400 or with an error as the first event of a 200 stream.
#[tokio::test]
async fn backend_400_reaches_a_streaming_client_as_400() {
    let message = "request (9000 tokens) exceeds the available context size";
    let error = json!({"error": {"message": message, "type": "exceed_context_size_error", "code": 400}});
    let in_stream = sse(std::slice::from_ref(&error));
    let mock = Mock::start(move |req| {
        if req.body["messages"][0]["content"] == "in stream" {
            Reply::Stream(whole(in_stream.clone()))
        } else {
            Reply::Json(400, error.clone())
        }
    })
    .await;
    let mut bridge = bridge(&mock).await;

    for content in ["as status", "in stream"] {
        let (status, content_type, body) = chat(
            &bridge,
            json!({"model": "alias", "messages": [{"role": "user", "content": content}]}),
        )
        .await;
        assert_eq!(status, 400, "{content}");
        assert!(
            content_type.starts_with("application/json"),
            "{content}: {content_type}"
        );
        assert_eq!(parse(&body), json!({"error": message}), "{content}");
    }
    let rows: Vec<Value> = bridge.rows().await.iter().map(project).collect();
    let refused = row(json!({"status_code": 400, "error": message, "response": null, "done_reason": null}));
    assert_eq!(rows, [refused.clone(), refused]);
}

/// A proxy in front of the backend answers in plain text; its status and words are
/// all the client can be told.
#[tokio::test]
async fn backend_500_plain_text_is_passed_on() {
    let mock = Mock::start(|_| Reply::Text(500, "upstream exploded\n")).await;
    let mut bridge = bridge(&mock).await;
    let (status, _, body) = chat(&bridge, json!({"model": "alias", "messages": hi()})).await;
    assert_eq!(status, 500);
    assert_eq!(parse(&body), json!({"error": "upstream exploded"}));
    assert_eq!(
        only_row(&bridge.rows().await),
        row(json!({"status_code": 500, "error": "upstream exploded", "response": null, "done_reason": null}))
    );
}

/// Nothing listening: a 502 that says which backend URL is down (the first thing an
/// operator needs), for mapped models without any backend contact beforehand.
#[tokio::test]
async fn unreachable_backend_is_502_naming_the_url() {
    let port = common::free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut bridge = Bridge::openai(&endpoint, json!({"alias": "backend-model"})).await;
    let (status, _, body) = chat(&bridge, json!({"model": "alias", "messages": hi()})).await;
    assert_eq!(status, 502);
    let error = parse(&body)["error"].as_str().expect("error string").to_owned();
    let prefix = format!("backend at {endpoint}/ is unreachable: ");
    assert!(error.starts_with(&prefix), "{error:?}");
    assert!(error.contains("Connection refused"), "{error:?}");
    assert_eq!(
        only_row(&bridge.rows().await),
        row(json!({"status_code": 502, "error": error, "response": null, "done_reason": null}))
    );
}

fn with_timeout(mock: &Mock, seconds: f64) -> Value {
    json!({
        "backend": {"type": "openai", "endpoint": mock.url, "timeout": seconds},
        "models": {"mappings": {"alias": "backend-model"}},
    })
}

/// A backend that accepts the request and then says nothing must not hold the
/// client forever: after `backend.timeout` of silence, a 504.
#[tokio::test]
async fn backend_silent_before_headers_is_504() {
    let mock = Mock::start(|_| Reply::After(Duration::from_secs(2), Box::new(Reply::Stream(said(&["late"]))))).await;
    let mut bridge = Bridge::start(with_timeout(&mock, 0.3)).await;
    let started = Instant::now();
    let (status, _, body) = chat(&bridge, json!({"model": "alias", "messages": hi()})).await;
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(status, 504);
    let error = format!("backend at {}/ timed out", mock.url);
    assert_eq!(parse(&body), json!({"error": error}));
    assert_eq!(
        only_row(&bridge.rows().await),
        row(json!({"status_code": 504, "error": error, "response": null, "done_reason": null}))
    );
}

/// The timeout bounds silence, not whole answers: a slow but steady stream that lasts
/// longer than the timeout completes, while a stall mid-stream ends with an error line.
#[tokio::test]
async fn timeout_bounds_silence_not_whole_streams() {
    let mock = Mock::start(|req| {
        let wait = |ms| Piece::Wait(Duration::from_millis(ms));
        let chunk = |v: &Value| Piece::Data(Bytes::from(format!("data: {v}\n\n")));
        if req.body["messages"][0]["content"] == "stall" {
            Reply::Stream(vec![
                chunk(&role()),
                chunk(&text("Once")),
                wait(2000),
                chunk(&finish("stop")),
            ])
        } else {
            let mut pieces = vec![chunk(&role())];
            for word in ["a", "b", "c", "d", "e", "f"] {
                pieces.extend([wait(100), chunk(&text(word))]);
            }
            pieces.extend([chunk(&finish("stop")), Piece::Data(Bytes::from(DONE))]);
            Reply::Stream(pieces)
        }
    })
    .await;
    let mut bridge = Bridge::start(with_timeout(&mock, 0.3)).await;

    let started = Instant::now();
    let (status, _, body) = chat(&bridge, json!({"model": "alias", "messages": hi()})).await;
    assert!(
        started.elapsed() > Duration::from_millis(550),
        "the stream should have outlasted the timeout"
    );
    assert_eq!(status, 200);
    let expected: Vec<Value> = ["a", "b", "c", "d", "e", "f"]
        .map(say)
        .into_iter()
        .chain([measured_done_line(6)])
        .collect();
    assert_eq!(lines(&body, ALL_MEASURED), expected);

    let (status, _, body) = chat(
        &bridge,
        json!({"model": "alias", "messages": [{"role": "user", "content": "stall"}]}),
    )
    .await;
    assert_eq!(status, 200);
    let error = format!("backend at {}/ timed out", mock.url);
    assert_eq!(lines(&body, ALL_MEASURED), [say("Once"), json!({"error": error})]);

    let rows: Vec<Value> = bridge.rows().await.iter().map(project).collect();
    assert_eq!(
        rows,
        [
            row(json!({"response": "abcdef", "prompt_tokens": 8, "completion_tokens": 6})),
            row(json!({"error": error, "response": "Once", "done_reason": null})),
        ]
    );
}

// ---------------------------------------------------------------------------------
// 11-12. Requests the bridge refuses or resolves
// ---------------------------------------------------------------------------------

/// Bad requests are the client's mistake: a 400 whose message names the field, one
/// log row each, and no backend call.
#[tokio::test]
async fn malformed_requests_are_400_naming_the_field() {
    let mock = Mock::streaming(said(&["unused"])).await;
    let mut bridge = bridge(&mock).await;
    let chat_url = format!("{}/api/chat", bridge.url);
    let generate_url = format!("{}/api/generate", bridge.url);
    let cases: [(&str, &'static str, &str); 7] = [
        (&chat_url, "", "missing request body"),
        (&chat_url, "  \n", "missing request body"),
        (
            &chat_url,
            r#"{"model": "alias", "messages": "hi"}"#,
            "invalid value for 'messages': invalid type: string \"hi\", expected a sequence at line 1 column 35",
        ),
        (&chat_url, r#"{"model": "alias"}"#, "messages is required"),
        (
            &chat_url,
            r#"{"model": 5, "messages": []}"#,
            "invalid value for 'model': invalid type: integer `5`, expected a string at line 1 column 11",
        ),
        (
            &chat_url,
            r#"{"model": "alias", "messages": [{"role": 7, "content": "hi"}]}"#,
            "invalid value for 'messages[0].role': invalid type: integer `7`, expected a string at line 1 column 42",
        ),
        (
            &generate_url,
            r#"{"model": "alias", "prompt": ["hi"]}"#,
            "invalid value for 'prompt': invalid type: sequence, expected a string at line 1 column 29",
        ),
    ];
    for (url, body, error) in cases {
        let (status, text) = post_raw(url, body).await;
        assert_eq!((status, parse(&text)), (400, json!({"error": error})), "body {body:?}");
    }
    assert_eq!(mock.hits(), 0);
    let rows: Vec<Value> = bridge.rows().await.iter().map(project).collect();
    let refused = |endpoint: &str, model: Value, stream: i64, error: &str| {
        row(
            json!({"endpoint": endpoint, "model": model, "backend_model": null, "stream": stream, "status_code": 400,
            "error": error, "response": null, "done_reason": null}),
        )
    };
    assert_eq!(
        rows,
        [
            refused("/api/chat", Value::Null, 0, cases[0].2),
            refused("/api/chat", Value::Null, 0, cases[1].2),
            refused("/api/chat", Value::Null, 0, cases[2].2),
            refused("/api/chat", json!("alias"), 1, cases[3].2),
            refused("/api/chat", Value::Null, 0, cases[4].2),
            refused("/api/chat", Value::Null, 0, cases[5].2),
            refused("/api/generate", Value::Null, 0, cases[6].2),
        ]
    );
}

/// A body that is not JSON at all has no field to name: the message must say the
/// JSON is invalid, not point at a field called '?'.
#[tokio::test]
async fn malformed_json_is_reported_as_invalid_json() {
    let mock = Mock::streaming(said(&["unused"])).await;
    let mut bridge = bridge(&mock).await;
    let url = format!("{}/api/chat", bridge.url);
    for (body, error) in [
        (
            "{not json",
            "invalid JSON body: key must be a string at line 1 column 2",
        ),
        (
            r#"{"model": "alias","#,
            "invalid JSON body: EOF while parsing a value at line 1 column 18",
        ),
        (
            r#"{"model": "alias",}"#,
            "invalid JSON body: trailing comma at line 1 column 19",
        ),
    ] {
        let (status, text) = post_raw(&url, body).await;
        assert_eq!((status, parse(&text)), (400, json!({"error": error})), "body {body:?}");
    }
    assert_eq!(mock.hits(), 0);
    assert_eq!(bridge.rows().await.len(), 3);
}

/// Clients spell model names their own way (`Alias:latest`) and must see their own
/// spelling back; names the backend offers work unmapped; a request without a model
/// uses `models.default`; anything else is Ollama's 404.
#[tokio::test]
async fn model_names_resolve_like_ollama() {
    let mock = Mock::streaming(said(&["ok"])).await;
    let mut bridge = Bridge::start(json!({
        "backend": {"type": "openai", "endpoint": mock.url},
        "models": {"default": "alias", "mappings": {"alias": "backend-model"}},
    }))
    .await;
    let ok = |model: &str| {
        let mut done = done_line(10, 1);
        done["model"] = model.into();
        let mut line = say("ok");
        line["model"] = model.into();
        vec![line, done]
    };

    let (status, _, body) = chat(&bridge, json!({"model": "x", "messages": hi()})).await;
    assert_eq!((status, parse(&body)), (404, json!({"error": "model 'x' not found"})));
    assert_eq!(mock.hits(), 0);
    // An unknown name is looked for in the backend's list; a list fetched just now is
    // not fetched again.
    assert_eq!(mock.shared.model_lists.load(Ordering::SeqCst), 1);

    for (asked, answered, upstream) in [
        (Some("ALIAS:latest"), "ALIAS:latest", "backend-model"),
        (Some("other-model:latest"), "other-model:latest", "Other-Model"),
        (None, "alias", "backend-model"),
    ] {
        let mut request = json!({"messages": hi()});
        if let Some(model) = asked {
            request["model"] = model.into();
        }
        let (status, _, body) = chat(&bridge, request).await;
        assert_eq!(status, 200, "{asked:?}");
        assert_eq!(lines(&body, TOTAL), ok(answered), "{asked:?}");
        assert_eq!(
            mock.requests().last().expect("request").body["model"],
            upstream,
            "{asked:?}"
        );
    }

    let rows: Vec<Value> = bridge.rows().await.iter().map(project).collect();
    let served = |model: Value, backend: &str| {
        row(json!({"model": model, "backend_model": backend, "response": "ok",
                "prompt_tokens": 10, "completion_tokens": 1}))
    };
    assert_eq!(
        rows,
        [
            row(
                json!({"model": "x", "backend_model": null, "status_code": 404, "error": "model 'x' not found",
                "response": null, "done_reason": null})
            ),
            served(json!("ALIAS:latest"), "backend-model"),
            served(json!("other-model:latest"), "Other-Model"),
            // No name sent: the row names the default model that answered.
            served(json!("alias"), "backend-model"),
        ]
    );
}

// ---------------------------------------------------------------------------------
// 13. Non-streaming
// ---------------------------------------------------------------------------------

/// `stream: false` clients (Home Assistant, scripts) want one JSON object holding
/// the whole answer: content, thinking, complete tool calls and metrics.
#[tokio::test]
async fn non_streaming_chat_is_one_object() {
    let message = json!({"role": "assistant", "content": "Let me check.", "reasoning_content": "User wants weather.",
        "tool_calls": [{"id": "FAC2m7U5tf5QhKxqR3GJ", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]});
    let reply = completion(message, "tool_calls");
    let mock = Mock::start(move |_| Reply::Json(200, reply.clone())).await;
    let mut bridge = bridge(&mock).await;
    let (status, content_type, body) = chat(
        &bridge,
        json!({"model": "alias", "messages": hi(), "tools": weather_tool(), "format": "json", "stream": false}),
    )
    .await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("application/json"), "{content_type}");
    let call =
        json!({"id": "call_u741za57", "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}}});
    assert_eq!(
        settle(parse(&body), TOTAL),
        json!({
            "model": "alias", "created_at": "<time>",
            "message": {"role": "assistant", "content": "Let me check.", "thinking": "User wants weather.",
                "tool_calls": [call]},
            "done": true, "done_reason": "stop", "total_duration": "<measured>", "load_duration": 0,
            "prompt_eval_count": 12, "prompt_eval_duration": 1_500_000, "eval_count": 7, "eval_duration": 3_250_000,
        })
    );
    // No `stream_options` (include_usage is for streams only); `format: "json"` mapped.
    assert_eq!(
        mock.only_request().body,
        json!({"model": "backend-model", "messages": [{"role": "user", "content": "Hi"}], "tools": weather_tool(),
            "stream": false, "response_format": {"type": "json_object"}})
    );
    assert_eq!(
        only_row(&bridge.rows().await),
        row(
            json!({"stream": 0, "response": "Let me check.", "thinking": "User wants weather.",
            "tool_calls": json!([call]).to_string(), "prompt_tokens": 12, "completion_tokens": 7})
        )
    );
}

// ---------------------------------------------------------------------------------
// 14. Client disconnects
// ---------------------------------------------------------------------------------

/// A client that hangs up mid-answer must free the backend at once (llama-server
/// keeps generating otherwise) and be logged as 499 with what it had received.
#[tokio::test]
async fn client_disconnect_mid_stream_closes_the_backend_stream() {
    let chunk = |v: &Value| Piece::Data(Bytes::from(format!("data: {v}\n\n")));
    let wait = Piece::Wait(Duration::from_millis(30));
    let mock = Mock::streaming(vec![
        chunk(&role()),
        wait.clone(),
        chunk(&text("Once")),
        wait,
        chunk(&text(" upon")),
        Piece::Hang,
    ])
    .await;
    let mut bridge = bridge(&mock).await;
    let mut response = reqwest::Client::new()
        .post(format!("{}/api/chat", bridge.url))
        .json(&json!({"model": "alias", "messages": hi()}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    // Read what the mock sent before it went quiet (so the partial text is certain), then hang up.
    let mut received = Vec::new();
    while received.iter().filter(|b| **b == b'\n').count() < 2 {
        let bytes = response.chunk().await.expect("read").expect("more body");
        received.extend_from_slice(&bytes);
    }
    assert_eq!(
        lines(std::str::from_utf8(&received).expect("utf-8"), TOTAL),
        [say("Once"), say(" upon")]
    );
    drop(response);

    assert!(
        mock.saw(|s| &s.bodies_dropped, Duration::from_secs(1)).await,
        "the backend stream was still open a second after the client left"
    );
    assert_eq!(
        only_row(&bridge.rows().await),
        row(
            json!({"status_code": 499, "error": "client disconnected before the response was complete",
            "response": "Once upon", "done_reason": null})
        )
    );
}

/// Hanging up while the backend is still working on the prompt (before any output)
/// must cancel the upstream request too, and leave a 499 row.
#[tokio::test]
async fn client_disconnect_before_output_cancels_the_upstream_request() {
    let mock = Mock::start(|_| Reply::After(Duration::from_secs(5), Box::new(Reply::Stream(said(&["late"]))))).await;
    let mut bridge = bridge(&mock).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .expect("client");
    let sent = client
        .post(format!("{}/api/chat", bridge.url))
        .json(&json!({"model": "alias", "messages": hi()}))
        .send()
        .await;
    assert!(sent.expect_err("the client gives up").is_timeout());
    assert!(
        mock.saw(|s| &s.handlers_dropped, Duration::from_secs(1)).await,
        "the upstream request was still pending a second after the client left"
    );
    assert_eq!(
        only_row(&bridge.rows().await),
        row(
            json!({"status_code": 499, "error": "client disconnected before the response was complete",
            "response": null, "done_reason": null})
        )
    );
}

// ---------------------------------------------------------------------------------
// 15-18. Generate, thinking, history, load requests
// ---------------------------------------------------------------------------------

/// `/api/generate` is served by chat (system + prompt become messages), or by
/// `/v1/completions` with the prompt verbatim when `raw: true`; either way the text
/// comes back in `response`.
#[tokio::test]
async fn generate_over_chat_and_raw_over_completions() {
    let mock = Mock::start(|req| match (req.path.as_str(), req.body["stream"].as_bool()) {
        ("/v1/completions", _) => {
            let piece = |t: &str, finish: Value| {
                json!({"id": "cmpl-mock", "object": "text_completion", "created": 1, "model": "backend-model",
                    "choices": [{"index": 0, "text": t, "logprobs": null, "finish_reason": finish}]})
            };
            // Like llama-server, usage and timings ride on the finish chunk.
            let mut last = piece("", json!("length"));
            last["usage"] = json!({"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6});
            Reply::Stream(whole(
                sse(&[piece(" there", Value::Null), piece(" was", Value::Null), last]) + DONE,
            ))
        }
        (_, Some(false)) => Reply::Json(
            200,
            completion(json!({"role": "assistant", "content": "Hi there"}), "stop"),
        ),
        _ => Reply::Stream(said(&["Hi", " there"])),
    })
    .await;
    let mut bridge = bridge(&mock).await;
    let response_line = |t: &str| json!({"model": "alias", "created_at": "<time>", "response": t, "done": false});
    let final_line = |reason: &str, prompt: u64, completion: u64, measured: bool| {
        let (p, e) = if measured {
            (json!("<measured>"), json!("<measured>"))
        } else {
            (json!(1_500_000), json!(3_250_000))
        };
        json!({"model": "alias", "created_at": "<time>", "response": "", "done": true, "done_reason": reason,
            "total_duration": "<measured>", "load_duration": 0, "prompt_eval_count": prompt, "prompt_eval_duration": p,
            "eval_count": completion, "eval_duration": e})
    };

    // Streamed, over chat.
    let (status, content_type, body) = generate(
        &bridge,
        json!({"model": "alias", "system": "Be brief.", "prompt": "Say hi"}),
    )
    .await;
    assert_eq!((status, content_type.as_str()), (200, "application/x-ndjson"));
    assert_eq!(
        lines(&body, TOTAL),
        [
            response_line("Hi"),
            response_line(" there"),
            final_line("stop", 10, 2, false)
        ]
    );
    // Not streamed, over chat.
    let (status, content_type, body) = generate(
        &bridge,
        json!({"model": "alias", "system": "Be brief.", "prompt": "Say hi", "stream": false}),
    )
    .await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("application/json"), "{content_type}");
    let mut whole_answer = final_line("stop", 12, 7, false);
    whole_answer["response"] = "Hi there".into();
    assert_eq!(settle(parse(&body), TOTAL), whole_answer);
    // Raw, over completions: no template, no system turn.
    let (status, _, body) = generate(
        &bridge,
        json!({"model": "alias", "prompt": "<s>Once upon a time", "raw": true, "options": {"num_predict": 2}}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        lines(&body, ALL_MEASURED),
        [
            response_line(" there"),
            response_line(" was"),
            final_line("length", 4, 2, true)
        ]
    );

    let upstream: Vec<(String, Value)> = mock.requests().into_iter().map(|r| (r.path, r.body)).collect();
    let messages = json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi"}]);
    assert_eq!(
        upstream,
        [
            (
                "/v1/chat/completions".to_owned(),
                json!({"model": "backend-model", "messages": messages, "stream": true,
                    "stream_options": {"include_usage": true}})
            ),
            (
                "/v1/chat/completions".to_owned(),
                json!({"model": "backend-model", "messages": messages, "stream": false})
            ),
            (
                "/v1/completions".to_owned(),
                json!({"model": "backend-model", "prompt": "<s>Once upon a time", "stream": true,
                    "stream_options": {"include_usage": true}, "max_tokens": 2})
            ),
        ]
    );

    let rows = bridge.rows().await;
    let generated = |changes: Value| {
        let mut r = row(json!({"endpoint": "/api/generate"}));
        for (k, v) in changes.as_object().expect("object") {
            r[k] = v.clone();
        }
        r
    };
    assert_eq!(
        rows.iter().map(project).collect::<Vec<_>>(),
        [
            generated(json!({"response": "Hi there", "prompt_tokens": 10, "completion_tokens": 2})),
            generated(json!({"response": "Hi there", "stream": 0, "prompt_tokens": 12, "completion_tokens": 7})),
            generated(
                json!({"response": " there was", "done_reason": "length", "prompt_tokens": 4, "completion_tokens": 2})
            ),
        ]
    );
    assert_eq!(rows[0]["prompt"], "Say hi");
}

/// Backends name reasoning differently (`reasoning_content`: llama.cpp, DeepSeek;
/// `reasoning`: OpenRouter, vLLM); both are Ollama's `thinking`. With `think: false`
/// the template is told not to think, and any reasoning that comes anyway is hidden.
#[tokio::test]
async fn reasoning_fields_become_thinking_and_think_false_hides_it() {
    let mock = Mock::start(|req| {
        let field = if req.body["messages"][0]["content"] == "openrouter" {
            "reasoning"
        } else {
            "reasoning_content"
        };
        Reply::Stream(whole(
            sse(&[
                role(),
                delta(json!({field: "Hmm"})),
                delta(json!({field: ", easy."})),
                text("Four."),
                finish("stop"),
            ]) + DONE,
        ))
    })
    .await;
    let mut bridge = bridge(&mock).await;
    let ask = |content: &str, think: Option<bool>| {
        let mut body = json!({"model": "alias", "messages": [{"role": "user", "content": content}]});
        if let Some(think) = think {
            body["think"] = think.into();
        }
        body
    };

    for (content, think_flag) in [("openrouter", None), ("llama.cpp", Some(true))] {
        let (status, _, body) = chat(&bridge, ask(content, think_flag)).await;
        assert_eq!(status, 200);
        assert_eq!(
            lines(&body, ALL_MEASURED),
            [think("Hmm"), think(", easy."), say("Four."), measured_done_line(3)],
            "{content}"
        );
    }
    let (status, _, body) = chat(&bridge, ask("llama.cpp", Some(false))).await;
    assert_eq!(status, 200);
    assert_eq!(lines(&body, ALL_MEASURED), [say("Four."), measured_done_line(1)]);

    let kwargs: Vec<Value> = mock
        .requests()
        .iter()
        .map(|r| r.body["chat_template_kwargs"].clone())
        .collect();
    assert_eq!(
        kwargs,
        [
            Value::Null,
            json!({"enable_thinking": true}),
            json!({"enable_thinking": false})
        ]
    );
    let rows: Vec<Value> = bridge.rows().await.iter().map(project).collect();
    // No usage from this backend: counts are estimated (prompt: ~4 characters a token).
    let thought =
        row(json!({"response": "Four.", "thinking": "Hmm, easy.", "prompt_tokens": 10, "completion_tokens": 3}));
    assert_eq!(
        rows,
        [
            thought.clone(),
            thought,
            row(json!({"response": "Four.", "prompt_tokens": 10, "completion_tokens": 1}))
        ]
    );
}

/// Home Assistant replays history with tool calls that have no id and tool results
/// with neither `tool_call_id` nor `tool_name`. OpenAI servers reject unlinked tool
/// messages, so the bridge must invent ids, stringify arguments and link by order.
#[tokio::test]
async fn home_assistant_history_gets_linked_tool_ids() {
    let mock = Mock::streaming(said(&["Done."])).await;
    let mut bridge = bridge(&mock).await;
    let messages = json!([
        {"role": "user", "content": "Turn on the kitchen light and the fan"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": "HassTurnOn", "arguments": {"name": "kitchen light"}}},
            {"function": {"name": "HassTurnOn", "arguments": {"name": "fan"}}},
        ]},
        {"role": "tool", "content": "{\"success\": true, \"target\": \"kitchen light\"}"},
        {"role": "tool", "content": "{\"success\": true, \"target\": \"fan\"}"},
    ]);
    let (status, _, body) = chat(&bridge, json!({"model": "alias", "messages": messages})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(lines(&body, TOTAL), [say("Done."), done_line(10, 1)]);

    let sent = mock.only_request().body["messages"].clone();
    let calls = sent[1]["tool_calls"].as_array().expect("upstream tool calls").clone();
    let ids: Vec<String> = calls
        .iter()
        .map(|c| c["id"].as_str().expect("call id").to_owned())
        .collect();
    assert!(ids.iter().all(|id| !id.is_empty()) && ids[0] != ids[1], "{ids:?}");
    assert_eq!(
        sent,
        json!([
            {"role": "user", "content": "Turn on the kitchen light and the fan"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"id": ids[0], "type": "function",
                    "function": {"name": "HassTurnOn", "arguments": "{\"name\":\"kitchen light\"}"}},
                {"id": ids[1], "type": "function",
                    "function": {"name": "HassTurnOn", "arguments": "{\"name\":\"fan\"}"}},
            ]},
            {"role": "tool", "content": "{\"success\": true, \"target\": \"kitchen light\"}", "tool_call_id": ids[0]},
            {"role": "tool", "content": "{\"success\": true, \"target\": \"fan\"}", "tool_call_id": ids[1]},
        ])
    );
    assert_eq!(
        only_row(&bridge.rows().await),
        row(json!({"response": "Done.", "prompt_tokens": 10, "completion_tokens": 1}))
    );
}

/// Ollama clients "load" a model with an empty chat or prompt, and unload it with
/// `keep_alive: 0`. The backend keeps models loaded, so this is answered locally.
#[tokio::test]
async fn empty_requests_are_load_and_unload_answers() {
    let mock = Mock::streaming(said(&["unused"])).await;
    let mut bridge = bridge(&mock).await;
    let (status, content_type, body) = chat(&bridge, json!({"model": "alias", "messages": []})).await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("application/json"), "{content_type}");
    let answer = |reason: &str| {
        json!({"model": "alias", "created_at": "<time>", "message": {"role": "assistant", "content": ""},
            "done": true, "done_reason": reason})
    };
    assert_eq!(settle(parse(&body), &[]), answer("load"));
    for keep_alive in [json!(0), json!("0"), json!("0s")] {
        let (status, _, body) = chat(
            &bridge,
            json!({"model": "alias", "messages": [], "keep_alive": keep_alive}),
        )
        .await;
        assert_eq!(
            (status, settle(parse(&body), &[])),
            (200, answer("unload")),
            "{keep_alive}"
        );
    }
    let (status, _, body) = generate(&bridge, json!({"model": "alias", "keep_alive": 0})).await;
    assert_eq!(status, 200);
    assert_eq!(
        settle(parse(&body), &[]),
        json!({"model": "alias", "created_at": "<time>", "response": "", "done": true, "done_reason": "unload"})
    );
    assert_eq!(mock.hits(), 0);
    let rows: Vec<Value> = bridge.rows().await.iter().map(project).collect();
    let loaded = row(json!({"done_reason": null}));
    let mut generate_row = loaded.clone();
    generate_row["endpoint"] = "/api/generate".into();
    assert_eq!(
        rows,
        [loaded.clone(), loaded.clone(), loaded.clone(), loaded, generate_row]
    );
}

// ---------------------------------------------------------------------------------
// 19-20. Metadata routes and load
// ---------------------------------------------------------------------------------

/// Clients probe these before anything else (Home Assistant lists tags, Copilot
/// checks the version, scripts grep `GET /`).
#[tokio::test]
async fn tags_root_and_version() {
    let mock = Mock::streaming(said(&["unused"])).await;
    let bridge = bridge(&mock).await;
    let http = reqwest::Client::new();

    let tags: Value = http
        .get(format!("{}/api/tags", bridge.url))
        .send()
        .await
        .expect("tags")
        .json()
        .await
        .expect("json");
    let names: Vec<&str> = tags["models"]
        .as_array()
        .expect("models")
        .iter()
        .map(|m| m["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["alias:latest", "backend-model:latest", "Other-Model:latest"]);
    use sha2::Digest;
    let alias = &tags["models"][0];
    let modified_at = alias["modified_at"].as_str().expect("modified_at");
    assert!(
        chrono::DateTime::parse_from_rfc3339(modified_at).is_ok(),
        "{modified_at}"
    );
    assert_eq!(
        *alias,
        json!({
            "modified_at": modified_at, "size": 0,
            "digest": format!("{:x}", sha2::Sha256::digest("alias:latest")),
            "details": {"parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"],
                "parameter_size": "", "quantization_level": "", "context_length": 4096},
            "capabilities": ["completion", "tools"],
            "name": "alias:latest", "model": "alias:latest",
        })
    );

    let root = http.get(&bridge.url).send().await.expect("root");
    assert_eq!(root.status(), 200);
    assert_eq!(root.text().await.expect("text"), "Ollama is running");
    let head = http.head(&bridge.url).send().await.expect("head");
    assert_eq!(head.status(), 200);
    let version: Value = http
        .get(format!("{}/api/version", bridge.url))
        .send()
        .await
        .expect("version")
        .json()
        .await
        .expect("json");
    assert_eq!(version, json!({"version": "0.12.0"}));
    assert_eq!(mock.hits(), 0);
}

/// Logging must never hold a response back: 200 streams at once all finish, and
/// every one of them leaves its row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_streams_all_complete_and_are_logged() {
    let chunk = |v: &Value| Piece::Data(Bytes::from(format!("data: {v}\n\n")));
    let pause = Piece::Wait(Duration::from_millis(20));
    let mock = Mock::streaming(vec![
        chunk(&role()),
        chunk(&text("a")),
        pause.clone(),
        chunk(&text("b")),
        pause,
        chunk(&finish("stop")),
        chunk(&usage(10, 2)),
        Piece::Data(Bytes::from(DONE)),
    ])
    .await;
    let mut bridge = bridge(&mock).await;
    let http = reqwest::Client::new();
    let requests = (0..200).map(|i| {
        let http = http.clone();
        let url = format!("{}/api/chat", bridge.url);
        async move {
            let body = json!({"model": "alias", "messages": [{"role": "user", "content": format!("n{i}")}]});
            let response = http.post(url).json(&body).send().await.expect("request");
            assert_eq!(response.status(), 200);
            response.text().await.expect("body")
        }
    });
    let started = Instant::now();
    let bodies = futures::future::join_all(requests).await;
    let elapsed = started.elapsed();
    for body in &bodies {
        assert_eq!(lines(body, TOTAL), [say("a"), say("b"), done_line(10, 2)]);
    }
    assert!(elapsed < Duration::from_secs(10), "200 streams took {elapsed:?}");
    assert_eq!(mock.hits(), 200);
    let rows = bridge.rows().await;
    assert_eq!(rows.len(), 200);
    let expected = row(json!({"response": "ab", "prompt_tokens": 10, "completion_tokens": 2}));
    assert!(rows.iter().all(|r| project(r) == expected));
}

// ---------------------------------------------------------------------------------
// 21-29. Ollama semantics over an OpenAI backend: pull, model management, embeddings,
// show, strip_think, thinking styles, images, suffix, options
// ---------------------------------------------------------------------------------

/// Any method, any body; returns status, content type and body text.
async fn send(method: reqwest::Method, url: &str, body: Option<Vec<u8>>) -> (u16, String, String) {
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(body) = body {
        request = request.header("content-type", "application/json").body(body);
    }
    let r = request.send().await.expect("request");
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap_or("").to_owned())
        .unwrap_or_default();
    (status, ct, r.text().await.expect("body"))
}

async fn get(url: &str) -> (u16, String, String) {
    send(reqwest::Method::GET, url, None).await
}

/// The expected row of a request to `endpoint` that is not a chat: `row` with the
/// endpoint set, not streamed, without a done reason, then `changes`.
fn row_of(endpoint: &str, changes: Value) -> Value {
    let mut r = row(json!({"endpoint": endpoint, "stream": 0, "done_reason": null}));
    for (k, v) in changes.as_object().expect("changes object") {
        assert!(ROW_FIELDS.contains(&k.as_str()), "unknown row field {k}");
        r[k] = v.clone();
    }
    r
}

/// Home Assistant pulls a model it does not find in the list. A model the backend
/// serves is "pulled" at once with Ollama's own answers; one it does not is a 404 that
/// names it (ollabridge downloads nothing). The backend is only asked for its list.
#[tokio::test]
async fn pull_of_a_served_model_succeeds_like_ollama() {
    let mock = Mock::streaming(said(&["unused"])).await;
    let mut bridge = bridge(&mock).await;
    let url = format!("{}/api/pull", bridge.url);

    let (status, content_type, body) = post(&url, json!({"model": "alias", "stream": false})).await;
    assert_eq!((status, content_type.as_str()), (200, "application/json"));
    assert_eq!(body, r#"{"status":"success"}"#);

    // Streaming is the default: Ollama's progress lines without the download ones.
    let (status, content_type, body) = post(&url, json!({"model": "alias"})).await;
    assert_eq!((status, content_type.as_str()), (200, "application/x-ndjson"));
    assert_eq!(
        ndjson(&body),
        [
            json!({"status": "pulling manifest"}),
            json!({"status": "verifying sha256 digest"}),
            json!({"status": "writing manifest"}),
            json!({"status": "success"}),
        ]
    );

    // ollama-python < 0.4 and old scripts send `name`; the backend's own names work too.
    let (status, _, body) = post(&url, json!({"name": "Alias:latest", "stream": false})).await;
    assert_eq!((status, body.as_str()), (200, r#"{"status":"success"}"#));
    let (status, _, body) = post(&url, json!({"model": "other-model", "stream": false})).await;
    assert_eq!((status, body.as_str()), (200, r#"{"status":"success"}"#));

    let unknown = "model 'nope' is not served by the backend, and ollabridge cannot download models; \
                   load it in the backend or map the name in models.mappings";
    for request in [json!({"model": "nope", "stream": false}), json!({"name": "nope"})] {
        let (status, content_type, body) = post(&url, request.clone()).await;
        assert_eq!((status, content_type.as_str()), (404, "application/json"), "{request}");
        assert_eq!(parse(&body), json!({"error": unknown}), "{request}");
    }
    assert_eq!(mock.hits(), 0, "a pull never reaches a completion route");

    let rows: Vec<Value> = bridge.rows().await.iter().map(project).collect();
    let pulled = |model: &str, backend: &str, stream: i64| {
        row_of(
            "/api/pull",
            json!({"model": model, "backend_model": backend, "stream": stream}),
        )
    };
    let refused = |stream: i64| {
        row_of(
            "/api/pull",
            json!({"model": "nope", "backend_model": null, "stream": stream, "status_code": 404,
                "error": unknown, "response": null}),
        )
    };
    assert_eq!(
        rows,
        [
            pulled("alias", "backend-model", 0),
            pulled("alias", "backend-model", 1),
            pulled("Alias:latest", "backend-model", 0),
            pulled("other-model", "Other-Model", 0),
            refused(0),
            refused(1),
        ]
    );
}

/// Regression: a pull of a mapped model reported success while the backend was down
/// (a mapped name resolves without asking it). Home Assistant then set up a model that
/// could not answer.
#[tokio::test]
async fn pull_fails_while_the_backend_is_down() {
    let gone = format!("http://127.0.0.1:{}", common::free_port());
    let mut bridge = Bridge::start(json!({
        "backend": {"type": "openai", "endpoint": gone, "health_interval": 0},
        "models": {"mappings": {"alias": "backend-model"}},
    }))
    .await;
    let (status, content_type, body) = post(
        &format!("{}/api/pull", bridge.url),
        json!({"model": "alias", "stream": false}),
    )
    .await;
    assert_eq!((status, content_type.as_str()), (502, "application/json"), "{body}");
    let error = parse(&body)["error"].as_str().unwrap().to_owned();
    assert!(
        error.starts_with(&format!("backend at {gone}/ is unreachable: ")),
        "{error}"
    );
    let rows = bridge.rows().await;
    assert_eq!(
        (rows[0]["status_code"].clone(), rows[0]["error"].clone()),
        (json!(502), json!(error))
    );
}

/// Models live in the backend, so creating, copying, deleting, pushing and uploading
/// blobs are a clear 501 saying so, and any other unknown `/api/*` route a 501 naming
/// it; nothing is sent to the backend and nothing is logged (only model calls are).
#[tokio::test]
async fn model_management_routes_are_501_without_touching_the_backend() {
    use reqwest::Method;
    let mock = Mock::streaming(said(&["unused"])).await;
    let mut bridge = bridge(&mock).await;
    let manage = |path: &str| {
        format!(
            "{path}: ollabridge cannot manage models on an OpenAI-compatible backend; \
             add or remove models in the backend itself and map them in models.mappings"
        )
    };
    let json_body = |v: Value| Some(v.to_string().into_bytes());
    let cases = [
        (
            Method::POST,
            "/api/create",
            json_body(json!({"model": "new", "from": "alias", "system": "Be brief."})),
            manage("/api/create"),
        ),
        (
            Method::POST,
            "/api/copy",
            json_body(json!({"source": "alias", "destination": "copy"})),
            manage("/api/copy"),
        ),
        (
            Method::DELETE,
            "/api/delete",
            json_body(json!({"model": "alias"})),
            manage("/api/delete"),
        ),
        (
            Method::POST,
            "/api/push",
            json_body(json!({"model": "alias", "insecure": false})),
            manage("/api/push"),
        ),
        (
            Method::POST,
            "/api/blobs/sha256:abc",
            Some(b"GGUF\x03\x00\x00\x00 not json".to_vec()),
            manage("/api/blobs/sha256:abc"),
        ),
        (
            Method::POST,
            "/api/whatever",
            json_body(json!({"model": "alias"})),
            "/api/whatever is not available with an OpenAI-compatible backend".to_owned(),
        ),
        (
            Method::GET,
            "/api/whatever",
            None,
            "/api/whatever is not available with an OpenAI-compatible backend".to_owned(),
        ),
    ];
    for (method, path, body, error) in cases {
        let (status, content_type, text) = send(method.clone(), &format!("{}{path}", bridge.url), body).await;
        assert_eq!(
            (status, content_type.as_str()),
            (501, "application/json"),
            "{method} {path}: {text}"
        );
        assert_eq!(parse(&text), json!({"error": error}), "{method} {path}");
    }
    // `ollama create` asks HEAD /api/blobs/<digest> first: the same refusal, without a body.
    let (status, _, text) = send(Method::HEAD, &format!("{}/api/blobs/sha256:abc", bridge.url), None).await;
    assert_eq!((status, text.as_str()), (501, ""));

    assert_eq!(mock.hits(), 0);
    assert_eq!(mock.shared.model_lists.load(Ordering::SeqCst), 0);
    assert_eq!(bridge.rows().await, Vec::<Value>::new());
}

/// The mock's embedding for an input text (llama.cpp's are not unit vectors either).
fn raw_embedding(text: &str) -> Value {
    match text {
        "east" => json!([3.0, 0.0, 4.0]),
        "north" => json!([0.0, 2.0, 0.0]),
        "tall" => json!([3.0, 4.0, 12.0]),
        "tiny" => json!([0.1, -0.25, 3.5]),
        other => panic!("no embedding scripted for {other:?}"),
    }
}

/// `/v1/embeddings`, answered with `data` in reverse order (the OpenAI API orders by
/// `index`, not by position); an input list starting with "short" gets one vector only.
async fn embeddings_mock() -> Mock {
    Mock::start(|req| {
        assert_eq!(req.path, "/v1/embeddings", "only embeddings are expected");
        let inputs: Vec<String> = req.body["input"]
            .as_array()
            .expect("input is always an array upstream")
            .iter()
            .map(|i| i.as_str().expect("string input").to_owned())
            .collect();
        let mut data: Vec<Value> = inputs
            .iter()
            .enumerate()
            .filter(|(i, _)| inputs[0] != "short" || *i == 0)
            .map(|(i, text)| {
                let embedding = if text == "short" {
                    json!([1.0, 0.0])
                } else {
                    raw_embedding(text)
                };
                json!({"object": "embedding", "index": i, "embedding": embedding})
            })
            .collect();
        data.reverse();
        let tokens = 2 * inputs.len();
        Reply::Json(
            200,
            json!({"object": "list", "model": "backend-model", "data": data,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}),
        )
    })
    .await
}

/// `/api/embed` takes a string or a list of strings and answers unit vectors in input
/// order (cut to `dimensions`, then normalised again); an empty input is Ollama's
/// "load" and asks the backend nothing; anything else is a 400 before the backend.
#[tokio::test]
async fn embed_returns_unit_vectors_in_input_order() {
    let mock = embeddings_mock().await;
    let mut bridge = bridge(&mock).await;
    let url = format!("{}/api/embed", bridge.url);
    let answer = |embeddings: Value, prompt_eval_count: u64| {
        json!({"model": "alias", "embeddings": embeddings, "total_duration": "<measured>",
            "load_duration": 0, "prompt_eval_count": prompt_eval_count})
    };
    let tall = [3.0, 4.0, 12.0].map(|x: f64| x / 13.0);

    let cases = [
        (
            json!({"model": "alias", "input": "east"}),
            answer(json!([[0.6, 0.0, 0.8]]), 2),
        ),
        (
            json!({"model": "alias", "input": ["north", "east", "tall"]}),
            answer(json!([[0.0, 1.0, 0.0], [0.6, 0.0, 0.8], tall]), 6),
        ),
        (
            json!({"model": "alias", "input": ["tall"], "dimensions": 2}),
            answer(json!([[0.6, 0.8]]), 2),
        ),
    ];
    for (request, expected) in &cases {
        let (status, content_type, body) = post(&url, request.clone()).await;
        assert_eq!(
            (status, content_type.as_str()),
            (200, "application/json"),
            "{request}: {body}"
        );
        // Through text and back, as the answer came: the client's float parsing applies to both.
        assert_eq!(settle(parse(&body), TOTAL), parse(&expected.to_string()), "{request}");
    }

    let invalid = "invalid input type: 'input' must be a string or an array of strings";
    for input in [json!(5), json!([1]), json!(["ok", {"text": "no"}])] {
        let (status, _, body) = post(&url, json!({"model": "alias", "input": input})).await;
        assert_eq!((status, parse(&body)), (400, json!({"error": invalid})), "{input}");
    }
    let hits_before_load = mock.hits();
    for request in [
        json!({"model": "alias", "input": ""}),
        json!({"model": "alias", "input": []}),
        json!({"model": "alias"}),
    ] {
        let (status, _, body) = post(&url, request.clone()).await;
        assert_eq!(
            (status, settle(parse(&body), TOTAL)),
            (200, answer(json!([]), 0)),
            "{request}"
        );
    }
    assert_eq!(
        mock.hits(),
        hits_before_load,
        "an empty input is answered without the backend"
    );

    let upstream: Vec<(String, Value)> = mock.requests().into_iter().map(|r| (r.path, r.body)).collect();
    let embeddings = |input: Value| {
        (
            "/v1/embeddings".to_owned(),
            json!({"model": "backend-model", "input": input}),
        )
    };
    assert_eq!(
        upstream,
        [
            embeddings(json!(["east"])),
            embeddings(json!(["north", "east", "tall"])),
            embeddings(json!(["tall"])),
        ]
    );

    let rows = bridge.rows().await;
    assert_eq!(rows[0]["prompt"], r#"["east"]"#);
    let embedded = |vectors: u64, dimensions: u64, tokens: u64| {
        row_of(
            "/api/embed",
            json!({"response": json!({"embeddings": vectors, "dimensions": dimensions}).to_string(),
                "done_reason": "stop", "prompt_tokens": tokens, "completion_tokens": null}),
        )
    };
    let refused = row_of(
        "/api/embed",
        json!({"model": null, "backend_model": null, "status_code": 400, "error": invalid, "response": null}),
    );
    assert_eq!(
        rows.iter().map(project).collect::<Vec<_>>(),
        [
            embedded(1, 3, 2),
            embedded(3, 3, 6),
            embedded(1, 2, 2),
            refused.clone(),
            refused.clone(),
            refused,
            embedded(0, 0, 0),
            embedded(0, 0, 0),
            embedded(0, 0, 0),
        ]
    );
}

/// The legacy `/api/embeddings` returns the backend's vector as it is (Ollama does not
/// normalise there), and a backend that returns fewer vectors than inputs is a 502,
/// never a silently shorter list.
#[tokio::test]
async fn legacy_embeddings_are_unnormalised_and_missing_vectors_are_502() {
    let mock = embeddings_mock().await;
    let mut bridge = bridge(&mock).await;

    let (status, content_type, body) = post(
        &format!("{}/api/embeddings", bridge.url),
        json!({"model": "alias", "prompt": "tiny"}),
    )
    .await;
    assert_eq!((status, content_type.as_str()), (200, "application/json"));
    assert_eq!(parse(&body), json!({"embedding": [0.1, -0.25, 3.5]}));

    let (status, _, body) = post(
        &format!("{}/api/embed", bridge.url),
        json!({"model": "alias", "input": ["short", "east"]}),
    )
    .await;
    let error = "backend sent an invalid response: asked for 2 embeddings, got 1";
    assert_eq!((status, parse(&body)), (502, json!({"error": error})));

    let upstream: Vec<Value> = mock.requests().into_iter().map(|r| r.body).collect();
    assert_eq!(
        upstream,
        [
            json!({"model": "backend-model", "input": ["tiny"]}),
            json!({"model": "backend-model", "input": ["short", "east"]}),
        ]
    );
    let rows = bridge.rows().await;
    assert_eq!(rows[0]["prompt"], "tiny");
    assert_eq!(
        rows.iter().map(project).collect::<Vec<_>>(),
        [
            row_of(
                "/api/embeddings",
                json!({"response": r#"{"embeddings":1,"dimensions":3}"#, "done_reason": "stop",
                    "prompt_tokens": 2, "completion_tokens": null}),
            ),
            row_of(
                "/api/embed",
                json!({"status_code": 502, "error": error, "response": null}),
            ),
        ]
    );
}

/// A template with Qwen3's thinking switch, as llama.cpp's `/props` shows it.
const THINKING_TEMPLATE: &str = "{%- for message in messages %}{{- '<|im_start|>' + message.role + '\\n' + \
                                 message.content + '<|im_end|>\\n' }}{%- endfor %}{%- if add_generation_prompt %}\
                                 {{- '<|im_start|>assistant\\n' }}{%- if enable_thinking is defined and \
                                 enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}{%- endif %}";

/// llama-server's `/props` for a vision model with a thinking, tool-calling template.
fn llama_props() -> Value {
    json!({
        "default_generation_settings": {"n_ctx": 8192, "params": {"temperature": 0.8, "top_k": 40}},
        "total_slots": 4, "model_alias": "backend-model", "model_path": "/models/backend-model.gguf",
        "modalities": {"vision": true, "video": false, "audio": false},
        "chat_template": THINKING_TEMPLATE,
        "chat_template_caps": {"supports_object_arguments": true, "supports_parallel_tool_calls": true,
            "supports_system_role": true, "supports_tool_calls": true, "supports_tools": true},
        "bos_token": "<s>", "eos_token": "<|im_end|>", "build_info": "b6500-0c1e570",
    })
}

/// A llama-server `/v1/models` list with a single model, as one llama-server serves.
fn one_model(meta: Value) -> Value {
    let mut model = json!({"id": "backend-model", "object": "model", "owned_by": "llamacpp", "created": 1});
    if !meta.is_null() {
        model["meta"] = meta;
    }
    json!({"object": "list", "data": [model]})
}

/// What `/api/show` answers for a model the bridge describes itself.
fn shown(name: &str, context: u64, capabilities: Value, template: &str) -> Value {
    json!({
        "license": "",
        "modelfile": format!(
            "# Served by ollabridge from backend model backend-model\nFROM backend-model\nPARAMETER num_ctx {context}\n"
        ),
        "parameters": "<parameters>",
        "template": template,
        "details": {"parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"],
            "parameter_size": "", "quantization_level": "", "context_length": context},
        "model_info": {"general.architecture": "llama", "general.basename": name, "llama.context_length": context},
        "capabilities": capabilities,
        "modified_at": "<time>",
    })
}

/// `/api/show` as the bridge answered it, with `parameters` checked to hold `num_ctx`
/// and the context, and `modified_at` checked to be RFC 3339, then both replaced.
async fn show(bridge: &Bridge, request: Value) -> (u16, Value) {
    let (status, content_type, body) = post(&format!("{}/api/show", bridge.url), request).await;
    assert!(content_type.starts_with("application/json"), "{content_type}");
    (status, settled_show(parse(&body)))
}

fn settled_show(mut show: Value) -> Value {
    if show.get("error").is_some() {
        return show;
    }
    let context = show["details"]["context_length"].to_string();
    let parameters: Vec<&str> = show["parameters"]
        .as_str()
        .expect("parameters")
        .split_whitespace()
        .collect();
    assert_eq!(parameters, ["num_ctx", context.as_str()], "{show}");
    show["parameters"] = "<parameters>".into();
    let modified_at = show["modified_at"].as_str().expect("modified_at");
    assert!(
        chrono::DateTime::parse_from_rfc3339(modified_at).is_ok(),
        "{modified_at}"
    );
    show["modified_at"] = "<time>".into();
    show
}

/// Copilot, Zed and Open WebUI decide what to offer from `/api/show`. From llama.cpp's
/// `/props`: tools when the template handles tool calls, thinking when it has a
/// thinking switch, vision when a projector is loaded, and the context as served. The
/// model can be named by `model`, `name` or `?model=`; unknown names are a 404.
#[tokio::test]
async fn show_reads_capabilities_and_context_from_llama_cpp_props() {
    let list = one_model(json!({"n_ctx": 4096, "n_ctx_train": 32768, "n_vocab": 306}));
    let mock = Mock::serving(list, Some(llama_props()), |_| Reply::Stream(said(&["unused"]))).await;
    let mut bridge = bridge(&mock).await;
    let all = json!(["completion", "tools", "thinking", "vision"]);
    let expected = shown("alias", 8192, all.clone(), THINKING_TEMPLATE);

    assert_eq!(show(&bridge, json!({"model": "alias"})).await, (200, expected.clone()));
    assert_eq!(
        show(&bridge, json!({"name": "Alias:latest"})).await.1["capabilities"],
        all
    );
    let (status, _, body) = get(&format!("{}/api/show?model=alias", bridge.url)).await;
    assert_eq!((status, settled_show(parse(&body))), (200, expected));
    // Unmapped, under the backend's own name.
    assert_eq!(
        show(&bridge, json!({"model": "backend-model"})).await,
        (200, shown("backend-model", 8192, all, THINKING_TEMPLATE))
    );

    let not_found = json!({"error": "model 'nope' not found"});
    assert_eq!(show(&bridge, json!({"model": "nope"})).await, (404, not_found.clone()));
    let (status, _, body) = get(&format!("{}/api/show?model=nope", bridge.url)).await;
    assert_eq!((status, parse(&body)), (404, not_found));
    assert_eq!(mock.hits(), 0);
    assert_eq!(
        bridge.rows().await,
        Vec::<Value>::new(),
        "metadata polls are not logged"
    );
}

/// Servers without llama.cpp's `/props` (vLLM, LM Studio, OpenRouter) answer 404: the
/// bridge then offers completion and tools, and the context of `/v1/models`' `meta`,
/// else Ollama's 4096.
#[tokio::test]
async fn show_without_props_falls_back_to_the_model_list() {
    let with_meta = Mock::serving(one_model(json!({"n_ctx": 6144})), None, |_| {
        Reply::Stream(said(&["unused"]))
    })
    .await;
    let without_meta = Mock::serving(one_model(Value::Null), None, |_| Reply::Stream(said(&["unused"]))).await;
    let basic = json!(["completion", "tools"]);
    for (mock, context) in [(&with_meta, 6144), (&without_meta, 4096)] {
        let bridge = bridge(mock).await;
        assert_eq!(
            show(&bridge, json!({"model": "alias"})).await,
            (200, shown("alias", context, basic.clone(), "{{ .Prompt }}")),
            "context {context}"
        );
    }
}

/// A mapping object states what the backend cannot tell (or tells wrong): its context
/// length and capabilities win over `/props` in `/api/show`, `/api/tags` and `/api/ps`.
#[tokio::test]
async fn mapping_object_overrides_context_and_capabilities() {
    let list = one_model(json!({"n_ctx": 4096}));
    let mock = Mock::serving(list, Some(llama_props()), |_| Reply::Stream(said(&["unused"]))).await;
    let bridge = Bridge::openai(
        &mock.url,
        json!({
            "alias": "backend-model",
            "big": {"model": "backend-model", "context_length": 32768, "capabilities": ["completion", "embedding"]},
        }),
    )
    .await;
    let overridden = json!(["completion", "embedding"]);
    assert_eq!(
        show(&bridge, json!({"model": "big"})).await,
        (200, shown("big", 32768, overridden.clone(), THINKING_TEMPLATE))
    );

    let listed = |path: &str| {
        let url = format!("{}{path}", bridge.url);
        async move {
            let (status, _, body) = get(&url).await;
            assert_eq!(status, 200, "{body}");
            parse(&body)["models"].as_array().expect("models").clone()
        }
    };
    let tags = listed("/api/tags").await;
    let summary: Vec<Value> = tags
        .iter()
        .map(|m| json!([m["name"], m["details"]["context_length"], m["capabilities"]]))
        .collect();
    let from_props = json!(["completion", "tools", "thinking", "vision"]);
    assert_eq!(
        summary,
        [
            json!(["alias:latest", 8192, from_props]),
            json!(["big:latest", 32768, overridden]),
            json!(["backend-model:latest", 8192, from_props]),
        ]
    );
    let ps = listed("/api/ps").await;
    let contexts: Vec<Value> = ps.iter().map(|m| json!([m["name"], m["context_length"]])).collect();
    assert_eq!(
        contexts,
        [
            json!(["alias:latest", 8192]),
            json!(["big:latest", 32768]),
            json!(["backend-model:latest", 8192])
        ]
    );
}

/// DeepSeek-R1 distills and other models served without a reasoning parser leave
/// `<think>…</think>` in the text, cut anywhere across chunks. With `strip_think` the
/// client gets it as `thinking` and clean content; `think: false` shows none of it.
#[tokio::test]
async fn strip_think_moves_inline_tags_into_thinking() {
    let pieces = ["<thi", "nk>Let me", " think.</th", "ink>Hello", " <3", " <"];
    let mock = Mock::start(move |req| {
        if req.body["stream"] == false {
            let message = json!({"role": "assistant", "content": "<think>Let me think.</think>Hello <3 <"});
            return Reply::Json(200, completion(message, "stop"));
        }
        let mut events = vec![role()];
        events.extend(pieces.iter().map(|p| text(p)));
        events.extend([finish("stop"), usage(10, 6)]);
        Reply::Stream(whole(sse(&events) + DONE))
    })
    .await;
    let mut bridge = Bridge::openai(
        &mock.url,
        json!({"alias": {"model": "backend-model", "strip_think": true}}),
    )
    .await;

    let (status, _, body) = chat(&bridge, json!({"model": "alias", "messages": hi()})).await;
    assert_eq!(status, 200);
    // A trailing "<" might start a tag: it is held back, and sent when the answer ends.
    assert_eq!(
        lines(&body, TOTAL),
        [
            think("Let me"),
            think(" think."),
            say("Hello"),
            say(" <3"),
            say(" "),
            say("<"),
            done_line(10, 6)
        ]
    );

    let (status, _, body) = chat(&bridge, json!({"model": "alias", "messages": hi(), "think": false})).await;
    assert_eq!(status, 200);
    assert_eq!(
        lines(&body, TOTAL),
        [say("Hello"), say(" <3"), say(" "), say("<"), done_line(10, 6)]
    );

    let (status, _, body) = chat(&bridge, json!({"model": "alias", "messages": hi(), "stream": false})).await;
    assert_eq!(status, 200);
    assert_eq!(
        settle(parse(&body), TOTAL)["message"],
        json!({"role": "assistant", "content": "Hello <3 <", "thinking": "Let me think."})
    );

    let kwargs: Vec<Value> = mock
        .requests()
        .iter()
        .map(|r| r.body["chat_template_kwargs"].clone())
        .collect();
    assert_eq!(kwargs, [Value::Null, json!({"enable_thinking": false}), Value::Null]);
    let rows: Vec<Value> = bridge.rows().await.iter().map(project).collect();
    let answered = json!({"response": "Hello <3 <", "prompt_tokens": 10, "completion_tokens": 6});
    let mut thought = answered.clone();
    thought["thinking"] = "Let me think.".into();
    assert_eq!(
        rows,
        [
            row(thought),
            row(answered),
            row(
                json!({"stream": 0, "response": "Hello <3 <", "thinking": "Let me think.",
                "prompt_tokens": 12, "completion_tokens": 7})
            ),
        ]
    );
}

/// Real reasoning models write `<think>\n…\n</think>\n\n` and Ollama's thinking parser
/// drops the whitespace right inside and after the tags, as llama.cpp's reasoning
/// parser does: the answer must not start with the blank lines.
#[tokio::test]
async fn strip_think_drops_the_whitespace_around_the_tags() {
    let mock = Mock::streaming(whole(
        sse(&[
            role(),
            text("<think>\nShort."),
            text("\n</think>\n\n"),
            text("Hello!"),
            finish("stop"),
        ]) + DONE,
    ))
    .await;
    let bridge = Bridge::openai(
        &mock.url,
        json!({"alias": {"model": "backend-model", "strip_think": true}}),
    )
    .await;
    let (status, _, body) = chat(&bridge, json!({"model": "alias", "messages": hi()})).await;
    assert_eq!(status, 200);
    let lines = lines(&body, ALL_MEASURED);
    let joined = |key: &str| -> String {
        lines
            .iter()
            .map(|l| l["message"][key].as_str().unwrap_or_default())
            .collect()
    };
    assert_eq!(joined("content"), "Hello!");
    assert_eq!(joined("thinking").trim(), "Short.");
    assert!(!joined("thinking").starts_with('\n'), "{lines:#?}");
}

/// The reasoning the mock always sends, and the answer after it.
fn reasoning_mock_reply() -> Reply {
    Reply::Stream(whole(
        sse(&[
            role(),
            delta(json!({"reasoning_content": "Hmm"})),
            text("Four."),
            finish("stop"),
        ]) + DONE,
    ))
}

/// (`chat_template_kwargs`, `reasoning_effort`) of each upstream request.
fn thinking_keys(mock: &Mock) -> Vec<(Value, Value)> {
    mock.requests()
        .iter()
        .map(|r| {
            (
                r.body.get("chat_template_kwargs").cloned().unwrap_or(Value::Null),
                r.body.get("reasoning_effort").cloned().unwrap_or(Value::Null),
            )
        })
        .collect()
}

/// OpenAI and OpenRouter take `reasoning_effort` and know no template switch:
/// `think: true` is "medium", a level is passed on, and `think: false` sends nothing
/// but still hides what the model thinks. llama.cpp's default style sends the switch
/// and the level side by side.
#[tokio::test]
async fn backend_thinking_style_decides_what_think_becomes() {
    let mock = Mock::start(|_| reasoning_mock_reply()).await;
    let mut effort = Bridge::start(json!({
        "backend": {"type": "openai", "endpoint": mock.url, "thinking": "reasoning_effort"},
        "models": {"mappings": {"alias": "backend-model"}},
    }))
    .await;
    let ask = |think: Value| {
        let mut body = json!({"model": "alias", "messages": hi()});
        if !think.is_null() {
            body["think"] = think;
        }
        body
    };
    let thought = [think("Hmm"), say("Four."), measured_done_line(2)];
    for level in [json!(true), json!("high"), json!("low"), Value::Null] {
        let (status, _, body) = chat(&effort, ask(level.clone())).await;
        assert_eq!(
            (status, lines(&body, ALL_MEASURED)),
            (200, thought.to_vec()),
            "think {level}"
        );
    }
    let (status, _, body) = chat(&effort, ask(json!(false))).await;
    assert_eq!(status, 200);
    assert_eq!(
        lines(&body, ALL_MEASURED),
        [say("Four."), measured_done_line(1)],
        "think: false hides the reasoning the backend sends anyway"
    );
    assert_eq!(
        thinking_keys(&mock),
        [
            (Value::Null, json!("medium")),
            (Value::Null, json!("high")),
            (Value::Null, json!("low")),
            (Value::Null, Value::Null),
            (Value::Null, Value::Null),
        ]
    );
    let rows: Vec<Value> = effort.rows().await.iter().map(project).collect();
    // The backend reported no usage: the row estimates the prompt at a token per four characters.
    let with_thinking =
        row(json!({"response": "Four.", "thinking": "Hmm", "prompt_tokens": 8, "completion_tokens": 2}));
    assert_eq!(
        rows,
        [
            with_thinking.clone(),
            with_thinking.clone(),
            with_thinking.clone(),
            with_thinking,
            row(json!({"response": "Four.", "prompt_tokens": 8, "completion_tokens": 1})),
        ]
    );

    // The default style, and `none`, on a fresh mock.
    let mock = Mock::start(|_| reasoning_mock_reply()).await;
    let default = bridge(&mock).await;
    let none = Bridge::start(json!({
        "backend": {"type": "openai", "endpoint": mock.url, "thinking": "none"},
        "models": {"mappings": {"alias": "backend-model"}},
    }))
    .await;
    for (bridge, think) in [
        (&default, json!("low")),
        (&default, json!(true)),
        (&none, json!("high")),
        (&none, json!(false)),
    ] {
        let (status, _, body) = chat(bridge, ask(think.clone())).await;
        let expected = if think == false {
            vec![say("Four."), measured_done_line(1)]
        } else {
            thought.to_vec()
        };
        assert_eq!((status, lines(&body, ALL_MEASURED)), (200, expected), "think {think}");
    }
    assert_eq!(
        thinking_keys(&mock),
        [
            (json!({"enable_thinking": true}), json!("low")),
            (json!({"enable_thinking": true}), Value::Null),
            (Value::Null, Value::Null),
            (Value::Null, Value::Null),
        ]
    );
}

/// A thinking style the bridge does not know stops start-up with a message naming
/// `backend.thinking` and the accepted values (exit code 2 from the binary).
#[tokio::test]
async fn unknown_thinking_style_refuses_to_start() {
    let config = json!({
        "backend": {"type": "openai", "endpoint": "http://127.0.0.1:9", "thinking": "effort"},
        "database": {"path": ":memory:"},
    });
    let problem =
        "backend.thinking: 'effort' is not a thinking style (use chat_template_kwargs, reasoning_effort or none)";
    let error = ollabridge::config::Config::from_json(&config.to_string()).expect_err("an unknown style is refused");
    assert_eq!(error.to_string(), format!("invalid config <inline>: {problem}"));

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.json");
    std::fs::write(&path, config.to_string()).expect("write config");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ollabridge"))
        .arg("--config")
        .arg(&path)
        .env_remove("OLLABRIDGE_CONFIG")
        .output()
        .await
        .expect("run ollabridge");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("ollabridge: invalid config {}: {problem}\n", path.display())),
        "{stderr}"
    );
}

/// A 1×1 PNG and the start of a JPEG, base64 as Ollama clients send them.
const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";
const JPEG: &str = "/9j/4AAQSkZJRgABAQEASABIAAD/2wBDAAgGBgcGBQgHBwcJCQgKDBQNDAsLDBkSEw8UHRofHh0aHBwgJC4nICIsIxwcKDcpLDAxNDQ0Hyc5PTgyPC4zNDL/2Q==";

/// Ollama images are bare base64; OpenAI servers want `data:` URLs with a media type,
/// so each becomes an `image_url` part after the text. llama.cpp answers an image to a
/// model without a projector with HTTP 500, which is the client's mistake: a 400.
#[tokio::test]
async fn images_become_data_urls_and_a_refusal_is_400() {
    let message = "image input is not supported - hint: if this is unexpected, you may need to provide the mmproj";
    let mock = Mock::start(move |req| {
        if req.body["messages"][0]["content"][0]["text"] == "refuse" {
            return Reply::Json(
                500,
                json!({"error": {"code": 500, "message": message, "type": "server_error"}}),
            );
        }
        match req.body["stream"].as_bool() {
            Some(true) => Reply::Stream(said(&["A dot."])),
            _ => Reply::Json(
                200,
                completion(json!({"role": "assistant", "content": "A dot."}), "stop"),
            ),
        }
    })
    .await;
    let mut bridge = bridge(&mock).await;
    let images = json!([PNG, JPEG]);
    let asked = |text: &str| json!([{"role": "user", "content": text, "images": images}]);

    let (status, _, body) = chat(&bridge, json!({"model": "alias", "messages": asked("What is this?")})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(lines(&body, TOTAL), [say("A dot."), done_line(10, 1)]);
    let (status, _, body) = generate(
        &bridge,
        json!({"model": "alias", "prompt": "What is this?", "images": images, "stream": false}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(settle(parse(&body), TOTAL)["response"], "A dot.");

    let refused = json!({"error": message});
    for stream in [true, false] {
        let (status, content_type, body) = chat(
            &bridge,
            json!({"model": "alias", "messages": asked("refuse"), "stream": stream}),
        )
        .await;
        assert_eq!(
            (status, content_type.as_str()),
            (400, "application/json"),
            "stream {stream}"
        );
        assert_eq!(parse(&body), refused, "stream {stream}");
    }
    let (status, _, body) = generate(&bridge, json!({"model": "alias", "prompt": "refuse", "images": [PNG]})).await;
    assert_eq!((status, parse(&body)), (400, refused));

    let parts = |text: &str, images: &[&str]| {
        let mut parts = vec![json!({"type": "text", "text": text})];
        for (image, media_type) in images
            .iter()
            .map(|i| (i, if i.starts_with("/9j/") { "jpeg" } else { "png" }))
        {
            parts.push(
                json!({"type": "image_url", "image_url": {"url": format!("data:image/{media_type};base64,{image}")}}),
            );
        }
        json!([{"role": "user", "content": parts}])
    };
    let messages: Vec<Value> = mock.requests().iter().map(|r| r.body["messages"].clone()).collect();
    assert_eq!(
        messages,
        [
            parts("What is this?", &[PNG, JPEG]),
            parts("What is this?", &[PNG, JPEG]),
            parts("refuse", &[PNG, JPEG]),
            parts("refuse", &[PNG, JPEG]),
            parts("refuse", &[PNG]),
        ]
    );
    assert!(mock.requests().iter().all(|r| r.path == "/v1/chat/completions"));

    let rows: Vec<Value> = bridge.rows().await.iter().map(project).collect();
    let failed = |endpoint: &str, stream: i64| {
        row(
            json!({"endpoint": endpoint, "stream": stream, "status_code": 400, "error": message,
            "response": null, "done_reason": null}),
        )
    };
    assert_eq!(
        rows,
        [
            row(json!({"response": "A dot.", "prompt_tokens": 10, "completion_tokens": 1})),
            row(json!({"endpoint": "/api/generate", "stream": 0, "response": "A dot.",
                "prompt_tokens": 12, "completion_tokens": 7})),
            failed("/api/chat", 1),
            failed("/api/chat", 0),
            failed("/api/generate", 1),
        ]
    );
}

/// Fill-in-the-middle: llama.cpp's `/v1/completions` ignores `suffix` silently, so a
/// model must be declared able to `insert`, as Ollama refuses `suffix` otherwise;
/// then prompt and suffix go to `/v1/completions` as they are.
#[tokio::test]
async fn generate_suffix_needs_the_insert_capability() {
    let mock = Mock::start(|_| {
        let piece = |t: &str, finish: Value| {
            json!({"id": "cmpl-mock", "object": "text_completion", "created": 1, "model": "backend-model",
                "choices": [{"index": 0, "text": t, "logprobs": null, "finish_reason": finish}]})
        };
        Reply::Stream(whole(
            sse(&[piece("    c = a + b", Value::Null), piece("", json!("stop"))]) + DONE,
        ))
    })
    .await;
    let mut plain = bridge(&mock).await;
    let fim = json!({"prompt": "def add(a, b):\n", "suffix": "\n    return c\n"});
    let ask = |model: &str| {
        let mut body = fim.clone();
        body["model"] = model.into();
        body
    };
    let no_insert = |model: &str| {
        format!(
            "\"{model}\" does not support insert (suffix); add \"insert\" to its capabilities in models.mappings \
             if the backend's /v1/completions honours suffix"
        )
    };
    for model in ["alias", "backend-model"] {
        let (status, _, body) = generate(&plain, ask(model)).await;
        assert_eq!(
            (status, parse(&body)),
            (400, json!({"error": no_insert(model)})),
            "{model}"
        );
    }
    assert_eq!(mock.hits(), 0);

    let mut coder = Bridge::openai(
        &mock.url,
        json!({"coder": {"model": "backend-model", "capabilities": ["completion", "insert"]}}),
    )
    .await;
    let (status, _, body) = generate(&coder, ask("coder")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        lines(&body, ALL_MEASURED),
        [
            json!({"model": "coder", "created_at": "<time>", "response": "    c = a + b", "done": false}),
            json!({"model": "coder", "created_at": "<time>", "response": "", "done": true, "done_reason": "stop",
                "total_duration": "<measured>", "load_duration": 0, "prompt_eval_count": 0,
                "prompt_eval_duration": "<measured>", "eval_count": 1, "eval_duration": "<measured>"}),
        ]
    );
    let upstream = mock.only_request();
    assert_eq!(upstream.path, "/v1/completions");
    assert_eq!(
        upstream.body,
        json!({"model": "backend-model", "prompt": "def add(a, b):\n", "suffix": "\n    return c\n",
            "stream": true, "stream_options": {"include_usage": true}})
    );

    // Refused after resolving: the rows name the backend model too.
    let refused = |model: &str| {
        row(
            json!({"endpoint": "/api/generate", "model": model, "status_code": 400, "error": no_insert(model),
            "response": null, "done_reason": null}),
        )
    };
    let rows: Vec<Value> = plain.rows().await.iter().map(project).collect();
    assert_eq!(rows, [refused("alias"), refused("backend-model")]);
    assert_eq!(
        only_row(&coder.rows().await),
        row(
            json!({"endpoint": "/api/generate", "model": "coder", "response": "    c = a + b",
                "prompt_tokens": 4, "completion_tokens": 1})
        )
    );
}

/// Ollama's load-time knobs (`num_ctx` as Home Assistant's float, `num_gpu`, threads…)
/// and `keep_alive` in any spelling mean nothing to an OpenAI server and are not sent;
/// llama.cpp's own samplers such as mirostat are, under their names.
#[tokio::test]
async fn load_time_options_and_keep_alive_are_not_sent_upstream() {
    let mock = Mock::start(|_| Reply::Stream(said(&["ok"]))).await;
    let mut bridge = bridge(&mock).await;
    let options = json!({"num_ctx": 8192.0, "num_gpu": 99, "num_thread": 8, "num_batch": 512, "num_keep": 5,
        "use_mmap": true, "main_gpu": 0, "low_vram": false,
        "mirostat": 2, "mirostat_tau": 5.0, "mirostat_eta": 0.1});
    let keep_alives = [json!("5m"), json!(-1), json!("-1s"), json!(300), json!(0)];
    for keep_alive in &keep_alives {
        let (status, _, body) = chat(
            &bridge,
            json!({"model": "alias", "messages": hi(), "options": options, "keep_alive": keep_alive}),
        )
        .await;
        assert_eq!(
            (status, lines(&body, TOTAL)),
            (200, vec![say("ok"), done_line(10, 1)]),
            "{keep_alive}"
        );
    }
    let (status, _, _) = generate(
        &bridge,
        json!({"model": "alias", "prompt": "Hi", "options": options, "keep_alive": "10m"}),
    )
    .await;
    assert_eq!(status, 200);

    let expected = json!({"model": "backend-model", "messages": hi(), "stream": true,
        "stream_options": {"include_usage": true}, "mirostat": 2, "mirostat_tau": 5.0, "mirostat_eta": 0.1});
    let bodies: Vec<Value> = mock.requests().into_iter().map(|r| r.body).collect();
    assert_eq!(bodies, vec![expected; keep_alives.len() + 1]);
    let rows = bridge.rows().await;
    assert_eq!(rows.len(), keep_alives.len() + 1);
    assert!(
        rows.iter().all(|r| r["status_code"] == 200 && r["error"].is_null()),
        "{rows:#?}"
    );
}

/// Reads one HTTP/1.1 request (head and `content-length` body) from `stream` into
/// `buf`; its request line, or `None` when the peer closed first.
async fn read_request(stream: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    use tokio::io::AsyncReadExt;
    buf.clear();
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .map_or(0, |n| n.trim().parse().unwrap());
            if buf.len() >= end + 4 + length {
                return head.lines().next().map(str::to_owned);
            }
        }
        let mut chunk = [0; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// llama-server announces keep-alive but closes connections after streams, so the
/// bridge's next request on such a pooled connection finds it closed before any answer.
/// The backend never acted on it, so the bridge sends it again on a new connection and
/// the client sees only the answer. This backend answers the first request on each
/// connection and closes the connection when a second one arrives on it.
#[tokio::test]
async fn a_request_on_a_pooled_connection_the_backend_closed_is_sent_again() {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let body = completion(json!({"role": "assistant", "content": "ok"}), "stop").to_string();
    let answer = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: keep-alive\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    tokio::spawn({
        let seen = seen.clone();
        async move {
            for connection in 1.. {
                let (mut stream, _) = listener.accept().await.unwrap();
                let (seen, answer) = (seen.clone(), answer.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let Some(first) = read_request(&mut stream, &mut buf).await else {
                        return;
                    };
                    seen.lock().unwrap().push(format!("{connection}: {first}"));
                    stream.write_all(answer.as_bytes()).await.unwrap();
                    if let Some(second) = read_request(&mut stream, &mut buf).await {
                        seen.lock()
                            .unwrap()
                            .push(format!("{connection}: {second} (closed unanswered)"));
                    }
                });
            }
        }
    });
    // `max_concurrent` set: no look at `/props` on these connections.
    let mut bridge = Bridge::start(json!({
        "backend": {"type": "openai", "endpoint": url, "timeout": 30, "max_concurrent": 0},
        "models": {"mappings": {"alias": "backend-model"}},
    }))
    .await;
    for _ in 0..3 {
        let (status, _, body) = chat(&bridge, json!({"model": "alias", "messages": hi(), "stream": false})).await;
        let answer: Value = serde_json::from_str(&body).unwrap();
        assert_eq!((status, &answer["message"]["content"]), (200, &json!("ok")), "{body}");
    }
    let post = "post /v1/chat/completions http/1.1";
    assert_eq!(
        *seen.lock().unwrap(),
        [
            format!("1: {post}"),
            format!("1: {post} (closed unanswered)"),
            format!("2: {post}"),
            format!("2: {post} (closed unanswered)"),
            format!("3: {post}"),
        ]
    );
    let rows = bridge.rows().await;
    let outcomes: Vec<_> = rows
        .iter()
        .map(|r| (r["status_code"].clone(), r["error"].clone()))
        .collect();
    assert_eq!(outcomes, vec![(json!(200), Value::Null); 3]);
}

// ---------------------------------------------------------------------------------
// Newer Ollama request fields: logprobs, think levels, truncate and shift
// ---------------------------------------------------------------------------------

/// A streamed chat chunk saying `content`, with llama.cpp's log probabilities for it:
/// each alternative is `(token, logprob)`, the chosen token first.
fn text_with_logprobs(content: &str, alternatives: &[(&str, f64)]) -> Value {
    let entry =
        |token: &str, logprob: f64| json!({"id": 1, "token": token, "bytes": token.as_bytes(), "logprob": logprob});
    let mut chosen = entry(content, alternatives[0].1);
    chosen["top_logprobs"] = alternatives.iter().map(|(t, l)| entry(t, *l)).collect();
    let mut event = text(content);
    event["choices"][0]["logprobs"] = json!({"content": [chosen]});
    event
}

/// What Ollama writes for that token when one alternative was asked for.
fn ollama_logprob(token: &str, logprob: f64) -> Value {
    json!({"token": token, "logprob": logprob, "bytes": token.as_bytes(),
        "top_logprobs": [{"token": token, "logprob": logprob, "bytes": token.as_bytes()}]})
}

/// `logprobs` and `top_logprobs` reach the backend as OpenAI's, and every chunk carries
/// Ollama's `logprobs` array beside its message, alternatives cut to what was asked; the
/// whole answer (`stream: false`) has them all in order.
#[tokio::test]
async fn logprobs_are_ollamas_streamed_and_not() {
    let mock = Mock::start(|req| {
        if req.body["stream"] == true {
            Reply::Stream(whole(
                sse(&[
                    role(),
                    text_with_logprobs("Hi", &[("Hi", -0.5), ("Hey", -1.25), ("Yo", -3.0)]),
                    text_with_logprobs("!", &[("!", -0.125), (".", -2.5)]),
                    finish("stop"),
                    usage(10, 2),
                ]) + DONE,
            ))
        } else {
            let mut body = completion(json!({"role": "assistant", "content": "Hi!"}), "stop");
            let content = [
                text_with_logprobs("Hi", &[("Hi", -0.5), ("Hey", -1.25)]),
                text_with_logprobs("!", &[("!", -0.125), (".", -2.5)]),
            ]
            .map(|e| e["choices"][0]["logprobs"]["content"][0].clone());
            body["choices"][0]["logprobs"] = json!({"content": content});
            Reply::Json(200, body)
        }
    })
    .await;
    let mut bridge = bridge(&mock).await;
    let ask = json!({"model": "alias", "messages": hi(), "logprobs": true, "top_logprobs": 1});

    let (status, _, body) = chat(&bridge, ask.clone()).await;
    assert_eq!(status, 200);
    let with = |mut line: Value, logprobs: Value| {
        line["logprobs"] = logprobs;
        line
    };
    assert_eq!(
        lines(&body, TOTAL),
        [
            with(say("Hi"), json!([ollama_logprob("Hi", -0.5)])),
            with(say("!"), json!([ollama_logprob("!", -0.125)])),
            done_line(10, 2),
        ]
    );
    // Where Ollama puts it: after `done`, outside the message.
    assert!(
        body.lines().next().unwrap().ends_with(
            r#""message":{"role":"assistant","content":"Hi"},"done":false,"logprobs":[{"token":"Hi","logprob":-0.5,"bytes":[72,105],"top_logprobs":[{"token":"Hi","logprob":-0.5,"bytes":[72,105]}]}]}"#
        ),
        "{body}"
    );

    let mut whole_answer = ask.clone();
    whole_answer["stream"] = false.into();
    let (status, _, body) = chat(&bridge, whole_answer).await;
    assert_eq!(status, 200);
    let answer = settle(parse(&body), TOTAL);
    assert_eq!(answer["message"], json!({"role": "assistant", "content": "Hi!"}));
    assert_eq!(
        answer["logprobs"],
        json!([ollama_logprob("Hi", -0.5), ollama_logprob("!", -0.125)])
    );

    let upstream: Vec<(Value, Value)> = mock
        .requests()
        .iter()
        .map(|r| (r.body["logprobs"].clone(), r.body["top_logprobs"].clone()))
        .collect();
    assert_eq!(upstream, [(json!(true), json!(1)), (json!(true), json!(1))]);

    // Not asked for: none, whatever the backend sends.
    let (_, _, body) = chat(&bridge, json!({"model": "alias", "messages": hi()})).await;
    assert_eq!(lines(&body, TOTAL), [say("Hi"), say("!"), done_line(10, 2)]);
    let responses: Vec<Value> = bridge.rows().await.iter().map(|r| r["response"].clone()).collect();
    assert_eq!(responses, vec![json!("Hi!"); 3]);
}

/// `/api/generate` with `raw` goes to `/v1/completions`, which takes the number of
/// alternatives as `logprobs` itself; `top_logprobs: 0` keeps only the chosen tokens'.
#[tokio::test]
async fn generate_logprobs_over_completions() {
    let mock = Mock::start(|_| {
        let chunk = |text: &str, logprob: f64, finish: Value| {
            json!({"object": "text_completion", "choices": [{"index": 0, "text": text, "finish_reason": finish,
                "logprobs": {"content": [{"id": 1, "token": text, "bytes": text.as_bytes(), "logprob": logprob,
                    "top_logprobs": [{"id": 1, "token": text, "bytes": text.as_bytes(), "logprob": logprob}]}]}}]})
        };
        Reply::Stream(whole(
            sse(&[chunk("Once", -0.25, Value::Null), chunk(" upon", -0.75, json!("stop"))]) + DONE,
        ))
    })
    .await;
    let bridge = bridge(&mock).await;
    let (status, _, body) = generate(
        &bridge,
        json!({"model": "alias", "prompt": "Tell me", "raw": true, "logprobs": true, "top_logprobs": 0}),
    )
    .await;
    assert_eq!(status, 200);
    let logprobs: Vec<Value> = ndjson(&body).iter().map(|l| l["logprobs"].clone()).collect();
    assert_eq!(
        logprobs,
        [
            json!([{"token": "Once", "logprob": -0.25, "bytes": b"Once"}]),
            json!([{"token": " upon", "logprob": -0.75, "bytes": b" upon"}]),
            Value::Null,
        ]
    );
    let upstream = mock.only_request();
    assert_eq!(
        (upstream.path.as_str(), &upstream.body["logprobs"]),
        ("/v1/completions", &json!(1))
    );
    assert_eq!(upstream.body.get("top_logprobs"), None);
}

/// Every `think` Ollama takes works ("max" is the strongest effort OpenAI-compatible
/// servers know, "high"); anything else is refused in Ollama's words before the backend
/// is asked, as an out-of-range `top_logprobs` is. `truncate` and `shift` are accepted
/// and not sent on.
#[tokio::test]
async fn think_levels_and_ollamas_refusals() {
    let mock = Mock::start(|_| reasoning_mock_reply()).await;
    let bridge = bridge(&mock).await;
    for level in ["low", "medium", "high", "max"] {
        let body = json!({"model": "alias", "messages": hi(), "think": level, "truncate": true, "shift": false});
        let (status, _, answer) = chat(&bridge, body).await;
        assert_eq!(
            (status, lines(&answer, ALL_MEASURED)),
            (200, vec![think("Hmm"), say("Four."), measured_done_line(2)]),
            "think {level}"
        );
    }
    let effort = |level: &str| (json!({"enable_thinking": true}), json!(level));
    assert_eq!(
        thinking_keys(&mock),
        [effort("low"), effort("medium"), effort("high"), effort("high")]
    );
    assert!(
        mock.requests()
            .iter()
            .all(|r| r.body.get("truncate").is_none() && r.body.get("shift").is_none())
    );

    let must_be = r#"(must be "high", "medium", "low", "max", true, or false)"#;
    let refusals = [
        (
            json!({"think": "maximum"}),
            format!(r#"invalid value for 'think': invalid think value: "maximum" {must_be}"#),
        ),
        (
            json!({"think": 2}),
            format!("invalid value for 'think': think must be a boolean or string {must_be}"),
        ),
        (
            json!({"logprobs": true, "top_logprobs": 21}),
            "invalid value for 'top_logprobs': top_logprobs must be between 0 and 20".to_owned(),
        ),
        (
            json!({"truncate": "yes"}),
            "invalid value for 'truncate': invalid type: string \"yes\", expected a boolean".to_owned(),
        ),
    ];
    for (fields, error) in refusals {
        for route in ["chat", "generate"] {
            let mut body = json!({"model": "alias", "messages": hi(), "prompt": "Hi"});
            body.as_object_mut()
                .unwrap()
                .extend(fields.as_object().unwrap().clone());
            let (status, _, answer) = post(&format!("{}/api/{route}", bridge.url), body).await;
            let message = parse(&answer)["error"].as_str().unwrap().to_owned();
            assert_eq!(status, 400, "{route} {fields}");
            assert!(message.starts_with(&error), "{route} {fields}: {message}");
        }
    }
    assert_eq!(mock.hits(), 4, "refused requests never reach the backend");
}

/// llama.cpp's refusal of a prompt longer than its context (`-c 256`, 458 tokens).
fn context_exceeded(prompt_tokens: u64) -> Reply {
    Reply::Json(
        400,
        json!({"error": {"code": 400, "type": "exceed_context_size_error", "n_prompt_tokens": prompt_tokens, "n_ctx": 256,
            "message": format!("request ({prompt_tokens} tokens) exceeds the available context size (256 tokens), try increasing it")}}),
    )
}

fn history(turns: usize) -> Value {
    let mut messages = vec![json!({"role": "system", "content": "Be brief."})];
    messages.extend((0..turns).map(|i| {
        json!({"role": if i % 2 == 0 { "user" } else { "assistant" }, "content": format!("Message number {i} with some filler words here")})
    }));
    messages.push(json!({"role": "user", "content": "Hello!"}));
    Value::Array(messages)
}

/// As Ollama does by default, a chat the backend says is too long is sent again without
/// its oldest messages (the system message and the question stay), from the backend's
/// counts, until it fits; the client gets the answer. With `truncate: false` it gets the
/// backend's refusal, a 400.
#[tokio::test]
async fn a_chat_too_long_for_the_context_loses_its_oldest_messages() {
    // ~65 tokens a message, as llama-server counted the captured request; 256 fit.
    let mock = Mock::start(|req| {
        let messages = req.body["messages"].as_array().unwrap();
        match messages.len() as u64 * 65 {
            _ if messages.iter().any(|m| m["content"] == "huge") => context_exceeded(9000),
            tokens if tokens > 256 => context_exceeded(tokens),
            _ => Reply::Stream(said(&["Hi"])),
        }
    })
    .await;
    let mut bridge = bridge(&mock).await;
    let (status, _, body) = chat(&bridge, json!({"model": "alias", "messages": history(6)})).await;
    assert_eq!((status, lines(&body, TOTAL)), (200, vec![say("Hi"), done_line(10, 1)]));
    let sent: Vec<Vec<String>> = mock
        .requests()
        .iter()
        .map(|r| {
            r.body["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["content"].as_str().unwrap().to_owned())
                .collect()
        })
        .collect();
    // 8 messages, 520 tokens: first cut by estimate to 4 messages (260 tokens), then one more.
    assert_eq!(sent.iter().map(Vec::len).collect::<Vec<_>>(), [8, 4, 3]);
    assert_eq!(
        sent[2],
        ["Be brief.", "Message number 5 with some filler words here", "Hello!"]
    );
    let (status, _, body) = chat(
        &bridge,
        json!({"model": "alias", "messages": history(6), "truncate": false}),
    )
    .await;
    assert_eq!(
        (status, parse(&body)),
        (
            400,
            json!({"error": "request (520 tokens) exceeds the available context size (256 tokens), try increasing it"})
        )
    );
    assert_eq!(mock.hits(), 4, "truncate: false sends the chat once");

    // Nothing (left) to drop: the refusal, after one try or two.
    let too_long =
        json!({"error": "request (9000 tokens) exceeds the available context size (256 tokens), try increasing it"});
    let system = json!({"role": "system", "content": "Be brief."});
    let old = json!({"role": "user", "content": "Old."});
    let question = json!({"role": "user", "content": "huge"});
    for (messages, hits) in [(json!([system, question]), 5), (json!([old, system, question]), 7)] {
        let (status, _, body) = chat(&bridge, json!({"model": "alias", "messages": messages})).await;
        assert_eq!((status, parse(&body)), (400, too_long.clone()), "{messages}");
        assert_eq!(mock.hits(), hits, "{messages}");
    }
    let sent = &mock.requests()[6].body["messages"];
    assert_eq!(sent, &json!([system, question]));
    let rows = bridge.rows().await;
    let outcomes: Vec<_> = rows
        .iter()
        .map(|r| (r["status_code"].clone(), r["response"].clone()))
        .collect();
    assert_eq!(
        outcomes[0],
        (json!(200), json!("Hi")),
        "the answer after the cut is logged as any other"
    );
    assert_eq!(
        outcomes[1..],
        [
            (json!(400), Value::Null),
            (json!(400), Value::Null),
            (json!(400), Value::Null)
        ]
    );
}
