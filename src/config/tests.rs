//! Unit tests of config loading: values, defaults, and the exact messages a user sees
//! when a config is wrong.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use serde_json::{Value, json};

use super::*;

/// `Config::load` reads `OLLABRIDGE__*` variables, which are process-global: every test
/// that loads a file holds this lock, and the one test that sets variables holds it too.
static ENV_LOCK: Mutex<()> = Mutex::new(());

fn env_lock() -> MutexGuard<'static, ()> {
    ENV_LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

const BACKEND: &str = r#""backend": {"type": "openai", "endpoint": "http://localhost:8080"}"#;

/// A config with a valid backend plus `extra` top-level entries.
fn with_backend(extra: &str) -> String {
    if extra.is_empty() {
        format!("{{{BACKEND}}}")
    } else {
        format!("{{{BACKEND}, {extra}}}")
    }
}

/// A config whose backend section has `extra` entries.
fn backend_with(extra: &str) -> String {
    format!(r#"{{"backend": {{"type": "openai", "endpoint": "http://localhost:8080", {extra}}}}}"#)
}

fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn inline_error(text: &str) -> String {
    match Config::from_json(text) {
        Ok(config) => panic!("accepted {text}: {config:?}"),
        Err(e) => e.to_string(),
    }
}

/// A config file in its own temporary directory.
struct TempConfig {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn temp_config(text: &str) -> TempConfig {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(&path, text).unwrap();
    TempConfig { _dir: dir, path }
}

/// Loads `text` from a file; returns the file's path and the error.
fn load_error(text: &str) -> (String, String) {
    let file = temp_config(text);
    let _env = env_lock();
    match Config::load(&file.path) {
        Ok(config) => panic!("accepted {text}: {config:?}"),
        Err(e) => (file.path.display().to_string(), e.to_string()),
    }
}

fn load_ok(text: &str) -> Config {
    let file = temp_config(text);
    let _env = env_lock();
    Config::load(&file.path).unwrap_or_else(|e| panic!("{e}"))
}

/// Everything a config holds, as one comparable value.
fn summary(config: &Config) -> Value {
    json!({
        "server": {
            "host": config.server.host,
            "port": config.server.port,
            "enable_cors": config.server.enable_cors,
            "log_messages": config.server.log_messages,
            "log_raw_requests": config.server.log_raw_requests,
            "log_raw_responses": config.server.log_raw_responses,
            "version": config.server.version,
        },
        "backend": {
            "type": config.backend().kind.as_str(),
            "endpoint": config.backend().endpoint.as_str(),
            "timeout_ms": config.backend().timeout.as_millis() as u64,
            "api_key": config.backend().api_key.as_ref().map(|k| k.expose().to_owned()),
        },
        "database": {
            "path": config.database.path.to_str(),
            "max_body_bytes": config.database.max_body_bytes,
            "queue_capacity": config.database.queue_capacity,
        },
        "models": {
            "default": config.models.default,
            "mappings": config.models.mappings.iter().map(mapping_json).collect::<Vec<_>>(),
        },
    })
}

fn defaults_with(endpoint: &str) -> Value {
    json!({
        "server": {
            "host": "0.0.0.0",
            "port": 11434,
            "enable_cors": false,
            "log_messages": false,
            "log_raw_requests": false,
            "log_raw_responses": false,
            "version": "0.12.0",
        },
        "backend": {"type": "openai", "endpoint": endpoint, "timeout_ms": 300_000, "api_key": null},
        "database": {"path": "./ollabridge.db", "max_body_bytes": 1_048_576, "queue_capacity": 4096},
        "models": {"default": null, "mappings": []},
    })
}

// ---------------------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------------------

/// A mapping as `[name, target]`, or `[name, target, {settings}]` when it has any.
fn mapping_json(m: &ModelMapping) -> Value {
    if m.context_length.is_none() && m.capabilities.is_none() && !m.strip_think {
        json!([m.name, m.target])
    } else {
        json!([m.name, m.target, {"context_length": m.context_length, "capabilities": m.capabilities, "strip_think": m.strip_think}])
    }
}

#[test]
fn example_config_has_the_documented_values() {
    let path = repo_file("config.example.json");
    let expected = json!({
        "server": {
            "host": "0.0.0.0",
            "port": 11434,
            "enable_cors": false,
            "log_messages": false,
            "log_raw_requests": false,
            "log_raw_responses": false,
            "version": "0.12.0",
        },
        "backend": {"type": "openai", "endpoint": "http://localhost:8080/", "timeout_ms": 300_000, "api_key": null},
        "database": {"path": "./ollabridge.db", "max_body_bytes": 1_048_576, "queue_capacity": 4096},
        "models": {
            "default": "tiny-chat",
            "mappings": [["tiny-chat", "tiny-chat"], ["llama2", "llama-2-7b-chat"]],
        },
    });
    let inline = Config::from_json(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(summary(&inline), expected);
    let loaded = {
        let _env = env_lock();
        Config::load(&path).unwrap()
    };
    assert_eq!(summary(&loaded), expected);
    assert_eq!(loaded.backend().kind, BackendKind::Openai);
    assert_eq!(loaded.backend().timeout, Duration::from_secs(300));
}

#[test]
fn defaults() {
    let text = std::fs::read_to_string(repo_file("fixtures/config/minimal.json")).unwrap();
    let config = Config::from_json(&text).unwrap();
    assert_eq!(summary(&config), defaults_with("http://localhost:8080/"));
    assert_eq!(config.server.host, "0.0.0.0");
    assert_eq!(config.server.port, 11434);
    assert_eq!(config.server.version, "0.12.0");
    assert_eq!(config.backend().timeout, Duration::from_secs(300));
    assert_eq!(config.database.path, PathBuf::from("./ollabridge.db"));
    assert!(config.backend().api_key.is_none());
    assert!(
        config.backend().stream_options,
        "usage is asked for unless switched off"
    );
    let off = Config::from_json(&backend_with(r#""stream_options": false"#)).unwrap();
    assert!(!off.backend().stream_options);
    // The same through a file.
    let loaded = {
        let _env = env_lock();
        Config::load(&repo_file("fixtures/config/minimal.json")).unwrap()
    };
    assert_eq!(summary(&loaded), defaults_with("http://localhost:8080/"));
    // Empty sections are all defaults too.
    let empty_sections = with_backend(r#""server": {}, "database": {}, "models": {}"#);
    assert_eq!(
        summary(&Config::from_json(&empty_sections).unwrap()),
        defaults_with("http://localhost:8080/")
    );
}

#[test]
fn every_key_is_read() {
    let path = repo_file("fixtures/config/full.json");
    let expected = json!({
        "server": {
            "host": "127.0.0.1",
            "port": 11500,
            "enable_cors": true,
            "log_messages": true,
            "log_raw_requests": true,
            "log_raw_responses": true,
            "version": "0.13.4",
        },
        "backend": {
            "type": "ollama",
            "endpoint": "https://gpu-box.example:11434/base",
            "timeout_ms": 2500,
            "api_key": "sk-test-SECRET-123",
        },
        "database": {"path": "/var/lib/ollabridge/log.db", "max_body_bytes": 65536, "queue_capacity": 16},
        "models": {
            "default": "llama3.1:8b",
            // File order, names kept exactly (dots, colons, capitals).
            "mappings": [
                ["llama3.1:8b", "Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf"],
                ["Big-Model", "big"],
                ["zeta", "z"],
                ["alpha", "a"],
            ],
        },
    });
    let inline = Config::from_json(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(summary(&inline), expected);
    assert_eq!(inline.backend().kind, BackendKind::Ollama);
    let loaded = {
        let _env = env_lock();
        Config::load(&path).unwrap()
    };
    assert_eq!(summary(&loaded), expected);
}

#[test]
fn empty_api_key_and_empty_default_model_are_unset() {
    let text = r#"{"backend": {"type": "openai", "endpoint": "http://h:1", "api_key": ""}, "models": {"default": ""}}"#;
    let config = Config::from_json(text).unwrap();
    assert!(config.backend().api_key.is_none());
    assert_eq!(config.models.default, None);
    let config = Config::from_json(&backend_with(r#""api_key": null"#)).unwrap();
    assert!(config.backend().api_key.is_none());
}

#[test]
fn accepted_values_at_the_edges() {
    for port in [0u16, 1, 65535] {
        let config = Config::from_json(&with_backend(&format!(r#""server": {{"port": {port}}}"#))).unwrap();
        assert_eq!(config.server.port, port);
    }
    for version in ["0", "1.2", "0.12.0", "10.200.3000.4"] {
        let config = Config::from_json(&with_backend(&format!(r#""server": {{"version": "{version}"}}"#))).unwrap();
        assert_eq!(config.server.version, version);
    }
    for (timeout, millis) in [("0.5", 500), ("1", 1000), ("86400", 86_400_000)] {
        let config = Config::from_json(&backend_with(&format!(r#""timeout": {timeout}"#))).unwrap();
        assert_eq!(config.backend().timeout.as_millis(), millis, "{timeout}");
    }
    for (endpoint, parsed) in [
        ("https://openrouter.ai/api", "https://openrouter.ai/api"),
        ("http://[::1]:8080", "http://[::1]:8080/"),
        ("http://127.0.0.1:8080/v1/", "http://127.0.0.1:8080/v1/"),
        ("HTTP://Example.COM", "http://example.com/"),
    ] {
        let text = format!(r#"{{"backend": {{"type": "ollama", "endpoint": "{endpoint}"}}}}"#);
        assert_eq!(Config::from_json(&text).unwrap().backend().endpoint.as_str(), parsed);
    }
    let config = Config::from_json(&with_backend(
        r#""database": {"queue_capacity": 1, "max_body_bytes": 0}"#,
    ))
    .unwrap();
    assert_eq!(config.database.queue_capacity, 1);
    assert_eq!(config.database.max_body_bytes, 0);
}

/// Absent, `max_concurrent` follows a llama-server's slot count, and the queue then waits
/// as long as the backend may stay silent; an explicit `0` is no limit.
#[test]
fn max_concurrent_absent_is_automatic_and_zero_is_no_limit() {
    let limits = |extra: &str| {
        let text = if extra.is_empty() {
            with_backend("")
        } else {
            backend_with(extra)
        };
        let config = Config::from_json(&text).unwrap();
        (
            config.backend().max_concurrent,
            config.backend().queue_timeout.as_secs_f64(),
        )
    };
    assert_eq!(limits(""), (MaxConcurrent::Auto, 300.0));
    assert_eq!(limits(r#""timeout": 60"#), (MaxConcurrent::Auto, 60.0));
    assert_eq!(limits(r#""queue_timeout": 5"#), (MaxConcurrent::Auto, 5.0));
    assert_eq!(limits(r#""max_concurrent": null"#), (MaxConcurrent::Auto, 300.0));
    assert_eq!(limits(r#""max_concurrent": 0"#), (MaxConcurrent::Unlimited, 30.0));
    assert_eq!(limits(r#""max_concurrent": 4"#), (MaxConcurrent::Limit(4), 30.0));
    assert_eq!(
        limits(r#""max_concurrent": 4, "queue_timeout": 0.5"#),
        (MaxConcurrent::Limit(4), 0.5)
    );
    assert_eq!(
        inline_error(&backend_with(r#""max_concurrent": -1"#)),
        "invalid config <inline>: backend.max_concurrent: invalid value: integer `-1`, expected usize at line 1 column 88"
    );
    assert_eq!(
        inline_error(&backend_with(r#""queue_timeout": -1"#)),
        "invalid config <inline>: backend.queue_timeout: -1 must be zero or more seconds"
    );
}

#[test]
fn api_key_is_masked_in_debug_output() {
    let text = backend_with(r#""api_key": "sk-very-secret-key-42""#);
    let config = Config::from_json(&text).unwrap();
    assert_eq!(
        config.backend().api_key.as_ref().map(Secret::expose),
        Some("sk-very-secret-key-42")
    );
    for debug in [
        format!("{config:?}"),
        format!("{config:#?}"),
        format!("{:?}", config.backend()),
        format!("{:?}", config.backend().api_key),
    ] {
        assert!(!debug.contains("sk-very-secret-key-42"), "{debug}");
        assert!(!debug.contains("secret"), "{debug}");
        assert!(debug.contains("***"), "{debug}");
    }
    assert_eq!(format!("{:?}", config.backend().api_key), r#"Some("***")"#);
    // Loaded from a file, the same.
    let loaded = load_ok(&text);
    assert!(!format!("{loaded:?}").contains("sk-very-secret-key-42"));
}

/// `database.url` switches the log to PostgreSQL; the password never shows.
#[test]
fn database_url_selects_postgres_and_is_masked() {
    let config = Config::from_json(&with_backend(
        r#""database": {"url": "postgres://logger:pg-pass-99@db.internal:5433/logs?sslmode=require"}"#,
    ))
    .unwrap();
    let url = config.database.url.as_ref().unwrap();
    assert_eq!(
        url.expose(),
        "postgres://logger:pg-pass-99@db.internal:5433/logs?sslmode=require"
    );
    assert_eq!(
        url.to_string(),
        "postgres://logger:***@db.internal:5433/logs?sslmode=require"
    );
    for debug in [
        format!("{config:?}"),
        format!("{config:#?}"),
        format!("{:?}", config.database),
    ] {
        assert!(!debug.contains("pg-pass-99"), "{debug}");
        assert!(debug.contains("postgres://logger:***@db.internal:5433/logs"), "{debug}");
    }
    // A password given as a parameter is masked too.
    let config = Config::from_json(&with_backend(
        r#""database": {"url": "postgresql://db.internal/logs?user=logger&password=pg-pass-99"}"#,
    ))
    .unwrap();
    assert!(!format!("{config:?}").contains("pg-pass-99"));
    // Without it, SQLite at the default path, as before.
    let config = Config::from_json(&with_backend("")).unwrap();
    assert_eq!(
        (config.database.url.as_ref(), config.database.path.as_path()),
        (None, Path::new("./ollabridge.db"))
    );
    let (file, message) = load_error(&with_backend(r#""database": {"url": "mysql://u:hunter2@h/db"}"#));
    assert_eq!(
        message,
        format!(
            "invalid config {file}: database.url: expected a PostgreSQL URL like \
             postgres://user:password@host/database, got 'mysql://u:***@h/db'"
        )
    );
}

// ---------------------------------------------------------------------------------------
// Errors, inline (`Config::from_json`)
// ---------------------------------------------------------------------------------------

#[test]
fn inline_errors_name_the_key_and_the_problem() {
    let cases: Vec<(String, &str)> = vec![
        // Syntax: line and column.
        (
            format!("{{{BACKEND},}}"),
            "invalid config <inline>: invalid JSON: trailing comma at line 1 column 69",
        ),
        (
            "{\n  \"backend\": {\"type\": \"openai\",\n \"endpoint\": \"http://x\" \n \"x\": 1}}".into(),
            "invalid config <inline>: invalid JSON: expected `,` or `}` at line 4 column 2",
        ),
        (
            String::new(),
            "invalid config <inline>: invalid JSON: EOF while parsing a value at line 1 column 0",
        ),
        // Structure.
        (
            "{}".into(),
            "invalid config <inline>: backend: missing (set 'backend' for one backend, or 'backends' for several by name)",
        ),
        (
            r#"{"backend": {"endpoint": "http://localhost:8080"}}"#.into(),
            "invalid config <inline>: backend: missing field `type` at line 1 column 49",
        ),
        (
            with_backend(r#""serverx": {}"#),
            "invalid config <inline>: serverx: unknown field `serverx`, expected one of `server`, `backend`, `backends`, `database`, \
             `models`, `admin`, `pricing`, `auth`, `cache` at line 1 column 78",
        ),
        (
            with_backend(r#""server": {"prot": 1}"#),
            "invalid config <inline>: server.prot: unknown field `prot`, expected one of `host`, `port`, `enable_cors`, \
             `log_messages`, `log_raw_requests`, `log_raw_responses`, `version`, `max_body_bytes`, `max_inflight_body_bytes`, `allowed_origins`, `shutdown_grace`, `watch_config`, `tls`, `header_read_timeout`, `max_connections` at line 1 column 86",
        ),
        (
            backend_with(r#""apikey": "x""#),
            "invalid config <inline>: backend.apikey: unknown field `apikey`, expected one of `type`, `endpoint`, `timeout`, \
             `api_key`, `thinking`, `max_concurrent`, `queue_timeout`, `headers`, `max_tokens_field`, `stream_options`, `serves`, `router`, `discover`, `health_interval`, `breaker` at line 1 column 76",
        ),
        (
            with_backend(r#""database": {"file": "x.db"}"#),
            "invalid config <inline>: database.file: unknown field `file`, expected one of `path`, `url`, `max_body_bytes`, \
             `queue_capacity`, `redact`, `store_bodies`, `retention` at line 1 column 88",
        ),
        (
            with_backend(r#""models": {"map": {}}"#),
            "invalid config <inline>: models.map: unknown field `map`, expected `default` or `mappings` at line 1 column 85",
        ),
        (
            with_backend(r#""database": {"path": "x.db", "url": "postgres://h/db"}"#),
            "invalid config <inline>: database.path, database.url: use one of them, not both (path for SQLite, url for \
             PostgreSQL)",
        ),
        (
            with_backend(r#""database": {"url": "postgres://h:notaport/db"}"#),
            "invalid config <inline>: database.url: not a valid PostgreSQL URL: error with configuration: invalid \
             port number",
        ),
        // Values.
        (
            r#"{"backend": {"type": "openai", "endpoint": "not a url"}}"#.into(),
            "invalid config <inline>: backend.endpoint: 'not a url' is not a URL (relative URL without a base)",
        ),
        (
            r#"{"backend": {"type": "openai", "endpoint": "localhost:8080"}}"#.into(),
            "invalid config <inline>: backend.endpoint: 'localhost:8080' must be an http:// or https:// URL with \
             a host",
        ),
        (
            r#"{"backend": {"type": "openai", "endpoint": "ftp://host/x"}}"#.into(),
            "invalid config <inline>: backend.endpoint: 'ftp://host/x' must be an http:// or https:// URL with a \
             host",
        ),
        (
            r#"{"backend": {"type": "openai", "endpoint": "unix:/run/llama.sock"}}"#.into(),
            "invalid config <inline>: backend.endpoint: 'unix:/run/llama.sock' must be an http:// or https:// \
             URL with a host",
        ),
        (
            r#"{"backend": {"type": "openai", "endpoint": "http://"}}"#.into(),
            "invalid config <inline>: backend.endpoint: 'http://' is not a URL (empty host)",
        ),
        (
            with_backend(r#""server": {"port": 70000}"#),
            "invalid config <inline>: server.port: 70000 is out of range 0-65535",
        ),
        (
            with_backend(r#""server": {"port": -1}"#),
            "invalid config <inline>: server.port: -1 is out of range 0-65535",
        ),
        (
            with_backend(r#""server": {"version": "1.2.x"}"#),
            "invalid config <inline>: server.version: '1.2.x' must be dotted integers like 0.12.0 (clients parse \
             it)",
        ),
        (
            with_backend(r#""server": {"version": ""}"#),
            "invalid config <inline>: server.version: '' must be dotted integers like 0.12.0 (clients parse it)",
        ),
        (
            with_backend(r#""server": {"version": "1..2"}"#),
            "invalid config <inline>: server.version: '1..2' must be dotted integers like 0.12.0 (clients parse \
             it)",
        ),
        (
            with_backend(r#""server": {"version": "v0.12.0"}"#),
            "invalid config <inline>: server.version: 'v0.12.0' must be dotted integers like 0.12.0 (clients \
             parse it)",
        ),
        (
            backend_with(r#""timeout": 0"#),
            "invalid config <inline>: backend.timeout: 0 must be a positive number of seconds",
        ),
        (
            backend_with(r#""timeout": -5"#),
            "invalid config <inline>: backend.timeout: -5 must be a positive number of seconds",
        ),
        (
            with_backend(r#""database": {"queue_capacity": 0}"#),
            "invalid config <inline>: database.queue_capacity: must be at least 1",
        ),
        (
            with_backend(r#""models": {"mappings": {"x": 1}}"#),
            "invalid config <inline>: models.mappings.x: expected the backend model name, or an object with \"model\", got 1",
        ),
        (
            with_backend(r#""models": {"mappings": {"ok": "fine", "x": ""}}"#),
            "invalid config <inline>: models.mappings.x: expected the backend model name, or an object with \"model\", got \"\"",
        ),
        (
            with_backend(r#""models": {"mappings": {"llama3.1:8b": {"name": "y"}}}"#),
            "invalid config <inline>: models.mappings.llama3.1:8b: unknown field `name`, expected one of `model`, \
             `backend`, `fallbacks`, `context_length`, `capabilities`, `strip_think`",
        ),
        (
            with_backend(r#""models": {"mappings": {"x": {"model": "y", "capabilities": ["tools", "telepathy"]}}}"#),
            "invalid config <inline>: models.mappings.x.capabilities: 'telepathy' is not one of completion, tools, \
             insert, vision, embedding, thinking",
        ),
        (
            with_backend(r#""models": {"mappings": {"x": {"model": ""}}}"#),
            "invalid config <inline>: models.mappings.x.model: must not be empty",
        ),
        (
            with_backend(r#""models": {"mappings": {"x": null}}"#),
            "invalid config <inline>: models.mappings.x: expected the backend model name, or an object with \"model\", got null",
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(inline_error(&text), expected, "for {text}");
    }
}

#[test]
fn inline_unknown_backend_type() {
    let message = inline_error(r#"{"backend": {"type": "foo", "endpoint": "http://localhost:8080"}}"#);
    assert_eq!(
        message,
        "invalid config <inline>: backend.type: 'foo' is not a backend type (use openai or ollama)"
    );
}

#[test]

fn inline_type_errors_name_the_key() {
    let cases = [
        (
            r#"{"backend": {"type": "foo", "endpoint": "http://localhost:8080"}}"#.to_string(),
            "backend.type",
        ),
        (with_backend(r#""server": {"port": "abc"}"#), "server.port"),
        (
            with_backend(r#""server": {"enable_cors": "yes"}"#),
            "server.enable_cors",
        ),
        (backend_with(r#""timeout": "5s""#), "backend.timeout"),
        (
            with_backend(r#""database": {"max_body_bytes": -1}"#),
            "database.max_body_bytes",
        ),
        (with_backend(r#""models": {"mappings": ["a"]}"#), "models.mappings"),
    ];
    for (text, key) in cases {
        let message = inline_error(&text);
        assert!(message.contains(key), "{key} not named in: {message}");
    }
}

#[test]

fn huge_timeout_is_an_error_not_a_panic() {
    let result = std::panic::catch_unwind(|| Config::from_json(&backend_with(r#""timeout": 1e20"#)).map(|_| ()));
    let message = match result {
        Ok(Ok(())) => panic!("accepted a timeout of 1e20 s"),
        Ok(Err(e)) => e.to_string(),
        Err(_) => panic!("Config::from_json panicked on timeout 1e20"),
    };
    assert!(
        message.starts_with("invalid config <inline>: backend.timeout: "),
        "{message}"
    );
}

// ---------------------------------------------------------------------------------------
// Errors, from a file (`Config::load`)
// ---------------------------------------------------------------------------------------

#[test]
fn load_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope").join("config.json");
    let _env = env_lock();
    let message = Config::load(&path).unwrap_err().to_string();
    assert_eq!(message, format!("invalid config {}: file not found", path.display()));
}

#[test]
fn load_validation_errors_name_the_file_and_the_key() {
    let cases: Vec<(String, &str)> = vec![
        (
            r#"{"backend": {"type": "openai", "endpoint": "not a url"}}"#.into(),
            "backend.endpoint: 'not a url' is not a URL (relative URL without a base)",
        ),
        (
            r#"{"backend": {"type": "openai", "endpoint": "ftp://host/x"}}"#.into(),
            "backend.endpoint: 'ftp://host/x' must be an http:// or https:// URL with a host",
        ),
        (
            with_backend(r#""server": {"port": 70000}"#),
            "server.port: 70000 is out of range 0-65535",
        ),
        (
            with_backend(r#""server": {"port": -1}"#),
            "server.port: -1 is out of range 0-65535",
        ),
        (
            with_backend(r#""server": {"version": "1.2.x"}"#),
            "server.version: '1.2.x' must be dotted integers like 0.12.0 (clients parse it)",
        ),
        (
            backend_with(r#""timeout": 0"#),
            "backend.timeout: 0 must be a positive number of seconds",
        ),
        (
            with_backend(r#""database": {"queue_capacity": 0}"#),
            "database.queue_capacity: must be at least 1",
        ),
        (
            with_backend(r#""models": {"mappings": {"x": 1}}"#),
            "models.mappings.x: expected the backend model name, or an object with \"model\", got 1",
        ),
        // Structure: the config crate names the section or the whole key.
        (
            "{}".into(),
            "backend: missing (set 'backend' for one backend, or 'backends' for several by name)",
        ),
        (
            r#"{"backend": {"endpoint": "http://localhost:8080"}}"#.into(),
            "missing configuration field \"backend.type\"",
        ),
        (
            with_backend(r#""serverx": {}"#),
            "unknown field `serverx`, expected one of `server`, `backend`, `backends`, `database`, `models`, `admin`, `pricing`, `auth`, `cache`",
        ),
        (
            with_backend(r#""server": {"prot": 1}"#),
            "unknown field `prot`, expected one of `host`, `port`, `enable_cors`, `log_messages`, \
             `log_raw_requests`, `log_raw_responses`, `version`, `max_body_bytes`, `max_inflight_body_bytes`, `allowed_origins`, `shutdown_grace`, `watch_config`, `tls`, `header_read_timeout`, `max_connections` for key `server`",
        ),
        (
            backend_with(r#""apikey": "x""#),
            "unknown field `apikey`, expected one of `type`, `endpoint`, `timeout`, `api_key`, `thinking`, `max_concurrent`, `queue_timeout`, `headers`, `max_tokens_field`, `stream_options`, `serves`, `router`, `discover`, `health_interval`, `breaker` for key `backend`",
        ),
    ];
    for (text, problem) in cases {
        let (file, message) = load_error(&text);
        assert_eq!(message, format!("invalid config {file}: {problem}"), "for {text}");
    }
}

#[test]
fn load_syntax_and_type_errors() {
    // The first part is what matters and is pinned; the config crate then repeats the
    // file as a path relative to the working directory (reported as a poor message).
    let cases: Vec<(String, &str)> = vec![
        (
            format!("{{{BACKEND},}}"),
            "invalid JSON: trailing comma at line 1 column 69",
        ),
        (
            "{\n  \"backend\": {\"type\": \"openai\",\n \"endpoint\": \"http://x\" \n \"x\": 1}}".into(),
            "invalid JSON: expected `,` or `}` at line 4 column 2",
        ),
        (
            String::new(),
            "invalid JSON: EOF while parsing a value at line 1 column 0",
        ),
        (
            with_backend(r#""server": {"port": "abc"}"#),
            "invalid type: string \"abc\", expected an integer for key `server.port`",
        ),
        (
            backend_with(r#""timeout": "x""#),
            "invalid type: string \"x\", expected a floating point for key `backend.timeout`",
        ),
    ];
    for (text, problem) in cases {
        let (file, message) = load_error(&text);
        let expected = format!("invalid config {file}: {problem}");
        assert!(
            message.starts_with(&expected),
            "for {text}:\n{message}\ndoes not start with\n{expected}"
        );
    }
    // An unknown backend type names the key, the value and the accepted values.
    let (file, message) = load_error(r#"{"backend": {"type": "foo", "endpoint": "http://localhost:8080"}}"#);
    assert_eq!(
        message,
        format!("invalid config {file}: backend.type: 'foo' is not a backend type (use openai or ollama)")
    );
}

#[test]

fn load_errors_name_the_file_once() {
    let (file, message) = load_error(&format!("{{{BACKEND},}}"));
    assert_eq!(
        message,
        format!("invalid config {file}: invalid JSON: trailing comma at line 1 column 69")
    );
}

#[test]

fn load_unknown_backend_type_lists_the_accepted_values() {
    let (_, message) = load_error(r#"{"backend": {"type": "foo", "endpoint": "http://localhost:8080"}}"#);
    assert!(!message.contains("BackendKind"), "{message}");
    assert!(message.contains("openai") && message.contains("ollama"), "{message}");
}

// ---------------------------------------------------------------------------------------
// Environment overrides (the only test that sets variables)
// ---------------------------------------------------------------------------------------

/// Removes the variables it names when dropped, even if the test fails.
struct EnvVars(Vec<&'static str>);

impl EnvVars {
    fn set(&mut self, key: &'static str, value: &str) {
        // SAFETY: every test that reads these variables (Config::load) holds ENV_LOCK.
        unsafe { std::env::set_var(key, value) };
        if !self.0.contains(&key) {
            self.0.push(key);
        }
    }

    fn remove(&mut self, key: &'static str) {
        // SAFETY: as in `set`.
        unsafe { std::env::remove_var(key) };
    }
}

impl Drop for EnvVars {
    fn drop(&mut self) {
        for key in &self.0 {
            // SAFETY: as in `set`.
            unsafe { std::env::remove_var(key) };
        }
    }
}

#[test]
fn environment_overrides_the_file() {
    let _env = env_lock();
    let mut vars = EnvVars(Vec::new());
    let file = temp_config(&with_backend(r#""server": {"port": 11434, "host": "127.0.0.1"}"#));
    let text = std::fs::read_to_string(&file.path).unwrap();

    vars.set("OLLABRIDGE__SERVER__PORT", "11500");
    // Single-underscore variables (main's OLLABRIDGE_CONFIG and OLLABRIDGE_LOG) are no overrides.
    vars.set("OLLABRIDGE_LOG", "debug");
    vars.set("OLLABRIDGE_CONFIG", "/elsewhere/config.json");
    let config = Config::load(&file.path).unwrap();
    assert_eq!(config.server.port, 11500);
    assert_eq!(config.server.host, "127.0.0.1");
    // from_json ignores the environment.
    assert_eq!(Config::from_json(&text).unwrap().server.port, 11434);

    // Keys of every type, and sections the file does not have.
    vars.set("OLLABRIDGE__SERVER__ENABLE_CORS", "true");
    vars.set("OLLABRIDGE__BACKEND__TYPE", "ollama");
    vars.set("OLLABRIDGE__BACKEND__ENDPOINT", "http://other-host:11434");
    vars.set("OLLABRIDGE__BACKEND__TIMEOUT", "12.5");
    vars.set("OLLABRIDGE__BACKEND__API_KEY", "sk-env-key");
    vars.set("OLLABRIDGE__DATABASE__PATH", "/data/log.db");
    vars.set("OLLABRIDGE__MODELS__DEFAULT", "tiny");
    let config = Config::load(&file.path).unwrap();
    assert_eq!(config.server.port, 11500);
    assert!(config.server.enable_cors);
    assert_eq!(config.backend().kind, BackendKind::Ollama);
    assert_eq!(config.backend().endpoint.as_str(), "http://other-host:11434/");
    assert_eq!(config.backend().timeout.as_millis(), 12_500);
    assert_eq!(
        config.backend().api_key.as_ref().map(Secret::expose),
        Some("sk-env-key")
    );
    assert_eq!(config.database.path, PathBuf::from("/data/log.db"));
    assert_eq!(config.models.default.as_deref(), Some("tiny"));

    // An overridden value is validated like one from the file.
    vars.set("OLLABRIDGE__SERVER__PORT", "99999");
    let message = Config::load(&file.path).unwrap_err().to_string();
    assert_eq!(
        message,
        format!(
            "invalid config {}: server.port: 99999 is out of range 0-65535",
            file.path.display()
        )
    );
    vars.set("OLLABRIDGE__SERVER__PORT", "11500");

    // An unknown key in the environment is named.
    vars.set("OLLABRIDGE__SERVER__NOPE", "1");
    let message = Config::load(&file.path).unwrap_err().to_string();
    assert_eq!(
        message,
        format!(
            "invalid config {}: unknown field `nope`, expected one of `host`, `port`, `enable_cors`, \
             `log_messages`, `log_raw_requests`, `log_raw_responses`, `version`, `max_body_bytes`, `max_inflight_body_bytes`, `allowed_origins`, `shutdown_grace`, `watch_config`, `tls`, `header_read_timeout`, `max_connections` for key `server`",
            file.path.display()
        )
    );
    vars.remove("OLLABRIDGE__SERVER__NOPE");
    assert_eq!(Config::load(&file.path).unwrap().server.port, 11500);

    drop(vars);
    assert_eq!(Config::load(&file.path).unwrap().server.port, 11434);
}

#[test]
fn environment_strings_are_kept_verbatim() {
    let _env = env_lock();
    let mut vars = EnvVars(Vec::new());
    let file = temp_config(&with_backend(""));
    vars.set("OLLABRIDGE__BACKEND__API_KEY", "0123456789");
    vars.set("OLLABRIDGE__SERVER__VERSION", "1.10");
    let config = Config::load(&file.path).unwrap();
    assert_eq!(
        config.backend().api_key.as_ref().map(Secret::expose),
        Some("0123456789")
    );
    assert_eq!(config.server.version, "1.10");
}

/// The object form carries what the backend cannot tell: context, capabilities, and
/// whether the text inlines `<think>` tags.
#[test]
fn mapping_object_form() {
    let config = Config::from_json(&with_backend(
        r#""models": {"mappings": {"plain": "a", "rich": {"model": "b", "context_length": 8192,
            "capabilities": ["completion", "vision"], "strip_think": true}}}"#,
    ))
    .unwrap();
    assert_eq!(
        config.models.mappings,
        vec![
            ModelMapping::new("plain", "a"),
            ModelMapping {
                name: "rich".into(),
                target: "b".into(),
                targets: vec![Target {
                    backend: 0,
                    model: "b".into()
                }],
                context_length: Some(8192),
                capabilities: Some(vec!["completion".into(), "vision".into()]),
                strip_think: true,
            },
        ]
    );
}

#[test]
fn edge_settings_default_and_validate() {
    let config = Config::from_json(&with_backend("")).unwrap();
    assert_eq!(config.server.max_inflight_body_bytes, 256 << 20);
    assert!(config.server.allowed_origins.allows(b"http://localhost:3000"));
    assert!(!config.server.allowed_origins.allows(b"https://app.example.com"));
    assert!(!config.admin.allowed_hosts.allows("dash.example.net"));

    // A larger max_body_bytes raises the unset budget with it: one body always fits.
    let config = Config::from_json(&with_backend(r#""server": {"max_body_bytes": 536870912}"#)).unwrap();
    assert_eq!(config.server.max_inflight_body_bytes, 512 << 20);

    let config = Config::from_json(&with_backend(
        r#""server": {"max_body_bytes": 1000, "max_inflight_body_bytes": 1000,
            "allowed_origins": ["https://*.example.com", "chrome-extension://*", "http://10.0.0.5:8080"]},
           "admin": {"allowed_hosts": ["dash.example.net", "ollabridge"]}"#,
    ))
    .unwrap();
    assert_eq!(config.server.max_inflight_body_bytes, 1000);
    for origin in [
        "https://app.example.com",
        "chrome-extension://abc",
        "http://10.0.0.5:8080",
        "http://localhost",
    ] {
        assert!(config.server.allowed_origins.allows(origin.as_bytes()), "{origin}");
    }
    assert!(!config.server.allowed_origins.allows(b"http://10.0.0.5:8081"));
    assert!(config.admin.allowed_hosts.allows("Dash.Example.Net"));
    assert!(config.admin.allowed_hosts.allows("ollabridge"));
    assert!(!config.admin.allowed_hosts.allows("evil.example"));

    for (extra, message) in [
        (
            r#""server": {"max_body_bytes": 2000, "max_inflight_body_bytes": 1999}"#,
            "server.max_inflight_body_bytes: 1999 is less than server.max_body_bytes (2000); one request's body must fit",
        ),
        (
            r#""server": {"allowed_origins": ["example.com"]}"#,
            "server.allowed_origins[0]: 'example.com' is not an origin like https://app.example.com or * \
             (scheme://host[:port])",
        ),
        (
            r#""server": {"allowed_origins": ["*", "https://a.example/app"]}"#,
            "server.allowed_origins[1]: 'https://a.example/app' is not an origin like https://app.example.com \
             (scheme://host[:port], no path; one origin per entry)",
        ),
        (
            r#""server": {"allowed_origins": ["https://a.example,https://b.example"]}"#,
            "server.allowed_origins[0]: 'https://a.example,https://b.example' is not an origin like \
             https://app.example.com (scheme://host[:port], no path; one origin per entry)",
        ),
        (
            r#""server": {"allowed_origins": ["https://*.*.example"]}"#,
            "server.allowed_origins[0]: 'https://*.*.example' has more than one '*'",
        ),
        (
            r#""admin": {"allowed_hosts": ["http://dash.example.net"]}"#,
            "admin.allowed_hosts[0]: 'http://dash.example.net' is not a host name like dashboard.example.com \
             (no scheme, no port) or *",
        ),
        (
            r#""admin": {"allowed_hosts": ["ok.example", "dash.example.net:8080"]}"#,
            "admin.allowed_hosts[1]: 'dash.example.net:8080' is not a host name like dashboard.example.com \
             (no scheme, no port) or *",
        ),
    ] {
        assert_eq!(
            inline_error(&with_backend(extra)),
            format!("invalid config <inline>: {message}"),
            "{extra}"
        );
    }
}

/// `server.header_read_timeout` and `server.max_connections`: both ports' connection limits.
#[test]
fn connection_limits() {
    let defaults = Config::from_json(&with_backend("")).unwrap();
    assert_eq!(defaults.server.header_read_timeout, Duration::from_secs(30));
    assert_eq!(
        defaults.server.max_connections, None,
        "derived from the open-file limit at start"
    );

    let set = Config::from_json(&with_backend(
        r#""server": {"header_read_timeout": 2.5, "max_connections": 32}"#,
    ))
    .unwrap();
    assert_eq!(set.server.header_read_timeout, Duration::from_millis(2500));
    assert_eq!(set.server.max_connections, Some(32));
    let edges = Config::from_json(&with_backend(
        r#""server": {"header_read_timeout": 0.001, "max_connections": 1000000}"#,
    ))
    .unwrap();
    assert_eq!(edges.server.header_read_timeout, Duration::from_millis(1));
    assert_eq!(edges.server.max_connections, Some(1_000_000));
    let one = Config::from_json(&with_backend(r#""server": {"max_connections": 1}"#)).unwrap();
    assert_eq!(one.server.max_connections, Some(1));

    for (server, error) in [
        (
            r#"{"header_read_timeout": 0}"#,
            "server.header_read_timeout: 0 must be a positive number of seconds",
        ),
        (
            r#"{"header_read_timeout": -1}"#,
            "server.header_read_timeout: -1 must be a positive number of seconds",
        ),
        (
            r#"{"header_read_timeout": 1e20}"#,
            "server.header_read_timeout: 100000000000000000000 must be a positive number of seconds",
        ),
        (
            r#"{"max_connections": 0}"#,
            "server.max_connections: 0 is out of range 1-1000000 (leave it out for the default)",
        ),
        (
            r#"{"max_connections": 1000001}"#,
            "server.max_connections: 1000001 is out of range 1-1000000 (leave it out for the default)",
        ),
    ] {
        assert_eq!(
            inline_error(&with_backend(&format!(r#""server": {server}"#))),
            format!("invalid config <inline>: {error}"),
            "{server}"
        );
    }
    for server in [r#"{"max_connections": -1}"#, r#"{"max_connections": "many"}"#] {
        let message = inline_error(&with_backend(&format!(r#""server": {server}"#)));
        assert!(
            message.starts_with("invalid config <inline>: server.max_connections: invalid "),
            "{message}"
        );
    }

    // Through a file and the environment.
    let _env = env_lock();
    let mut vars = EnvVars(Vec::new());
    let file = temp_config(&with_backend(r#""server": {"max_connections": 32}"#));
    vars.set("OLLABRIDGE__SERVER__HEADER_READ_TIMEOUT", "5");
    let config = Config::load(&file.path).unwrap();
    assert_eq!(config.server.header_read_timeout, Duration::from_secs(5));
    assert_eq!(config.server.max_connections, Some(32));
    vars.set("OLLABRIDGE__SERVER__MAX_CONNECTIONS", "0");
    assert_eq!(
        Config::load(&file.path).unwrap_err().to_string(),
        format!(
            "invalid config {}: server.max_connections: 0 is out of range 1-1000000 (leave it out for the default)",
            file.path.display()
        )
    );
}

#[test]
fn serves_is_auto_unless_set_and_names_a_bad_value() {
    let config = Config::from_json(&backend_with(r#""timeout": 300"#)).unwrap();
    assert_eq!(config.backend().serves, ServedRoutes::default());
    assert_eq!(config.backend().serves.get(NativeRoute::Messages), Serves::Auto);
    let set = Config::from_json(&backend_with(r#""serves": {"messages": false, "responses": true}"#)).unwrap();
    assert_eq!(
        (set.backend().serves.messages, set.backend().serves.responses),
        (Serves::No, Serves::Yes)
    );
    let auto = Config::from_json(&backend_with(r#""serves": {"responses": "auto"}"#)).unwrap();
    assert_eq!(auto.backend().serves.get(NativeRoute::Responses), Serves::Auto);
    let message = inline_error(&backend_with(r#""serves": {"messages": "yes"}"#));
    assert!(
        message.contains(r#"backend.serves.messages: expected "auto", true or false, got "yes""#),
        "{message}"
    );
    let message = inline_error(&backend_with(r#""serves": {"chat": true}"#));
    assert!(message.contains("unknown field `chat`"), "{message}");
}

#[test]
fn router_is_detected_unless_set_and_only_for_openai_backends() {
    assert_eq!(
        Config::from_json(&backend_with(r#""timeout": 5"#))
            .unwrap()
            .backend()
            .router,
        None
    );
    let on = Config::from_json(&backend_with(r#""router": true"#)).unwrap();
    assert_eq!(on.backend().router, Some(true));
    let off = Config::from_json(&backend_with(r#""router": false"#)).unwrap();
    assert_eq!(off.backend().router, Some(false));
    assert_eq!(
        inline_error(r#"{"backend": {"type": "ollama", "endpoint": "http://localhost:11434", "router": true}}"#),
        "invalid config <inline>: backend.router: a real Ollama manages its own models; router applies to openai backends (llama-server)"
    );
}
