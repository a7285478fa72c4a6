//! OpenAI's API on the Ollama port (`/v1/...`), in front of a scripted mock OpenAI
//! backend: the body the backend receives (only `model` renamed, usage asked for when the
//! client streams without it), the bytes the client receives (the backend's own, minus
//! the usage chunk the client did not ask for), OpenAI-shaped errors, and the one log
//! row each request leaves, checked exactly.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

mod common;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt;
use common::{Bridge, get_json, get_text};
use serde_json::{Value, json};
use tokio::sync::Notify;

// ---------------------------------------------------------------------------------
// The mock backend
// ---------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Piece {
    /// Bytes sent as one HTTP chunk.
    Data(Bytes),
    /// Never send anything again, keeping the connection open.
    Hang,
}

#[derive(Debug, Clone)]
enum Reply {
    /// 200 `text/event-stream` made of these pieces.
    Stream(Vec<Piece>),
    Json(u16, Value),
    Text(u16, &'static str),
    /// Waits this long before answering.
    After(Duration, Box<Reply>),
}

/// What the mock received: the path and the body exactly as sent.
#[derive(Debug, Clone)]
struct Upstream {
    path: String,
    body: String,
}

impl Upstream {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

type Script = dyn Fn(&Upstream) -> Reply + Send + Sync;

struct Shared {
    script: Box<Script>,
    requests: Mutex<Vec<Upstream>>,
    /// Signalled when a streamed body is dropped before its end (the bridge hung up).
    body_dropped: Notify,
}

struct Mock {
    url: String,
    shared: Arc<Shared>,
}

impl Mock {
    async fn start(script: impl Fn(&Upstream) -> Reply + Send + Sync + 'static) -> Mock {
        let shared = Arc::new(Shared {
            script: Box::new(script),
            requests: Mutex::new(Vec::new()),
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

    /// The one request the mock got besides model lists.
    fn only_request(&self) -> Upstream {
        let requests = self.shared.requests.lock().unwrap().clone();
        assert_eq!(requests.len(), 1, "{requests:#?}");
        requests.into_iter().next().unwrap()
    }

    fn requests(&self) -> Vec<Upstream> {
        self.shared.requests.lock().unwrap().clone()
    }

    async fn body_dropped(&self) {
        tokio::time::timeout(Duration::from_secs(5), self.shared.body_dropped.notified())
            .await
            .expect("the backend stream was still open 5 s after the client left");
    }
}

/// Signals `body_dropped` unless disarmed (the body was sent to its end).
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
            {"id": "Other-Model", "object": "model", "owned_by": "llamacpp"},
        ]}))
        .into_response();
    }
    if uri.path() == "/props" {
        return StatusCode::NOT_FOUND.into_response();
    }
    let request = Upstream {
        path: uri.path().to_owned(),
        body: String::from_utf8(body.to_vec()).expect("utf-8 body"),
    };
    shared.requests.lock().unwrap().push(request.clone());
    let mut reply = (shared.script)(&request);
    while let Reply::After(delay, inner) = reply {
        tokio::time::sleep(delay).await;
        reply = *inner;
    }
    match reply {
        Reply::Json(status, body) => (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response(),
        Reply::Text(status, text) => (StatusCode::from_u16(status).unwrap(), text).into_response(),
        Reply::Stream(pieces) => {
            let watch = DropWatch { shared, armed: true };
            let body = futures::stream::unfold((pieces.into_iter(), watch), |(mut pieces, mut watch)| async move {
                match pieces.next() {
                    Some(Piece::Data(bytes)) => Some((Ok::<_, Infallible>(bytes), (pieces, watch))),
                    Some(Piece::Hang) => std::future::pending().await,
                    None => {
                        watch.disarm();
                        None
                    }
                }
            });
            ([(header::CONTENT_TYPE, "text/event-stream")], Body::from_stream(body)).into_response()
        }
        Reply::After(..) => unreachable!("unwrapped above"),
    }
}

// ---------------------------------------------------------------------------------
// Upstream answers, llama-server style
// ---------------------------------------------------------------------------------

fn chunk(choices: Value) -> Value {
    json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1_700_000_000,
        "model": "backend-model", "choices": choices})
}

fn delta(delta: Value) -> Value {
    chunk(json!([{"index": 0, "delta": delta, "finish_reason": null}]))
}

fn role() -> Value {
    delta(json!({"role": "assistant", "content": null}))
}

fn text(content: &str) -> Value {
    delta(json!({"content": content}))
}

fn finish(reason: &str) -> Value {
    chunk(json!([{"index": 0, "delta": {}, "finish_reason": reason}]))
}

/// The usage-only chunk `stream_options.include_usage` adds, with llama.cpp's `timings`.
fn usage(prompt: u64, completion: u64) -> Value {
    let mut usage = chunk(json!([]));
    usage["usage"] = json!({"prompt_tokens": prompt, "completion_tokens": completion,
        "total_tokens": prompt + completion});
    usage["timings"] = json!({"prompt_n": prompt, "prompt_ms": 1.5, "predicted_n": completion, "predicted_ms": 3.25});
    usage
}

