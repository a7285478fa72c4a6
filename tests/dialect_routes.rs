//! Anthropic's `/v1/messages` and OpenAI's `/v1/responses` on the Ollama port, in front
//! of a mock backend that answers with what a real llama-server sent
//! (`fixtures/llama-server/messages-*`, `responses-*`): the body the backend receives
//! (only `model` renamed), the bytes the client receives, each dialect's errors, the
//! backend that does not serve a route, and the one log row each request leaves.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

mod common;

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use common::Bridge;
use serde_json::{Value, json};

fn fixture(name: &str) -> String {
    std::fs::read_to_string(common::repo_root().join("fixtures/llama-server").join(name)).unwrap()
}

/// What the mock backend got, and how it answers.
#[derive(Clone)]
struct Mock {
    url: String,
    requests: Arc<Mutex<Vec<(String, Value)>>>,
}

/// How the mock answers a route of a dialect.
#[derive(Clone, Copy)]
enum Serving {
    /// The llama-server captures: `<name>.sse` streamed, `<name>.json` whole.
    Fixture(&'static str),
    /// llama-server's answer for a route it does not have.
    NoRoute,
    /// vLLM's answer for a model it does not have.
    NoModel,
    /// The stream's first half, then the end of the connection.
    CutShort(&'static str),
    /// llama-server without the dialect's routes: a 404 for them, and the chat
    /// completions captures (`<name>.sse`, `<name>.json`) on `/v1/chat/completions`.
    ChatOnly(&'static str),
    /// `ChatOnly`, its chat stream cut short.
    ChatCutShort(&'static str),
    /// This SSE body, on every route.
    Stream(&'static str),
}

impl Mock {
    async fn start(serving: Serving) -> Mock {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let state = (requests.clone(), serving);
        let app = Router::new().fallback(answer).with_state(state);
        let (url, _task) = common::serve(app).await;
        Mock { url, requests }
    }

    fn requests(&self) -> Vec<(String, Value)> {
        self.requests.lock().unwrap().clone()
    }
}

type MockState = (Arc<Mutex<Vec<(String, Value)>>>, Serving);

async fn answer(State((requests, serving)): State<MockState>, uri: Uri, body: Bytes) -> Response {
    if uri.path() == "/v1/models" {
        return axum::Json(json!({"object": "list", "data": [{"id": "backend-model", "object": "model"}]}))
            .into_response();
    }
    if uri.path() == "/props" {
        return StatusCode::NOT_FOUND.into_response();
    }
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let stream = request["stream"] == true;
    requests.lock().unwrap().push((uri.path().to_owned(), request));
    let sse = |text: String| ([(header::CONTENT_TYPE, "text/event-stream")], text).into_response();
    let serving = match serving {
        Serving::ChatOnly(name) if uri.path() == "/v1/chat/completions" => Serving::Fixture(name),
        Serving::ChatCutShort(name) if uri.path() == "/v1/chat/completions" => Serving::CutShort(name),
        Serving::ChatOnly(_) | Serving::ChatCutShort(_) => Serving::NoRoute,
        serving => serving,
    };
    match serving {
        Serving::Fixture(name) if stream => sse(fixture(&format!("{name}.sse"))),
        Serving::Fixture(name) => ([(header::CONTENT_TYPE, "application/json")], fixture(&format!("{name}.json"))).into_response(),
        Serving::NoRoute => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"error": {"message": "File Not Found", "type": "not_found_error", "code": 404}})),
        )
            .into_response(),
        Serving::NoModel => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"error": {"message": "The model `backend-model` does not exist.", "type": "NotFoundError", "code": 404}})),
        )
            .into_response(),
        Serving::CutShort(name) => {
            let text = fixture(&format!("{name}.sse"));
            sse(text[..text.len() / 2].rsplit_once("\n\n").unwrap().0.to_owned() + "\n\n")
        }
        Serving::Stream(text) => sse(text.to_owned()),
        Serving::ChatOnly(_) | Serving::ChatCutShort(_) => unreachable!("mapped above"),
    }
}

