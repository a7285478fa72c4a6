//! Tests that need the real llama-server (the llama tier), moved out of files whose
//! other tests use mock backends only, so those files run without cmake, llama-server
//! or the Python venv (`scripts/test.sh mock`). One module per file they came from.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

mod common;

/// From `tests/auth.rs`: client API keys and the admin token, against llama-server.
mod auth {
    use crate::common::{Bridge, LlamaServer, query_rows};
    use serde_json::{Value, json};

    const KEY: &str = "s3cret-key-for-ha";
    /// `sha256("hashed-key-0001")`, as a user would paste it into the config.
    const HASHED_KEY: &str = "hashed-key-0001";

    fn sha256_hex(text: &str) -> String {
        use sha2::Digest;
        format!("{:x}", sha2::Sha256::digest(text.as_bytes()))
    }

    async fn bridge(llama: &LlamaServer, allow: Value) -> Bridge {
        Bridge::start(json!({
            "backend": {"type": "openai", "endpoint": llama.url},
            "models": {"mappings": {"tiny": "tiny-chat"}},
            "auth": {
                "keys": [{"id": "home-assistant", "key": KEY}, {"id": "laptop", "key": format!("sha256:{}", sha256_hex(HASHED_KEY))}],
                "allow_unauthenticated_from": allow,
            },
        }))
        .await
    }