fn sse(events: &[Value]) -> String {
    events.iter().map(|e| format!("data: {e}\n\n")).collect()
}

const DONE: &str = "data: [DONE]\n\n";

fn whole(text: impl Into<String>) -> Vec<Piece> {
    vec![Piece::Data(Bytes::from(text.into()))]
}

/// The text cut into pieces of `n` bytes, regardless of lines or characters.
fn every(n: usize, text: &str) -> Vec<Piece> {
    text.as_bytes()
        .chunks(n)
        .map(|c| Piece::Data(Bytes::copy_from_slice(c)))
        .collect()
}

/// A streamed answer saying `parts`, with the usage chunk only when the request asked.
fn said(request: &Upstream, parts: &[&str]) -> String {
    let mut events = vec![role()];
    events.extend(parts.iter().map(|p| text(p)));
    events.push(finish("stop"));
    if request.json()["stream_options"]["include_usage"] == true {
        events.push(usage(10, parts.len() as u64));
    }
    sse(&events) + DONE
}

/// A whole `chat.completion`.
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

struct Answer {
    status: u16,
    content_type: String,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// POSTs `body` (JSON text, sent as it is) to `path` on the bridge.
async fn post_text(url: &str, path: &str, body: &str) -> Answer {
    let r = reqwest::Client::new()
        .post(format!("{url}{path}"))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    let content_type = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    Answer {
        status,
        content_type,
        body: r.text().await.expect("body"),
    }
}

async fn post(bridge: &Bridge, path: &str, body: Value) -> Answer {
    post_text(&bridge.url, path, &body.to_string()).await
}

/// The row fields these tests check.
const ROW_FIELDS: &[&str] = &[
    "endpoint",
    "method",
    "backend_type",
    "model",
    "backend_model",
    "stream",
    "status_code",
    "error",
    "prompt",
    "response",
    "thinking",
    "tool_calls",
    "done_reason",
    "prompt_tokens",
    "completion_tokens",
    "tokens_estimated",
];

fn project(row: &Value) -> Value {
    assert!(row["latency_ms"].is_u64(), "latency_ms {}", row["latency_ms"]);
    ROW_FIELDS.iter().map(|k| ((*k).to_owned(), row[*k].clone())).collect()
}

/// The expected row: a successful streamed chat for `alias` saying "Hi", with `changes`.
fn row(changes: Value) -> Value {
    let mut expected = json!({
        "endpoint": "/v1/chat/completions", "method": "POST", "backend_type": "openai",
        "model": "alias", "backend_model": "backend-model", "stream": 1, "status_code": 200,
        "error": null, "prompt": hi().to_string(), "response": "", "thinking": null, "tool_calls": null,
        "done_reason": "stop", "prompt_tokens": null, "completion_tokens": null, "tokens_estimated": 0,
    });
    for (k, v) in changes.as_object().expect("changes object") {
        assert!(ROW_FIELDS.contains(&k.as_str()), "unknown row field {k}");
        expected[k] = v.clone();
    }
    expected
}

/// A request that failed before the backend answered anything.
fn refused(status: u16, error: &str, changes: Value) -> Value {
    let mut expected = row(json!({"status_code": status, "error": error, "response": null, "done_reason": null}));
    for (k, v) in changes.as_object().expect("changes object") {
        expected[k] = v.clone();
    }
    expected
}

fn only_row(rows: &[Value]) -> Value {
    assert_eq!(rows.len(), 1, "{rows:#?}");
    project(&rows[0])
}

fn hi() -> Value {
    json!([{"role": "user", "content": "Hi"}])
}

fn openai_error(message: &str, kind: &str, code: Value) -> Value {
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

// ---------------------------------------------------------------------------------
// Pass-through
// ---------------------------------------------------------------------------------

/// Whatever the client sends reaches the backend byte for byte but for the model's name
/// (keys ollabridge does not know included, in their order); the answer comes back with
/// the client's name, and the row holds what an `/api/chat` row would.
#[tokio::test]
async fn whole_chat_passes_unknown_keys_and_maps_the_model() {
    let mock = Mock::start(|_| Reply::Json(200, completion("Hello there"))).await;
    let mut bridge = bridge(&mock).await;
    let client_body = r#"{"messages":[{"role":"user","content":"Hi"}],"model":"ALIAS:latest","temperature":0.2,"logit_bias":{"42":-100},"x_vendor":{"nested":[1,"two",null]},"user":"u-1"}"#;
    let r = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", bridge.url))
        .header("content-type", "application/json")
        .header("x-request-id", "trace-v1")
        .body(client_body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-request-id"], "trace-v1");
    assert_eq!(r.headers()["content-type"], "application/json");
    let mut expected = completion("Hello there");
    expected["model"] = "ALIAS:latest".into();
    assert_eq!(
        r.text().await.unwrap(),
        expected.to_string(),
        "the backend's answer, renamed"
    );

    let upstream = mock.only_request();
    assert_eq!(upstream.path, "/v1/chat/completions");
    assert_eq!(upstream.body, client_body.replace("ALIAS:latest", "backend-model"));
    let metrics = get_text(&format!("{}/metrics", bridge.admin_url)).await;
    let counted = r#"ollabridge_requests_total{model="ALIAS:latest",backend="openai",endpoint="/v1/chat/completions",status="200"} 1"#;
    assert!(metrics.lines().any(|l| l == counted), "{metrics}");

    let rows = bridge.rows().await;
    assert_eq!(
        only_row(&rows),
        row(json!({"model": "ALIAS:latest", "stream": 0, "response": "Hello there",
            "prompt_tokens": 12, "completion_tokens": 7}))
    );
    let r = &rows[0];
    assert_eq!(r["request_id"], "trace-v1");
    assert_eq!((&r["prompt_eval_ms"], &r["eval_ms"]), (&json!(1.5), &json!(3.25)));
    assert_eq!(r["tokens_per_second"], json!(7.0 / (3_250_000.0 / 1e9)));
}

/// A client that asks for usage gets the backend's stream exactly, however it was cut,
/// and the row gets text, thinking, the assembled tool call and the reported counts.
#[tokio::test]
async fn streamed_bytes_are_forwarded_unchanged() {
    let stream = sse(&[
        role(),
        delta(json!({"reasoning_content": "Plan."})),
        text("Hello"),
        delta(
            json!({"tool_calls": [{"index": 0, "id": "call_abc123", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\": "}}]}),
        ),
        delta(json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]})),
        finish("tool_calls"),
        usage(10, 5),
    ]) + DONE
        + ": anything after the end passes too\n\n";
    let sent = stream.clone();
    let mock = Mock::start(move |_| Reply::Stream(every(7, &sent))).await;
    let mut bridge = bridge(&mock).await;
    let client_body = json!({"model": "alias", "messages": hi(), "stream": true,
        "stream_options": {"include_usage": true}, "tools": [{"type": "function", "function": {"name": "get_weather"}}]});
    let answer = post(&bridge, "/v1/chat/completions", client_body.clone()).await;
    assert_eq!(
        (answer.status, answer.content_type.as_str()),
        (200, "text/event-stream")
    );
    assert_eq!(
        answer.body, stream,
        "byte for byte, usage chunk included: the client asked"
    );

    let mut expected_upstream = client_body;
    expected_upstream["model"] = "backend-model".into();
    assert_eq!(mock.only_request().body, expected_upstream.to_string());
    assert_eq!(
        only_row(&bridge.rows().await),
        row(json!({"response": "Hello", "thinking": "Plan.",
            "tool_calls": r#"[{"id":"call_abc123","function":{"index":0,"name":"get_weather","arguments":{"city":"Paris"}}}]"#,
            "prompt_tokens": 10, "completion_tokens": 5}))
    );
}

