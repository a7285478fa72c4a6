//! End to end against the real llama-server bench: ollabridge in between, driven by
//! raw HTTP and by the official `ollama` Python client; then the log rows they left.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

mod common;

use common::{Bridge, LlamaServer, bench_python, ndjson, post, repo_root, script, tiny_models_dir};
use serde_json::{Value, json};

/// Runs the Python client checks against `host`; panics with its output on failure.
async fn run_python_client(host: &str, model: &str, mode: &str) -> String {
    // Async, so the in-process bridge on this test's runtime keeps serving meanwhile.
    let out = tokio::process::Command::new(bench_python())
        .arg(repo_root().join("tests/clients/ollama_python_e2e.py"))
        .args([
            host,
            tiny_models_dir().join("script.json").to_str().unwrap(),
            model,
            mode,
        ])
        .output()
        .await
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "python client checks failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.ends_with("all checks passed\n"), "{stdout}");
    stdout
}

#[tokio::test]
async fn streams_exact_ndjson_with_llama_cpp_counts() {
    let llama = LlamaServer::start("tiny-chat").await;
    let mut bridge = Bridge::openai(&llama.url, json!({"tiny": "tiny-chat"})).await;
    let messages = json!([{"role": "user", "content": "Hi there"}]);

    // What llama.cpp itself reports for the same conversation.
    let direct: Value = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", llama.url))
        .json(&json!({"model": "tiny-chat", "messages": messages}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    let (status, content_type, body) = post(
        &format!("{}/api/chat", bridge.url),
        json!({"model": "Tiny:latest", "messages": messages}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "application/x-ndjson");
    let lines = ndjson(&body);
    let (last, parts) = lines.split_last().unwrap();
    let text: String = parts
        .iter()
        .map(|l| l["message"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(text, script("tiny-chat")["text"].as_str().unwrap());
    for part in parts {
        assert_eq!(part["model"], "Tiny:latest");
        assert_eq!(part["done"], false);
        assert_eq!(part["message"]["role"], "assistant");
        assert!(
            !part["message"]["content"].as_str().unwrap().is_empty(),
            "no empty chunks: {part}"
        );
        assert!(
            part.get("error").is_none() && part.get("eval_count").is_none(),
            "{part}"
        );
        assert!(part["created_at"].as_str().unwrap().ends_with('Z'));
    }
    assert_eq!(last["done"], true);
    assert_eq!(last["done_reason"], "stop");
    assert_eq!(last["message"], json!({"role": "assistant", "content": ""}));
    assert_eq!(last["prompt_eval_count"], direct["usage"]["prompt_tokens"]);
    assert_eq!(last["eval_count"], direct["usage"]["completion_tokens"]);
    for field in ["total_duration", "prompt_eval_duration", "eval_duration"] {
        assert!(last[field].as_u64().unwrap() > 0, "{field} in {last}");
    }
    assert!(last["total_duration"].as_u64() > last["eval_duration"].as_u64());

    let rows = bridge.rows().await;
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row["endpoint"], "/api/chat");
    assert_eq!(row["model"], "Tiny:latest");
    assert_eq!(row["backend_model"], "tiny-chat");
    assert_eq!(row["response"], script("tiny-chat")["text"]);
    assert_eq!(row["status_code"], 200);
    assert_eq!(row["stream"], 1);
    assert_eq!(row["backend_type"], "openai");
    assert_eq!(row["done_reason"], "stop");
    assert_eq!(row["error"], Value::Null);
    assert_eq!(row["prompt_tokens"], direct["usage"]["prompt_tokens"]);
    assert_eq!(
        serde_json::from_str::<Value>(row["prompt"].as_str().unwrap()).unwrap(),
        messages
    );
}

#[tokio::test]
async fn official_python_client_over_openai_backend() {
    let llama = LlamaServer::start("tiny-chat").await;
    let mut bridge = Bridge::openai(&llama.url, json!({"tiny-chat": "tiny-chat"})).await;
    let output = run_python_client(&bridge.url, "tiny-chat", "chat").await;
    let checks = output.lines().filter(|l| l.starts_with("ok ")).count();

    let rows = bridge.rows().await;
    // 7 answered requests (chat, generate, tools; streamed and not), plus the
    // unknown-model request; /api/tags is not logged.
    assert_eq!(rows.len(), 8, "{output}");
    let errors: Vec<&Value> = rows.iter().filter(|r| !r["error"].is_null()).collect();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0]["status_code"], 404);
    assert_eq!(errors[0]["error"], "model 'no-such-model' not found");
    let tool_rows = rows.iter().filter(|r| !r["tool_calls"].is_null()).count();
    assert_eq!(tool_rows, 2);
    assert_eq!(checks, 37, "every check ran: {output}");
}

#[tokio::test]
async fn official_python_client_with_thinking() {
    let llama = LlamaServer::start("tiny-think").await;
    let mut bridge = Bridge::openai(&llama.url, json!({"tiny-think": "tiny-think"})).await;
    run_python_client(&bridge.url, "tiny-think", "think").await;
    let rows = bridge.rows().await;
    let thinking = script("tiny-think")["thinking"].as_str().unwrap().to_owned();
    assert_eq!(rows[0]["thinking"].as_str().map(str::trim_end), Some(thinking.as_str()));
    assert_eq!(rows[2]["thinking"], Value::Null, "think: false stores no thinking");
}

/// A second ollabridge with an `ollama` backend in front of the first: the pass-through.
#[tokio::test]
async fn ollama_pass_through_chained_in_front() {
    let llama = LlamaServer::start("tiny-chat").await;
    let mut inner = Bridge::openai(&llama.url, json!({"tiny-chat": "tiny-chat"})).await;
    let mut outer = Bridge::start(json!({
        "backend": {"type": "ollama", "endpoint": inner.url, "timeout": 30},
        "models": {"mappings": {"chained": "tiny-chat"}},
    }))
    .await;

    // Raw lines pass through with only the model name changed.
    let (status, _, body) = post(
        &format!("{}/api/chat", outer.url),
        json!({"model": "chained", "messages": [{"role": "user", "content": "Hi"}]}),
    )
    .await;
    assert_eq!(status, 200);
    let lines = ndjson(&body);
    assert!(lines.iter().all(|l| l["model"] == "chained"), "{body}");
    let text: String = lines
        .iter()
        .map(|l| l["message"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(text, script("tiny-chat")["text"].as_str().unwrap());

    // The backend's own model names are listed and usable too.
    run_python_client(&outer.url, "tiny-chat", "chat").await;

    let outer_rows = outer.rows().await;
    let inner_rows = inner.rows().await;
    assert_eq!(outer_rows.len(), 9);
    assert!(outer_rows.iter().all(|r| r["backend_type"] == "ollama"));
    assert_eq!(outer_rows[0]["model"], "chained");
    assert_eq!(outer_rows[0]["backend_model"], "tiny-chat");
    assert_eq!(outer_rows[0]["response"], script("tiny-chat")["text"]);
    assert_eq!(outer_rows[0]["prompt_tokens"], inner_rows[0]["prompt_tokens"]);
    // The unknown model is refused by the outer bridge after asking the inner one's list.
    assert_eq!(inner_rows.len(), 8);
}

/// A 1×1 PNG, base64 as Ollama clients send images.
const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";

/// tiny-chat has no vision projector. llama-server refuses the image with an HTTP 500
/// (it turns every exception into one); the client made the mistake, so it gets a 400
/// with llama.cpp's words, streamed or not, and the log says 400 too.
#[tokio::test]
async fn image_to_a_model_without_vision_is_a_400() {
    let llama = LlamaServer::start("tiny-chat").await;
    let mut bridge = Bridge::openai(&llama.url, json!({"tiny": "tiny-chat"})).await;
    let refusal = "image input is not supported";

    // What llama-server itself answers, so this test notices if it ever changes.
    let direct = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", llama.url))
        .json(&json!({"model": "tiny-chat", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is in this picture?"},
            {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{PNG}")}},
        ]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), 500);
    let direct: Value = direct.json().await.unwrap();
    let message = direct["error"]["message"].as_str().unwrap().to_owned();
    assert!(message.contains(refusal), "{direct}");

    for stream in [true, false] {
        let (status, content_type, body) = post(
            &format!("{}/api/chat", bridge.url),
            json!({"model": "tiny", "stream": stream,
                "messages": [{"role": "user", "content": "What is in this picture?", "images": [PNG]}]}),
        )
        .await;
        assert_eq!((status, content_type.as_str()), (400, "application/json"), "{body}");
        let answer: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(answer, json!({"error": message}), "stream {stream}");
    }
    let (status, _, body) = post(
        &format!("{}/api/generate", bridge.url),
        json!({"model": "tiny", "prompt": "What is in this picture?", "images": [PNG], "stream": false}),
    )
    .await;
    assert_eq!(status, 400, "{body}");

    let rows = bridge.rows().await;
    let seen: Vec<(Value, Value, Value, Value)> = rows
        .iter()
        .map(|r| {
            (
                r["endpoint"].clone(),
                r["stream"].clone(),
                r["status_code"].clone(),
                r["error"].clone(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (json!("/api/chat"), json!(1), json!(400), json!(message)),
            (json!("/api/chat"), json!(0), json!(400), json!(message)),
            (json!("/api/generate"), json!(0), json!(400), json!(message)),
        ]
    );
}

/// `/api/show` reads llama-server's `/props`: both templates handle tool calls, only
/// tiny-think's (Qwen3's) has a thinking switch, neither model has a projector, and the
/// context is what one slot serves.
#[tokio::test]
async fn show_reports_what_llama_server_serves() {
    for (model, capabilities) in [
        ("tiny-chat", json!(["completion", "tools"])),
        ("tiny-think", json!(["completion", "tools", "thinking"])),
    ] {
        let llama = LlamaServer::start(model).await;
        let bridge = Bridge::openai(&llama.url, json!({"mapped": model})).await;
        let props: Value = reqwest::get(format!("{}/props", llama.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let served = props["default_generation_settings"]["n_ctx"].as_u64().expect("n_ctx");
        assert_eq!(served, 4096, "-c 16384 -np 4: a slot holds 4096 tokens");

        for name in ["mapped", model] {
            let (status, _, body) = post(&format!("{}/api/show", bridge.url), json!({"model": name})).await;
            assert_eq!(status, 200, "{body}");
            let show: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(show["capabilities"], capabilities, "{name}");
            assert_eq!(
                show["model_info"],
                json!({"general.architecture": "llama", "general.basename": name, "llama.context_length": served}),
                "{name}"
            );
            assert_eq!(show["details"]["context_length"], served, "{name}");
            assert_eq!(show["template"], props["chat_template"], "{name}");
        }
    }
}