async fn bridge(mock: &Mock, backend: Value) -> Bridge {
    let mut config = json!({"type": "openai", "endpoint": mock.url, "timeout": 30});
    for (k, v) in backend.as_object().unwrap() {
        config[k] = v.clone();
    }
    Bridge::start(json!({"backend": config, "models": {"mappings": {"alias": "backend-model"}}})).await
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

async fn post(bridge: &Bridge, path: &str, body: &str, headers: &[(&str, &str)]) -> Answer {
    let mut request = reqwest::Client::new()
        .post(format!("{}{path}", bridge.url))
        .header("content-type", "application/json")
        .body(body.to_owned());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let r = request.send().await.unwrap();
    Answer {
        status: r.status().as_u16(),
        content_type: r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default(),
        body: r.text().await.unwrap(),
    }
}

const ROW_FIELDS: &[&str] = &[
    "endpoint",
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
    ROW_FIELDS.iter().map(|k| ((*k).to_owned(), row[*k].clone())).collect()
}

fn anthropic_error(kind: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

const HELLO: &str = r#"[{"role":"user","content":"Hello!"}]"#;

/// Streamed and whole: the backend gets the client's body with the model renamed, the
/// client gets the backend's bytes (the whole answer with its own model name), and the
/// row has the text and llama-server's token counts (input counted with its cached part).
#[tokio::test]
async fn messages_pass_through_streamed_and_whole() {
    let mock = Mock::start(Serving::Fixture("messages-text")).await;
    let mut bridge = bridge(&mock, json!({})).await;
    let body = |stream: bool| {
        format!(r#"{{"model":"alias","max_tokens":64,"x_unknown":[1],"messages":{HELLO},"stream":{stream}}}"#)
    };
    let streamed = post(&bridge, "/v1/messages", &body(true), &[]).await;
    assert_eq!(
        (streamed.status, streamed.content_type.as_str(), streamed.body.as_str()),
        (200, "text/event-stream", fixture("messages-text.sse").as_str())
    );
    let whole = post(&bridge, "/v1/messages", &body(false), &[]).await;
    let mut expected: Value = serde_json::from_str(&fixture("messages-text.json")).unwrap();
    expected["model"] = "alias".into();
    assert_eq!((whole.status, whole.json()), (200, expected));

    let sent: Vec<_> = mock.requests();
    assert_eq!(
        sent,
        [true, false].map(|stream| (
            "/v1/messages".to_owned(),
            json!({"model": "backend-model", "max_tokens": 64, "x_unknown": [1],
                "messages": [{"role": "user", "content": "Hello!"}], "stream": stream})
        ))
    );
    let rows: Vec<Value> = bridge.rows().await.iter().map(project).collect();
    let row = |stream: u8| {
        json!({"endpoint": "/v1/messages", "model": "alias", "backend_model": "backend-model", "stream": stream,
            "status_code": 200, "error": null, "prompt": HELLO, "response": "Hello from the tiny scripted model.",
            "thinking": null, "tool_calls": null, "done_reason": "stop", "prompt_tokens": 126,
            "completion_tokens": 8, "tokens_estimated": 0})
    };
    assert_eq!(rows, [row(1), row(0)]);
}

/// A streamed function call through `/v1/responses`: the bytes unchanged, the call in the row.
#[tokio::test]
async fn responses_pass_through_with_a_function_call() {
    let mock = Mock::start(Serving::Fixture("responses-tools")).await;
    let mut bridge = bridge(&mock, json!({})).await;
    let body = r#"{"model":"alias","input":"Weather in Paris?","stream":true}"#;
    let answer = post(&bridge, "/v1/responses", body, &[]).await;
    let expected = fixture("responses-tools.sse");
    assert_eq!((answer.status, answer.body.as_str()), (200, expected.as_str()));
    let call_id = expected
        .split("\"call_id\":\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let rows: Vec<Value> = bridge.rows().await.iter().map(project).collect();
    let calls =
        json!([{"id": call_id, "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}}}]);
    assert_eq!(
        rows,
        [
            json!({"endpoint": "/v1/responses", "model": "alias", "backend_model": "backend-model", "stream": 1,
            "status_code": 200, "error": null, "prompt": "Weather in Paris?", "response": "", "thinking": null,
            "tool_calls": calls.to_string(), "done_reason": "stop", "prompt_tokens": 828,
            "completion_tokens": 16, "tokens_estimated": 0})
        ]
    );
}

/// Client mistakes and backend failures in Anthropic's shape, each with one row.
#[tokio::test]
async fn anthropic_errors_have_anthropic_s_shape() {
    let mock = Mock::start(Serving::Fixture("messages-text")).await;
    let mut bridge = bridge(&mock, json!({})).await;
    let cases = [
        (
            "{\"model\": \"alias\",",
            400,
            anthropic_error(
                "invalid_request_error",
                "invalid JSON body: EOF while parsing a value at line 1 column 18",
            ),
        ),
        (
            r#"{"model": "nope", "messages": []}"#,
            404,
            anthropic_error("not_found_error", "model 'nope' not found"),
        ),
    ];
    for (body, status, error) in &cases {
        let answer = post(&bridge, "/v1/messages", body, &[]).await;
        assert_eq!((answer.status, answer.json()), (*status, error.clone()), "{body}");
    }
    let unknown = post(&bridge, "/v1/messages/batches", "{}", &[]).await;
    assert_eq!(
        (unknown.status, unknown.json()),
        (
            404,
            anthropic_error(
                "not_found_error",
                "/v1/messages/batches is not an Anthropic route ollabridge serves"
            )
        )
    );
    assert!(mock.requests().is_empty());
    let rows: Vec<Value> = bridge.rows().await.iter().map(project).collect();
    assert_eq!(
        rows.iter()
            .map(|r| (r["status_code"].clone(), r["error"].clone()))
            .collect::<Vec<_>>(),
        cases
            .iter()
            .map(|(_, status, error)| (json!(status), error["error"]["message"].clone()))
            .collect::<Vec<_>>()
    );

    // Nothing listening where the backend should be.
    let endpoint = format!("http://127.0.0.1:{}", common::free_port());
    let mut down = Bridge::openai(&endpoint, json!({"alias": "backend-model"})).await;
    let answer = post(&down, "/v1/messages", r#"{"model":"alias","messages":[]}"#, &[]).await;
    let message = answer.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        message.starts_with(&format!("backend at {endpoint}/ is unreachable: ")),
        "{message}"
    );
    assert_eq!(
        (answer.status, answer.json()),
        (502, anthropic_error("api_error", &message))
    );
    let rows = down.rows().await;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0]["status_code"].clone(), rows[0]["error"].clone()),
        (json!(502), json!(message))
    );
}

/// A stream that breaks after it began ends with Anthropic's `event: error`; the row
/// keeps the text so far and the error.
#[tokio::test]
async fn a_stream_cut_short_ends_with_an_error_event() {
    let mock = Mock::start(Serving::CutShort("messages-text")).await;
    let mut bridge = bridge(&mock, json!({})).await;
    let body = format!(r#"{{"model":"alias","max_tokens":64,"messages":{HELLO},"stream":true}}"#);
    let answer = post(&bridge, "/v1/messages", &body, &[]).await;
    let truncated = "backend stream ended before the response was complete";
    let error_event = format!("event: error\ndata: {}\n\n", anthropic_error("api_error", truncated));
    assert!(answer.body.starts_with("event: message_start"), "{}", answer.body);
    assert!(answer.body.ends_with(&error_event), "{}", answer.body);
    let rows = bridge.rows().await;
    assert_eq!(rows.len(), 1);
    let row = project(&rows[0]);
    assert_eq!(
        (row["status_code"].clone(), row["error"].clone()),
        (json!(200), json!(truncated))
    );
    assert!(
        "Hello from the tiny scripted model.".starts_with(row["response"].as_str().unwrap()),
        "{row}"
    );
}

/// The backend's stream `text` relayed to a client of `path`: the body the client got,
/// and the row's status and error.
async fn relayed(path: &str, text: String) -> (String, (Value, Value)) {
    let mock = Mock::start(Serving::Stream(text.leak())).await;
    let mut bridge = bridge(&mock, json!({})).await;
    let body = match path {
        "/v1/messages" => format!(r#"{{"model":"alias","max_tokens":64,"messages":{HELLO},"stream":true}}"#),
        _ => r#"{"model":"alias","input":"Hello!","stream":true}"#.to_owned(),
    };
    let answer = post(&bridge, path, &body, &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let rows = bridge.rows().await;
    assert_eq!(rows.len(), 1);
    (answer.body, (rows[0]["status_code"].clone(), rows[0]["error"].clone()))
}

/// The backend's error events are in the client's dialect already: they reach it as they
/// are (Anthropic's SDK reads `error.type`, Codex a failed response's `error.code`), and
/// the row is failed with their message.
#[tokio::test]
async fn backend_error_events_reach_the_client_as_they_are() {
    let start = (
        "message_start",
        json!({"type": "message_start", "message": {"id": "msg_1", "type": "message",
        "role": "assistant", "content": [], "usage": {"input_tokens": 5, "output_tokens": 0}}}),
    );
    let overloaded = ("error", anthropic_error("overloaded_error", "Overloaded"));
    let created = (
        "response.created",
        json!({"type": "response.created", "sequence_number": 0,
        "response": {"id": "resp_1", "object": "response", "status": "in_progress"}}),
    );
    let failed = (
        "response.failed",
        json!({"type": "response.failed", "sequence_number": 1,
        "response": {"id": "resp_1", "object": "response", "status": "failed",
                     "error": {"code": "server_error", "message": "out of memory"}}}),
    );
    let error = (
        "error",
        json!({"type": "error", "code": "rate_limit_exceeded", "message": "slow down",
        "param": null, "sequence_number": 1}),
    );
    let cases = [
        ("/v1/messages", sse(&[start, overloaded]), "Overloaded"),
        ("/v1/responses", sse(&[created.clone(), failed]), "out of memory"),
        ("/v1/responses", sse(&[created, error]), "slow down"),
    ];
    for (path, text, message) in cases {
        let (body, row) = relayed(path, text.clone()).await;
        assert_eq!((body, row), (text, (json!(200), json!(message))), "{path}");
    }
}

/// What only the log cannot read (a tool call cut by `max_tokens`, function call
/// arguments that are not JSON) does not end the client's stream: it gets every event,
/// and the row names the problem.
#[tokio::test]
async fn answers_the_log_cannot_read_reach_the_client_whole() {
    let messages = sse(&[
        (
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_1", "type": "message",
            "role": "assistant", "content": [], "usage": {"input_tokens": 5, "output_tokens": 0}}}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "input_json_delta", "partial_json": "{\"city\":\"Par"}}),
        ),
        ("content_block_stop", json!({"type": "content_block_stop", "index": 0})),
        (
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "max_tokens"},
            "usage": {"output_tokens": 8}}),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ]);
    let call = json!({"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "f",
        "arguments": "{\"a\":", "status": "completed"});
    let responses = sse(&[
        (
            "response.output_item.done",
            json!({"type": "response.output_item.done", "output_index": 0, "item": call}),
        ),
        (
            "response.completed",
            json!({"type": "response.completed", "response": {"id": "resp_1",
            "status": "completed", "output": [call], "usage": {"input_tokens": 5, "output_tokens": 3}}}),
        ),
    ]);
    let not_json = |name: &str, text: &str, error: &str| {
        format!(
            "backend sent an invalid response: tool call '{name}' has arguments that are not valid JSON ({error}): {text}"
        )
    };
    let cases = [
        (
            "/v1/messages",
            messages,
            not_json(
                "get_weather",
                "{\"city\":\"Par",
                "EOF while parsing a string at line 1 column 12",
            ),
        ),
        (
            "/v1/responses",
            responses,
            not_json("f", "{\"a\":", "EOF while parsing a value at line 1 column 5"),
        ),
    ];
    for (path, text, message) in cases {
        let (body, row) = relayed(path, text.clone()).await;
        assert_eq!((body, row), (text, (json!(200), json!(message))), "{path}");
    }
}

