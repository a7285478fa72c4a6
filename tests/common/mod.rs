//! Shared test helpers: the real llama-server bench (built or reused by
//! `scripts/build-llama-server.sh`, models from `scripts/tiny-models.sh`), an in-process
//! ollabridge, and small HTTP helpers.
#![allow(dead_code, reason = "each test binary uses a different part of this module")]

pub mod holding;
pub mod postgres;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs a bench script and returns the path it prints on stdout.
fn script_output(script: &str, args: &[&str]) -> PathBuf {
    let out = Command::new("bash")
        .arg(repo_root().join("scripts").join(script))
        .args(args)
        .current_dir(repo_root())
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run scripts/{script}: {e}"));
    assert!(out.status.success(), "scripts/{script} failed ({})", out.status);
    PathBuf::from(String::from_utf8(out.stdout).expect("utf-8 path").trim())
}

/// The llama-server binary: `$OLLABRIDGE_LLAMA_SERVER`, or built/reused from the cache.
pub fn llama_server_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| match std::env::var_os("OLLABRIDGE_LLAMA_SERVER") {
        Some(p) => PathBuf::from(p),
        None => script_output("build-llama-server.sh", &[]),
    })
}

/// The scripted tiny models (and the bench venv, which the same script prepares).
pub fn tiny_models_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| match std::env::var_os("OLLABRIDGE_TINY_MODELS") {
        Some(p) => PathBuf::from(p),
        None => {
            let out = repo_root().join("target").join("tiny-models");
            script_output("tiny-models.sh", &[out.to_str().expect("utf-8 path")])
        }
    })
}

/// The bench venv's python (with `ollama` installed), prepared by `tiny-models.sh`.
pub fn bench_python() -> PathBuf {
    tiny_models_dir();
    let cache = std::env::var_os("OLLABRIDGE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/ollabridge"));
    cache.join("venv/bin/python")
}

/// The expected outputs of the scripted models (`script.json`).
pub fn script(model: &str) -> Value {
    let path = tiny_models_dir().join("script.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let all: Value = serde_json::from_str(&text).expect("script.json");
    all[model].clone()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A llama-server serving one scripted model on a free loopback port; killed on drop.
pub struct LlamaServer {
    child: Child,
    pub url: String,
    pub model: String,
}

impl LlamaServer {
    pub async fn start(model: &str) -> LlamaServer {
        LlamaServer::start_sized(model, 16384, 4).await
    }

    /// A server whose `slots` share a context of `context` tokens (`-c`, `-np`).
    pub async fn start_sized(model: &str, context: u32, slots: u32) -> LlamaServer {
        let (context, slots) = (context.to_string(), slots.to_string());
        let gguf = tiny_models_dir().join(format!("{model}.gguf"));
        let args = [
            "-m",
            gguf.to_str().expect("utf-8"),
            "--alias",
            model,
            "--jinja",
            "-c",
            &context,
            "-np",
            &slots,
            "--embeddings",
            "--pooling",
            "mean",
            "--no-webui",
            "-t",
            "1",
            "--metrics",
        ];
        LlamaServer::launch(&args, model).await
    }

    /// A llama-server in router mode over `models_dir`, loading and unloading its models
    /// on request (`model` is empty: it has none of its own).
    pub async fn router(models_dir: &Path) -> LlamaServer {
        let args = [
            "--models-dir",
            models_dir.to_str().expect("utf-8"),
            "--embeddings",
            "--pooling",
            "mean",
            "--no-webui",
            "-t",
            "1",
        ];
        LlamaServer::launch(&args, "").await
    }

    async fn launch(args: &[&str], model: &str) -> LlamaServer {
        for attempt in 0..3 {
            let port = free_port();
            let child = Command::new(llama_server_bin())
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn llama-server");
            let mut server = LlamaServer {
                child,
                url: format!("http://127.0.0.1:{port}"),
                model: model.into(),
            };
            if server.wait_healthy().await {
                return server;
            }
            eprintln!("llama-server did not become healthy on port {port} (attempt {attempt})");
        }
        panic!("llama-server would not start");
    }

    /// Pauses the server (`SIGSTOP`) until [`LlamaServer::resume`]: connections made
    /// meanwhile wait in its listen backlog, so a burst reaches it all at once, as it does
    /// a busy server.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} llama-server");
    }

    async fn wait_healthy(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        let http = reqwest::Client::new();
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if let Ok(r) = http.get(format!("{}/health", self.url)).send().await {
                if r.status().is_success() {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An in-process ollabridge with its own database in a temp dir.
pub struct Bridge {
    pub server: Option<ollabridge::Server>,
    pub url: String,
    /// The admin listener (metrics, log API).
    pub admin_url: String,
    pub db: PathBuf,
    _dir: tempfile::TempDir,
}

impl Bridge {
    /// `config` is the JSON config minus `server` and `database`, which are filled in.
    pub async fn start(config: Value) -> Bridge {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("ollabridge.db");
        Bridge::start_with_db(config, dir, db).await
    }

    pub async fn openai(backend_url: &str, mappings: Value) -> Bridge {
        Bridge::start(serde_json::json!({
            "backend": {"type": "openai", "endpoint": backend_url, "timeout": 30},
            "models": {"mappings": mappings},
        }))
        .await
    }

    /// Graceful shutdown; afterwards every log row is on disk.
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }

    /// Stops the bridge and returns the log rows as JSON objects, oldest first.
    pub async fn rows(&mut self) -> Vec<Value> {
        self.stop().await;
        query_rows(&self.db, "SELECT * FROM logs ORDER BY id")
    }
}

/// Reads rows with the sqlite3-free path: sqlx through a fresh connection.
pub fn query_rows(db: &Path, sql: &str) -> Vec<Value> {
    let db = db.to_owned();
    let sql = sql.to_owned();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            use sqlx::{Column, Row};
            let url = format!("sqlite://{}", db.display());
            let pool = sqlx::SqlitePool::connect(&url).await.expect("open db");
            let rows = sqlx::query(&sql).fetch_all(&pool).await.expect("query");
            rows.iter()
                .map(|row| {
                    let mut obj = serde_json::Map::new();
                    for (i, col) in row.columns().iter().enumerate() {
                        let v = if let Ok(Some(n)) = row.try_get::<Option<i64>, _>(i) {
                            Value::from(n)
                        } else if let Ok(Some(f)) = row.try_get::<Option<f64>, _>(i) {
                            Value::from(f)
                        } else if let Ok(Some(s)) = row.try_get::<Option<String>, _>(i) {
                            Value::from(s)
                        } else {
                            Value::Null
                        };
                        obj.insert(col.name().to_owned(), v);
                    }
                    Value::Object(obj)
                })
                .collect()
        })
    })
    .join()
    .expect("query thread")
}

