//! Real-client conformance: the clients people point at Ollama, driven against ollabridge
//! over the llama-server bench. The official `ollama` Python client (0.5.1, Home
//! Assistant's pin, and 0.6.3), the `ollama` npm package, LangChain's `ChatOllama`, a
//! replay of Home Assistant's integration and of Open WebUI's calls (`tests/clients/`),
//! plus the handshakes of Copilot and Zed and the lenient input real clients send; and the
//! official `openai` Python client on the OpenAI routes (`/v1`).
//! `scripts/client-envs.sh` prepares the client libraries (cached). Each script prints
//! `ok <check>` per check and exits non-zero on the first mismatch; here we assert its exit
//! code, the number of checks that ran, and the log rows the bridge wrote.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::{Bridge, LlamaServer, ndjson, post, repo_root, script, tiny_models_dir};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

/// Where `scripts/client-envs.sh` put the client libraries.
struct ClientEnvs {
    /// A venv with `ollama==0.5.1`.
    ollama_051: PathBuf,
    /// A venv with `ollama==0.6.3` and `langchain-ollama`.
    langchain: PathBuf,
    /// A venv with the official `openai` client.
    openai: PathBuf,
    /// A venv with the official `anthropic` SDK.
    anthropic: PathBuf,
    node: PathBuf,
    /// `tests/clients/js`, with its `node_modules`.
    js_dir: PathBuf,
    /// `tests/clients/claude-code`, with the Claude Code CLI in its `node_modules`.
    claude_code_dir: PathBuf,
}

/// Runs `scripts/client-envs.sh` once per test binary (it is quick when everything is cached).
async fn client_envs() -> &'static ClientEnvs {
    static ENVS: OnceCell<ClientEnvs> = OnceCell::const_new();
    ENVS.get_or_init(|| async {
        // Progress goes straight to stderr: a first install takes a while.
        let out = tokio::process::Command::new("bash")
            .arg(repo_root().join("scripts/client-envs.sh"))
            .current_dir(repo_root())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run scripts/client-envs.sh")
            .wait_with_output()
            .await
            .expect("run scripts/client-envs.sh");
        assert!(out.status.success(), "scripts/client-envs.sh failed ({})", out.status);
        let stdout = String::from_utf8(out.stdout).expect("utf-8");
        let paths: HashMap<&str, PathBuf> = stdout
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k, PathBuf::from(v)))
            .collect();
        let path = |key: &str| {
            paths
                .get(key)
                .cloned()
                .unwrap_or_else(|| panic!("{key} missing in: {stdout}"))
        };
        ClientEnvs {
            ollama_051: path("OLLAMA_051_PYTHON"),
            langchain: path("LANGCHAIN_PYTHON"),
            openai: path("OPENAI_PYTHON"),
            anthropic: path("ANTHROPIC_PYTHON"),
            node: path("NODE"),
            js_dir: path("JS_DIR"),
            claude_code_dir: path("CLAUDE_CODE_DIR"),
        }
    })
    .await
}

fn script_json() -> String {
    tiny_models_dir()
        .join("script.json")
        .to_str()
        .expect("utf-8")
        .to_owned()
}

fn client_script(name: &str) -> String {
    repo_root()
        .join("tests/clients")
        .join(name)
        .to_str()
        .expect("utf-8")
        .to_owned()
}

/// Runs a client script to the end (asynchronously: the bridge lives on this runtime) and
/// returns its output after asserting it passed and ran exactly `expected_checks` checks.
async fn run_client(program: &Path, args: &[&str], expected_checks: usize) -> String {
    let child = tokio::process::Command::new(program)
        .args(args)
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(300), child)
        .await
        .unwrap_or_else(|_| panic!("{} {args:?} took longer than 5 minutes", program.display()))
        .expect("run client");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.ends_with("all checks passed\n"),
        "{} {args:?} failed ({}):\n{stdout}\n{stderr}",
        program.display(),
        out.status
    );
    let checks = stdout.lines().filter(|l| l.starts_with("ok ")).count();
    assert_eq!(checks, expected_checks, "every check ran:\n{stdout}");
    stdout
}

/// A llama-server with one scripted model and a bridge in front of it.
async fn bench(model: &str, mappings: Value) -> (LlamaServer, Bridge) {
    let llama = LlamaServer::start(model).await;
    let bridge = Bridge::openai(&llama.url, mappings).await;
    (llama, bridge)
}

