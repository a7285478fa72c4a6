//! Client API keys in the config: a bad key or network is refused with the key named,
//! and the key is masked in the config's debug output. The keys at work on the Ollama
//! port (missing, wrong, right, hashed, trusted network; never in the log, the database
//! or the admin output) and the admin token are in `tests/llama_features.rs` (`auth`).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

use serde_json::{Value, json};

const KEY: &str = "s3cret-key-for-ha";

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