/// A `/v1/responses` stream that breaks ends with the Responses API's own `error` event,
/// numbered after the events the client got, whether passed through or translated.
#[tokio::test]
async fn a_responses_stream_cut_short_ends_with_its_error_event() {
    let body = r#"{"model":"alias","input":"Hello!","stream":true}"#;
    let truncated = "backend stream ended before the response was complete";
    for (serving, backend) in [
        (Serving::CutShort("responses-text"), json!({})),
        (
            Serving::ChatCutShort("chat-text"),
            json!({"serves": {"responses": false}}),
        ),
    ] {
        let mock = Mock::start(serving).await;
        let mut bridge = bridge(&mock, backend).await;
        let answer = post(&bridge, "/v1/responses", body, &[]).await;
        let events: Vec<&str> = answer.body.split_terminator("\n\n").collect();
        let (last, before) = events.split_last().unwrap();
        assert!(before.len() > 2, "{}", answer.body);
        assert!(before[0].starts_with("event: response.created\n"), "{}", answer.body);
        let error = json!({"type": "error", "code": "api_error", "message": truncated, "param": null,
                           "sequence_number": before.len()});
        assert_eq!(*last, format!("event: error\ndata: {error}"));
        let rows = bridge.rows().await;
        assert_eq!(
            (&rows[0]["status_code"], &rows[0]["error"]),
            (&json!(200), &json!(truncated))
        );
    }
}