/// Reads an NDJSON body into its objects, asserting there are no blank lines.
pub fn ndjson(body: &str) -> Vec<Value> {
    assert!(body.ends_with('\n'), "NDJSON body must end with a newline: {body:?}");
    body.lines()
        .map(|line| {
            assert!(!line.trim().is_empty(), "blank line in NDJSON body: {body:?}");
            serde_json::from_str(line).unwrap_or_else(|e| panic!("bad NDJSON line {line:?}: {e}"))
        })
        .collect()
}

pub async fn post(url: &str, body: Value) -> (u16, String, String) {
    let r = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap_or("").to_owned())
        .unwrap_or_default();
    (status, ct, r.text().await.expect("body"))
}

impl Bridge {
    /// Like [`Bridge::start`], on an existing database file `db` inside `dir` (which
    /// the bridge keeps until it is dropped), e.g. one made with an older schema.
    pub async fn start_with_db(mut config: Value, dir: tempfile::TempDir, db: PathBuf) -> Bridge {
        if config.get("server").is_none() {
            config["server"] = serde_json::json!({});
        }
        config["server"]["host"] = "127.0.0.1".into();
        config["server"]["port"] = 0.into();
        if config.get("database").is_none() {
            config["database"] = serde_json::json!({});
        }
        config["database"]["path"] = serde_json::json!(db);
        if config.get("admin").is_none() {
            config["admin"] = serde_json::json!({"host": "127.0.0.1", "port": 0});
        }
        let config = ollabridge::config::Config::from_json(&config.to_string()).expect("valid config");
        let server = ollabridge::start(config).await.expect("start ollabridge");
        let url = format!("http://{}", server.addr);
        let admin_url = server.admin_addr.map(|a| format!("http://{a}")).unwrap_or_default();
        Bridge {
            server: Some(server),
            url,
            admin_url,
            db,
            _dir: dir,
        }
    }
}

/// Serves `app` (a mock backend) on a free loopback port; returns its base URL and the
/// server task (dropping the handle leaves it running until the test's runtime ends).
pub async fn serve(app: axum::Router) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind mock");
    let url = format!("http://{}", listener.local_addr().expect("mock address"));
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.expect("mock server");
    });
    (url, task)
}

/// GETs `url` and returns its body as text (e.g. a Prometheus exposition).
pub async fn get_text(url: &str) -> String {
    reqwest::get(url).await.expect("request").text().await.expect("body")
}

/// GETs `url` and returns the status and the JSON body.
pub async fn get_json(url: &str) -> (u16, Value) {
    let r = reqwest::get(url).await.expect("request");
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: not JSON ({e}): {text}"));
    (status, body)
}