/// The context each llama-server slot serves: what the bridge must report as context length.
async fn served_context(llama: &LlamaServer) -> u64 {
    let props = get(&format!("{}/props", llama.url)).await.1;
    props["default_generation_settings"]["n_ctx"]
        .as_u64()
        .expect("n_ctx in /props")
}

async fn get(url: &str) -> (u16, Value) {
    let response = reqwest::get(url).await.expect("request");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {url}: {status} {text:?}: {e}"));
    (status, body)
}

/// The rows of `/api/chat` and `/api/generate` requests, oldest first.
fn answer_rows(rows: &[Value]) -> Vec<&Value> {
    rows.iter()
        .filter(|r| r["endpoint"] == "/api/chat" || r["endpoint"] == "/api/generate")
        .collect()
}

fn tool_calls_of(row: &Value) -> Vec<(String, Value)> {
    let calls: Value = serde_json::from_str(
        row["tool_calls"]
            .as_str()
            .unwrap_or_else(|| panic!("tool_calls in {row}")),
    )
    .expect("tool_calls JSON");
    calls
        .as_array()
        .expect("array")
        .iter()
        .map(|c| {
            (
                c["function"]["name"].as_str().unwrap().to_owned(),
                c["function"]["arguments"].clone(),
            )
        })
        .collect()
}

fn weather_call() -> Vec<(String, Value)> {
    vec![("get_weather".to_owned(), json!({"city": "Paris"}))]
}

/// ollama-python 0.5.1 or 0.6.3 through every call it has; tiny-chat as "tiny", tiny-think as "thinker".
async fn ollama_python(python: &Path, expected_checks: usize) {
    let (llama, mut bridge) = bench("tiny-chat", json!({"tiny": "tiny-chat"})).await;
    let (_think_llama, mut think_bridge) = bench("tiny-think", json!({"thinker": "tiny-think"})).await;
    let (program, script_json) = (client_script("ollama_python_conformance.py"), script_json());
    let args = [
        &program,
        &bridge.url,
        "tiny",
        &think_bridge.url,
        "thinker",
        &llama.url,
        &script_json,
    ];
    run_client(python, &args, expected_checks).await;

    let rows = bridge.rows().await;
    let answers = answer_rows(&rows);
    // chat ×2, generate ×2, tool call ×2, tool result ×2, the unknown model.
    assert_eq!(answers.len(), 9, "{rows:#?}");
    let (unknown, answered) = answers.split_last().unwrap();
    assert_eq!(unknown["status_code"], 404);
    assert_eq!(unknown["error"], "model 'no-such-model' not found");
    for row in answered {
        assert_eq!(
            (&row["model"], &row["backend_model"]),
            (&json!("tiny"), &json!("tiny-chat"))
        );
        assert_eq!(
            (&row["status_code"], &row["error"], &row["done_reason"]),
            (&json!(200), &Value::Null, &json!("stop"))
        );
        assert!(row["completion_tokens"].as_u64().unwrap() > 0, "{row}");
    }
    assert_eq!(tool_calls_of(answered[4]), weather_call());
    assert_eq!(tool_calls_of(answered[5]), weather_call());
    assert_eq!(answered[6]["response"], script("tiny-chat")["after_tool"]);

    let rows = think_bridge.rows().await;
    let answers = answer_rows(&rows);
    assert_eq!(answers.len(), 4, "{rows:#?}");
    let thinking = script("tiny-think")["thinking"].clone();
    for row in &answers[..3] {
        assert_eq!(
            row["thinking"].as_str().map(|t| json!(t.trim())),
            Some(thinking.clone()),
            "{row}"
        );
        assert_eq!(row["response"], script("tiny-think")["answer"]);
    }
    assert_eq!(answers[3]["thinking"], Value::Null, "think: false stores no thinking");
}

#[tokio::test]
async fn ollama_python_0_5_1() {
    ollama_python(&client_envs().await.ollama_051, 60).await;
}

/// 0.6.x also reads `context_length` from `/api/ps`: one check more.
#[tokio::test]
async fn ollama_python_0_6_3() {
    ollama_python(&client_envs().await.langchain, 61).await;
}