    async fn chat(bridge: &Bridge, key: Option<&str>) -> (u16, Value, Option<String>) {
        let mut request = reqwest::Client::new()
            .post(format!("{}/api/chat", bridge.url))
            .json(&json!({"model": "tiny", "stream": false, "messages": [{"role": "user", "content": "hi"}]}));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let challenge = response
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_owned());
        (status, response.json().await.unwrap(), challenge)
    }

    #[tokio::test]
    async fn keys_are_required_checked_and_recorded_by_id() {
        let llama = LlamaServer::start("tiny-chat").await;
        let mut bridge = bridge(&llama, json!(["10.99.0.0/16"])).await;

        let (status, body, challenge) = chat(&bridge, None).await;
        assert_eq!(
            (status, body, challenge.as_deref()),
            (
                401,
                json!({"error": "unauthorized: missing API key (send Authorization: Bearer <key>)"}),
                Some("Bearer")
            )
        );
        let (status, body, _) = chat(&bridge, Some("wrong-key-123")).await;
        assert_eq!(
            (status, body),
            (
                401,
                json!({"error": "unauthorized: invalid API key (send Authorization: Bearer <key>)"})
            )
        );
        let (status, body, _) = chat(&bridge, Some(KEY)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["message"]["content"], "Hello from the tiny scripted model.");
        let (status, _, _) = chat(&bridge, Some(HASHED_KEY)).await;
        assert_eq!(status, 200);

        // Every route but /health needs the key.
        let http = reqwest::Client::new();
        for path in ["/", "/api/tags", "/api/version", "/api/ps"] {
            let status = http.get(format!("{}{path}", bridge.url)).send().await.unwrap().status();
            assert_eq!(status, 401, "{path}");
        }
        let health = http
            .get(format!("{}/health", bridge.url))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(health, 200);
        let tags = http
            .get(format!("{}/api/tags", bridge.url))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(tags, 200);

        let metrics = http
            .get(format!("{}/metrics", bridge.admin_url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(!metrics.contains(KEY) && !metrics.contains(HASHED_KEY));

        let db = bridge.db.clone();
        let rows = bridge.rows().await;
        // Refused requests are not logged; the two served ones carry the key's id.
        let keys: Vec<&Value> = rows.iter().map(|r| &r["client_key"]).collect();
        assert_eq!(keys, [&json!("home-assistant"), &json!("laptop")]);
        let dump = query_rows(&db, "SELECT * FROM logs");
        let text = serde_json::to_string(&dump).unwrap();
        assert!(!text.contains(KEY) && !text.contains(HASHED_KEY) && !text.contains(&sha256_hex(KEY)));
    }

    #[tokio::test]
    async fn trusted_networks_need_no_key() {
        let llama = LlamaServer::start("tiny-chat").await;
        let mut bridge = bridge(&llama, json!(["127.0.0.0/8"])).await;
        let (status, body, _) = chat(&bridge, None).await;
        assert_eq!(status, 200, "{body}");
        // A wrong key from a trusted network is still served, without a key id.
        let (status, _, _) = chat(&bridge, Some("wrong-key-123")).await;
        assert_eq!(status, 200);
        let rows = bridge.rows().await;
        assert_eq!(rows.len(), 2);
        assert!(rows.iter().all(|r| r["client_key"].is_null()));
    }

    /// The admin listener serves prompts and answers: with `admin.token` set, every route
    /// but `/health` needs it; a non-loopback admin address without a token is refused.
    #[tokio::test]
    async fn the_admin_listener_has_its_own_token() {
        let llama = LlamaServer::start("tiny-chat").await;
        let bridge = Bridge::start(json!({
            "backend": {"type": "openai", "endpoint": llama.url},
            "admin": {"host": "127.0.0.1", "port": 0, "token": "admin-token-123"},
        }))
        .await;
        let http = reqwest::Client::new();
        for path in ["/metrics", "/api/logs", "/api/stats"] {
            let url = format!("{}{path}", bridge.admin_url);
            assert_eq!(http.get(&url).send().await.unwrap().status(), 401, "{path}");
            assert_eq!(
                http.get(&url)
                    .bearer_auth("wrong-token-1")
                    .send()
                    .await
                    .unwrap()
                    .status(),
                401,
                "{path}"
            );
            assert_eq!(
                http.get(&url)
                    .bearer_auth("admin-token-123")
                    .send()
                    .await
                    .unwrap()
                    .status(),
                200,
                "{path}"
            );
        }
        let health = http
            .get(format!("{}/health", bridge.admin_url))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(health, 200);
        // The Ollama port is unaffected by the admin token.
        assert_eq!(
            http.get(format!("{}/api/tags", bridge.url))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );

        let exposed =
            json!({"backend": {"type": "openai", "endpoint": "http://127.0.0.1:1"}, "admin": {"host": "0.0.0.0"}});
        let err = ollabridge::config::Config::from_json(&exposed.to_string()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid config <inline>: admin.host: '0.0.0.0' is not a loopback address; set admin.token before \
             exposing the admin listener (it serves prompts and answers)"
        );
        let mut with_token = exposed;
        with_token["admin"]["token"] = "admin-token-123".into();
        assert!(ollabridge::config::Config::from_json(&with_token.to_string()).is_ok());
    }
}

/// From `tests/backends.rs`: routing over two llama-servers, failover when one is killed.
mod backends {
    use crate::common::{Bridge, LlamaServer, get_json, get_text, ndjson, post, script};
    use serde_json::{Value, json};

    trait StatusAndJson {
        fn into_status_and_json(self) -> (u16, Value);
    }

    impl StatusAndJson for (u16, String, String) {
        fn into_status_and_json(self) -> (u16, Value) {
            (self.0, serde_json::from_str(&self.2).unwrap())
        }
    }

    /// Chat through the bridge, not streamed; (status, answer text or error).
    async fn ask(bridge: &Bridge, model: &str) -> (u16, String) {
        let (status, _, body) = post(
            &format!("{}/api/chat", bridge.url),
            json!({"model": model, "messages": [{"role": "user", "content": "Hi"}], "stream": false, "think": false}),
        )
        .await;
        let body: Value = serde_json::from_str(&body).unwrap();
        let text = body["message"]["content"]
            .as_str()
            .or(body["error"].as_str())
            .unwrap_or_default();
        (status, text.to_owned())
    }

    #[tokio::test]
    async fn models_route_to_their_backends_and_tags_merge_what_each_offers() {
        let chat = LlamaServer::start("tiny-chat").await;
        let think = LlamaServer::start("tiny-think").await;
        let mut bridge = Bridge::start(json!({
            "backends": {
                "small": {"type": "openai", "endpoint": chat.url},
                "thinker": {"type": "openai", "endpoint": think.url, "discover": {"prefix": "lab/"}},
            },
            "models": {"mappings": {
                "assist": "tiny-chat",
                "reason": {"backend": "thinker", "model": "tiny-think"},
            }},
        }))
        .await;
        let chat_text = script("tiny-chat")["text"].as_str().unwrap().to_owned();
        let think_text = script("tiny-think")["answer"].as_str().unwrap().to_owned();
        assert_eq!(ask(&bridge, "assist").await, (200, chat_text.clone()));
        assert_eq!(ask(&bridge, "reason").await, (200, think_text.clone()));
        // Discovered: the default backend's own name, and the other's under its prefix.
        assert_eq!(ask(&bridge, "tiny-chat").await, (200, chat_text.clone()));
        assert_eq!(ask(&bridge, "lab/tiny-think").await, (200, think_text.clone()));
        assert_eq!(
            ask(&bridge, "tiny-think").await,
            (404, "model 'tiny-think' not found".to_owned())
        );

        let (status, tags) = get_json(&format!("{}/api/tags", bridge.url)).await;
        assert_eq!(status, 200);
        let names: Vec<&str> = tags["models"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "assist:latest",
                "reason:latest",
                "tiny-chat:latest",
                "lab/tiny-think:latest"
            ]
        );

        let (status, backends) = get_json(&format!("{}/api/backends", bridge.admin_url)).await;
        assert_eq!(status, 200);
        let summary: Vec<Value> = backends["backends"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                json!([
                    b["name"],
                    b["type"],
                    b["models"],
                    b["health"]["breaker"],
                    b["health"]["healthy"]
                ])
            })
            .collect();
        assert_eq!(
            summary,
            [
                json!(["small", "openai", ["tiny-chat"], "closed", true]),
                json!(["thinker", "openai", ["tiny-think"], "closed", true]),
            ]
        );

        // The dashboard's replay can send a logged request to another backend, once the
        // writer (50 ms batches) has stored it.
        for _ in 0..200 {
            if get_json(&format!("{}/api/logs/1", bridge.admin_url)).await.0 == 200 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        let (status, replay) = post(
            &format!("{}/api/replay/1", bridge.admin_url),
            json!({"backend": "thinker", "model": "tiny-think"}),
        )
        .await
        .into_status_and_json();
        assert_eq!(status, 200, "{replay}");
        assert_eq!(replay["replay"]["answer"]["message"]["content"], json!(think_text));

        let rows = bridge.rows().await;
        let routed: Vec<(&str, &str, &str)> = rows
            .iter()
            .map(|r| {
                (
                    r["model"].as_str().unwrap(),
                    r["backend"].as_str().unwrap_or(""),
                    r["backend_model"].as_str().unwrap_or(""),
                )
            })
            .collect();
        assert_eq!(
            routed,
            [
                ("assist", "small", "tiny-chat"),
                ("reason", "thinker", "tiny-think"),
                ("tiny-chat", "small", "tiny-chat"),
                ("lab/tiny-think", "thinker", "tiny-think"),
                ("tiny-think", "", ""),
                ("tiny-think", "thinker", "tiny-think"),
            ]
        );
        drop((chat, think));
    }

    #[tokio::test]
    async fn requests_fail_over_when_a_backend_is_killed_mid_run() {
        let chat = LlamaServer::start("tiny-chat").await;
        let think = LlamaServer::start("tiny-think").await;
        let mut bridge = Bridge::start(json!({
            "backends": {
                "main": {"type": "openai", "endpoint": chat.url, "breaker": {"failures": 2, "cooldown": 60}},
                "spare": {"type": "openai", "endpoint": think.url},
            },
            "models": {"mappings": {
                "m": {"model": "tiny-chat", "fallbacks": [{"backend": "spare", "model": "tiny-think"}]},
            }},
        }))
        .await;
        let chat_text = script("tiny-chat")["text"].as_str().unwrap().to_owned();
        let think_text = script("tiny-think")["answer"].as_str().unwrap().to_owned();
        for _ in 0..3 {
            assert_eq!(ask(&bridge, "m").await, (200, chat_text.clone()));
        }
        drop(chat);
        // Every request still succeeds: the first two find "main" dead and move on, which
        // opens its breaker, so the rest go straight to "spare".
        for _ in 0..4 {
            assert_eq!(ask(&bridge, "m").await, (200, think_text.clone()));
        }
        // Streaming too: the failover happens before the first byte reaches the client.
        let (status, _, body) = post(
            &format!("{}/api/chat", bridge.url),
            json!({"model": "m", "messages": [{"role": "user", "content": "Hi"}], "think": false}),
        )
        .await;
        assert_eq!(status, 200);
        let lines = ndjson(&body);
        let text: String = lines.iter().filter_map(|l| l["message"]["content"].as_str()).collect();
        assert_eq!(text, think_text);

        let (_, backends) = get_json(&format!("{}/api/backends", bridge.admin_url)).await;
        let main = &backends["backends"][0]["health"];
        assert_eq!(
            (&main["breaker"], &main["failures_in_a_row"], &main["requests_failed"]),
            (&json!("open"), &json!(2), &json!(2))
        );
        let metrics = get_text(&format!("{}/metrics", bridge.admin_url)).await;
        assert!(
            metrics.contains("ollabridge_backend_breaker_open{backend=\"main\"} 1\n"),
            "{metrics}"
        );
        assert!(
            metrics.contains("ollabridge_backend_up{backend=\"spare\"} 1\n"),
            "{metrics}"
        );

        let rows = bridge.rows().await;
        let served: Vec<(&str, usize)> = rows
            .iter()
            .map(|r| {
                let attempts: Vec<Value> = r["attempts"]
                    .as_str()
                    .map(|a| serde_json::from_str(a).unwrap())
                    .unwrap_or_default();
                (r["backend"].as_str().unwrap(), attempts.len())
            })
            .collect();
        assert_eq!(
            served,
            [
                ("main", 0),
                ("main", 0),
                ("main", 0),
                ("spare", 1),
                ("spare", 1),
                ("spare", 0),
                ("spare", 0),
                ("spare", 0),
            ]
        );
        let attempt: Value = serde_json::from_str(rows[3]["attempts"].as_str().unwrap()).unwrap();
        assert_eq!(
            (&attempt[0]["backend"], &attempt[0]["model"]),
            (&json!("main"), &json!("tiny-chat"))
        );
        let error = attempt[0]["error"].as_str().unwrap();
        assert!(error.starts_with("backend at http://127.0.0.1:"), "{error}");
        assert!(rows.iter().all(|r| r["status_code"] == 200 && r["error"].is_null()));
        drop(think);
    }
}