/// A client streaming without `stream_options` still gets its tokens logged: ollabridge
/// asks the backend for usage and leaves the extra chunk out of what the client sees.
/// With `backend.stream_options: false` nothing is added or left out (and the counts
/// are estimates), on the Ollama routes either. With `database.store_bodies`, the row keeps the bodies as sent.
#[tokio::test]
async fn usage_is_asked_for_and_its_chunk_left_out_unless_the_client_asked() {
    let mock = Mock::start(|request| Reply::Stream(whole(said(request, &["Hel", "lo"])))).await;
    let config = |stream_options: bool| {
        json!({
            "backend": {"type": "openai", "endpoint": mock.url, "stream_options": stream_options},
            "models": {"mappings": {"alias": "backend-model"}},
            "database": {"store_bodies": true},
        })
    };
    let client_body = json!({"model": "alias", "messages": hi(), "stream": true,
        "stream_options": {"include_usage": false}});
    let without_usage = sse(&[role(), text("Hel"), text("lo"), finish("stop")]) + DONE;

    let mut asking = Bridge::start(config(true)).await;
    let answer = post(&asking, "/v1/chat/completions", client_body.clone()).await;
    assert_eq!((answer.status, answer.body.as_str()), (200, without_usage.as_str()));
    let mut upstream = client_body.clone();
    upstream["model"] = "backend-model".into();
    upstream["stream_options"]["include_usage"] = true.into();
    assert_eq!(mock.requests()[0].body, upstream.to_string());
    let rows = asking.rows().await;
    assert_eq!(
        only_row(&rows),
        row(json!({"response": "Hello", "prompt_tokens": 10, "completion_tokens": 2}))
    );
    assert_eq!(rows[0]["request_body"], client_body.to_string());
    assert_eq!(rows[0]["backend_request"], upstream.to_string());
    let mut full = sse(&[role(), text("Hel"), text("lo"), finish("stop"), usage(10, 2)]);
    full.push_str(DONE);
    assert_eq!(
        rows[0]["backend_response"], full,
        "the backend's bytes, usage chunk included"
    );
    assert_eq!(rows[0]["response_bytes"], without_usage.len());

    let mut plain = Bridge::start(config(false)).await;
    let answer = post(&plain, "/v1/chat/completions", client_body.clone()).await;
    assert_eq!((answer.status, answer.body.as_str()), (200, without_usage.as_str()));
    let mut upstream = client_body;
    upstream["model"] = "backend-model".into();
    assert_eq!(mock.requests()[1].body, upstream.to_string());
    // The Ollama routes leave the key out too.
    let answer = post(&plain, "/api/chat", json!({"model": "alias", "messages": hi()})).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(mock.requests()[2].json().get("stream_options"), None);
    // No usage: a token a chunk, and a quarter of the prompt's characters.
    let prompt_chars = hi().to_string().len() as u64;
    let rows = plain.rows().await;
    assert_eq!(
        project(&rows[0]),
        row(
            json!({"response": "Hello", "prompt_tokens": prompt_chars.div_ceil(4), "completion_tokens": 2,
            "tokens_estimated": 1})
        )
    );
    assert_eq!(rows.len(), 2, "{rows:#?}");
}

