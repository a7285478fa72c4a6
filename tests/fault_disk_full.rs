//! The SQLite log under faults: a full file system (a small tmpfs, so this needs
//! root, which CI has) and rows the database refuses. No row may vanish uncounted, the
//! outage shows in `/metrics`, and the writer recovers by itself once space is back.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::{get, post};
use common::Bridge;
use serde_json::{Value, json};

/// A tmpfs of `size` mounted on a fresh directory; lazily unmounted on drop, so a
/// failed test leaves nothing mounted even while the bridge still holds files there.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test needs root (it mounts a small tmpfs to fill; CI runs as root): mount failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// An OpenAI backend answering "ok"; a prompt "slow" takes 1.5 s (long enough for an
/// in-flight row).
async fn backend() -> String {
    let app = Router::new()
        .route("/v1/models", get(|| async { axum::Json(json!({"data": [{"id": "m"}]})) }))
        .route(
            "/v1/chat/completions",
            post(|axum::Json(body): axum::Json<Value>| async move {
                if body["messages"][0]["content"] == "slow" {
                    tokio::time::sleep(Duration::from_millis(1500)).await;
                }
                axum::Json(json!({
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1}
                }))
            }),
        );
    common::serve(app).await.0
}

/// One non-streamed chat, which must be answered; returns ollabridge's request id.
async fn chat(http: &reqwest::Client, bridge: &str, content: &str) -> String {
    let r = http
        .post(format!("{bridge}/api/chat"))
        .json(&json!({"model": "m", "stream": false, "messages": [{"role": "user", "content": content}]}))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200, "clients never wait for the log");
    r.headers()["x-request-id"].to_str().expect("ascii id").to_owned()
}

