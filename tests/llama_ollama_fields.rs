//! Ollama's newer request fields against the real llama-server and its scripted tiny
//! models: `logprobs`/`top_logprobs` (also through an `ollama` backend, which passes them
//! through), every `think` level, and a chat longer than a small context, cut to fit.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

mod common;

use common::{Bridge, LlamaServer, ndjson, post, script};
use serde_json::{Value, json};

/// The tokens tiny-chat answers with: the scripted text cut as its vocabulary cuts it.
const TOKENS: [&str; 7] = ["Hello", " from", " the", " tiny", " scripted", " model", "."];

fn tokens(logprobs: &Value) -> Vec<&str> {
    logprobs
        .as_array()
        .unwrap_or_else(|| panic!("logprobs is an array: {logprobs}"))
        .iter()
        .map(|l| l["token"].as_str().unwrap())
        .collect()
}

/// Every line's `logprobs` spells its text, each token with its bytes and the two
/// likeliest tokens (itself first); the whole answer has them all. An `ollama` backend in
/// front passes the request fields and the answer's numbers through as they are.
#[tokio::test]
async fn logprobs_of_the_scripted_text() {
    let llama = LlamaServer::start("tiny-chat").await;
    let mut inner = Bridge::openai(&llama.url, json!({"tiny": "tiny-chat"})).await;
    let mut outer = Bridge::start(json!({
        "backend": {"type": "ollama", "endpoint": inner.url, "timeout": 30},
        "models": {"mappings": {"chained": "tiny"}},
    }))
    .await;
    let ask = |stream: bool, model: &str| {
        json!({"model": model, "messages": [{"role": "user", "content": "Hi"}], "stream": stream,
            "logprobs": true, "top_logprobs": 2})
    };

    let (status, _, body) = post(&format!("{}/api/chat", inner.url), ask(true, "tiny")).await;
    assert_eq!(status, 200);
    let lines = ndjson(&body);
    let (done, parts) = lines.split_last().unwrap();
    assert_eq!(done.get("logprobs"), None, "the end carries no token");
    for line in parts {
        assert_eq!(
            tokens(&line["logprobs"]),
            [line["message"]["content"].as_str().unwrap()]
        );
        let logprob = &line["logprobs"][0];
        assert_eq!(logprob["bytes"], json!(logprob["token"].as_str().unwrap().as_bytes()));
        let top = logprob["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 2, "{line}");
        assert_eq!(
            (&top[0]["token"], &top[0]["logprob"]),
            (&logprob["token"], &logprob["logprob"])
        );
        assert!(top[1]["logprob"].as_f64().unwrap() < top[0]["logprob"].as_f64().unwrap());
    }
    let streamed: Vec<Value> = parts.iter().map(|l| l["logprobs"][0].clone()).collect();
    assert_eq!(tokens(&Value::Array(streamed.clone())), TOKENS);

    let (status, _, body) = post(&format!("{}/api/chat", inner.url), ask(false, "tiny")).await;
    assert_eq!(status, 200);
    let whole: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(whole["message"]["content"], script("tiny-chat")["text"]);
    assert_eq!(whole["logprobs"], Value::Array(streamed.clone()));

    let (status, _, body) = post(&format!("{}/api/chat", outer.url), ask(false, "chained")).await;
    assert_eq!(status, 200);
    let chained: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(chained["logprobs"], Value::Array(streamed));

    let (status, _, body) = post(
        &format!("{}/api/generate", inner.url),
        json!({"model": "tiny", "prompt": "Once upon a time", "raw": true, "stream": false,
            "logprobs": true, "top_logprobs": 0}),
    )
    .await;
    assert_eq!(status, 200);
    let generated: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(tokens(&generated["logprobs"]), TOKENS);
    assert!(
        generated["logprobs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l.get("top_logprobs").is_none()),
        "top_logprobs 0: the chosen tokens alone: {body}"
    );
    outer.stop().await;
    inner.stop().await;
}

/// Every `think` Ollama takes against a Qwen3-style template: the levels think as `true`
/// does (its template has no levels; llama-server takes any `reasoning_effort`), `false`
/// does not; anything else is refused before llama-server is asked.
#[tokio::test]
async fn think_levels_against_tiny_think() {
    let llama = LlamaServer::start("tiny-think").await;
    let mut bridge = Bridge::openai(&llama.url, json!({"thinker": "tiny-think"})).await;
    let said = script("tiny-think");
    let ask = |think: Value| json!({"model": "thinker", "messages": [{"role": "user", "content": "Hello!"}], "stream": false, "think": think});
    for think in [json!(true), json!("low"), json!("medium"), json!("high"), json!("max")] {
        let (status, _, body) = post(&format!("{}/api/chat", bridge.url), ask(think.clone())).await;
        let answer: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(status, 200, "{think}: {body}");
        assert_eq!(
            (
                answer["message"]["thinking"].as_str().map(str::trim),
                &answer["message"]["content"]
            ),
            (said["thinking"].as_str(), &said["answer"]),
            "{think}"
        );
    }
    let (_, _, body) = post(&format!("{}/api/chat", bridge.url), ask(json!(false))).await;
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (answer["message"].get("thinking"), &answer["message"]["content"]),
        (None, &said["text"])
    );
    let (status, _, body) = post(&format!("{}/api/chat", bridge.url), ask(json!("extreme"))).await;
    assert_eq!(
        (status, serde_json::from_str::<Value>(&body).unwrap()),
        (
            400,
            json!({"error": r#"invalid value for 'think': invalid think value: "extreme" (must be "high", "medium", "low", "max", true, or false) at line 1 column 100"#})
        )
    );
    assert_eq!(bridge.rows().await.len(), 7);
}

/// A system message, six older turns and a question: 458 tokens for a llama-server with
/// 256. The bridge drops the oldest turns until it takes the chat, and the client gets the
/// scripted answer; the log row keeps the request that was answered (its backend request,
/// and llama-server's count of its prompt). With `truncate: false`, llama-server's 400.
#[tokio::test]
async fn a_chat_over_a_small_context_is_cut_to_fit() {
    let llama = LlamaServer::start_sized("tiny-chat", 256, 1).await;
    let mut bridge = Bridge::start(json!({
        "backend": {"type": "openai", "endpoint": llama.url, "timeout": 30},
        "models": {"mappings": {"tiny": "tiny-chat"}},
        "database": {"store_bodies": true},
    }))
    .await;
    let mut messages = vec![json!({"role": "system", "content": "Be brief."})];
    messages.extend((0..6).map(|i| {
        json!({"role": if i % 2 == 0 { "user" } else { "assistant" },
            "content": format!("Message number {i} with some filler words here")})
    }));
    messages.push(json!({"role": "user", "content": "Hello!"}));
    let ask = |truncate: Value| {
        let mut body = json!({"model": "tiny", "messages": messages, "stream": false});
        if !truncate.is_null() {
            body["truncate"] = truncate;
        }
        body
    };

    let (status, _, body) = post(&format!("{}/api/chat", bridge.url), ask(Value::Null)).await;
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["message"]["content"], script("tiny-chat")["text"]);
    let prompt_tokens = answer["prompt_eval_count"].as_u64().unwrap();
    assert!(prompt_tokens < 256, "{prompt_tokens}");

    let (status, _, body) = post(&format!("{}/api/chat", bridge.url), ask(json!(false))).await;
    assert_eq!(
        (status, serde_json::from_str::<Value>(&body).unwrap()),
        (
            400,
            json!({"error": "request (458 tokens) exceeds the available context size (256 tokens), try increasing it"})
        )
    );

    let rows = bridge.rows().await;
    assert_eq!(rows.len(), 2);
    assert_eq!(
        (&rows[0]["status_code"], &rows[0]["prompt_tokens"]),
        (&json!(200), &json!(prompt_tokens))
    );
    let sent: Value = serde_json::from_str(rows[0]["backend_request"].as_str().unwrap()).unwrap();
    let contents: Vec<&str> = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        contents,
        [
            "Be brief.",
            "Message number 4 with some filler words here",
            "Message number 5 with some filler words here",
            "Hello!"
        ]
    );
    assert_eq!(
        (&rows[1]["status_code"], &rows[1]["error"]),
        (
            &json!(400),
            &json!("request (458 tokens) exceeds the available context size (256 tokens), try increasing it")
        )
    );
}