/// A backend that answers 404 for the route itself is not asked the route again (its
/// chat is asked instead); one whose 404 is about the model is; `serves: true` is always
/// asked the route, its 404 the answer; `serves: false` is never asked the route.
#[tokio::test]
async fn a_backend_without_the_route_is_remembered() {
    let body = r#"{"model":"alias","max_tokens":8,"messages":[]}"#;
    let paths = |mock: &Mock| -> Vec<String> { mock.requests().into_iter().map(|(path, _)| path).collect() };

    // Without chat completions either: the chat's own 404 is the answer.
    let mock = Mock::start(Serving::NoRoute).await;
    let mut bridge = bridge(&mock, json!({})).await;
    for _ in 0..2 {
        let answer = post(&bridge, "/v1/messages", body, &[]).await;
        assert_eq!(
            (answer.status, answer.json()),
            (404, anthropic_error("not_found_error", "File Not Found"))
        );
    }
    assert_eq!(
        paths(&mock),
        ["/v1/messages", "/v1/chat/completions", "/v1/chat/completions"],
        "the route asked once, then remembered"
    );
    assert_eq!(bridge.rows().await.len(), 2);

    let mock = Mock::start(Serving::NoModel).await;
    let bridge = self::bridge(&mock, json!({})).await;
    for _ in 0..2 {
        let answer = post(&bridge, "/v1/messages", body, &[]).await;
        let message = "The model `backend-model` does not exist.";
        assert_eq!(
            (answer.status, answer.json()),
            (404, anthropic_error("not_found_error", message))
        );
    }
    assert_eq!(
        paths(&mock),
        ["/v1/messages", "/v1/messages"],
        "a missing model says nothing of the route"
    );

    // `serves: true`: the backend has the route, so its 404 is the answer, never learned.
    let mock = Mock::start(Serving::ChatOnly("chat-text")).await;
    let bridge = self::bridge(&mock, json!({"serves": {"messages": true}})).await;
    for _ in 0..2 {
        let answer = post(&bridge, "/v1/messages", body, &[]).await;
        assert_eq!(
            (answer.status, answer.json()),
            (404, anthropic_error("not_found_error", "File Not Found"))
        );
    }
    assert_eq!(paths(&mock), ["/v1/messages", "/v1/messages"]);

    let mock = Mock::start(Serving::ChatOnly("chat-text")).await;
    let bridge = self::bridge(&mock, json!({"serves": {"messages": false}})).await;
    let answer = post(
        &bridge,
        "/v1/messages",
        r#"{"model":"alias","max_tokens":8,"messages":[{"role":"user","content":"Hi"}]}"#,
        &[],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(paths(&mock), ["/v1/chat/completions"]);
}

/// With API keys configured, Anthropic's `x-api-key` header is accepted like a bearer
/// token, and a missing key is a 401 in Anthropic's shape.
#[tokio::test]
async fn anthropic_clients_send_their_key_as_x_api_key() {
    let mock = Mock::start(Serving::Fixture("messages-text")).await;
    let bridge = Bridge::start(json!({
        "backend": {"type": "openai", "endpoint": mock.url},
        "models": {"mappings": {"alias": "backend-model"}},
        "auth": {"keys": [{"id": "claude", "key": "sk-test-key-0123456789"}]},
    }))
    .await;
    let body = format!(r#"{{"model":"alias","max_tokens":64,"messages":{HELLO}}}"#);
    let refused = post(&bridge, "/v1/messages", &body, &[]).await;
    assert_eq!(
        (refused.status, refused.json()),
        (
            401,
            anthropic_error(
                "authentication_error",
                "unauthorized: missing API key (send Authorization: Bearer <key>)"
            )
        )
    );
    let answer = post(
        &bridge,
        "/v1/messages",
        &body,
        &[("x-api-key", "sk-test-key-0123456789")],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
}

/// The text pieces of a chat completions capture, in order.
fn chat_pieces(name: &str) -> Vec<String> {
    fixture(&format!("{name}.sse"))
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| v["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
        .filter(|t| !t.is_empty())
        .collect()
}

fn sse(events: &[(&str, Value)]) -> String {
    events
        .iter()
        .map(|(name, data)| format!("event: {name}\ndata: {data}\n\n"))
        .collect()
}

/// The call id the row has for an answer's one tool call.
fn row_call_id(row: &Value) -> String {
    let calls: Value = serde_json::from_str(row["tool_calls"].as_str().unwrap()).unwrap();
    calls[0]["id"].as_str().unwrap().to_owned()
}

/// A backend without `/v1/messages` (its 404 remembered): the request is asked as a chat
/// on `/v1/chat/completions`, and the answer comes back as Anthropic's events, or its
/// message, with the client's model name; one row each.
#[tokio::test]
async fn messages_are_translated_for_a_backend_without_the_route() {
    let mock = Mock::start(Serving::ChatOnly("chat-text")).await;
    let mut bridge = bridge(&mock, json!({})).await;
    let body = |stream: bool| {
        format!(
            r#"{{"model":"alias","max_tokens":64,"system":"Be brief.","messages":{HELLO},"stop_sequences":["END"],"stream":{stream}}}"#
        )
    };
    let id = [("x-request-id", "req-1")];
    let streamed = post(&bridge, "/v1/messages", &body(true), &id).await;
    let mut want = vec![
        (
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_req-1", "type": "message", "role": "assistant",
                   "model": "alias", "content": [], "stop_reason": null, "stop_sequence": null,
                   "usage": {"input_tokens": 0, "output_tokens": 0}}}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
    ];
    for piece in chat_pieces("chat-text") {
        want.push((
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}),
        ));
    }
    want.extend([
        ("content_block_stop", json!({"type": "content_block_stop", "index": 0})),
        (
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                   "usage": {"input_tokens": 126, "output_tokens": 8}}),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ]);
    assert_eq!(
        (streamed.status, streamed.content_type.as_str(), streamed.body.as_str()),
        (200, "text/event-stream", sse(&want).as_str())
    );
    let whole = post(&bridge, "/v1/messages", &body(false), &id).await;
    assert_eq!(
        (whole.status, whole.json()),
        (
            200,
            json!({"id": "msg_req-1", "type": "message", "role": "assistant", "model": "alias",
                   "content": [{"type": "text", "text": "Hello from the tiny scripted model."}],
                   "stop_reason": "end_turn", "stop_sequence": null,
                   "usage": {"input_tokens": 126, "output_tokens": 8}})
        )
    );
    let sent = mock.requests();
    let paths: Vec<&str> = sent.iter().map(|(path, _)| path.as_str()).collect();
    assert_eq!(
        paths,
        ["/v1/messages", "/v1/chat/completions", "/v1/chat/completions"],
        "the route's 404 is remembered"
    );
    assert_eq!(
        sent[2].1,
        json!({"model": "backend-model", "stream": false, "max_tokens": 64, "stop": ["END"],
               "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello!"}]})
    );
    let rows: Vec<Value> = bridge.rows().await.iter().map(project).collect();
    let row = |stream: u8| {
        json!({"endpoint": "/v1/messages", "model": "alias", "backend_model": "backend-model", "stream": stream,
            "status_code": 200, "error": null, "prompt": HELLO, "response": "Hello from the tiny scripted model.",
            "thinking": null, "tool_calls": null, "done_reason": "stop", "prompt_tokens": 126,
            "completion_tokens": 8, "tokens_estimated": 0})
    };
    assert_eq!(rows, [row(1), row(0)]);
}

