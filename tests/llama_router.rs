//! Model lifecycle over llama-server's router mode: ollabridge in front of a router
//! serving the scripted tiny models from a models dir, loading and unloading them as
//! Ollama does (an empty chat loads, `keep_alive` unloads), checked at the router's own
//! `GET /models` and at ollabridge's `/api/ps`.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

mod common;

use std::time::{Duration, Instant};

use common::{Bridge, LlamaServer, bench_python, get_json, ndjson, post, script, tiny_models_dir};
use serde_json::{Value, json};

/// A router over a temp models dir holding both tiny models, and a bridge in front of it
/// mapping "tiny" to tiny-chat.
async fn router() -> (LlamaServer, Bridge, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    for model in ["tiny-chat", "tiny-think"] {
        let file = format!("{model}.gguf");
        std::fs::copy(tiny_models_dir().join(&file), dir.path().join(&file)).unwrap();
    }
    let llama = LlamaServer::router(dir.path()).await;
    let bridge = Bridge::openai(&llama.url, json!({"tiny": "tiny-chat"})).await;
    (llama, bridge, dir)
}

/// What the router itself says of `model`: `loaded`, `unloaded`, ...
async fn router_status(llama: &LlamaServer, model: &str) -> String {
    let (status, list) = get_json(&format!("{}/models", llama.url)).await;
    assert_eq!(status, 200, "{list}");
    let entry = list["data"].as_array().unwrap().iter().find(|m| m["id"] == model);
    entry.unwrap_or_else(|| panic!("{model} not in {list}"))["status"]["value"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Waits (at most `limit`) for the router to report `model` as `wanted`.
async fn until_status(llama: &LlamaServer, model: &str, wanted: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let status = router_status(llama, model).await;
        if status == wanted {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{model} still {status}, not {wanted}, after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn ps(bridge: &Bridge) -> Vec<Value> {
    let (status, body) = get_json(&format!("{}/api/ps", bridge.url)).await;
    assert_eq!(status, 200, "{body}");
    body["models"].as_array().unwrap().clone()
}

/// An RFC 3339 time with nanoseconds, UTC, as Ollama writes `expires_at`.
fn ollama_time(text: &str) -> chrono::DateTime<chrono::Utc> {
    assert_eq!(text.len(), "2026-12-06T23:40:00.123456789Z".len(), "{text}");
    chrono::DateTime::parse_from_rfc3339(text).unwrap().into()
}

#[tokio::test]
async fn an_empty_chat_loads_the_model_and_keep_alive_zero_unloads_it() {
    let (llama, bridge, _dir) = router().await;
    assert_eq!(router_status(&llama, "tiny-chat").await, "unloaded");
    assert!(ps(&bridge).await.is_empty());

    let asked = chrono::Utc::now();
    let (status, _, body) = post(
        &format!("{}/api/chat", bridge.url),
        json!({"model": "tiny", "messages": [], "keep_alive": "10m"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (
            &answer["model"],
            &answer["done"],
            &answer["done_reason"],
            &answer["message"]
        ),
        (
            &json!("tiny"),
            &json!(true),
            &json!("load"),
            &json!({"role": "assistant", "content": ""})
        )
    );
    assert!(answer["load_duration"].as_u64().unwrap() > 0, "{answer}");
    // Loaded when the answer came, not later.
    assert_eq!(router_status(&llama, "tiny-chat").await, "loaded");
    assert_eq!(router_status(&llama, "tiny-think").await, "unloaded");

    let listed = ps(&bridge).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let entry = &listed[0];
    assert_eq!(
        (&entry["name"], &entry["model"]),
        (&json!("tiny:latest"), &json!("tiny:latest"))
    );
    assert!(entry["size"].as_u64().unwrap() > 0, "{entry}");
    assert_eq!(entry["size_vram"], 0);
    let expires = ollama_time(entry["expires_at"].as_str().unwrap());
    let ten_minutes = chrono::Duration::minutes(10);
    assert!(
        expires >= asked + ten_minutes && expires <= chrono::Utc::now() + ten_minutes,
        "{expires} is not 10 minutes after the load"
    );

    let (status, _, body) = post(
        &format!("{}/api/generate", bridge.url),
        json!({"model": "tiny", "keep_alive": 0}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (&answer["done_reason"], &answer["response"]),
        (&json!("unload"), &json!(""))
    );
    until_status(&llama, "tiny-chat", "unloaded", Duration::from_secs(10)).await;
    assert!(ps(&bridge).await.is_empty());
}

#[tokio::test]
async fn a_chat_answers_in_router_mode_and_its_keep_alive_unloads_the_model() {
    let (llama, bridge, _dir) = router().await;
    let (status, _, body) = post(
        &format!("{}/api/chat", bridge.url),
        json!({"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "keep_alive": "1s"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let lines = ndjson(&body);
    let text: String = lines.iter().filter_map(|l| l["message"]["content"].as_str()).collect();
    assert_eq!(text, script("tiny-chat")["text"].as_str().unwrap());
    let last = lines.last().unwrap();
    assert_eq!(last["done_reason"], "stop");
    assert!(
        last["load_duration"].as_u64().unwrap() > 0,
        "this chat loaded the model: {last}"
    );

    // Loaded for the chat, unloaded a second after it ended.
    until_status(&llama, "tiny-chat", "unloaded", Duration::from_secs(15)).await;
    assert!(ps(&bridge).await.is_empty());

    // Once loaded, a chat waits for no load.
    post(
        &format!("{}/api/chat", bridge.url),
        json!({"model": "tiny", "messages": []}),
    )
    .await;
    let (status, _, body) = post(
        &format!("{}/api/chat", bridge.url),
        json!({"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "stream": false}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["message"]["content"], script("tiny-chat")["text"]);
    assert_eq!(answer["load_duration"], 0);
    // The default keep-alive (5 minutes) holds it.
    let listed = ps(&bridge).await;
    let expires = ollama_time(listed[0]["expires_at"].as_str().unwrap());
    let left = expires - chrono::Utc::now();
    assert!(
        left > chrono::Duration::minutes(4) && left <= chrono::Duration::minutes(5),
        "{left}"
    );
}

#[tokio::test]
async fn an_embed_loads_the_model_and_its_keep_alive_unloads_it() {
    let (llama, bridge, _dir) = router().await;
    let (status, _, body) = post(
        &format!("{}/api/embed", bridge.url),
        json!({"model": "tiny", "input": "Hello!", "keep_alive": "1s"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["embeddings"][0].as_array().unwrap().len(), 64, "{answer}");
    until_status(&llama, "tiny-chat", "unloaded", Duration::from_secs(15)).await;
    assert!(ps(&bridge).await.is_empty());
}

#[tokio::test]
async fn a_keep_alive_that_is_not_a_duration_is_refused() {
    let (llama, bridge, _dir) = router().await;
    let (status, _, body) = post(
        &format!("{}/api/chat", bridge.url),
        json!({"model": "tiny", "messages": [], "keep_alive": "soon"}),
    )
    .await;
    assert_eq!(
        (status, serde_json::from_str::<Value>(&body).unwrap()),
        (
            400,
            json!({"error": "keep_alive: invalid duration \"soon\" (use e.g. \"5m\", \"30s\", 300, 0 or -1)"})
        )
    );
    assert_eq!(router_status(&llama, "tiny-chat").await, "unloaded");
}

/// The official client's own load and unload calls.
#[tokio::test]
async fn ollama_python_loads_and_unloads_through_ollabridge() {
    let (llama, bridge, _dir) = router().await;
    let python = |code: &str| {
        tokio::process::Command::new(bench_python())
            .args(["-c", code, &bridge.url])
            .env("NO_PROXY", "127.0.0.1,localhost")
            .output()
    };
    let out = python(
        "import sys, ollama; c = ollama.Client(host=sys.argv[1]); \
         r = c.generate(model='tiny', keep_alive='5m'); print(r.done_reason, r.load_duration > 0)",
    )
    .await
    .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "load True\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(router_status(&llama, "tiny-chat").await, "loaded");
    let out = python(
        "import sys, ollama; c = ollama.Client(host=sys.argv[1]); \
         r = c.chat(model='tiny', messages=[], keep_alive=0); print(r.done_reason); \
         print([m.model for m in c.ps().models])",
    )
    .await
    .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "unload\n[]\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(router_status(&llama, "tiny-chat").await, "unloaded");
}
