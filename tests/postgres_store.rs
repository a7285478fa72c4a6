//! The PostgreSQL log store (`database.url`), against a throwaway cluster
//! (`common::postgres`): the same rows and the same admin API answers as SQLite for the
//! same requests, several replicas writing one database, the database restarted while
//! requests flow, rows abandoned in flight, retention, and the `logs` CLI.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

mod common;

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::holding::mock;
use common::postgres::{PASSWORD, PgCluster, pg_rows};
use common::{get_json, query_rows};
use ollabridge::config::Config;
use ollabridge::store::{LogRecord, Store, Writer};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------
// helpers

/// Where a test's log goes: a SQLite file, or a database in a PostgreSQL cluster.
enum Db {
    Sqlite(tempfile::TempDir),
    Postgres(String),
}

impl Db {
    fn sqlite() -> Db {
        Db::Sqlite(tempfile::tempdir().unwrap())
    }

    /// The `database` section pointing at this store (plus `extra` keys).
    fn section(&self, extra: Value) -> Value {
        let mut section = match self {
            Db::Sqlite(dir) => json!({"path": dir.path().join("ollabridge.db")}),
            Db::Postgres(url) => json!({"url": url}),
        };
        for (k, v) in extra.as_object().unwrap() {
            section[k] = v.clone();
        }
        section
    }

    fn name(&self) -> &'static str {
        match self {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }

    /// Rows as JSON (booleans as 0/1 on both).
    async fn rows(&self, sql: &str) -> Vec<Value> {
        match self {
            Db::Sqlite(dir) => query_rows(&dir.path().join("ollabridge.db"), sql),
            Db::Postgres(url) => pg_rows(url, sql).await,
        }
    }

    async fn count(&self) -> i64 {
        self.rows("SELECT COUNT(*) AS n FROM logs").await[0]["n"]
            .as_i64()
            .unwrap()
    }

    /// Opens (and migrates) the store as a server would.
    async fn store(&self) -> Store {
        let config = config(json!({"backend": {"type": "openai", "endpoint": "http://127.0.0.1:9"},
                                   "database": self.section(json!({}))}));
        let instance = ollabridge::store::Instance::new("127.0.0.1:1".parse().unwrap());
        Store::connect(&config.database, &instance).await.unwrap()
    }

    /// Writes rows through the real writer (the INSERT the server uses).
    async fn write(&self, rows: Vec<LogRecord>) {
        let (logger, writer) = Writer::spawn(self.store().await, 4096, 1 << 20);
        for row in rows {
            logger.log(row);
        }
        drop(logger);
        writer.close().await;
    }
}

fn config(json: Value) -> Config {
    Config::from_json(&json.to_string()).expect("valid config")
}

/// An in-process ollabridge on loopback with its admin listener.
struct Replica {
    server: Option<ollabridge::Server>,
    url: String,
    admin: String,
}

impl Replica {
    async fn start(backend: &str, database: Value) -> Replica {
        let server = ollabridge::start(config(json!({
            "server": {"host": "127.0.0.1", "port": 0},
            "admin": {"host": "127.0.0.1", "port": 0},
            "backend": {"type": "openai", "endpoint": backend, "timeout": 30},
            "models": {"mappings": {"m": "mock-model", "other": "other-model"}},
            "database": database,
        })))
        .await
        .expect("start ollabridge");
        Replica {
            url: format!("http://{}", server.addr),
            admin: format!("http://{}", server.admin_addr.unwrap()),
            server: Some(server),
        }
    }

    async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }

    async fn metric(&self, name: &str) -> f64 {
        let text = reqwest::get(format!("{}/metrics", self.admin))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
    }
}

/// One non-streamed chat; returns the status and the request id ollabridge sent back.
async fn chat(http: &reqwest::Client, replica: &str, content: &str) -> (u16, Option<String>) {
    let r = http
        .post(format!("{replica}/api/chat"))
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": content}], "stream": false}))
        .send()
        .await;
    match r {
        Ok(r) => {
            let status = r.status().as_u16();
            let id = r.headers().get("x-request-id").map(|v| v.to_str().unwrap().to_owned());
            let _ = r.bytes().await;
            (status, id)
        }
        Err(e) => panic!("request failed: {e}"),
    }
}