/// `serves.messages: false`: never asked the route; a tool call becomes a `tool_use`
/// block whose input is the call's arguments, whole and streamed.
#[tokio::test]
async fn a_tool_call_is_translated_into_a_tool_use_block() {
    let mock = Mock::start(Serving::ChatOnly("chat-tools")).await;
    let mut bridge = bridge(&mock, json!({"serves": {"messages": false}})).await;
    let body = |stream: bool| {
        json!({"model": "alias", "max_tokens": 64, "stream": stream,
               "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
               "tools": [{"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]})
        .to_string()
    };
    let id = [("x-request-id", "req-2")];
    let whole = post(&bridge, "/v1/messages", &body(false), &id).await;
    let streamed = post(&bridge, "/v1/messages", &body(true), &id).await;
    let rows = bridge.rows().await;
    // The two captures' calls have their own ids.
    let (call_id, streamed_id) = (row_call_id(&rows[0]), row_call_id(&rows[1]));
    assert_eq!(
        (whole.status, whole.json()),
        (
            200,
            json!({"id": "msg_req-2", "type": "message", "role": "assistant", "model": "alias",
                   "content": [{"type": "tool_use", "id": call_id, "name": "get_weather", "input": {"city": "Paris"}}],
                   "stop_reason": "tool_use", "stop_sequence": null,
                   "usage": {"input_tokens": 828, "output_tokens": 16}})
        )
    );
    let want = [
        (
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_req-2", "type": "message", "role": "assistant",
                   "model": "alias", "content": [], "stop_reason": null, "stop_sequence": null,
                   "usage": {"input_tokens": 0, "output_tokens": 0}}}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
                   "content_block": {"type": "tool_use", "id": streamed_id, "name": "get_weather", "input": {}}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
                   "delta": {"type": "input_json_delta", "partial_json": "{\"city\":\"Paris\"}"}}),
        ),
        ("content_block_stop", json!({"type": "content_block_stop", "index": 0})),
        (
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
                   "usage": {"input_tokens": 828, "output_tokens": 16}}),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ];
    assert_eq!((streamed.status, streamed.body.as_str()), (200, sse(&want).as_str()));
    let paths: Vec<String> = mock.requests().into_iter().map(|(path, _)| path).collect();
    assert_eq!(paths, ["/v1/chat/completions", "/v1/chat/completions"]);
    assert_eq!(
        mock.requests()[0].1["tools"],
        json!([{"type": "function", "function": {"name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}])
    );
}

/// Translating: a request that cannot be translated is ollabridge's 400 in Anthropic's
/// shape (no backend attempt in its row), a stream the backend cuts short ends with
/// `event: error`; one row each.
#[tokio::test]
async fn translation_errors_have_anthropic_s_shape() {
    let mock = Mock::start(Serving::ChatCutShort("chat-text")).await;
    let mut bridge = bridge(&mock, json!({"serves": {"messages": false}})).await;
    let forced =
        r#"{"model":"alias","max_tokens":8,"messages":[{"role":"user","content":"Hi"}],"tool_choice":{"type":"any"}}"#;
    let refused = post(&bridge, "/v1/messages", forced, &[]).await;
    let message =
        "tool_choice 'any' or 'tool' cannot be honoured by a backend answering through chat completions; use 'auto'";
    assert_eq!(
        (refused.status, refused.json()),
        (400, anthropic_error("invalid_request_error", message))
    );
    assert!(mock.requests().is_empty());
    let body = format!(r#"{{"model":"alias","max_tokens":64,"messages":{HELLO},"stream":true}}"#);
    let cut = post(&bridge, "/v1/messages", &body, &[]).await;
    let truncated = "backend stream ended before the response was complete";
    let error_event = format!("event: error\ndata: {}\n\n", anthropic_error("api_error", truncated));
    assert!(cut.body.starts_with("event: message_start"), "{}", cut.body);
    assert!(cut.body.ends_with(&error_event), "{}", cut.body);
    let rows = bridge.rows().await;
    let seen: Vec<_> = rows
        .iter()
        .map(|r| (&r["status_code"], &r["error"], &r["backend"], &r["attempts"]))
        .collect();
    // The refusal is ollabridge's own: no backend was asked, none failed.
    let backend = json!("openai");
    assert_eq!(
        seen,
        [
            (&json!(400), &json!(message), &Value::Null, &Value::Null),
            (&json!(200), &json!(truncated), &backend, &Value::Null)
        ]
    );
}

/// `/v1/responses` for a backend without the route: asked as a chat, answered as the
/// Responses API's events (numbered) or response object, with the client's model name.
#[tokio::test]
async fn responses_are_translated_for_a_backend_without_the_route() {
    let mock = Mock::start(Serving::ChatOnly("chat-text")).await;
    let mut bridge = bridge(&mock, json!({"serves": {"responses": false}})).await;
    let body = |stream: bool| {
        format!(
            r#"{{"model":"alias","instructions":"Be brief.","input":"Hello!","max_output_tokens":64,"stream":{stream}}}"#
        )
    };
    let id = [("x-request-id", "req-3")];
    let streamed = post(&bridge, "/v1/responses", &body(true), &id).await;
    let whole = post(&bridge, "/v1/responses", &body(false), &id).await;
    let text = "Hello from the tiny scripted model.";
    let usage = json!({"input_tokens": 126, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 8,
                       "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 134});
    let message = json!({"id": "msg_req-3_0", "type": "message", "status": "completed", "role": "assistant",
                         "content": [{"type": "output_text", "text": text, "annotations": []}]});
    let answer = whole.json();
    let created = answer["created_at"].clone();
    assert!(created.as_u64().is_some_and(|t| t > 1_700_000_000), "{answer}");
    let response = |status: &str, output: Value, usage: Value| {
        json!({"id": "resp_req-3", "object": "response", "created_at": created, "status": status, "error": null,
               "incomplete_details": null, "model": "alias", "output": output, "usage": usage})
    };
    assert_eq!(
        (whole.status, answer.clone()),
        (200, response("completed", json!([message]), usage.clone()))
    );
    let at = |extra: Value| {
        let mut data = json!({"item_id": "msg_req-3_0", "output_index": 0, "content_index": 0});
        data.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        data
    };
    let in_progress = response("in_progress", json!([]), Value::Null);
    let mut want = vec![
        ("response.created", json!({"response": in_progress})),
        ("response.in_progress", json!({"response": in_progress})),
        (
            "response.output_item.added",
            json!({"output_index": 0, "item": {"id": "msg_req-3_0", "type": "message", "status": "in_progress",
                   "role": "assistant", "content": []}}),
        ),
        (
            "response.content_part.added",
            at(json!({"part": {"type": "output_text", "text": "", "annotations": []}})),
        ),
    ];
    for piece in chat_pieces("chat-text") {
        want.push((
            "response.output_text.delta",
            at(json!({"delta": piece, "logprobs": []})),
        ));
    }
    want.extend([
        ("response.output_text.done", at(json!({"text": text, "logprobs": []}))),
        (
            "response.content_part.done",
            at(json!({"part": {"type": "output_text", "text": text, "annotations": []}})),
        ),
        ("response.output_item.done", json!({"output_index": 0, "item": message})),
        (
            "response.completed",
            json!({"response": response("completed", json!([message]), usage)}),
        ),
    ]);
    for (i, (name, data)) in want.iter_mut().enumerate() {
        data["type"] = (*name).into();
        data["sequence_number"] = i.into();
        // The stream's own clock may have ticked since.
        if let Some(response) = data.get_mut("response") {
            response["created_at"] = Value::Null;
        }
    }
    let mut got: Vec<(String, Value)> = Vec::new();
    for event in streamed.body.split_terminator("\n\n") {
        let (name, data) = event.split_once('\n').unwrap();
        let mut data: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
        if let Some(response) = data.get_mut("response") {
            response["created_at"] = Value::Null;
        }
        got.push((name.strip_prefix("event: ").unwrap().to_owned(), data));
    }
    let want: Vec<(String, Value)> = want.into_iter().map(|(n, d)| (n.to_owned(), d)).collect();
    assert_eq!(
        (streamed.status, streamed.content_type.as_str()),
        (200, "text/event-stream")
    );
    assert_eq!(got, want);
    let sent = mock.requests();
    assert_eq!(
        sent[1],
        (
            "/v1/chat/completions".to_owned(),
            json!({"model": "backend-model", "stream": false, "max_tokens": 64,
                   "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello!"}]})
        )
    );
    let rows: Vec<Value> = bridge.rows().await.iter().map(project).collect();
    let row = |stream: u8| {
        json!({"endpoint": "/v1/responses", "model": "alias", "backend_model": "backend-model", "stream": stream,
            "status_code": 200, "error": null, "prompt": "Hello!", "response": text,
            "thinking": null, "tool_calls": null, "done_reason": "stop", "prompt_tokens": 126,
            "completion_tokens": 8, "tokens_estimated": 0})
    };
    assert_eq!(rows, [row(1), row(0)]);
}

/// A tool call becomes a `function_call` item with the call's arguments; a request that
/// cannot be translated is a 400 in OpenAI's shape; one row each.
#[tokio::test]
async fn a_tool_call_is_translated_into_a_function_call_item() {
    let mock = Mock::start(Serving::ChatOnly("chat-tools")).await;
    let mut bridge = bridge(&mock, json!({})).await;
    let body = json!({"model": "alias", "input": "What is the weather in Paris?",
                      "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]});
    let whole = post(
        &bridge,
        "/v1/responses",
        &body.to_string(),
        &[("x-request-id", "req-4")],
    )
    .await;
    let forced = json!({"model": "alias", "input": "Hi", "tool_choice": "required"});
    let refused = post(&bridge, "/v1/responses", &forced.to_string(), &[]).await;
    let rows = bridge.rows().await;
    let call_id = row_call_id(&rows[0]);
    assert_eq!(
        (whole.status, whole.json()["output"].clone()),
        (
            200,
            json!([{"id": "fc_req-4_0", "type": "function_call", "status": "completed", "call_id": call_id,
                    "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}])
        )
    );
    let message =
        "tool_choice other than 'auto' or 'none' cannot be honoured by a backend answering through chat completions";
    assert_eq!(
        (refused.status, refused.json()["error"]["message"].clone()),
        (400, json!(message))
    );
    assert_eq!(
        (&rows[1]["status_code"], &rows[1]["error"]),
        (&json!(400), &json!(message))
    );
    let paths: Vec<String> = mock.requests().into_iter().map(|(path, _)| path).collect();
    assert_eq!(paths, ["/v1/responses", "/v1/chat/completions"]);
}