/// ollama-python 0.6.3's `logprobs`/`top_logprobs` and `think` levels, read back through
/// its own types; the rows keep the answers.
#[tokio::test]
async fn ollama_python_logprobs_and_think_levels() {
    let (_llama, mut bridge) = bench("tiny-chat", json!({"tiny": "tiny-chat"})).await;
    let (_think_llama, mut think_bridge) = bench("tiny-think", json!({"thinker": "tiny-think"})).await;
    let (program, script_json) = (client_script("ollama_python_logprobs.py"), script_json());
    let args = [
        &program,
        &bridge.url,
        "tiny",
        &think_bridge.url,
        "thinker",
        &script_json,
    ];
    run_client(&client_envs().await.langchain, &args, 27).await;

    let rows = bridge.rows().await;
    let answers = answer_rows(&rows);
    let responses: Vec<&Value> = answers.iter().map(|r| &r["response"]).collect();
    assert_eq!(responses, [&script("tiny-chat")["text"]; 4], "{rows:#?}");
    let rows = think_bridge.rows().await;
    let outcomes: Vec<(&Value, &Value)> = answer_rows(&rows)
        .iter()
        .map(|r| (&r["status_code"], &r["response"]))
        .collect();
    let answered = (&json!(200), &script("tiny-think")["answer"]);
    assert_eq!(
        outcomes,
        [answered, answered, answered, answered, (&json!(400), &Value::Null)]
    );
}

#[tokio::test]
async fn ollama_js() {
    let envs = client_envs().await;
    let (llama, mut bridge) = bench("tiny-chat", json!({"tiny": "tiny-chat"})).await;
    let js = envs.js_dir.join("ollama_js_conformance.mjs");
    let script_json = script_json();
    let args = [js.to_str().unwrap(), &bridge.url, "tiny", &llama.url, &script_json];
    run_client(&envs.node, &args, 28).await;

    let rows = bridge.rows().await;
    let answers = answer_rows(&rows);
    // chat ×2, tool call ×2, tool result, generate ×2, the unknown model.
    assert_eq!(answers.len(), 8, "{rows:#?}");
    let streamed: Vec<i64> = answers[..7].iter().map(|r| r["stream"].as_i64().unwrap()).collect();
    assert_eq!(
        streamed,
        [1, 0, 1, 0, 1, 1, 0],
        "ollama-js sends stream: false unless asked"
    );
    assert_eq!(tool_calls_of(answers[2]), weather_call());
    assert_eq!(tool_calls_of(answers[3]), weather_call());
    assert_eq!(answers[7]["status_code"], 404);
}

#[tokio::test]
async fn langchain_chat_ollama() {
    let envs = client_envs().await;
    let (_llama, mut bridge) = bench("tiny-chat", json!({"tiny": "tiny-chat"})).await;
    let (_think_llama, mut think_bridge) = bench("tiny-think", json!({"thinker": "tiny-think"})).await;
    let program = client_script("langchain_conformance.py");
    let script_json = script_json();
    let args = [
        &program,
        &bridge.url,
        "tiny",
        &think_bridge.url,
        "thinker",
        &script_json,
    ];
    run_client(&envs.langchain, &args, 9).await;

    let rows = bridge.rows().await;
    // invoke, stream, tool call, tool result: ChatOllama always streams.
    assert_eq!(rows.len(), 4, "{rows:#?}");
    assert!(
        rows.iter().all(|r| r["stream"] == 1 && r["status_code"] == 200),
        "{rows:#?}"
    );
    assert_eq!(tool_calls_of(&rows[2]), weather_call());
    let rows = think_bridge.rows().await;
    assert_eq!(rows.len(), 2, "{rows:#?}");
    assert_eq!(
        rows[0]["thinking"].as_str().map(str::trim),
        script("tiny-think")["thinking"].as_str()
    );
    assert_eq!(rows[1]["thinking"], Value::Null);
}