/// From `tests/cache.rs`: cache hits counted at the real llama-server.
mod cache {
    use crate::common::{Bridge, LlamaServer, get_text, ndjson, post, script};
    use serde_json::{Value, json};

    /// llama-server's count of generated tokens: it moves only when the model runs.
    async fn tokens_predicted(llama: &LlamaServer) -> u64 {
        let text = get_text(&format!("{}/metrics", llama.url)).await;
        text.lines()
            .find_map(|l| l.strip_prefix("llamacpp:tokens_predicted_total "))
            .and_then(|n| n.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no tokens_predicted_total in {text}")) as u64
    }

    fn chat(model: &str, content: &str, stream: bool, options: Value) -> Value {
        json!({"model": model, "messages": [{"role": "user", "content": content}], "stream": stream, "options": options})
    }

    /// The answer text of a streamed or single answer.
    fn text_of(body: &str, stream: bool) -> String {
        if stream {
            ndjson(body)
                .iter()
                .filter_map(|l| l["message"]["content"].as_str())
                .collect()
        } else {
            let v: Value = serde_json::from_str(body).unwrap();
            v["message"]["content"].as_str().unwrap().to_owned()
        }
    }

    #[tokio::test]
    async fn identical_requests_reach_the_real_backend_once() {
        let llama = LlamaServer::start("tiny-chat").await;
        let mut bridge = Bridge::start(json!({
            "backend": {"type": "openai", "endpoint": llama.url},
            "cache": {"models": ["tiny-*"]},
        }))
        .await;
        let expected = script("tiny-chat")["text"].as_str().unwrap().to_owned();
        let url = format!("{}/api/chat", bridge.url);
        let before = tokens_predicted(&llama).await;
        let (status, _, first) = post(&url, chat("tiny-chat", "Hi", false, json!({"temperature": 0}))).await;
        assert_eq!((status, text_of(&first, false)), (200, expected.clone()));
        let per_answer = tokens_predicted(&llama).await - before;
        assert!(per_answer > 0);
        // Streamed and not, key order and stream/keep_alive changed: all hits.
        for stream in [false, true, false] {
            let mut request = chat("tiny-chat", "Hi", stream, json!({"temperature": 0}));
            request["keep_alive"] = "10m".into();
            let (status, content_type, body) = post(&url, request).await;
            assert_eq!(status, 200);
            assert_eq!(
                content_type,
                if stream {
                    "application/x-ndjson"
                } else {
                    "application/json; charset=utf-8"
                }
            );
            assert_eq!(text_of(&body, stream), expected);
            if !stream {
                let v: Value = serde_json::from_str(&body).unwrap();
                let original: Value = serde_json::from_str(&first).unwrap();
                assert_eq!(
                    (&v["done"], &v["done_reason"], &v["eval_count"], &v["prompt_eval_count"]),
                    (
                        &original["done"],
                        &original["done_reason"],
                        &original["eval_count"],
                        &original["prompt_eval_count"]
                    )
                );
            }
        }
        assert_eq!(
            tokens_predicted(&llama).await - before,
            per_answer,
            "the backend ran once"
        );
        // Another option is another request.
        let (status, _, _) = post(
            &url,
            chat("tiny-chat", "Hi", false, json!({"temperature": 0, "top_k": 5})),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(tokens_predicted(&llama).await - before, 2 * per_answer);

        let metrics = get_text(&format!("{}/metrics", bridge.admin_url)).await;
        assert!(
            metrics.contains("ollabridge_cache_lookups_total{model=\"tiny-chat\",result=\"hit\"} 3\n"),
            "{metrics}"
        );
        assert!(
            metrics.contains("ollabridge_cache_lookups_total{model=\"tiny-chat\",result=\"miss\"} 2\n"),
            "{metrics}"
        );
        let rows = bridge.rows().await;
        let hits: Vec<i64> = rows.iter().map(|r| r["cache_hit"].as_i64().unwrap()).collect();
        assert_eq!(hits, [0, 1, 1, 1, 0]);
        assert_eq!(rows[1]["response"], json!(expected));
        assert_eq!(rows[1]["completion_tokens"], rows[0]["completion_tokens"]);
    }
}

/// From `tests/retention.rs`: redaction of a real answer.
mod retention {
    use crate::common::{Bridge, LlamaServer, query_rows};
    use serde_json::json;

    #[tokio::test]
    async fn redaction_keeps_metadata_only() {
        let llama = LlamaServer::start("tiny-chat").await;
        let mut bridge = Bridge::start(json!({
            "backend": {"type": "openai", "endpoint": llama.url},
            "database": {"redact": true},
        }))
        .await;
        let r = reqwest::Client::new()
            .post(format!("{}/api/chat", bridge.url))
            .json(
                &json!({"model": "tiny-chat", "stream": false, "messages": [{"role": "user", "content": "my secret"}]}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let db = bridge.db.clone();
        bridge.stop().await;
        let rows = query_rows(
            &db,
            "SELECT prompt, response, thinking, tool_calls, model, status_code, completion_tokens FROM logs",
        );
        assert_eq!(
            rows,
            [
                json!({"prompt": null, "response": null, "thinking": null, "tool_calls": null, "model": "tiny-chat", "status_code": 200, "completion_tokens": 8})
            ]
        );
    }
}

/// From `tests/admin_api.rs`: a row's metrics against what llama.cpp reported.
mod admin_api {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use crate::common::{self, Bridge, LlamaServer, get_json, ndjson, script};
    use axum::body::{Body, Bytes};
    use axum::extract::State;
    use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
    use axum::response::{IntoResponse, Response};
    use futures::StreamExt;
    use serde_json::{Value, json};

    /// Polls `/api/logs` until it lists `n` rows (the writer commits every 50 ms).
    async fn wait_rows(bridge: &Bridge, n: usize) -> Vec<Value> {
        for _ in 0..200 {
            let (status, body) = get_json(&format!("{}/api/logs?limit=500", bridge.admin_url)).await;
            assert_eq!(status, 200, "{body}");
            let logs = body["logs"].as_array().unwrap().clone();
            if logs.len() >= n {
                assert_eq!(logs.len(), n, "{body}");
                return logs;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("{n} log rows never appeared");
    }

    /// A pass-through in front of llama-server that keeps a copy of every response body,
    /// so the test sees exactly what llama.cpp reported for the request ollabridge made.
    struct Recorder {
        url: String,
        bodies: Recorded,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for Recorder {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    type Recorded = Arc<Mutex<Vec<(String, Arc<Mutex<Vec<u8>>>)>>>;

    async fn recording_proxy(target: String) -> Recorder {
        async fn forward(
            State((target, bodies)): State<(String, Recorded)>,
            method: Method,
            uri: Uri,
            headers: HeaderMap,
            body: Bytes,
        ) -> Response {
            let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
            let mut request = reqwest::Client::new()
                .request(method, format!("{target}{path}"))
                .body(body);
            if let Some(ct) = headers.get(header::CONTENT_TYPE) {
                request = request.header(header::CONTENT_TYPE, ct);
            }
            let upstream = match request.send().await {
                Ok(r) => r,
                Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
            };
            let status = upstream.status();
            let content_type = upstream.headers().get(header::CONTENT_TYPE).cloned();
            let copy = Arc::new(Mutex::new(Vec::new()));
            bodies.lock().unwrap().push((uri.path().to_owned(), copy.clone()));
            let stream = upstream.bytes_stream().map(move |chunk| {
                if let Ok(bytes) = &chunk {
                    copy.lock().unwrap().extend_from_slice(bytes);
                }
                chunk.map_err(std::io::Error::other)
            });
            let mut response = Response::new(Body::from_stream(stream));
            *response.status_mut() = status;
            if let Some(ct) = content_type {
                response.headers_mut().insert(header::CONTENT_TYPE, ct);
            }
            response
        }
        let bodies: Recorded = Arc::default();
        let app = axum::Router::new()
            .fallback(forward)
            .with_state((target, bodies.clone()));
        let (url, task) = common::serve(app).await;
        Recorder { url, bodies, task }
    }

    impl Recorder {
        /// The `usage` and `timings` llama.cpp sent for the `n`-th chat completion
        /// (streamed: the last event carrying them; or the one JSON body).
        fn reported(&self, n: usize) -> (Value, Value) {
            let bodies = self.bodies.lock().unwrap();
            let chats: Vec<&Arc<Mutex<Vec<u8>>>> = bodies
                .iter()
                .filter(|(path, _)| path == "/v1/chat/completions")
                .map(|(_, body)| body)
                .collect();
            let text = String::from_utf8(chats[n].lock().unwrap().clone()).unwrap();
            let objects: Vec<Value> = if text.trim_start().starts_with('{') {
                vec![serde_json::from_str(&text).unwrap()]
            } else {
                text.lines()
                    .filter_map(|l| l.strip_prefix("data: "))
                    .filter(|d| *d != "[DONE]")
                    .map(|d| serde_json::from_str(d).unwrap())
                    .collect()
            };
            let last = objects
                .iter()
                .rev()
                .find(|o| o.get("timings").is_some())
                .expect("timings");
            (last["usage"].clone(), last["timings"].clone())
        }
    }

    #[tokio::test]
    async fn row_metrics_match_what_llama_cpp_reported() {
        let llama = LlamaServer::start("tiny-chat").await;
        let proxy = recording_proxy(llama.url.clone()).await;
        let mut bridge = Bridge::start(json!({
            "backend": {"type": "openai", "endpoint": proxy.url, "timeout": 30},
            "models": {"mappings": {"tiny": "tiny-chat"}},
            "pricing": {"tiny": {"input": 2.0, "output": 6.0}},
        }))
        .await;
        let messages = json!([{"role": "user", "content": "Hi there"}]);
        // What llama.cpp itself counts for the same conversation.
        let direct: Value = reqwest::Client::new()
            .post(format!("{}/v1/chat/completions", llama.url))
            .json(&json!({"model": "tiny-chat", "messages": messages}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();

        let mut request_ids = Vec::new();
        for stream in [true, false] {
            let r = reqwest::Client::new()
                .post(format!("{}/api/chat", bridge.url))
                .json(&json!({"model": "tiny", "messages": messages, "stream": stream}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            request_ids.push(r.headers()["x-request-id"].to_str().unwrap().to_owned());
            let body = r.text().await.unwrap();
            let text: String = if stream {
                ndjson(&body)
                    .iter()
                    .map(|l| l["message"]["content"].as_str().unwrap().to_owned())
                    .collect()
            } else {
                serde_json::from_str::<Value>(&body).unwrap()["message"]["content"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            };
            assert_eq!(text, script("tiny-chat")["text"].as_str().unwrap());
        }

        // Through the log API while the bridge runs.
        wait_rows(&bridge, 2).await;
        let mut api_rows = Vec::new();
        for (n, request_id) in request_ids.iter().enumerate() {
            let (status, row) = get_json(&format!("{}/api/logs/{}", bridge.admin_url, n + 1)).await;
            assert_eq!(status, 200);
            assert_eq!(&row["request_id"], request_id, "{row}");
            assert_eq!(row["stream"], n == 0);
            assert_eq!(row["tokens_estimated"], false);
            assert_eq!(row["prompt"], messages);
            api_rows.push(row);
        }
        let (_, stats) = get_json(&format!("{}/api/stats?window=1h", bridge.admin_url)).await;

        // The stored rows, read without a JSON round trip so floats compare exactly.
        let rows = bridge.rows().await;
        assert_eq!(rows.len(), 2);
        let mut cost_sum = 0.0;
        let (mut prompt_sum, mut completion_sum) = (0, 0);
        for (n, (row, api_row)) in rows.iter().zip(&api_rows).enumerate() {
            let (usage, timings) = proxy.reported(n);
            let context = format!("row {row}\nusage {usage}\ntimings {timings}");
            for column in ["id", "request_id", "prompt_tokens", "completion_tokens", "latency_ms"] {
                assert_eq!(row[column], api_row[column], "{column}: {context}");
            }
            for column in ["ttft_ms", "eval_ms", "prompt_eval_ms", "tokens_per_second", "cost"] {
                let (stored, served) = (row[column].as_f64().unwrap(), api_row[column].as_f64().unwrap());
                assert!((stored - served).abs() <= stored * 1e-15, "{column}: {context}");
            }
            assert_eq!(row["prompt_tokens"], usage["prompt_tokens"], "{context}");
            assert_eq!(row["completion_tokens"], usage["completion_tokens"], "{context}");
            assert_eq!(row["prompt_tokens"], direct["usage"]["prompt_tokens"], "{context}");
            assert_eq!(
                row["completion_tokens"], direct["usage"]["completion_tokens"],
                "{context}"
            );
            // Durations: llama.cpp's milliseconds, carried as whole nanoseconds.
            let ns = |ms: &Value| (ms.as_f64().unwrap() * 1e6).round() as u64;
            let eval_ns = ns(&timings["predicted_ms"]);
            assert_eq!(row["eval_ms"].as_f64().unwrap(), eval_ns as f64 / 1e6, "{context}");
            assert_eq!(
                row["prompt_eval_ms"].as_f64().unwrap(),
                ns(&timings["prompt_ms"]) as f64 / 1e6,
                "{context}"
            );
            let completion = row["completion_tokens"].as_u64().unwrap();
            assert_eq!(
                row["tokens_per_second"].as_f64().unwrap(),
                completion as f64 / (eval_ns as f64 / 1e9),
                "{context}"
            );
            // The first token reached ollabridge after llama.cpp read the prompt, and
            // before the request ended.
            let ttft = row["ttft_ms"].as_f64().unwrap();
            let latency = row["latency_ms"].as_f64().unwrap();
            assert!(ttft >= timings["prompt_ms"].as_f64().unwrap(), "{context}");
            assert!(ttft <= latency + 1.0, "{context}");
            // Priced per million tokens: 2 in, 6 out.
            let prompt = row["prompt_tokens"].as_u64().unwrap();
            let cost = (prompt as f64 * 2.0 + completion as f64 * 6.0) / 1e6;
            assert_eq!(row["cost"].as_f64().unwrap(), cost, "{context}");
            cost_sum += cost;
            prompt_sum += prompt;
            completion_sum += completion;
        }
        let tiny = &stats["models"][0];
        assert_eq!(tiny["model"], "tiny");
        assert_eq!(tiny["count"], 2);
        assert_eq!(tiny["prompt_tokens"], prompt_sum);
        assert_eq!(tiny["completion_tokens"], completion_sum);
        assert!((tiny["cost"].as_f64().unwrap() - cost_sum).abs() <= cost_sum * 1e-15);
    }
}
