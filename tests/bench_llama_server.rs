//! Proves the real-backend bench: llama-server built from the PyPI sdist, serving the
//! scripted tiny models, answers `/v1/chat/completions` with exactly the scripted text,
//! real `tool_calls`, `reasoning_content`, `usage` and `timings`.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

mod common;

use common::{LlamaServer, script};
use serde_json::{Value, json};

fn weather_tool() -> Value {
    json!([{"type": "function", "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    }}])
}

async fn complete(server: &LlamaServer, mut body: Value) -> Value {
    body["model"] = server.model.clone().into();
    let r = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", server.url))
        .json(&body)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    r.json().await.expect("json")
}

/// The SSE events' JSON payloads, and whether the stream ended with `[DONE]`.
async fn complete_stream(server: &LlamaServer, mut body: Value) -> (Vec<Value>, bool) {
    body["model"] = server.model.clone().into();
    body["stream"] = true.into();
    body["stream_options"] = json!({"include_usage": true});
    let r = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", server.url))
        .json(&body)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let text = r.text().await.expect("body");
    let mut events = Vec::new();
    let mut done = false;
    for line in text.lines().filter_map(|l| l.strip_prefix("data: ")) {
        if line == "[DONE]" {
            done = true;
        } else {
            events.push(serde_json::from_str(line).expect("event JSON"));
        }
    }
    (events, done)
}

fn streamed_field(events: &[Value], field: &str) -> String {
    events
        .iter()
        .filter_map(|e| e["choices"].get(0)?["delta"][field].as_str().map(str::to_owned))
        .collect()
}

fn finish_reason(events: &[Value]) -> Option<String> {
    events
        .iter()
        .find_map(|e| e["choices"].get(0)?["finish_reason"].as_str().map(str::to_owned))
}

fn assert_usage_and_timings(v: &Value) {
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0, "usage: {v}");
    assert!(v["usage"]["completion_tokens"].as_u64().unwrap() > 0, "usage: {v}");
    assert!(v["timings"]["predicted_n"].as_u64().unwrap() > 0, "timings: {v}");
    assert!(v["timings"]["prompt_ms"].as_f64().unwrap() > 0.0, "timings: {v}");
}

#[tokio::test]
async fn tiny_chat_answers_the_scripted_text() {
    let server = LlamaServer::start("tiny-chat").await;
    let expected = script("tiny-chat");
    let user = json!({"messages": [{"role": "user", "content": "Hi there"}]});

    let whole = complete(&server, user.clone()).await;
    assert_eq!(whole["choices"][0]["message"]["content"], expected["text"]);
    assert_eq!(whole["choices"][0]["finish_reason"], "stop");
    assert_usage_and_timings(&whole);

    let (events, done) = complete_stream(&server, user).await;
    assert!(done, "stream ends with [DONE]");
    assert_eq!(streamed_field(&events, "content"), expected["text"].as_str().unwrap());
    assert_eq!(finish_reason(&events).as_deref(), Some("stop"));
    let last = events.last().unwrap();
    assert_eq!(last["choices"], json!([]), "the usage chunk has no choices");
    assert_usage_and_timings(last);
    assert_eq!(last["usage"]["completion_tokens"], last["timings"]["predicted_n"]);
}

#[tokio::test]
async fn tiny_chat_calls_the_tool_and_reads_its_result() {
    let server = LlamaServer::start("tiny-chat").await;
    let expected = script("tiny-chat");
    let ask = json!({"messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": weather_tool()});

    let whole = complete(&server, ask.clone()).await;
    let call = &whole["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], expected["tool_call"]["name"]);
    let args: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"city": "Paris"}));
    assert_eq!(whole["choices"][0]["finish_reason"], "tool_calls");

    let (events, _) = complete_stream(&server, ask).await;
    let fragments: String = events
        .iter()
        .filter_map(|e| {
            e["choices"].get(0)?["delta"]["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&fragments).unwrap(),
        json!({"city": "Paris"})
    );
    assert_eq!(finish_reason(&events).as_deref(), Some("tool_calls"));

    let after = complete(
        &server,
        json!({"tools": weather_tool(), "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": "", "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "{\"weather\": \"sunny\"}"}
        ]}),
    )
    .await;
    assert_eq!(after["choices"][0]["message"]["content"], expected["after_tool"]);
}

#[tokio::test]
async fn tiny_think_reasons_unless_told_not_to() {
    let server = LlamaServer::start("tiny-think").await;
    let expected = script("tiny-think");
    let user = json!({"messages": [{"role": "user", "content": "Hello"}]});

    let whole = complete(&server, user.clone()).await;
    let message = &whole["choices"][0]["message"];
    assert_eq!(
        message["reasoning_content"].as_str().unwrap().trim_end(),
        expected["thinking"].as_str().unwrap()
    );
    assert_eq!(message["content"], expected["answer"]);

    let (events, _) = complete_stream(&server, user.clone()).await;
    assert_eq!(
        streamed_field(&events, "reasoning_content").trim_end(),
        expected["thinking"].as_str().unwrap()
    );
    assert_eq!(streamed_field(&events, "content"), expected["answer"].as_str().unwrap());

    let mut off = user;
    off["chat_template_kwargs"] = json!({"enable_thinking": false});
    let plain = complete(&server, off).await;
    assert_eq!(plain["choices"][0]["message"]["content"], expected["text"]);
    assert!(
        plain["choices"][0]["message"]
            .get("reasoning_content")
            .is_none_or(Value::is_null)
    );
}

#[tokio::test]
async fn sampling_follows_the_same_chain() {
    let server = LlamaServer::start("tiny-chat").await;
    let expected = script("tiny-chat");
    for seed in [1, 2, 3] {
        let whole = complete(
            &server,
            json!({"messages": [{"role": "user", "content": "Hi"}], "temperature": 1.0, "seed": seed}),
        )
        .await;
        assert_eq!(
            whole["choices"][0]["message"]["content"], expected["text"],
            "seed {seed}"
        );
    }
}

#[tokio::test]
async fn embeddings_are_served() {
    let server = LlamaServer::start("tiny-chat").await;
    let r: Value = reqwest::Client::new()
        .post(format!("{}/v1/embeddings", server.url))
        .json(&json!({"model": "tiny-chat", "input": ["hello", "world"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let data = r["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    let v: Vec<f64> = data[0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(v.len(), 64);
    let norm: f64 = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!((norm - 1.0).abs() < 1e-3, "L2-normalised, got {norm}");
}
