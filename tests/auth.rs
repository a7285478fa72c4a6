//! Client API keys on the Ollama port: missing, wrong, right, hashed, trusted network;
//! the key itself never reaches the log, the database or the admin output.

mod common;

use common::{Bridge, LlamaServer, query_rows};
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

#[test]
fn bad_auth_config_is_refused_with_the_key_named() {
    let base = |auth: Value| {
        json!({"backend": {"type": "openai", "endpoint": "http://127.0.0.1:1"}, "auth": auth}).to_string()
    };
    let cases = [
        (
            json!({"keys": [{"id": "a", "key": "short"}]}),
            "auth.keys[0].key: too short (use at least 8 characters)",
        ),
        (
            json!({"keys": [{"id": "a", "key": "sha256:abc"}]}),
            "auth.keys[0].key: 'sha256:' must be followed by 64 hex digits",
        ),
        (
            json!({"keys": [{"id": "a", "key": "long-enough-1"}, {"id": "a", "key": "long-enough-2"}]}),
            "auth.keys[1].id: 'a' is used twice",
        ),
        (
            json!({"allow_unauthenticated_from": ["10.0.0.0/33"]}),
            "auth.allow_unauthenticated_from[0]: '10.0.0.0/33' is not an address or CIDR network",
        ),
    ];
    for (auth, problem) in cases {
        let err = ollabridge::config::Config::from_json(&base(auth)).unwrap_err();
        assert_eq!(err.to_string(), format!("invalid config <inline>: {problem}"));
    }
    let config = ollabridge::config::Config::from_json(&base(json!({"keys": [{"id": "a", "key": KEY}]}))).unwrap();
    let shown = format!("{config:?}");
    assert!(shown.contains("\"a\"") && !shown.contains(KEY));
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