/// `/v1/completions` streamed and whole: the prompt and text are logged, the route kept.
#[tokio::test]
async fn completions_pass_through() {
    let mock = Mock::start(|request| {
        assert_eq!(request.path, "/v1/completions");
        let text = |t: &str, finish: Value| {
            json!({"id": "cmpl-1", "object": "text_completion", "model": "backend-model",
                "choices": [{"index": 0, "text": t, "finish_reason": finish}]})
        };
        if request.json()["stream"] == true {
            let mut last = text(" time", json!("length"));
            last["usage"] = json!({"prompt_tokens": 4, "completion_tokens": 2});
            Reply::Stream(whole(sse(&[text("upon", Value::Null), last]) + DONE))
        } else {
            let mut answer = text("upon a time", json!("stop"));
            answer["usage"] = json!({"prompt_tokens": 4, "completion_tokens": 3});
            Reply::Json(200, answer)
        }
    })
    .await;
    let mut bridge = bridge(&mock).await;
    let answer = post(
        &bridge,
        "/v1/completions",
        json!({"model": "alias", "prompt": "Once", "stream": true, "max_tokens": 2}),
    )
    .await;
    assert_eq!(answer.status, 200);
    assert!(answer.body.ends_with(DONE), "{}", answer.body);
    let answer = post(&bridge, "/v1/completions", json!({"model": "alias", "prompt": "Once"})).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()["model"], "alias");
    assert_eq!(answer.json()["choices"][0]["text"], "upon a time");
    let upstream: Vec<Value> = mock.requests().iter().map(Upstream::json).collect();
    assert_eq!(
        upstream,
        [
            json!({"model": "backend-model", "prompt": "Once", "stream": true, "max_tokens": 2,
                "stream_options": {"include_usage": true}}),
            json!({"model": "backend-model", "prompt": "Once"}),
        ]
    );
    let rows: Vec<Value> = bridge.rows().await.iter().map(project).collect();
    let completions = json!({"endpoint": "/v1/completions", "prompt": "Once"});
    let mut streamed = row(json!({"response": "upon time", "done_reason": "length",
        "prompt_tokens": 4, "completion_tokens": 2}));
    let mut whole_row =
        row(json!({"stream": 0, "response": "upon a time", "prompt_tokens": 4, "completion_tokens": 3}));
    for r in [&mut streamed, &mut whole_row] {
        r.as_object_mut()
            .unwrap()
            .extend(completions.as_object().unwrap().clone());
    }
    assert_eq!(rows, [streamed, whole_row]);
}

