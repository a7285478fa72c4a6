//! `ollabridge check-config`: validates a file and shows the effective config with
//! every secret masked; a bad file exits 2 with the key and the problem named.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

use std::process::Command;

fn check_config(text: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ollabridge"))
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    let shown = |b: &[u8]| String::from_utf8_lossy(b).replace(&path.display().to_string(), "<file>");
    (out.status.code().unwrap(), shown(&out.stdout), shown(&out.stderr))
}

#[test]
fn a_valid_config_is_shown_with_secrets_masked() {
    let (code, stdout, stderr) = check_config(
        r#"{"backend": {"type": "openai", "endpoint": "http://user:pw-in-url@llm:8080", "api_key": "sk-secret-1"},
            "auth": {"keys": [{"id": "ha", "key": "client-secret-2"}]}}"#,
    );
    assert_eq!((code, stderr.as_str()), (0, ""));
    assert!(stdout.starts_with("<file> is valid; effective config:\n"), "{stdout}");
    assert!(stdout.contains(r#"endpoint: "http://user:***@llm:8080/""#), "{stdout}");
    assert!(stdout.contains(r#"ClientKey { id: "ha", sha256: "***" }"#), "{stdout}");
    for secret in ["pw-in-url", "sk-secret-1", "client-secret-2"] {
        assert!(!stdout.contains(secret), "{secret} shown:\n{stdout}");
    }
}

#[test]
fn an_invalid_config_exits_2_naming_the_key() {
    let (code, stdout, stderr) = check_config(r#"{"backend": {"type": "openai", "endpoint": "ftp://x"}}"#);
    assert_eq!(code, 2);
    assert_eq!(stdout, "");
    assert_eq!(
        stderr,
        "ollabridge: invalid config <file>: backend.endpoint: 'ftp://x' must be an http:// or https:// URL with a host\n"
    );
}