/// Home Assistant with `model` as the user picked it; `expect` is "listed" or "pull".
async fn home_assistant(model: &str, expect: &str) {
    let envs = client_envs().await;
    let (_llama, mut bridge) = bench("tiny-chat", json!({"llama3.2": "tiny-chat", "kitchen": "tiny-chat"})).await;
    let program = client_script("home_assistant_replay.py");
    run_client(
        &envs.ollama_051,
        &[&program, &bridge.url, model, expect, &script_json()],
        18,
    )
    .await;

    let rows = bridge.rows().await;
    let chats: Vec<&Value> = rows.iter().filter(|r| r["endpoint"] == "/api/chat").collect();
    // Tool call and answer, streamed and whole, then a chat without tools.
    assert_eq!(chats.len(), 5, "{rows:#?}");
    for row in &chats {
        assert_eq!(
            (&row["model"], &row["backend_model"]),
            (&json!(model), &json!("tiny-chat"))
        );
        assert_eq!(
            (&row["status_code"], &row["error"]),
            (&json!(200), &Value::Null),
            "{row}"
        );
    }
    let streamed: Vec<i64> = chats.iter().map(|r| r["stream"].as_i64().unwrap()).collect();
    assert_eq!(streamed, [1, 1, 0, 0, 1]);
    assert_eq!(tool_calls_of(chats[0]), weather_call());
    assert_eq!(tool_calls_of(chats[2]), weather_call());
    // HA's own system prompt, and a prompt of HA's size counted by llama.cpp (four tool
    // schemas and the template's tool preamble), well inside a 4,096-token slot.
    for row in &chats[..4] {
        let prompt: Value = serde_json::from_str(row["prompt"].as_str().unwrap()).unwrap();
        assert_eq!(prompt[0]["role"], "system");
        let system = prompt[0]["content"].as_str().unwrap();
        assert!(
            system.starts_with("You are a voice assistant for Home Assistant.\n")
                && system.ends_with("expose entities to their voice assistant in Home Assistant."),
            "{system}"
        );
        let tokens = row["prompt_tokens"].as_u64().unwrap();
        assert!((2500..4096).contains(&tokens), "prompt_tokens {tokens}: {row}");
    }
    for row in [chats[1], chats[3]] {
        assert_eq!(row["response"], script("tiny-chat")["after_tool"]);
        // The history as HA sent it: the assistant turn without content, the result without ids.
        let prompt: Value = serde_json::from_str(row["prompt"].as_str().unwrap()).unwrap();
        assert_eq!(
            prompt[2]["tool_calls"][0]["function"]["arguments"],
            json!({"city": "Paris"})
        );
        assert_eq!(prompt[3]["role"], "tool");
        assert!(
            prompt[3].get("tool_call_id").is_none() && prompt[3].get("tool_name").is_none(),
            "{prompt}"
        );
    }
    assert_eq!(chats[4]["response"], script("tiny-chat")["text"]);
}

/// HA's catalogue value `"<name>:latest"` is listed verbatim: no pull.
#[tokio::test]
async fn home_assistant_catalogue_model() {
    home_assistant("llama3.2:latest", "listed").await;
}

/// A name typed without a tag does not match the listed `kitchen:latest`, so HA pulls it.
#[tokio::test]
async fn home_assistant_typed_model_is_pulled() {
    home_assistant("kitchen", "pull").await;
}

#[tokio::test]
async fn open_webui_flow() {
    let envs = client_envs().await;
    let (_llama, mut bridge) = bench("tiny-chat", json!({"tiny": "tiny-chat"})).await;
    let program = client_script("open_webui_replay.py");
    run_client(
        &envs.ollama_051,
        &[&program, &bridge.url, "tiny:latest", &script_json()],
        17,
    )
    .await;

    let rows = bridge.rows().await;
    let answers = answer_rows(&rows);
    assert_eq!(answers.len(), 3, "tool call, answer, unload: {rows:#?}");
    assert_eq!(tool_calls_of(answers[0]), weather_call());
    assert_eq!(answers[1]["response"], script("tiny-chat")["after_tool"]);
    let prompt: Value = serde_json::from_str(answers[1]["prompt"].as_str().unwrap()).unwrap();
    assert!(
        prompt[2]["tool_call_id"].is_string(),
        "the result keeps its tool_call_id: {prompt}"
    );
    assert_eq!(
        (&answers[2]["endpoint"], &answers[2]["status_code"]),
        (&json!("/api/generate"), &json!(200))
    );
}