/// Embeddings pass through (renamed model back to the client); the row says how many
/// vectors of what size, and the prompt tokens.
#[tokio::test]
async fn embeddings_pass_through_and_are_logged() {
    let mock = Mock::start(|request| {
        assert_eq!(request.path, "/v1/embeddings");
        Reply::Json(
            200,
            json!({"object": "list", "model": "backend-model",
                "data": [{"object": "embedding", "index": 0, "embedding": [0.5, -0.25, 1.0]},
                         {"object": "embedding", "index": 1, "embedding": "AAAAAAAAgD8AAAAA"}],
                "usage": {"prompt_tokens": 4, "total_tokens": 4}}),
        )
    })
    .await;
    let mut bridge = bridge(&mock).await;
    let client_body = r#"{"input":["a","b"],"model":"alias","encoding_format":"float","dimensions":3}"#;
    let answer = post_text(&bridge.url, "/v1/embeddings", client_body).await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.json(),
        json!({"object": "list", "model": "alias",
            "data": [{"object": "embedding", "index": 0, "embedding": [0.5, -0.25, 1.0]},
                     {"object": "embedding", "index": 1, "embedding": "AAAAAAAAgD8AAAAA"}],
            "usage": {"prompt_tokens": 4, "total_tokens": 4}})
    );
    assert_eq!(mock.only_request().body, client_body.replace("alias", "backend-model"));
    assert_eq!(
        only_row(&bridge.rows().await),
        row(
            json!({"endpoint": "/v1/embeddings", "stream": 0, "prompt": r#"["a","b"]"#,
            "response": r#"{"embeddings":2,"dimensions":3}"#, "prompt_tokens": 4})
        )
    );
}

/// `/v1/models` lists what `/api/tags` lists, in OpenAI's shape; one model can be read
/// by any name a request may use. The dashboard's `/ollama` mount serves it too.
#[tokio::test]
async fn models_are_the_mapped_names_and_the_backends_own() {
    let mock = Mock::start(|_| Reply::Json(500, json!({}))).await;
    let mut bridge = bridge(&mock).await;
    let (status, list) = get_json(&format!("{}/v1/models", bridge.url)).await;
    assert_eq!(status, 200);
    let created = list["data"][0]["created"].as_i64().expect("created");
    assert!(created > 1_700_000_000, "{list}");
    let entry = |id: &str| json!({"id": id, "object": "model", "created": created, "owned_by": "ollabridge"});
    assert_eq!(
        list,
        json!({"object": "list", "data": [entry("alias"), entry("backend-model"), entry("Other-Model")]})
    );
    let (_, tags) = get_json(&format!("{}/api/tags", bridge.url)).await;
    assert_eq!(tags["models"].as_array().unwrap().len(), 3, "the same models: {tags}");

    assert_eq!(
        get_json(&format!("{}/v1/models/Alias:latest", bridge.url)).await,
        (200, entry("Alias:latest"))
    );
    assert_eq!(
        get_json(&format!("{}/v1/models/nope", bridge.url)).await,
        (
            404,
            openai_error(
                "model 'nope' not found",
                "invalid_request_error",
                json!("model_not_found")
            )
        )
    );
    // Regression: a base URL ending in '/' joined with '/v1/models' missed every route
    // and got Ollama's error shape.
    assert_eq!(
        get_json(&format!("{}//v1/models", bridge.url)).await,
        (200, list.clone())
    );
    assert_eq!(
        get_json(&format!("{}/ollama/v1/models", bridge.admin_url)).await,
        (200, list)
    );
    assert_eq!(bridge.rows().await, Vec::<Value>::new(), "model lists are not logged");
}

// ---------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------

/// Mistakes in the request are 400s that say what is wrong, an unknown model is
/// OpenAI's 404, all in OpenAI's shape, before the backend is asked; each is logged.
#[tokio::test]
async fn client_mistakes_are_openai_errors() {
    let mock = Mock::start(|_| Reply::Json(200, completion("unexpected"))).await;
    let mut bridge = bridge(&mock).await;
    let cases = [
        (
            "{\"model\": \"alias\",",
            400,
            openai_error(
                "invalid JSON body: EOF while parsing a value at line 1 column 18",
                "invalid_request_error",
                Value::Null,
            ),
        ),
        (
            "[]",
            400,
            openai_error(
                "the request body must be a JSON object, not an array",
                "invalid_request_error",
                Value::Null,
            ),
        ),
        (
            r#"{"model": "alias", "stream": "yes"}"#,
            400,
            openai_error(
                "invalid value for 'stream': expected true or false, got a string",
                "invalid_request_error",
                Value::Null,
            ),
        ),
        (
            r#"{"messages": []}"#,
            400,
            openai_error("model is required", "invalid_request_error", Value::Null),
        ),
        (
            r#"{"model": "nope", "messages": []}"#,
            404,
            openai_error(
                "model 'nope' not found",
                "invalid_request_error",
                json!("model_not_found"),
            ),
        ),
    ];
    for (body, status, error) in &cases {
        let answer = post_text(&bridge.url, "/v1/chat/completions", body).await;
        assert_eq!((answer.status, answer.json()), (*status, error.clone()), "{body}");
        assert_eq!(answer.content_type, "application/json");
    }
    let answer = post_text(&bridge.url, "/v1/no/such/route", "{}").await;
    assert_eq!(
        (answer.status, answer.json()),
        (
            404,
            openai_error(
                "/v1/no/such/route is not an OpenAI route ollabridge serves",
                "invalid_request_error",
                Value::Null
            )
        )
    );
    assert!(mock.requests().is_empty(), "{:?}", mock.requests());

    let rows: Vec<Value> = bridge.rows().await.iter().map(project).collect();
    let message = |i: usize| cases[i].2["error"]["message"].clone();
    let unparsed = json!({"model": null, "backend_model": null, "stream": 0, "prompt": null});
    assert_eq!(
        rows,
        [
            refused(400, message(0).as_str().unwrap(), unparsed.clone()),
            refused(400, message(1).as_str().unwrap(), unparsed.clone()),
            refused(400, message(2).as_str().unwrap(), unparsed),
            refused(
                400,
                "model is required",
                json!({"model": null, "backend_model": null, "stream": 0, "prompt": "[]"})
            ),
            refused(
                404,
                "model 'nope' not found",
                json!({"model": "nope", "backend_model": null, "stream": 0, "prompt": "[]"})
            ),
        ]
    );
}

/// The backend's own error status and message reach the client (with its `type` and
/// `code` when it sent OpenAI's shape); a proxy's plain text too. llama.cpp's context
/// overflow sent as the first event of a 200 stream is a real 400 as well.
#[tokio::test]
async fn backend_errors_keep_their_status_and_words() {
    let overflow = json!({"error": {"code": 400, "message": "request exceeds the available context size",
        "type": "exceed_context_size_error"}});
    let in_stream = sse(std::slice::from_ref(&overflow));
    let mock = Mock::start(move |request| match request.json()["messages"][0]["content"].as_str() {
        Some("status") => Reply::Json(400, overflow.clone()),
        Some("in stream") => Reply::Stream(whole(in_stream.clone())),
        Some("proxy") => Reply::Text(502, "Bad Gateway\n"),
        _ => Reply::Json(
            500,
            json!({"error": {"message": "out of memory", "type": "server_error", "code": "oom"}}),
        ),
    })
    .await;
    let mut bridge = bridge(&mock).await;
    let ask =
        |content: &str| json!({"model": "alias", "stream": true, "messages": [{"role": "user", "content": content}]});
    let overflow_error = openai_error(
        "request exceeds the available context size",
        "exceed_context_size_error",
        Value::Null,
    );
    let cases = [
        ("status", 400, overflow_error.clone()),
        ("in stream", 400, overflow_error),
        ("proxy", 502, openai_error("Bad Gateway", "api_error", Value::Null)),
        ("Hi", 500, openai_error("out of memory", "server_error", json!("oom"))),
    ];
    for (content, status, error) in &cases {
        let answer = post(&bridge, "/v1/chat/completions", ask(content)).await;
        assert_eq!((answer.status, answer.json()), (*status, error.clone()), "{content}");
    }
    let rows: Vec<Value> = bridge.rows().await.iter().map(project).collect();
    let expected: Vec<Value> = cases
        .iter()
        .map(|(content, status, error)| {
            let prompt = json!([{"role": "user", "content": content}]).to_string();
            refused(
                *status,
                error["error"]["message"].as_str().unwrap(),
                json!({"prompt": prompt}),
            )
        })
        .collect();
    assert_eq!(rows, expected);
}

/// Nothing listening is a 502 naming the backend; silence longer than
/// `backend.timeout` a 504.
#[tokio::test]
async fn unreachable_backend_is_502_and_silence_504() {
    let endpoint = format!("http://127.0.0.1:{}", common::free_port());
    let mut down = Bridge::openai(&endpoint, json!({"alias": "backend-model"})).await;
    let answer = post(
        &down,
        "/v1/chat/completions",
        json!({"model": "alias", "messages": hi()}),
    )
    .await;
    assert_eq!(answer.status, 502);
    let error = answer.json();
    let message = error["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        message.starts_with(&format!("backend at {endpoint}/ is unreachable: "))
            && message.contains("Connection refused"),
        "{message}"
    );
    assert_eq!(error, openai_error(&message, "api_error", Value::Null));
    assert_eq!(
        only_row(&down.rows().await),
        refused(502, &message, json!({"stream": 0}))
    );

    let mock =
        Mock::start(|_| Reply::After(Duration::from_secs(2), Box::new(Reply::Json(200, completion("late"))))).await;
    let mut slow = Bridge::start(json!({
        "backend": {"type": "openai", "endpoint": mock.url, "timeout": 0.3},
        "models": {"mappings": {"alias": "backend-model"}},
    }))
    .await;
    let answer = post(
        &slow,
        "/v1/chat/completions",
        json!({"model": "alias", "messages": hi()}),
    )
    .await;
    let message = format!("backend at {}/ timed out", mock.url);
    assert_eq!(
        (answer.status, answer.json()),
        (504, openai_error(&message, "api_error", Value::Null))
    );
    assert_eq!(
        only_row(&slow.rows().await),
        refused(504, &message, json!({"stream": 0}))
    );
}

/// Once output has gone out with a 200, a failure is one OpenAI error event and the
/// end: the backend's error event, or a stream that stops before it is finished.
#[tokio::test]
async fn mid_stream_failures_end_with_an_error_event() {
    let boom = json!({"error": {"message": "boom", "code": 500}});
    let mock = Mock::start(move |request| match request.json()["messages"][0]["content"].as_str() {
        Some("boom") => Reply::Stream(whole(sse(&[role(), text("Once"), boom.clone(), text("never")]) + DONE)),
        _ => Reply::Stream(whole(sse(&[role(), text("Once"), text(" upon")]))),
    })
    .await;
    let mut bridge = bridge(&mock).await;
    let ask =
        |content: &str| json!({"model": "alias", "stream": true, "messages": [{"role": "user", "content": content}]});

    let answer = post(&bridge, "/v1/chat/completions", ask("boom")).await;
    assert_eq!(answer.status, 200);
    let error_event = |message: &str| format!("data: {}\n\n", openai_error(message, "api_error", Value::Null));
    assert_eq!(answer.body, sse(&[role(), text("Once")]) + &error_event("boom"));

    let answer = post(&bridge, "/v1/chat/completions", ask("cut")).await;
    let truncated = "backend stream ended before the response was complete";
    assert_eq!(
        answer.body,
        sse(&[role(), text("Once"), text(" upon")]) + &error_event(truncated)
    );

    let rows: Vec<Value> = bridge.rows().await.iter().map(project).collect();
    let prompt = |c: &str| json!([{"role": "user", "content": c}]).to_string();
    assert_eq!(
        rows,
        [
            row(json!({"error": "boom", "response": "Once", "done_reason": null, "prompt": prompt("boom")})),
            row(json!({"error": truncated, "response": "Once upon", "done_reason": null, "prompt": prompt("cut")})),
        ]
    );
}

/// Events reach the client as they come, not at the end; a client that hangs up closes
/// the backend stream and leaves a 499 row with the partial answer.
#[tokio::test]
async fn events_arrive_before_the_end_and_a_hang_up_cancels_upstream() {
    let first = sse(&[role(), text("Once")]);
    let sent = first.clone();
    let mock = Mock::start(move |_| Reply::Stream(vec![Piece::Data(Bytes::from(sent.clone())), Piece::Hang])).await;
    let mut bridge = bridge(&mock).await;
    let mut response = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", bridge.url))
        .json(&json!({"model": "alias", "messages": hi(), "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut received = Vec::new();
    while received.len() < first.len() {
        received.extend_from_slice(&response.chunk().await.unwrap().expect("more body"));
    }
    assert_eq!(String::from_utf8(received).unwrap(), first);
    drop(response);
    mock.body_dropped().await;
    assert_eq!(
        only_row(&bridge.rows().await),
        row(
            json!({"status_code": 499, "error": "client disconnected before the response was complete",
            "response": "Once", "done_reason": null})
        )
    );
}

/// Requests through a real Ollama's own `/v1`: here a second ollabridge plays the Ollama
/// backend. Model names are mapped at each hop; the usage the outer one asked for is
/// left out before it reaches the client.
#[tokio::test]
async fn ollama_backend_serves_its_own_v1() {
    let mock = Mock::start(|request| Reply::Stream(whole(said(request, &["Hi", "!"])))).await;
    let mut inner = bridge(&mock).await;
    let mut outer = Bridge::start(json!({
        "backend": {"type": "ollama", "endpoint": inner.url, "timeout": 30},
        "models": {"mappings": {"outer": "alias"}},
    }))
    .await;
    let answer = post(
        &outer,
        "/v1/chat/completions",
        json!({"model": "outer", "messages": hi(), "stream": true}),
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.body,
        sse(&[role(), text("Hi"), text("!"), finish("stop")]) + DONE
    );
    assert_eq!(
        mock.only_request().json()["stream_options"],
        json!({"include_usage": true})
    );
    let (_, list) = get_json(&format!("{}/v1/models", outer.url)).await;
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["outer", "alias:latest", "backend-model:latest", "Other-Model:latest"]
    );

    let expected = row(json!({"response": "Hi!", "prompt_tokens": 10, "completion_tokens": 2}));
    let mut outer_row = expected.clone();
    outer_row["backend_type"] = "ollama".into();
    outer_row["model"] = "outer".into();
    outer_row["backend_model"] = "alias".into();
    assert_eq!(only_row(&outer.rows().await), outer_row);
    assert_eq!(only_row(&inner.rows().await), expected);
}

// ---------------------------------------------------------------------------------
// Auth and limits
// ---------------------------------------------------------------------------------

/// With `auth.keys`, the `/v1` routes need a key like every Ollama route; the 401 says
/// the same words, in OpenAI's shape, with the same challenge. The key's id is logged.
#[tokio::test]
async fn api_key_is_required_when_configured() {
    let mock = Mock::start(|_| Reply::Json(200, completion("Hello"))).await;
    let mut bridge = Bridge::start(json!({
        "backend": {"type": "openai", "endpoint": mock.url},
        "models": {"mappings": {"alias": "backend-model"}},
        "auth": {"keys": [{"id": "copilot", "key": "v1-secret-key"}]},
    }))
    .await;
    let http = reqwest::Client::new();
    for (key, reason) in [(None, "missing API key"), (Some("wrong-key-1"), "invalid API key")] {
        for (method, path) in [
            (reqwest::Method::POST, "/v1/chat/completions"),
            (reqwest::Method::GET, "/v1/models"),
        ] {
            let mut request = http
                .request(method, format!("{}{path}", bridge.url))
                .json(&json!({"model": "alias", "messages": hi()}));
            if let Some(key) = key {
                request = request.bearer_auth(key);
            }
            let r = request.send().await.unwrap();
            assert_eq!(r.status(), 401, "{path}");
            assert_eq!(r.headers()["www-authenticate"], "Bearer");
            let message = format!("unauthorized: {reason} (send Authorization: Bearer <key>)");
            assert_eq!(
                r.json::<Value>().await.unwrap(),
                openai_error(&message, "authentication_error", json!("invalid_api_key")),
                "{path}"
            );
        }
    }
    let r = http
        .post(format!("{}/v1/chat/completions", bridge.url))
        .bearer_auth("v1-secret-key")
        .json(&json!({"model": "alias", "messages": hi()}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The dashboard's mount on the admin listener has its own token rules, no client keys.
    let r = http
        .post(format!("{}/ollama/v1/chat/completions", bridge.admin_url))
        .json(&json!({"model": "alias", "messages": hi()}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let rows = bridge.rows().await;
    let keys: Vec<&Value> = rows.iter().map(|r| &r["client_key"]).collect();
    assert_eq!(
        keys,
        [&json!("copilot"), &json!("dashboard")],
        "refused requests are not logged"
    );
}

/// A body over `server.max_body_bytes` and a full backend queue: OpenAI-shaped too.
#[tokio::test]
async fn limits_answer_in_openai_shape() {
    let mock = Mock::start(|_| Reply::Stream(vec![Piece::Data(Bytes::from(sse(&[role()]))), Piece::Hang])).await;
    let mut bridge = Bridge::start(json!({
        "server": {"max_body_bytes": 200},
        "backend": {"type": "openai", "endpoint": mock.url, "max_concurrent": 1, "queue_timeout": 0.05},
        "models": {"mappings": {"alias": "backend-model"}},
    }))
    .await;
    let big = json!({"model": "alias", "messages": [{"role": "user", "content": "x".repeat(300)}]});
    let answer = post(&bridge, "/v1/chat/completions", big).await;
    assert_eq!(
        (answer.status, answer.json()),
        (
            413,
            openai_error(
                "request body is larger than server.max_body_bytes (200 bytes)",
                "invalid_request_error",
                Value::Null
            )
        )
    );

    // One answer holds the only backend slot; the next request waits 50 ms, then 503.
    let holder = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", bridge.url))
        .json(&json!({"model": "alias", "messages": hi(), "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(holder.status(), 200);
    let r = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", bridge.url))
        .json(&json!({"model": "alias", "messages": hi()}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let busy = "backend busy: 1 requests in flight and none finished within 0.05s; retry shortly";
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        openai_error(busy, "api_error", Value::Null)
    );
    drop(holder);
    mock.body_dropped().await;
    let rows: Vec<Value> = bridge.rows().await.iter().map(project).collect();
    assert_eq!(
        rows,
        [
            refused(503, busy, json!({"stream": 0})),
            row(
                json!({"status_code": 499, "error": "client disconnected before the response was complete",
                "done_reason": null, "response": null})
            ),
        ]
    );
}

/// A model's targets are tried in turn, as on the Ollama routes: a backend that fails
/// (here with a 500) hands the request to the next one, which gets the body with its own
/// model name and its own `stream_options` setting. The row names who answered and who
/// failed before.
#[tokio::test]
async fn a_failing_backend_hands_the_request_to_the_next_target() {
    let main = Mock::start(|_| Reply::Json(500, json!({"error": {"message": "out of memory"}}))).await;
    let spare = Mock::start(|request| Reply::Stream(whole(said(request, &["Hi"])))).await;
    let mut bridge = Bridge::start(json!({
        "backends": {
            "main": {"type": "openai", "endpoint": main.url},
            "spare": {"type": "openai", "endpoint": spare.url, "stream_options": false},
        },
        "models": {"mappings": {"alias": {"backend": "main", "model": "backend-model",
            "fallbacks": [{"backend": "spare", "model": "spare-model"}]}}},
    }))
    .await;
    let answer = post(
        &bridge,
        "/v1/chat/completions",
        json!({"model": "alias", "messages": hi(), "stream": true}),
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, sse(&[role(), text("Hi"), finish("stop")]) + DONE);
    assert_eq!(
        main.only_request().json(),
        json!({"model": "backend-model", "messages": hi(), "stream": true,
            "stream_options": {"include_usage": true}})
    );
    assert_eq!(
        spare.only_request().json(),
        json!({"model": "spare-model", "messages": hi(), "stream": true})
    );
    let rows = bridge.rows().await;
    let prompt_chars = hi().to_string().len() as u64;
    assert_eq!(
        only_row(&rows),
        row(json!({"backend_model": "spare-model", "response": "Hi",
            "prompt_tokens": prompt_chars.div_ceil(4), "completion_tokens": 1, "tokens_estimated": 1}))
    );
    assert_eq!(rows[0]["backend"], "spare");
    let attempts: Value = serde_json::from_str(rows[0]["attempts"].as_str().unwrap()).unwrap();
    assert_eq!(
        attempts,
        json!([{"backend": "main", "model": "backend-model", "error": "out of memory"}])
    );
}