async fn send(method: reqwest::Method, url: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// Polls until `count()` reaches `n` (writers commit every 50 ms).
async fn wait_count(db: &Db, n: i64) {
    for _ in 0..600 {
        if db.count().await >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(db.count().await, n, "{} rows", db.name());
}

/// A successful `/api/chat` row at `timestamp` (stored format).
fn row(timestamp: &str, model: Option<&str>, latency_ms: u64) -> LogRecord {
    LogRecord {
        timestamp: timestamp.into(),
        endpoint: "/api/chat".into(),
        method: "POST".into(),
        model: model.map(str::to_owned),
        backend_model: model.map(|m| format!("{m}-backend")),
        status_code: 200,
        latency_ms,
        stream: true,
        backend_type: "openai".into(),
        request_id: format!("req {timestamp}"),
        ..Default::default()
    }
}

fn failed(mut r: LogRecord, status: u16, error: &str) -> LogRecord {
    r.status_code = status;
    r.error = Some(error.into());
    r
}

/// Rows with every kind of value: the stats rows of `admin_api.rs` (exact
/// percentiles), texts for search (wildcards, case, multi-byte), tool calls, JSON
/// prompts, bodies, replay links, every number column.
fn varied_rows() -> Vec<LogRecord> {
    let mut rows = Vec::new();
    let order = [7, 0, 19, 3, 12, 5, 18, 1, 9, 14, 2, 17, 6, 11, 4, 16, 8, 13, 10, 15];
    for i in order {
        let n = i as u64 + 1;
        let mut r = row(&format!("2026-03-01 11:{:02}:00.000", i * 2), Some("alpha"), n * 100);
        r.ttft_ms = Some(n as f64 * 10.0 + 0.5);
        r.tokens_per_second = Some(if i % 2 == 0 { 10.0 } else { 30.0 });
        r.prompt_tokens = Some(n);
        r.completion_tokens = Some(2 * n);
        r.cost = Some(0.125);
        rows.push(if i == 3 || i == 7 { failed(r, 502, "boom") } else { r });
    }
    for (minute, latency) in [(40, 5), (41, 500), (42, 50)] {
        let mut r = row(&format!("2026-03-01 11:{minute}:00.000"), Some("beta"), latency);
        r.prompt_tokens = Some(1);
        r.completion_tokens = Some(1);
        rows.push(if latency == 500 { failed(r, 500, "kaput") } else { r });
    }
    rows.push(failed(
        row("2026-03-01 11:50:00.000", None, 7),
        400,
        "model is required",
    ));
    rows.push(row("2026-03-01 10:59:59.999", Some("alpha"), 99_999));
    rows.push(row("2026-03-01 12:00:00.000", Some("alpha"), 99_999));
    let long = "é".repeat(300);
    let texts = [
        ("Prices: 50% off today", "ok"),
        ("what is 50 percent", "half"),
        ("file a_b.txt", "Hello World"),
        ("file axb.txt", "500 units"),
        (r"path C:\dir\x", "done"),
        (long.as_str(), long.as_str()),
        ("bye", "partial"),
    ];
    for (i, (prompt, response)) in texts.into_iter().enumerate() {
        let mut r = row(&format!("2026-03-02 10:0{i}:00.000"), Some("gamma"), 10 * i as u64);
        r.prompt = Some(prompt.to_owned());
        r.response = Some(response.to_owned());
        rows.push(if i == 1 {
            failed(r, 404, "model 'beta' not found")
        } else {
            r
        });
    }
    let mut tools = row("2026-03-02 11:00:00.000", Some("tiny"), 321);
    tools.prompt = Some(json!([{"role": "user", "content": "Weather in Paris?"}]).to_string());
    tools.response = Some(String::new());
    tools.thinking = Some("Use the tool.".into());
    tools.tool_calls = Some(json!([{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]).to_string());
    tools.done_reason = Some("stop".into());
    tools.prompt_eval_ms = Some(3.5);
    tools.eval_ms = Some(120.0);
    tools.request_bytes = 77;
    tools.response_bytes = 555;
    tools.client_addr = Some("127.0.0.1:5555".into());
    tools.client_key = Some("laptop".into());
    tools.request_body = Some(json!({"model": "tiny", "messages": []}).to_string());
    tools.backend_request = Some("{\"model\":\"tiny-backend\"}".into());
    tools.backend_response = Some("data: [DONE]\n\n".into());
    tools.backend = Some("local".into());
    tools.attempts = Some(json!([{"backend": "far", "model": "x", "error": "HTTP 503"}]).to_string());
    rows.push(tools);
    let mut generate = row("2026-03-02 11:01:00.000", Some("tiny"), 5);
    generate.endpoint = "/api/generate".into();
    generate.prompt = Some("[1, 2]".into());
    generate.tokens_estimated = true;
    generate.stream = false;
    generate.replay_of = Some(34);
    rows.push(generate);
    rows
}

/// Admin API answers that depend on the rows, for comparing two stores.
const API_QUERIES: &[&str] = &[
    "/api/logs?limit=500",
    "/api/logs?limit=3",
    "/api/logs?limit=3&cursor=30",
    "/api/logs?model=alpha",
    "/api/logs?model=gamma&limit=2&cursor=34",
    "/api/logs?status=404",
    "/api/logs?status=4xx",
    "/api/logs?status=5xx",
    "/api/logs?errors_only=true",
    "/api/logs?errors_only=true&model=alpha&limit=1",
    "/api/logs?since=2026-03-02%2010:02:00&until=2026-03-02T11:05:00%2B01:00",
    "/api/logs?until=2026-03-01T11:00:00.001Z",
    "/api/logs?q=50%25",
    "/api/logs?q=50",
    "/api/logs?q=a_b",
    "/api/logs?q=_",
    "/api/logs?q=hello%20WORLD",
    "/api/logs?q=C:%5Cdir",
    "/api/logs?q=%C3%A9%C3%A9",
    "/api/logs?q=partial&errors_only=true",
    "/api/logs?starred=true",
    "/api/logs/1",
    "/api/logs/33",
    "/api/logs/34",
    "/api/logs/35",
    "/api/logs/99",
    "/api/stats?window=1h&until=2026-03-01T12:00:00Z",
    "/api/stats?window=15m&until=2026-03-01T12:00:00Z",
    "/api/stats?window=7d&until=2026-03-03T00:00:00Z",
    "/api/stats/timeseries?window=1h&bucket=15m&until=2026-03-01T12:00:00Z",
    "/api/stats/timeseries?window=2d&bucket=1h&until=2026-03-03T00:00:00Z",
];

async fn api_answers(admin: &str) -> Vec<(String, u16, Value)> {
    let mut answers = Vec::new();
    for path in API_QUERIES {
        let (status, body) = get_json(&format!("{admin}{path}")).await;
        answers.push((path.to_string(), status, body));
    }
    answers
}

// ---------------------------------------------------------------------------
// the same as SQLite

/// The PostgreSQL migrations make exactly the columns the writer and the reads use
/// (`store::schema::COLUMNS`), in order; SQLite's twin is a unit test in `schema.rs`.
#[tokio::test]
async fn the_postgres_migrations_make_exactly_the_defined_columns() {
    let cluster = PgCluster::start().await;
    let db = Db::Postgres(cluster.url());
    db.store().await.close().await;
    let migrated: Vec<Value> = db
        .rows(
            "SELECT column_name::TEXT AS name FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = 'logs' ORDER BY ordinal_position",
        )
        .await
        .into_iter()
        .map(|row| row["name"].clone())
        .collect();
    let defined: Vec<Value> = ollabridge::store::schema::COLUMNS
        .iter()
        .map(|c| json!(c.name))
        .collect();
    assert_eq!(migrated, defined);
}

#[tokio::test]
async fn written_rows_and_api_answers_are_the_same_as_sqlite() {
    let cluster = PgCluster::start().await;
    let mock = mock().await;
    let mut results = Vec::new();
    for db in [Db::sqlite(), Db::Postgres(cluster.url())] {
        db.write(varied_rows()).await;
        let mut replica = Replica::start(&mock.url, db.section(json!({}))).await;
        // A star through the API, then the same reads.
        let (status, starred) = send(
            reqwest::Method::PUT,
            &format!("{}/api/logs/3/starred", replica.admin),
            Some(json!({"starred": true})),
        )
        .await;
        assert_eq!((status, starred), (200, json!({"id": 3, "starred": true})));
        let answers = api_answers(&replica.admin).await;
        replica.stop().await;
        let rows = db.rows("SELECT * FROM logs ORDER BY id").await;
        results.push((db.name(), answers, rows));
    }
    let (_, sqlite_answers, sqlite_rows) = &results[0];
    let (_, pg_answers, pg_rows) = &results[1];
    assert_eq!(sqlite_rows.len(), 35);
    assert_eq!(pg_rows, sqlite_rows, "rows differ");
    for ((path, s_status, s_body), (_, p_status, p_body)) in sqlite_answers.iter().zip(pg_answers) {
        assert_eq!((p_status, p_body), (s_status, s_body), "{path}");
    }
    // The answers are the real ones, not two equal failures.
    let answer = |path: &str| &sqlite_answers.iter().find(|(p, _, _)| p == path).unwrap().2;
    let stats = answer("/api/stats?window=1h&until=2026-03-01T12:00:00Z");
    assert_eq!(
        (&stats["overall"]["count"], &stats["overall"]["latency_ms"]),
        (&json!(24), &json!({"p50": 800, "p95": 1900, "p99": 2000}))
    );
    let ids = |path: &str| -> Vec<i64> {
        answer(path)["logs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["id"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(ids("/api/logs?q=hello%20WORLD"), [29]);
    assert_eq!(ids("/api/logs?q=_"), [29]);
    assert_eq!(ids("/api/logs?starred=true"), [3]);
    assert_eq!(ids("/api/logs?q=%C3%A9%C3%A9"), [32]);
    assert_eq!(answer("/api/logs/34")["replays"], json!([35]));
    assert_eq!(answer("/api/logs/99"), &json!({"error": "log 99 not found"}));
}

#[tokio::test]
async fn requests_log_the_same_rows_as_sqlite() {
    let cluster = PgCluster::start().await;
    let mock = mock().await;
    let mut results = Vec::new();
    for db in [Db::sqlite(), Db::Postgres(cluster.url())] {
        let mut replica = Replica::start(&mock.url, db.section(json!({"store_bodies": true}))).await;
        let http = reqwest::Client::new();
        // A held request gets an in-flight row after a second; a quick one meanwhile
        // gets its final row only.
        let url = format!("{}/api/chat", replica.url);
        let held = tokio::spawn({
            let http = http.clone();
            async move {
                let r = http
                    .post(url)
                    .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hold"}]}))
                    .send()
                    .await
                    .unwrap();
                (r.status().as_u16(), r.text().await.unwrap())
            }
        });
        assert_eq!(chat(&http, &replica.url, "quick").await.0, 200);
        let mut in_flight = Vec::new();
        for _ in 0..400 {
            in_flight = db
                .rows("SELECT id, model, status_code, latency_ms, response, instance FROM logs WHERE in_flight")
                .await;
            if !in_flight.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert_eq!(in_flight.len(), 1, "{}: no in-flight row", db.name());
        let row = &in_flight[0];
        assert_eq!(
            (&row["model"], &row["status_code"], &row["latency_ms"], &row["response"]),
            (&json!("m"), &Value::Null, &Value::Null, &Value::Null)
        );
        // The process that runs it: host/address/random.
        let instance = row["instance"].as_str().unwrap().to_owned();
        let address = replica.url.trim_start_matches("http://");
        assert!(instance.contains(&format!("/{address}/")), "{instance}");
        let in_flight_id = row["id"].as_i64().unwrap();
        // Listed as running, not counted in the stats; a star given now stays.
        let (_, page) = get_json(&format!("{}/api/logs", replica.admin)).await;
        assert_eq!(page["logs"][0]["in_flight"], true);
        let (_, stats) = get_json(&format!("{}/api/stats?window=1h", replica.admin)).await;
        assert_eq!(stats["overall"]["count"], 1);
        let star = format!("{}/api/logs/{in_flight_id}/starred", replica.admin);
        assert_eq!(
            send(reqwest::Method::PUT, &star, Some(json!({"starred": true})))
                .await
                .0,
            200
        );
        mock.release.notify_one();
        let (status, _) = held.await.unwrap();
        assert_eq!(status, 200);
        // Its final row (the replay's comes after it).
        for _ in 0..400 {
            if db.rows("SELECT id FROM logs WHERE NOT in_flight").await.len() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        // Replays of the quick request (stored body), linked to it.
        let (status, replay) = send(
            reqwest::Method::POST,
            &format!("{}/api/replay/1", replica.admin),
            Some(json!({"model": "other"})),
        )
        .await;
        assert_eq!(status, 200, "{replay}");
        assert_eq!(replay["replay"]["source"], "request_body");
        wait_count(&db, 3).await;
        let (_, original) = get_json(&format!("{}/api/logs/1", replica.admin)).await;
        let replay_id = original["replays"][0].as_i64().unwrap();
        let (_, linked) = get_json(&format!("{}/api/logs/{replay_id}", replica.admin)).await;
        assert_eq!((&linked["replay_of"], &linked["model"]), (&json!(1), &json!("other")));
        replica.stop().await;
        let rows = db.rows("SELECT * FROM logs ORDER BY id").await;
        results.push((db.name(), in_flight_id, rows));
    }
    // What differs from run to run: times, ids, addresses.
    let stable = |rows: &[Value]| -> Vec<Value> {
        rows.iter()
            .map(|r| {
                let mut r = r.clone();
                for volatile in [
                    "timestamp",
                    "latency_ms",
                    "ttft_ms",
                    "tokens_per_second",
                    "request_id",
                    "client_addr",
                    "response_bytes",
                    "eval_ms",
                    "prompt_eval_ms",
                ] {
                    r[volatile] = json!(r[volatile].is_null());
                }
                r
            })
            .collect()
    };
    let (_, sqlite_id, sqlite_rows) = &results[0];
    let (_, pg_id, pg_rows) = &results[1];
    assert_eq!(pg_id, sqlite_id);
    assert_eq!(stable(pg_rows), stable(sqlite_rows));
    // The held request's final row replaced its in-flight row, with its star, under a
    // new id; no row is left in flight or names a process.
    let summary: Vec<(i64, i64, i64, Value, Value)> = pg_rows
        .iter()
        .map(|r| {
            (
                r["id"].as_i64().unwrap(),
                r["in_flight"].as_i64().unwrap(),
                r["starred"].as_i64().unwrap(),
                r["replay_of"].clone(),
                r["instance"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (1, 0, 0, Value::Null, Value::Null),
            (pg_id + 1, 0, 1, Value::Null, Value::Null),
            (pg_id + 2, 0, 0, json!(1), Value::Null),
        ]
    );
}

// ---------------------------------------------------------------------------
// replicas

/// 3 replicas × 300 requests (10 clients each; `OLLABRIDGE_PG_BENCH_REQUESTS` changes the
/// 30 requests per client, for a longer run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_write_one_database_without_losses_or_duplicates() {
    let per_client: usize = std::env::var("OLLABRIDGE_PG_BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let total = 3 * 10 * per_client;
    let cluster = PgCluster::start().await;
    let db = Db::Postgres(cluster.url());
    let mock = mock().await;
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(Replica::start(&mock.url, db.section(json!({}))).await);
    }
    let started = Instant::now();
    let mut clients = Vec::new();
    for (r, replica) in replicas.iter().enumerate() {
        // 300 requests per replica from 10 clients at once.
        for c in 0..10 {
            let url = replica.url.clone();
            clients.push(tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut ids = Vec::new();
                for i in 0..per_client {
                    let (status, id) = chat(&http, &url, &format!("replica {r} client {c} request {i}")).await;
                    assert_eq!(status, 200);
                    ids.push(id.expect("X-Request-Id"));
                }
                ids
            }));
        }
    }
    let mut sent = HashSet::new();
    for client in clients {
        sent.extend(client.await.unwrap());
    }
    assert_eq!(sent.len(), total, "request ids are unique across replicas");
    wait_count(&db, total as i64).await;
    let elapsed = started.elapsed();
    eprintln!(
        "3 replicas: {total} requests logged in {elapsed:?} ({:.0} rows/s end to end, {})",
        total as f64 / elapsed.as_secs_f64(),
        if cfg!(debug_assertions) {
            "debug build"
        } else {
            "release build"
        }
    );
    // Stats aggregate across replicas: each one answers for all of them.
    for replica in &replicas {
        let (_, stats) = get_json(&format!("{}/api/stats?window=1h", replica.admin)).await;
        assert_eq!(
            (&stats["overall"]["count"], &stats["overall"]["errors"]),
            (&json!(total), &json!(0))
        );
        let (_, page) = get_json(&format!("{}/api/logs?limit=500", replica.admin)).await;
        assert_eq!(page["logs"].as_array().unwrap().len(), 500);
    }
    for replica in &mut replicas {
        replica.stop().await;
    }
    let rows = db
        .rows("SELECT request_id, prompt, status_code, in_flight FROM logs ORDER BY id")
        .await;
    assert_eq!(rows.len(), total);
    let stored: HashSet<String> = rows
        .iter()
        .map(|r| r["request_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(stored, sent, "every request's row, each once");
    let prompts: BTreeSet<&str> = rows.iter().map(|r| r["prompt"].as_str().unwrap()).collect();
    assert_eq!(prompts.len(), total);
    assert!(rows.iter().all(|r| r["status_code"] == 200 && r["in_flight"] == 0));
}

/// Lines logged by this test binary (`tracing`, every test's).
fn captured_logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<&'static Mutex<Vec<u8>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs: &'static Mutex<Vec<u8>> = Box::leak(Box::new(Mutex::new(Vec::new())));
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter("ollabridge=info")
            .with_ansi(false)
            .with_writer(move || Capture(logs))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one subscriber");
        logs
    })
}

struct Capture(&'static Mutex<Vec<u8>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        std::io::stderr().write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_mid_run_loses_no_rows() {
    let logs = captured_logs();
    let mut cluster = PgCluster::start().await;
    let db = Db::Postgres(cluster.url());
    let mock = mock().await;
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(Replica::start(&mock.url, db.section(json!({"queue_capacity": 16384}))).await);
    }
    // Clients keep sending until told to stop: 4 per replica.
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for (r, replica) in replicas.iter().enumerate() {
        for c in 0..4 {
            let (url, stop) = (replica.url.clone(), stop.clone());
            clients.push(tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut ids = Vec::new();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let (status, id) = chat(&http, &url, &format!("r{r} c{c} #{i}")).await;
                    assert_eq!(status, 200, "clients never wait for the log");
                    ids.push(id.unwrap());
                    i += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                ids
            }));
        }
    }
    // A long request: its in-flight row is written before the outage, it ends during it.
    let held = tokio::spawn({
        let url = format!("{}/api/chat", replicas[0].url);
        async move {
            let r = reqwest::Client::new()
                .post(url)
                .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hold"}]}))
                .send()
                .await
                .unwrap();
            let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
            assert_eq!(r.status(), 200);
            assert!(r.text().await.unwrap().contains("\"done\":true"));
            id
        }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before_outage = db.count().await;
    assert!(before_outage > 0);
    assert_eq!(
        db.rows("SELECT COUNT(*) AS n FROM logs WHERE in_flight").await[0]["n"],
        1
    );
    cluster.stop().await;
    // The outage shows: each replica's writer holds its records and says the store is down.
    for replica in &replicas {
        let mut polls = 0;
        while replica.metric("ollabridge_log_store_up").await != 0.0 {
            polls += 1;
            assert!(polls < 200, "store_up never went to 0");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
    mock.release.notify_one();
    let held_id = held.await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut held = 0.0;
    for replica in &replicas {
        held += replica.metric("ollabridge_log_queue_depth").await;
    }
    assert!(held > 0.0, "records wait in the queues during the outage");
    cluster.restart().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut sent = HashSet::from([held_id.clone()]);
    for client in clients {
        sent.extend(client.await.unwrap());
    }
    wait_count(&db, sent.len() as i64).await;
    // The held request's final row replaced its in-flight row once the database was back.
    let rows = db
        .rows(&format!(
            "SELECT in_flight, status_code FROM logs WHERE request_id = '{held_id}'"
        ))
        .await;
    assert_eq!(rows, [json!({"in_flight": 0, "status_code": 200})]);
    for replica in &replicas {
        assert_eq!(replica.metric("ollabridge_log_store_up").await, 1.0);
        assert_eq!(replica.metric("ollabridge_log_dropped_total").await, 0.0);
    }
    for replica in &mut replicas {
        replica.stop().await;
    }
    let stored: Vec<String> = db
        .rows("SELECT request_id FROM logs")
        .await
        .iter()
        .map(|r| r["request_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(stored.len(), sent.len(), "no row lost, none twice");
    assert_eq!(stored.into_iter().collect::<HashSet<_>>(), sent);
    eprintln!(
        "restart: {} requests, {before_outage} rows before the outage, {held} records held during it",
        sent.len()
    );
    // Each replica logged the outage once, and its end once.
    let text = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    assert_eq!(text.matches("log database unavailable").count(), 3, "{text}");
    assert_eq!(text.matches("log database available again").count(), 3, "{text}");
}

// ---------------------------------------------------------------------------
// rows left in flight

#[tokio::test]
async fn only_abandoned_in_flight_rows_are_closed() {
    let cluster = PgCluster::start().await;
    let db = Db::Postgres(cluster.url());
    let store = db.store().await;
    let me = ollabridge::store::Instance::new("10.0.0.5:11434".parse().unwrap());
    let now = ollabridge::store::timestamp_now();
    let old = ollabridge::store::schema::stored(&(chrono::Utc::now() - chrono::Duration::hours(2)));
    let prefix = me.prefix().to_owned();
    // (request id, instance, started)
    let rows = [
        (
            "other-replica-running",
            "other-host/10.0.0.6:11434/1234abcd".to_owned(),
            now.clone(),
        ),
        ("my-earlier-process", format!("{prefix}00000000"), now.clone()),
        (
            "another-address-here",
            format!("{}/10.0.0.5:11500/00000000", prefix.split('/').next().unwrap()),
            now.clone(),
        ),
        ("crashed-long-ago", "gone-host/10.0.0.9:11434/99999999".to_owned(), old),
        ("mine-running", me.id().to_owned(), now.clone()),
    ];
    for (request_id, instance, timestamp) in &rows {
        common::postgres::run_sql(
            &cluster.url(),
            &format!(
                "INSERT INTO logs (timestamp, endpoint, method, model, request_id, in_flight, instance) \
                 VALUES ('{timestamp}', '/api/chat', 'POST', 'm', '{request_id}', TRUE, '{instance}')"
            ),
        );
    }
    let closed = ollabridge::store::connect::close_abandoned_rows(&store, &me)
        .await
        .unwrap();
    assert_eq!(closed, 2);
    let states = db
        .rows("SELECT request_id, in_flight, error FROM logs ORDER BY id")
        .await;
    let abandoned = json!("ollabridge stopped before the request finished");
    assert_eq!(
        states,
        [
            json!({"request_id": "other-replica-running", "in_flight": 1, "error": null}),
            json!({"request_id": "my-earlier-process", "in_flight": 0, "error": abandoned}),
            json!({"request_id": "another-address-here", "in_flight": 1, "error": null}),
            json!({"request_id": "crashed-long-ago", "in_flight": 0, "error": abandoned}),
            json!({"request_id": "mine-running", "in_flight": 1, "error": null}),
        ]
    );
    // At shutdown a process closes its own leftovers.
    assert_eq!(
        ollabridge::store::connect::close_own_rows(&store, &me).await.unwrap(),
        1
    );
    // A new server (another address) closes none of the others' recent rows at start.
    let mut second = Replica::start("http://127.0.0.1:9", db.section(json!({}))).await;
    second.stop().await;
    assert_eq!(
        db.rows("SELECT COUNT(*) AS n FROM logs WHERE in_flight").await[0]["n"],
        2
    );
}

// ---------------------------------------------------------------------------
// retention

#[tokio::test]
async fn retention_bounds_hold_on_postgres() {
    use ollabridge::config::Retention;
    use ollabridge::store::retention;
    let cluster = PgCluster::start().await;
    let db = Db::Postgres(cluster.url());
    let mut rows = Vec::new();
    for i in 0..2000 {
        let mut r = row(&ollabridge::store::timestamp_now(), Some("m"), 1);
        r.request_id = format!("req-{i}");
        // Letters that do not compress, so sizes are what they seem.
        r.prompt = Some(format!("{i:06} {}", noise(i, 1000)));
        r.response = Some(noise(i + 7919, 1000));
        if i < 500 {
            r.timestamp = "2020-01-01 00:00:00.000".into();
        }
        rows.push(r);
    }
    db.write(rows).await;
    let store = db.store().await;
    common::postgres::run_sql(
        &cluster.url(),
        "UPDATE logs SET starred = TRUE WHERE request_id = 'req-7'",
    );
    let policy = |max_age: Option<Duration>, max_rows: Option<u64>, max_bytes: Option<u64>| Retention {
        max_age,
        max_rows,
        max_bytes,
        interval: Duration::from_secs(60),
    };
    // By age: the 500 old rows but the starred one.
    let deleted = retention::enforce(&store, &policy(Some(Duration::from_secs(86_400)), None, None))
        .await
        .unwrap();
    assert_eq!(deleted, 499);
    assert_eq!(db.count().await, 1501);
    // By count: the newest 1000 (and the starred row).
    let deleted = retention::enforce(&store, &policy(None, Some(1000), None))
        .await
        .unwrap();
    assert_eq!(deleted, 500);
    let oldest = db
        .rows("SELECT request_id FROM logs WHERE NOT starred ORDER BY id LIMIT 1")
        .await;
    assert_eq!(oldest[0]["request_id"], "req-1000");
    // By size: rows of about 2 kB (stored compressed, far less), bounded at 100 kB.
    let size = db
        .rows("SELECT SUM(pg_column_size(logs.*))::BIGINT AS n FROM logs")
        .await[0]["n"]
        .as_i64()
        .unwrap();
    assert!(size > 100_000, "{size}");
    retention::enforce(&store, &policy(None, None, Some(100_000)))
        .await
        .unwrap();
    let size = db
        .rows("SELECT SUM(pg_column_size(logs.*))::BIGINT AS n FROM logs")
        .await[0]["n"]
        .as_i64()
        .unwrap();
    // (The starred row is kept beyond the bound.)
    assert!((80_000..=104_000).contains(&size), "{size} bytes kept");
    let newest = db.rows("SELECT request_id FROM logs ORDER BY id DESC LIMIT 1").await;
    assert_eq!(newest[0]["request_id"], "req-1999");
    assert_eq!(db.rows("SELECT COUNT(*) AS n FROM logs WHERE starred").await[0]["n"], 1);
}

/// `n` pseudo-random lowercase letters.
fn noise(seed: usize, n: usize) -> String {
    let mut x = seed as u64;
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            char::from(b'a' + ((x >> 33) % 26) as u8)
        })
        .collect()
}

// ---------------------------------------------------------------------------
// ollabridge logs, check-config

async fn run_cli(args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_ollabridge"))
        .args(args)
        .env_remove("OLLABRIDGE_CONFIG")
        .output()
        .await
        .expect("run ollabridge")
}

fn stdout(out: &std::process::Output) -> String {
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[tokio::test]
async fn logs_command_reads_postgres_as_it_reads_sqlite() {
    let cluster = PgCluster::start().await;
    let sqlite = Db::sqlite();
    let pg = Db::Postgres(cluster.url());
    let rows: Vec<LogRecord> = varied_rows().into_iter().skip(24).collect();
    sqlite.write(rows.clone()).await;
    pg.write(rows).await;
    let Db::Sqlite(dir) = &sqlite else { unreachable!() };
    let sqlite_path = dir.path().join("ollabridge.db");
    let url = cluster.url();
    // (Leaked for the argument lists below: a few bytes, once.)
    let sqlite_arg: &'static str = sqlite_path.to_str().unwrap().to_owned().leak();
    let url_arg: &'static str = url.clone().leak();
    for args in [
        &["--json"][..],
        &["--json", "--limit", "3"],
        &["--errors", "--json"],
        &["--model", "gamma", "--json"],
        &[],
    ] {
        let on = |db: &'static str| [&["logs", "--db", db][..], args].concat();
        let from_sqlite = stdout(&run_cli(&on(sqlite_arg)).await);
        let from_pg = stdout(&run_cli(&on(url_arg)).await);
        assert_eq!(from_pg, from_sqlite, "{args:?}");
        assert!(from_pg.lines().count() >= 1, "{from_pg}");
    }
    // database.url from the config file; check-config masks the password.
    let config = dir.path().join("config.json");
    std::fs::write(
        &config,
        json!({"backend": {"type": "openai", "endpoint": "http://127.0.0.1:9"}, "database": {"url": url}}).to_string(),
    )
    .unwrap();
    let out = stdout(&run_cli(&["logs", "--config", config.to_str().unwrap(), "--json", "--limit", "1"]).await);
    let last: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(last["id"], 11);
    let checked = stdout(&run_cli(&["check-config", config.to_str().unwrap()]).await);
    assert!(!checked.contains(PASSWORD), "{checked}");
    assert!(
        checked.contains(&format!(
            "\"postgres://ollabridge:***@127.0.0.1:{}/ollabridge\"",
            cluster.port()
        )),
        "{checked}"
    );
    // --follow prints rows as replicas write them.
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ollabridge"))
        .args(["logs", "--db", url.as_str(), "--json", "--follow", "--limit", "1"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(next_json_line(&mut lines).await["id"], 11);
    pg.write(vec![row("2026-03-03 10:00:00.000", Some("late"), 1)]).await;
    let late = next_json_line(&mut lines).await;
    assert_eq!((&late["id"], &late["model"]), (&json!(12), &json!("late")));
    child.kill().await.unwrap();
    // A wrong password is a clear failure.
    let wrong = url.replace(PASSWORD, "wrong");
    let out = run_cli(&["logs", "--db", &wrong]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ollabridge:***@127.0.0.1") && err.contains("password"),
        "{err}"
    );
}

async fn next_json_line(lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>) -> Value {
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("a line within 10 s")
        .unwrap()
        .expect("a line");
    serde_json::from_str(&line).unwrap()
}

// ---------------------------------------------------------------------------
// throughput

/// Rows per second three writers (three replicas' loggers) store in one PostgreSQL,
/// each with its own pool, at 2 kB rows, with fsync on: every record is queued at once,
/// so the writers run flat out. The README quotes the release build's number:
/// `OLLABRIDGE_PG_BENCH_ROWS=50000 cargo test --release --test postgres_store -- throughput
/// --nocapture` (rows per writer; `OLLABRIDGE_PG_BENCH_WRITERS` changes the 3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throughput_of_three_writers() {
    let setting = |name: &str, default: usize| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let per_writer = setting("OLLABRIDGE_PG_BENCH_ROWS", 10_000);
    let writer_count = setting("OLLABRIDGE_PG_BENCH_WRITERS", 3);
    let cluster = PgCluster::start_with(&[]).await;
    let db = Db::Postgres(cluster.url());
    let mut writers = Vec::new();
    for w in 0..writer_count {
        let (logger, writer) = Writer::spawn(db.store().await, per_writer, 1 << 20);
        writers.push((w, logger, writer));
    }
    let record = |w: usize, i: usize| LogRecord {
        timestamp: ollabridge::store::timestamp_now(),
        endpoint: "/api/chat".into(),
        method: "POST".into(),
        model: Some("m".into()),
        prompt: Some(format!("{w} {i:06} {}", "p".repeat(1000))),
        response: Some("r".repeat(1000)),
        request_id: format!("{w}-{i}"),
        status_code: 200,
        ..Default::default()
    };
    let started = Instant::now();
    let mut closing = Vec::new();
    for (w, logger, writer) in writers {
        for i in 0..per_writer {
            logger.log(record(w, i));
        }
        assert_eq!(logger.dropped(), 0);
        drop(logger);
        closing.push(tokio::spawn(writer.close()));
    }
    for c in closing {
        c.await.unwrap();
    }
    let elapsed = started.elapsed();
    let total = writer_count * per_writer;
    assert_eq!(db.count().await, total as i64);
    let rate = total as f64 / elapsed.as_secs_f64();
    eprintln!(
        "throughput: {writer_count} writers stored {total} rows of 2 kB in {elapsed:?}: {rate:.0} rows/s ({})",
        if cfg!(debug_assertions) {
            "debug build"
        } else {
            "release build"
        }
    );
}