async fn metric(http: &reqwest::Client, admin: &str, name: &str) -> f64 {
    let text = http
        .get(format!("{admin}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

/// Polls `name` until it equals `want`, for at most `within`.
async fn wait_metric(http: &reqwest::Client, admin: &str, name: &str, want: f64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let value = metric(http, admin, name).await;
        if value == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} is {value}, not {want}, after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The tracing output of this test binary (one global subscriber).
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
        self.0.lock().expect("logs").extend_from_slice(buf);
        std::io::stderr().write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logged() -> String {
    String::from_utf8(captured_logs().lock().expect("logs").clone()).expect("utf-8 logs")
}

/// The tests run one at a time, so each one's log lines are its own (after its mark).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn stored_ids(db: &Path) -> Vec<String> {
    common::query_rows(db, "SELECT request_id FROM logs WHERE in_flight = 0 ORDER BY id")
        .iter()
        .map(|r| r["request_id"].as_str().expect("request_id").to_owned())
        .collect()
}

const QUEUE: usize = 32;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_holds_the_log_counts_what_it_drops_and_recovers() {
    let _serial = SERIAL.lock().await;
    let mark = logged().len();
    let tmpfs = Tmpfs::mount("6m");
    // Space taken before the bridge starts; deleting it is how space comes back.
    let filler = tmpfs.path().join("filler");
    std::fs::write(&filler, vec![0u8; 3 << 20]).expect("write filler");
    let db: PathBuf = tmpfs.path().join("log.db");
    let mut bridge = Bridge::start_with_db(
        json!({
            "backend": {"type": "openai", "endpoint": backend().await, "timeout": 30},
            "database": {
                "max_body_bytes": 32768,
                "queue_capacity": QUEUE,
                // Runs during the outage too (deleting nothing); it must not hold the writer up.
                "retention": {"max_rows": 1_000_000, "interval": 0.2},
            },
        }),
        tempfile::tempdir().expect("tempdir"),
        db.clone(),
    )
    .await;
    let http = reqwest::Client::new();
    let admin = bridge.admin_url.clone();
    let prompt = "x".repeat(32768);
    let mut answered = Vec::new();

    // Large prompts until the writer finds the file system full.
    let mut full = false;
    for _ in 0..50 {
        for _ in 0..8 {
            answered.push(chat(&http, &bridge.url, &prompt).await);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        if metric(&http, &admin, "ollabridge_log_store_up").await == 0.0 {
            full = true;
            break;
        }
    }
    assert!(
        full,
        "ollabridge_log_store_up stayed 1 after {} requests of 32 KiB on a 6 MiB file system\n{}",
        answered.len(),
        logged()
    );
    // During the outage: a request long enough for an in-flight row, and more records
    // than the queue holds.
    let slow = tokio::spawn({
        let (http, url) = (http.clone(), bridge.url.clone());
        async move { chat(&http, &url, "slow").await }
    });
    for _ in 0..2 * QUEUE {
        answered.push(chat(&http, &bridge.url, &prompt).await);
    }
    answered.push(slow.await.expect("slow request"));
    assert_eq!(metric(&http, &admin, "ollabridge_log_store_up").await, 0.0);
    let dropped = metric(&http, &admin, "ollabridge_log_dropped_total").await;
    assert!(dropped > 0.0, "a full queue drops records, counted");

    // Space comes back: the writer recovers by itself and writes what it held.
    std::fs::remove_file(&filler).expect("remove filler");
    wait_metric(&http, &admin, "ollabridge_log_store_up", 1.0, Duration::from_secs(30)).await;
    wait_metric(
        &http,
        &admin,
        "ollabridge_log_queue_depth",
        0.0,
        Duration::from_secs(30),
    )
    .await;
    let mut after = Vec::new();
    for i in 0..5 {
        after.push(chat(&http, &bridge.url, &format!("after {i}")).await);
    }
    // New rows are written while the bridge runs (not only by the drain at shutdown).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !stored_ids(&db).ends_with(&after) {
        assert!(
            Instant::now() < deadline,
            "rows after the recovery not written\n{}",
            logged()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    answered.extend(after);
    assert_eq!(metric(&http, &admin, "ollabridge_log_store_up").await, 1.0);
    assert_eq!(
        metric(&http, &admin, "ollabridge_log_dropped_total").await,
        dropped,
        "nothing dropped after the recovery"
    );
    bridge.stop().await;

    // Every request is accounted for: stored once, or counted as dropped.
    let stored = stored_ids(&db);
    let distinct: HashSet<&String> = stored.iter().collect();
    assert_eq!(distinct.len(), stored.len(), "no row stored twice");
    let answered_set: HashSet<&String> = answered.iter().collect();
    assert!(distinct.is_subset(&answered_set));
    assert_eq!(
        stored.len() + dropped as usize,
        answered.len(),
        "rows stored + dropped == requests answered"
    );
    assert_eq!(
        common::query_rows(&db, "SELECT COUNT(*) AS n FROM logs WHERE in_flight = 1")[0]["n"],
        0
    );
    let text = logged().split_off(mark);
    assert_eq!(text.matches("log database unavailable").count(), 1, "{text}");
    assert!(text.contains("database or disk is full"), "{text}");
    assert_eq!(text.matches("log database available again").count(), 1, "{text}");
    assert!(text.contains("log queue full: request records dropped"), "{text}");
}

/// A row the database refuses for good (here a trigger's ABORT, as a constraint would)
/// is dropped, counted and logged; the rest of its batch is stored, and the writer
/// goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_the_database_refuses_is_counted_and_its_batch_stored() {
    use ollabridge::store::{LogRecord, Writer, open};
    let _serial = SERIAL.lock().await;
    let mark = logged().len();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("log.db");
    let pool = open(&db).await.expect("open");
    sqlx::query(
        "CREATE TRIGGER refuse BEFORE INSERT ON logs WHEN NEW.model = 'refused' \
         BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
    )
    .execute(&pool)
    .await
    .expect("trigger");
    let (logger, writer) = Writer::spawn(pool, 64, 1 << 20);
    let record = |id: &str, model: &str| LogRecord {
        request_id: id.into(),
        model: Some(model.into()),
        endpoint: "/api/chat".into(),
        status_code: 200,
        ..LogRecord::default()
    };
    // One batch (logged together, within the writer's window) with a refused row inside.
    for (id, model) in [("a", "m"), ("b", "refused"), ("c", "m")] {
        logger.log(record(id, model));
    }
    // The writer goes on after giving up: a later batch is stored.
    let deadline = Instant::now() + Duration::from_secs(10);
    while logger.dropped() == 0 {
        assert!(
            Instant::now() < deadline,
            "the refused row was never counted\n{}",
            logged()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    logger.log(record("d", "m"));
    assert_eq!(logger.dropped(), 1);
    assert!(logger.store_up(), "a refused row is no outage");
    drop(logger);
    writer.close().await;
    assert_eq!(stored_ids(&db), ["a", "c", "d"]);
    let text = logged().split_off(mark);
    assert!(
        text.lines()
            .any(|l| l.contains("the log database refused request records: dropped")
                && l.contains("refused by the test")
                && l.contains("dropped=1 total=1")),
        "{text}"
    );
}

/// While another connection holds the write lock (SQLITE_BUSY, which passes), the
/// writer holds its batch and the queue fills. A request whose in-flight row was
/// written and whose final record the full queue then dropped does not stay "in
/// flight": its row is closed, saying why, once the writer gets through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_final_record_closes_its_in_flight_row() {
    use ollabridge::store::{IN_FLIGHT_ROW_AFTER, LogRecord, Writer, open};
    use sqlx::{Connection, Executor};
    let _serial = SERIAL.lock().await;
    captured_logs();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("log.db");
    let (logger, writer) = Writer::spawn(open(&db).await.expect("open"), 4, 1 << 20);
    let record = |id: &str| LogRecord {
        request_id: id.into(),
        endpoint: "/api/chat".into(),
        status_code: 200,
        ..LogRecord::default()
    };
    let long = logger.started(record("long"));
    let in_flight = || common::query_rows(&db, "SELECT request_id, in_flight, error FROM logs WHERE in_flight = 1");
    let deadline = Instant::now() + IN_FLIGHT_ROW_AFTER + Duration::from_secs(10);
    while in_flight().is_empty() {
        assert!(Instant::now() < deadline, "no in-flight row");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut locker = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .expect("second connection");
    locker.execute("BEGIN IMMEDIATE").await.expect("take the write lock");
    logger.log(record("held"));
    // The writer has taken "held" and waits for the lock; four more fill the queue.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..4 {
        logger.log(record(&format!("queued {i}")));
    }
    assert_eq!(logger.dropped(), 0);
    logger.finished(long, record("long"));
    assert_eq!(logger.dropped(), 1, "the full queue dropped the final record");
    let deadline = Instant::now() + Duration::from_secs(20);
    while logger.store_up() {
        assert!(
            Instant::now() < deadline,
            "store_up stayed true while the database was locked"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    locker.execute("ROLLBACK").await.expect("release the lock");
    drop(locker);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !in_flight().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the in-flight row stayed open: {:?}",
            in_flight()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(logger.store_up());
    drop(logger);
    writer.close().await;
    let rows = common::query_rows(
        &db,
        "SELECT request_id, in_flight, status_code, error FROM logs ORDER BY id",
    );
    assert_eq!(
        rows,
        [
            json!({"request_id": "long", "in_flight": 0, "status_code": null,
                   "error": "the request ended but its log record was dropped (log queue full)"}),
            json!({"request_id": "held", "in_flight": 0, "status_code": 200, "error": null}),
            json!({"request_id": "queued 0", "in_flight": 0, "status_code": 200, "error": null}),
            json!({"request_id": "queued 1", "in_flight": 0, "status_code": 200, "error": null}),
            json!({"request_id": "queued 2", "in_flight": 0, "status_code": 200, "error": null}),
            json!({"request_id": "queued 3", "in_flight": 0, "status_code": 200, "error": null}),
        ]
    );
}