/// GitHub Copilot Chat's Ollama provider: version gate, list, then `/api/show` per model.
#[tokio::test]
async fn copilot_handshake() {
    let (llama, bridge) = bench("tiny-chat", json!({"tiny": "tiny-chat"})).await;
    let context = served_context(&llama).await;

    let (status, version) = get(&format!("{}/api/version", bridge.url)).await;
    assert_eq!(status, 200);
    let parts: Vec<u64> = version["version"]
        .as_str()
        .unwrap()
        .split('.')
        .map(|p| p.parse().expect("dotted integers"))
        .collect();
    assert_eq!(parts.len(), 3, "{version}");
    assert!(parts >= vec![0, 6, 4], "Copilot needs >= 0.6.4: {version}");

    let (status, tags) = get(&format!("{}/api/tags", bridge.url)).await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = tags["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["model"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"tiny:latest"), "{tags}");
    for id in ids {
        let r = reqwest::Client::new()
            .post(format!("{}/api/show", bridge.url))
            .header("User-Agent", "GitHubCopilotChat/0.30.3")
            .json(&json!({"model": id}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{id}");
        let show: Value = r.json().await.unwrap();
        let capabilities = show["capabilities"]
            .as_array()
            .unwrap_or_else(|| panic!("capabilities: {show}"));
        assert!(
            capabilities.contains(&json!("tools")),
            "Copilot's agent mode needs tools: {show}"
        );
        let arch = show["model_info"]["general.architecture"]
            .as_str()
            .expect("general.architecture");
        assert_eq!(
            show["model_info"][format!("{arch}.context_length")].as_u64(),
            Some(context),
            "{id}: {show}"
        );
    }
}

/// Zed: `GET /api/show?model=`, then chats with a numeric `keep_alive`.
#[tokio::test]
async fn zed_handshake() {
    let (llama, mut bridge) = bench("tiny-chat", json!({"tiny": "tiny-chat"})).await;
    let context = served_context(&llama).await;
    let (status, show) = get(&format!("{}/api/show?model=tiny", bridge.url)).await;
    assert_eq!(status, 200, "{show}");
    let arch = show["model_info"]["general.architecture"]
        .as_str()
        .expect("general.architecture");
    assert_eq!(
        show["model_info"][format!("{arch}.context_length")].as_u64(),
        Some(context)
    );
    assert!(
        show["capabilities"].as_array().unwrap().contains(&json!("tools")),
        "{show}"
    );

    for keep_alive in [json!(-1), json!(300)] {
        let (status, content_type, body) = post(
            &format!("{}/api/chat", bridge.url),
            json!({
                "model": "tiny",
                "messages": [{"role": "user", "content": "Hi there", "images": null}],
                "stream": true,
                "keep_alive": keep_alive,
                "options": {"num_ctx": context, "temperature": 1.0},
                "tools": [],
            }),
        )
        .await;
        assert_eq!((status, content_type.as_str()), (200, "application/x-ndjson"), "{body}");
        let lines = ndjson(&body);
        let text: String = lines
            .iter()
            .map(|l| l["message"]["content"].as_str().unwrap())
            .collect();
        assert_eq!(text, script("tiny-chat")["text"].as_str().unwrap());
        let last = lines.last().unwrap();
        assert_eq!(last["done_reason"], "stop");
        assert!(
            last["eval_count"].as_u64().unwrap() > 0 && last["prompt_eval_count"].as_u64().unwrap() > 0,
            "{last}"
        );
    }
    assert_eq!(answer_rows(&bridge.rows().await).len(), 2);
}

/// Request bodies exactly as real clients send them; every one is a 200.
#[tokio::test]
async fn lenient_input_real_clients_send() {
    let (_llama, mut bridge) = bench("tiny-chat", json!({"tiny": "tiny-chat"})).await;
    let said = script("tiny-chat");
    let (text, after_tool) = (said["text"].clone(), said["after_tool"].clone());
    let hello = json!([{"role": "user", "content": "Hi there"}]);
    let chat = |extra: Value| {
        let mut body = json!({"model": "tiny", "messages": hello, "stream": false});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        body
    };
    let weather = json!([{"type": "function", "function": {
        "name": "get_weather", "description": "Get the weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
    let cases: Vec<(&str, Value, Value)> = vec![
        (
            "num_ctx as a float (HA)",
            chat(json!({"options": {"num_ctx": 8192.0}})),
            text.clone(),
        ),
        ("keep_alive 5m", chat(json!({"keep_alive": "5m"})), text.clone()),
        ("keep_alive -1s (HA)", chat(json!({"keep_alive": "-1s"})), text.clone()),
        (
            "keep_alive -1.0s (HA)",
            chat(json!({"keep_alive": "-1.0s"})),
            text.clone(),
        ),
        ("keep_alive -1", chat(json!({"keep_alive": -1})), text.clone()),
        ("keep_alive 0", chat(json!({"keep_alive": 0})), text.clone()),
        ("tools: [] (ollama-python)", chat(json!({"tools": []})), text.clone()),
        ("format: \"\" (HA 2024.12)", chat(json!({"format": ""})), text.clone()),
        (
            "capitalised roles",
            chat(json!({"messages": [{"role": "System", "content": "Be brief."}, {"role": "User", "content": "Hi"}]})),
            text.clone(),
        ),
        (
            "unknown top-level keys",
            chat(json!({"metadata": {"chat_id": "c1"}, "truncate": true, "shift": true, "client_extra": [1]})),
            text.clone(),
        ),
        (
            "assistant without content, tool result without ids",
            chat(json!({"tools": weather, "messages": [
                {"role": "user", "content": "What is the weather in Paris?"},
                {"role": "assistant", "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
                {"role": "tool", "content": "{\"weather\":\"sunny\"}"},
            ]})),
            after_tool,
        ),
    ];
    let requests = cases.len() + 5;
    for (label, body, want) in cases {
        let (status, _, response) = post(&format!("{}/api/chat", bridge.url), body).await;
        assert_eq!(status, 200, "{label}: {response}");
        let answer: Value = serde_json::from_str(&response).unwrap();
        assert_eq!(answer["message"]["content"], want, "{label}: {answer}");
        assert_eq!(answer["done_reason"], "stop", "{label}");
    }

    // HA's whole body, streamed.
    let (status, _, response) = post(
        &format!("{}/api/chat", bridge.url),
        json!({"model": "tiny", "messages": hello, "stream": true, "keep_alive": "-1s",
               "options": {"num_ctx": 8192.0}, "tools": []}),
    )
    .await;
    assert_eq!(status, 200, "{response}");
    let streamed: String = ndjson(&response)
        .iter()
        .map(|l| l["message"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(streamed, text.as_str().unwrap());

    // Empty chats and prompts load (or with keep_alive 0 unload) the model: one JSON object.
    let loads = [
        ("/api/chat", json!({"model": "tiny", "messages": []}), "load"),
        (
            "/api/chat",
            json!({"model": "tiny", "messages": [], "keep_alive": 0}),
            "unload",
        ),
        (
            "/api/generate",
            json!({"model": "tiny", "prompt": "", "options": {"num_ctx": 8192.0}}),
            "load",
        ),
        (
            "/api/generate",
            json!({"model": "tiny", "prompt": "", "keep_alive": 0}),
            "unload",
        ),
    ];
    for (path, body, reason) in loads {
        let (status, _, response) = post(&format!("{}{path}", bridge.url), body.clone()).await;
        assert_eq!(status, 200, "{body}: {response}");
        let answer: Value = serde_json::from_str(response.trim()).unwrap_or_else(|e| panic!("{response:?}: {e}"));
        assert_eq!(
            (&answer["done"], &answer["done_reason"]),
            (&json!(true), &json!(reason)),
            "{body}"
        );
    }

    let rows = bridge.rows().await;
    assert_eq!(rows.len(), requests, "{rows:#?}");
    assert!(
        rows.iter().all(|r| r["status_code"] == 200 && r["error"].is_null()),
        "{rows:#?}"
    );
}

/// The official `openai` client on `/v1`: chat whole and streamed (usage only when asked
/// for), tools, completions, embeddings (base64 and float), the model list, an unknown
/// model. Each request leaves a row with its route and llama-server's own counts.
#[tokio::test]
async fn openai_python() {
    let envs = client_envs().await;
    let (llama, mut bridge) = bench("tiny-chat", json!({"tiny": "tiny-chat"})).await;
    let program = client_script("openai_conformance.py");
    let out = run_client(
        &envs.openai,
        &[&program, &bridge.url, "tiny", &llama.url, &script_json()],
        27,
    )
    .await;
    // `tokens LABEL PROMPT COMPLETION`: what llama-server reported for each request.
    let reported: Vec<(String, Value, Value)> = out
        .lines()
        .filter_map(|l| l.strip_prefix("tokens "))
        .map(|l| {
            let mut words: Vec<&str> = l.rsplitn(3, ' ').collect();
            words.reverse();
            let number = |w: &str| serde_json::from_str::<Value>(w).expect("a count or null");
            (words[0].to_owned(), number(words[1]), number(words[2]))
        })
        .collect();
    let labels: Vec<&str> = reported.iter().map(|(label, ..)| label.as_str()).collect();
    assert_eq!(
        labels,
        [
            "chat",
            "stream",
            "stream usage",
            "tools",
            "tools stream",
            "tool result",
            "completions",
            "embeddings base64",
            "embeddings float",
        ]
    );

    let rows = bridge.rows().await;
    let (unknown, answered) = rows.split_last().expect("rows");
    assert_eq!(answered.len(), reported.len(), "{rows:#?}");
    for (row, (label, prompt_tokens, completion_tokens)) in answered.iter().zip(&reported) {
        let endpoint = match label.as_str() {
            "completions" => "/v1/completions",
            "embeddings base64" | "embeddings float" => "/v1/embeddings",
            _ => "/v1/chat/completions",
        };
        assert_eq!(
            (&row["endpoint"], &row["model"], &row["backend_model"]),
            (&json!(endpoint), &json!("tiny"), &json!("tiny-chat")),
            "{label}"
        );
        assert_eq!(
            (&row["status_code"], &row["error"], &row["tokens_estimated"]),
            (&json!(200), &Value::Null, &json!(0)),
            "{label}: {row}"
        );
        assert_eq!(
            (&row["prompt_tokens"], &row["completion_tokens"]),
            (prompt_tokens, completion_tokens),
            "{label}: the counts llama-server reported"
        );
        if endpoint != "/v1/embeddings" {
            for timing in ["ttft_ms", "eval_ms", "tokens_per_second"] {
                assert!(
                    row[timing].as_f64().is_some_and(|t| t > 0.0),
                    "{label}: {timing} in {row}"
                );
            }
        }
    }
    let streamed: Vec<i64> = answered.iter().map(|r| r["stream"].as_i64().unwrap()).collect();
    assert_eq!(streamed, [0, 1, 1, 0, 1, 0, 0, 0, 0]);
    let text = script("tiny-chat")["text"].clone();
    for i in [0, 1, 2, 6] {
        assert_eq!(answered[i]["response"], text, "{}", reported[i].0);
    }
    assert_eq!(tool_calls_of(&answered[3]), weather_call());
    assert_eq!(tool_calls_of(&answered[4]), weather_call());
    assert_eq!(answered[5]["response"], script("tiny-chat")["after_tool"]);
    assert_eq!(answered[7]["response"], r#"{"embeddings":1,"dimensions":64}"#);
    assert_eq!(
        (&unknown["status_code"], &unknown["error"]),
        (&json!(404), &json!("model 'no-such-model' not found"))
    );
}

/// The official `anthropic` SDK on `/v1/messages` (llama-server serves it, so it passes
/// through): `messages.create` and `messages.stream`, text and a `tool_use` block, an
/// unknown model. Each request leaves one row with the text or the call.
#[tokio::test]
async fn anthropic_python() {
    let envs = client_envs().await;
    let (_llama, mut bridge) = bench("tiny-chat", json!({"tiny": "tiny-chat"})).await;
    let program = client_script("anthropic_conformance.py");
    run_client(&envs.anthropic, &[&program, &bridge.url, "tiny", &script_json()], 9).await;
    dialect_rows(&bridge.rows().await, "/v1/messages");
}

/// The official `openai` client's `responses.create`, whole and streamed, text and a
/// function call, an unknown model; one row each.
#[tokio::test]
async fn openai_python_responses() {
    let envs = client_envs().await;
    let (_llama, mut bridge) = bench("tiny-chat", json!({"tiny": "tiny-chat"})).await;
    let program = client_script("openai_responses.py");
    run_client(&envs.openai, &[&program, &bridge.url, "tiny", &script_json()], 8).await;
    dialect_rows(&bridge.rows().await, "/v1/responses");
}

/// A bridge over the tiny-chat llama-server that never asks it `/v1/messages` or
/// `/v1/responses` (`serves` false): both are translated onto its chat completions.
async fn translating_bench() -> (LlamaServer, Bridge) {
    let llama = LlamaServer::start("tiny-chat").await;
    let bridge = Bridge::start(json!({
        "backend": {"type": "openai", "endpoint": llama.url, "timeout": 30,
                    "serves": {"messages": false, "responses": false}},
        "models": {"mappings": {"tiny": "tiny-chat"}},
    }))
    .await;
    (llama, bridge)
}

/// The `anthropic` SDK's checks again, each request translated onto the chat: the
/// text, and the `tool_use` block with its input, whole and streamed.
#[tokio::test]
async fn anthropic_python_translated() {
    let envs = client_envs().await;
    let (_llama, mut bridge) = translating_bench().await;
    let program = client_script("anthropic_conformance.py");
    run_client(&envs.anthropic, &[&program, &bridge.url, "tiny", &script_json()], 9).await;
    dialect_rows(&bridge.rows().await, "/v1/messages");
}

/// The `openai` client's Responses checks again, each request translated onto the chat.
#[tokio::test]
async fn openai_python_responses_translated() {
    let envs = client_envs().await;
    let (_llama, mut bridge) = translating_bench().await;
    let program = client_script("openai_responses.py");
    run_client(&envs.openai, &[&program, &bridge.url, "tiny", &script_json()], 8).await;
    dialect_rows(&bridge.rows().await, "/v1/responses");
}

/// The Claude Code CLI answers one prompt (`-p`) through `/v1/messages`, offline: no
/// login (an API key in the environment), no traffic but to the bridge, its own tools and
/// system prompt left out so the request fits the tiny model's context.
#[tokio::test]
async fn claude_code_cli() {
    let (_llama, bridge) = bench("tiny-chat", json!({"tiny": "tiny-chat"})).await;
    claude_code_says_hello(bridge).await;
}

/// The same, each request translated onto llama-server's chat.
#[tokio::test]
async fn claude_code_cli_translated() {
    let (_llama, bridge) = translating_bench().await;
    claude_code_says_hello(bridge).await;
}

async fn claude_code_says_hello(mut bridge: Bridge) {
    let envs = client_envs().await;
    let home = tempfile::tempdir().expect("home");
    let claude = envs.claude_code_dir.join("node_modules/.bin/claude");
    let run = tokio::process::Command::new(&claude)
        .args([
            "-p",
            "Say hello",
            "--model",
            "tiny",
            "--tools",
            "",
            "--system-prompt",
            "Be brief.",
        ])
        .env("HOME", home.path())
        .env("ANTHROPIC_BASE_URL", &bridge.url)
        .env("ANTHROPIC_API_KEY", "sk-unused")
        .env("ANTHROPIC_SMALL_FAST_MODEL", "tiny")
        .env("ANTHROPIC_DEFAULT_HAIKU_MODEL", "tiny")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .env("DISABLE_AUTOUPDATER", "1")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("claude -p took longer than 2 minutes")
        .expect("run claude");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "claude failed ({}): {stderr}", out.status);
    let text = script("tiny-chat")["text"].as_str().unwrap().to_owned();
    assert_eq!(String::from_utf8_lossy(&out.stdout), text.clone() + "\n", "{stderr}");
    let rows = bridge.rows().await;
    let seen: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                &r["endpoint"],
                &r["model"],
                &r["status_code"],
                &r["response"],
                &r["error"],
            )
        })
        .collect();
    assert_eq!(
        seen,
        [(
            &json!("/v1/messages"),
            &json!("tiny"),
            &json!(200),
            &json!(text),
            &Value::Null
        )]
    );
}

/// The rows of a dialect client's run: text whole and streamed, the call whole and
/// streamed, then the unknown model; llama-server's own counts.
fn dialect_rows(rows: &[Value], endpoint: &str) {
    let text = script("tiny-chat")["text"].clone();
    let (unknown, answered) = rows.split_last().expect("rows");
    let fields = [
        "endpoint",
        "model",
        "stream",
        "status_code",
        "error",
        "tokens_estimated",
    ];
    let seen: Vec<Vec<&Value>> = answered
        .iter()
        .map(|r| fields.iter().map(|f| &r[*f]).collect())
        .collect();
    let want = |stream: i64| json!([endpoint, "tiny", stream, 200, null, 0]);
    assert_eq!(json!(seen), json!([want(0), want(1), want(0), want(1)]), "{rows:#?}");
    assert_eq!((&answered[0]["response"], &answered[1]["response"]), (&text, &text));
    assert_eq!(tool_calls_of(&answered[2]), weather_call());
    assert_eq!(tool_calls_of(&answered[3]), weather_call());
    for row in answered {
        assert!(
            row["prompt_tokens"].as_u64().is_some_and(|n| n > 0)
                && row["completion_tokens"].as_u64().is_some_and(|n| n > 0),
            "{row}"
        );
    }
    assert_eq!(
        (&unknown["status_code"], &unknown["error"]),
        (&json!(404), &json!("model 'no-such-model' not found"))
    );
}

/// Model management an OpenAI backend cannot do: a clear error, never a fake success.
#[tokio::test]
async fn model_management_is_refused_clearly() {
    let (_llama, bridge) = bench("tiny-chat", json!({"tiny": "tiny-chat"})).await;
    let http = reqwest::Client::new();
    let calls = [
        (
            reqwest::Method::POST,
            "/api/create",
            json!({"model": "new", "from": "tiny"}),
        ),
        (
            reqwest::Method::POST,
            "/api/copy",
            json!({"source": "tiny", "destination": "copy"}),
        ),
        (reqwest::Method::DELETE, "/api/delete", json!({"model": "tiny"})),
        (reqwest::Method::POST, "/api/push", json!({"model": "tiny"})),
        (
            reqwest::Method::POST,
            "/api/pull",
            json!({"model": "no-such-model", "stream": false}),
        ),
    ];
    for (method, path, body) in calls {
        let r = http
            .request(method, format!("{}{path}", bridge.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let answer: Value = r.json().await.unwrap_or_else(|e| panic!("{path}: not JSON: {e}"));
        assert!((400..600).contains(&status), "{path}: {status} {answer}");
        assert!(
            !answer["error"].as_str().unwrap_or_default().is_empty(),
            "{path}: {answer}"
        );
    }
}
