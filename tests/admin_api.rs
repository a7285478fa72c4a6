//! The admin listener's log API (`/api/logs`, `/api/stats`, `/api/stats/timeseries`,
//! `/api/events`), `/metrics` read with a strict OpenMetrics parser, request ids, the
//! migration of an old database and the `ollabridge logs` command. The metrics of a row
//! checked against what the real llama-server reported are in `tests/llama_features.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use common::{Bridge, get_json, ndjson, post, repo_root};
use futures::StreamExt;
use ollabridge::store::{LogRecord, Writer};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

// ---------------------------------------------------------------------------
// helpers

/// Writes rows through the real writer (the same INSERT the server uses).
async fn write_rows(db: &Path, rows: Vec<LogRecord>) {
    let pool = ollabridge::store::open(db).await.expect("open db");
    let (logger, writer) = Writer::spawn(pool, 1024, 1 << 20);
    for row in rows {
        logger.log(row);
    }
    drop(logger);
    writer.close().await;
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

/// A bridge whose backend is never called (rows are written directly).
async fn idle_bridge() -> Bridge {
    Bridge::openai("http://127.0.0.1:9", json!({})).await
}

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

async fn bad_request(url: &str, expected: &str) {
    let (status, body) = get_json(url).await;
    assert_eq!((status, &body), (400, &json!({ "error": expected })), "{url}");
}

async fn bad_request_starting(url: &str, prefix: &str) {
    let (status, body) = get_json(url).await;
    assert_eq!(status, 400, "{url}: {body}");
    let message = body["error"].as_str().unwrap();
    assert!(message.starts_with(prefix), "{url}: {message}");
}

fn ids(body: &Value) -> Vec<i64> {
    body["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_i64().unwrap())
        .collect()
}

/// A small OpenAI-compatible backend: answers every chat with "Hi from the mock."
/// (4 completion tokens), counting as many prompt tokens as the messages have
/// characters, with llama.cpp-style timings.
struct MockBackend {
    url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MockBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const MOCK_TEXT: &str = "Hi from the mock.";

async fn mock_backend() -> MockBackend {
    async fn chat(body: Bytes) -> Response {
        let request: Value = serde_json::from_slice(&body).unwrap();
        let prompt_tokens: usize = request["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["content"].as_str().unwrap_or("").chars().count())
            .sum();
        let usage = json!({"prompt_tokens": prompt_tokens, "completion_tokens": 4, "total_tokens": prompt_tokens + 4});
        let timings = json!({"prompt_n": prompt_tokens, "prompt_ms": 2.5, "predicted_n": 4, "predicted_ms": 8.0});
        let model = request["model"].clone();
        if request["stream"] != true {
            return axum::Json(json!({
                "object": "chat.completion", "model": model,
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": MOCK_TEXT}}],
                "usage": usage, "timings": timings,
            }))
            .into_response();
        }
        let chunk = |delta: Value, finish: Value| {
            json!({"object": "chat.completion.chunk", "model": model,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        };
        let mut events = vec![chunk(json!({"role": "assistant", "content": null}), Value::Null)];
        for piece in ["Hi", " from", " the", " mock."] {
            events.push(chunk(json!({"content": piece}), Value::Null));
        }
        events.push(chunk(json!({}), json!("stop")));
        events.push(json!({"object": "chat.completion.chunk", "model": model, "choices": [],
                           "usage": usage, "timings": timings}));
        let mut sse: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
        sse.push_str("data: [DONE]\n\n");
        ([(header::CONTENT_TYPE, "text/event-stream")], sse).into_response()
    }
    let app = axum::Router::new()
        .route(
            "/v1/models",
            axum::routing::get(|| async { axum::Json(json!({"object": "list", "data": [{"id": "mock-model"}]})) }),
        )
        .route("/v1/chat/completions", axum::routing::post(chat));
    let (url, task) = common::serve(app).await;
    MockBackend { url, task }
}

async fn chat(bridge: &Bridge, model: &str, content: &str, stream: bool) -> (u16, String) {
    let (status, _, body) = post(
        &format!("{}/api/chat", bridge.url),
        json!({"model": model, "messages": [{"role": "user", "content": content}], "stream": stream}),
    )
    .await;
    (status, body)
}

// ---------------------------------------------------------------------------
// /api/stats and /api/stats/timeseries

/// Rows around 2026-03-01 11:00-12:00 UTC with known values (see the expectations).
fn stats_rows() -> Vec<LogRecord> {
    let mut rows = Vec::new();
    // alpha: 20 rows, 11:00 + 2 min each, latencies 100..=2000 (given out of order),
    // TTFT latency/10 + 0.5, rates 10 and 30 in turn, tokens i+1 and 2(i+1), cost 1/8;
    // rows 3 and 7 failed.
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
    // beta: latencies 5, 500, 50; no TTFT, rate or price; one failed.
    for (minute, latency) in [(40, 5), (41, 500), (42, 50)] {
        let mut r = row(&format!("2026-03-01 11:{minute}:00.000"), Some("beta"), latency);
        r.prompt_tokens = Some(1);
        r.completion_tokens = Some(1);
        rows.push(if latency == 500 { failed(r, 500, "kaput") } else { r });
    }
    // No model at all (a 400 before the model was known).
    rows.push(failed(
        row("2026-03-01 11:50:00.000", None, 7),
        400,
        "model is required",
    ));
    // Just outside the window on both sides.
    rows.push(row("2026-03-01 10:59:59.999", Some("alpha"), 99_999));
    rows.push(row("2026-03-01 12:00:00.000", Some("alpha"), 99_999));
    rows
}

#[tokio::test]
async fn stats_percentiles_counts_and_sums_are_exact() {
    let bridge = idle_bridge().await;
    write_rows(&bridge.db, stats_rows()).await;
    let (status, stats) = get_json(&format!(
        "{}/api/stats?window=1h&until=2026-03-01T12:00:00Z",
        bridge.admin_url
    ))
    .await;
    assert_eq!(status, 200, "{stats}");
    // Overall latencies, sorted: 5 7 50 100 200 300 400 500 500 600 … 2000 (24 values):
    // p50 = rank 12 = 800, p95 = rank ⌈22.8⌉ = 23 = 1900, p99 = rank ⌈23.76⌉ = 24 = 2000.
    assert_eq!(
        stats,
        json!({
            "window": "1h",
            "since": "2026-03-01T11:00:00.000Z",
            "until": "2026-03-01T12:00:00.000Z",
            "overall": {
                "count": 24, "errors": 4, "error_rate": 4.0 / 24.0,
                "latency_ms": {"p50": 800, "p95": 1900, "p99": 2000},
                "ttft_ms": {"p50": 100.5, "p95": 190.5},
                "tokens_per_second_mean": 20.0,
                "prompt_tokens": 213, "completion_tokens": 423, "cost": 2.5,
            },
            "models": [
                {
                    "model": null,
                    "count": 1, "errors": 1, "error_rate": 1.0,
                    "latency_ms": {"p50": 7, "p95": 7, "p99": 7},
                    "ttft_ms": {"p50": null, "p95": null},
                    "tokens_per_second_mean": null,
                    "prompt_tokens": 0, "completion_tokens": 0, "cost": null,
                },
                {
                    // 100 … 2000: p50 = rank 10, p95 = rank 19, p99 = rank ⌈19.8⌉ = 20.
                    "model": "alpha",
                    "count": 20, "errors": 2, "error_rate": 0.1,
                    "latency_ms": {"p50": 1000, "p95": 1900, "p99": 2000},
                    "ttft_ms": {"p50": 100.5, "p95": 190.5},
                    "tokens_per_second_mean": 20.0,
                    "prompt_tokens": 210, "completion_tokens": 420, "cost": 2.5,
                },
                {
                    // 5 50 500: p50 = rank ⌈1.5⌉ = 2, p95 and p99 = rank 3.
                    "model": "beta",
                    "count": 3, "errors": 1, "error_rate": 1.0 / 3.0,
                    "latency_ms": {"p50": 50, "p95": 500, "p99": 500},
                    "ttft_ms": {"p50": null, "p95": null},
                    "tokens_per_second_mean": null,
                    "prompt_tokens": 3, "completion_tokens": 3, "cost": null,
                },
            ],
        })
    );

    // A 15-minute window holds only the row without a model; RFC 3339 offsets and the
    // plain UTC form name the same instant.
    for until in ["2026-03-01T13:00:00%2B01:00", "2026-03-01%2012:00:00"] {
        let (_, small) = get_json(&format!("{}/api/stats?window=15m&until={until}", bridge.admin_url)).await;
        assert_eq!(small["since"], "2026-03-01T11:45:00.000Z");
        assert_eq!(small["overall"]["count"], 1, "{small}");
        assert_eq!(small["models"].as_array().unwrap().len(), 1);
    }
    // Without `until` the window ends now: these rows are long past.
    let (_, now) = get_json(&format!("{}/api/stats", bridge.admin_url)).await;
    assert_eq!(now["window"], "24h");
    assert_eq!(now["overall"]["count"], 0);
    assert_eq!(
        now["overall"]["latency_ms"],
        json!({"p50": null, "p95": null, "p99": null})
    );
    assert_eq!(now["overall"]["error_rate"], 0.0);
    assert_eq!(now["models"], json!([]));

    let admin = &bridge.admin_url;
    bad_request_starting(
        &format!("{admin}/api/stats?window=abc"),
        "invalid 'window': expected a number and a unit",
    )
    .await;
    bad_request(
        &format!("{admin}/api/stats?window=400d"),
        "invalid 'window': at most 366d, got '400d'",
    )
    .await;
    bad_request_starting(
        &format!("{admin}/api/stats?until=soon"),
        "invalid 'until': expected RFC 3339",
    )
    .await;
    bad_request(
        &format!("{admin}/api/stats?windw=1h"),
        "unknown parameter 'windw' (known: window, until)",
    )
    .await;
}

#[tokio::test]
async fn timeseries_buckets_hold_exact_counts() {
    let bridge = idle_bridge().await;
    let mut rows = vec![
        row("2026-03-01 10:59:59.999", Some("a"), 1000),
        row("2026-03-01 11:00:00.000", Some("a"), 100),
        row("2026-03-01 11:14:59.999", Some("b"), 300),
        row("2026-03-01 11:15:00.000", Some("a"), 50),
        row("2026-03-01 11:50:00.000", Some("a"), 10),
        row("2026-03-01 11:51:00.000", Some("a"), 20),
        failed(row("2026-03-01 11:59:59.999", Some("a"), 40), 502, "boom"),
        row("2026-03-01 12:00:00.000", Some("a"), 1000),
    ];
    for (i, r) in rows.iter_mut().enumerate() {
        r.prompt_tokens = Some(i as u64);
        r.completion_tokens = Some(10 * i as u64);
        r.cost = Some(0.25);
    }
    write_rows(&bridge.db, rows).await;
    let bucket = |start: &str, count: u64, errors: u64, mean: f64, prompt: i64, completion: i64, cost: f64| {
        json!({"start": start, "count": count, "errors": errors, "latency_ms_mean": mean,
               "prompt_tokens": prompt, "completion_tokens": completion, "cost": cost})
    };
    let (status, series) = get_json(&format!(
        "{}/api/stats/timeseries?window=1h&bucket=15m&until=2026-03-01T12:00:00Z",
        bridge.admin_url
    ))
    .await;
    assert_eq!(status, 200, "{series}");
    assert_eq!(
        series,
        json!({
            "window": "1h", "bucket": "15m",
            "since": "2026-03-01T11:00:00.000Z", "until": "2026-03-01T12:00:00.000Z",
            "buckets": [
                bucket("2026-03-01T11:00:00.000Z", 2, 0, 200.0, 1 + 2, 10 + 20, 0.5),
                bucket("2026-03-01T11:15:00.000Z", 1, 0, 50.0, 3, 30, 0.25),
                bucket("2026-03-01T11:30:00.000Z", 0, 0, 0.0, 0, 0, 0.0),
                bucket("2026-03-01T11:45:00.000Z", 3, 1, 70.0 / 3.0, 4 + 5 + 6, 40 + 50 + 60, 0.75),
            ],
        })
    );

    // An end inside a bucket: whole buckets from the one holding `until - window`.
    let (_, series) = get_json(&format!(
        "{}/api/stats/timeseries?window=1h&bucket=15m&until=2026-03-01T12:07:00Z",
        bridge.admin_url
    ))
    .await;
    let buckets = series["buckets"].as_array().unwrap();
    let starts: Vec<&str> = buckets.iter().map(|b| b["start"].as_str().unwrap()).collect();
    assert_eq!(
        starts,
        [
            "2026-03-01T11:00:00.000Z",
            "2026-03-01T11:15:00.000Z",
            "2026-03-01T11:30:00.000Z",
            "2026-03-01T11:45:00.000Z",
            "2026-03-01T12:00:00.000Z"
        ]
    );
    let counts: Vec<u64> = buckets.iter().map(|b| b["count"].as_u64().unwrap()).collect();
    assert_eq!(counts, [2, 1, 0, 3, 1]);

    // Days, aligned to UTC midnight: 8 buckets, every row in the last one.
    let (_, days) = get_json(&format!(
        "{}/api/stats/timeseries?window=7d&bucket=1d&until=2026-03-01T12:00:00Z",
        bridge.admin_url
    ))
    .await;
    let counts: Vec<u64> = days["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["count"].as_u64().unwrap())
        .collect();
    assert_eq!(counts, [0, 0, 0, 0, 0, 0, 0, 7]);
    assert_eq!(days["buckets"][0]["start"], "2026-02-22T00:00:00.000Z");

    // Defaults: 24 h in hours, ending now.
    let (_, now) = get_json(&format!("{}/api/stats/timeseries", bridge.admin_url)).await;
    assert_eq!(
        (now["window"].as_str(), now["bucket"].as_str()),
        (Some("24h"), Some("1h"))
    );
    let n = now["buckets"].as_array().unwrap().len();
    assert!(n == 24 || n == 25, "{n}");

    let admin = &bridge.admin_url;
    bad_request(
        &format!("{admin}/api/stats/timeseries?bucket=30s"),
        "invalid 'bucket': at least 1m, got '30s'",
    )
    .await;
    bad_request(
        &format!("{admin}/api/stats/timeseries?window=366d&bucket=1m"),
        "invalid 'bucket': '1m' makes 527041 buckets in '366d', more than 20000",
    )
    .await;
    bad_request_starting(
        &format!("{admin}/api/stats/timeseries?bucket=hour"),
        "invalid 'bucket': ",
    )
    .await;
}

// ---------------------------------------------------------------------------
// /api/logs

#[tokio::test]
async fn logs_filter_search_and_page() {
    let bridge = idle_bridge().await;
    let long = "é".repeat(300);
    let mut rows = vec![
        row("2026-03-01 10:00:00.000", Some("alpha"), 10),
        failed(
            row("2026-03-01 10:01:00.000", Some("beta"), 20),
            404,
            "model 'beta' not found",
        ),
        row("2026-03-01 10:02:00.000", Some("alpha"), 30),
        failed(
            row("2026-03-01 10:03:00.000", Some("alpha"), 40),
            502,
            "backend unreachable",
        ),
        row("2026-03-01 10:04:00.000", Some("beta"), 50),
        row("2026-03-01 10:05:00.000", Some("alpha"), 60),
        failed(
            row("2026-03-01 10:06:00.000", Some("alpha"), 70),
            499,
            "client disconnected",
        ),
    ];
    let texts = [
        ("Prices: 50% off today", "ok"),
        ("what is 50 percent", "half"),
        ("file a_b.txt", "Hello World"),
        ("file axb.txt", "500 units"),
        (r"path C:\dir\x", "done"),
        (long.as_str(), long.as_str()),
        ("bye", "partial"),
    ];
    for (r, (prompt, response)) in rows.iter_mut().zip(texts) {
        r.prompt = Some(prompt.to_owned());
        r.response = Some(response.to_owned());
    }
    rows[2].ttft_ms = Some(12.5);
    rows[2].prompt_tokens = Some(11);
    rows[2].completion_tokens = Some(22);
    rows[2].tokens_per_second = Some(40.0);
    rows[2].cost = Some(0.5);
    rows[2].done_reason = Some("stop".into());
    write_rows(&bridge.db, rows).await;
    let logs = |query: &str| {
        let url = format!("{}/api/logs?{query}", bridge.admin_url);
        async move {
            let (status, body) = get_json(&url).await;
            assert_eq!(status, 200, "{url}: {body}");
            body
        }
    };

    // Pages of 3 over 7 rows: 3, 3, 1, newest first.
    let page = logs("limit=3").await;
    assert_eq!((ids(&page), &page["next_cursor"]), (vec![7, 6, 5], &json!(5)));
    let page = logs("limit=3&cursor=5").await;
    assert_eq!((ids(&page), &page["next_cursor"]), (vec![4, 3, 2], &json!(2)));
    let page = logs("limit=3&cursor=2").await;
    assert_eq!((ids(&page), &page["next_cursor"]), (vec![1], &Value::Null));
    // A page that ends exactly at the last row says so.
    let page = logs("limit=7").await;
    assert_eq!((ids(&page).len(), &page["next_cursor"]), (7, &Value::Null));
    assert_eq!(ids(&logs("").await).len(), 7, "default limit 50");
    assert_eq!(ids(&logs("limit=100000").await).len(), 7, "limit is cut to 500");

    // One item: the summary columns and previews, not the bodies.
    let item = &logs("limit=1&cursor=4").await["logs"][0];
    assert_eq!(
        item,
        &json!({
            "id": 3, "timestamp": "2026-03-01 10:02:00.000", "request_id": "req 2026-03-01 10:02:00.000",
            "endpoint": "/api/chat", "method": "POST", "model": "alpha", "backend_model": "alpha-backend",
            "status_code": 200, "latency_ms": 30, "ttft_ms": 12.5, "stream": true, "done_reason": "stop",
            "prompt_tokens": 11, "completion_tokens": 22, "tokens_per_second": 40.0, "cost": 0.5, "error": null,
            "in_flight": false, "starred": false, "replay_of": null, "cache_hit": false, "prompt_preview": "file a_b.txt", "response_preview": "Hello World",
        })
    );
    // Previews are the first 200 characters (not bytes).
    let six = &logs("limit=1&cursor=7").await["logs"][0];
    assert_eq!(six["prompt_preview"], "é".repeat(200));
    assert_eq!(six["response_preview"], "é".repeat(200));

    // Filters, alone and together.
    assert_eq!(ids(&logs("model=alpha").await), [7, 6, 4, 3, 1]);
    assert_eq!(ids(&logs("model=gamma").await), Vec::<i64>::new());
    assert_eq!(ids(&logs("status=404").await), [2]);
    assert_eq!(ids(&logs("status=4xx").await), [7, 2]);
    assert_eq!(ids(&logs("status=5xx").await), [4]);
    assert_eq!(ids(&logs("status=2xx").await), [6, 5, 3, 1]);
    assert_eq!(ids(&logs("errors_only=true").await), [7, 4, 2]);
    assert_eq!(ids(&logs("errors_only=false").await).len(), 7);
    assert_eq!(ids(&logs("errors_only=true&model=alpha").await), [7, 4]);
    assert_eq!(ids(&logs("errors_only=true&model=alpha&limit=1").await), [7]);
    assert_eq!(logs("errors_only=true&model=alpha&limit=1").await["next_cursor"], 7);
    assert_eq!(ids(&logs("errors_only=true&model=alpha&cursor=7").await), [4]);
    // since inclusive, until exclusive; RFC 3339 with an offset or plain UTC.
    assert_eq!(
        ids(&logs("since=2026-03-01%2010:02:00&until=2026-03-01T11:05:00%2B01:00").await),
        [5, 4, 3]
    );
    assert_eq!(ids(&logs("since=2026-03-01T10:05:00.000Z").await), [7, 6]);
    assert_eq!(ids(&logs("until=2026-03-01T10:00:00.001Z").await), [1]);

    // Search: `%`, `_` and `\` match themselves; ASCII letters in any case.
    assert_eq!(ids(&logs("q=50%25").await), [1]);
    assert_eq!(ids(&logs("q=50").await), [4, 2, 1]);
    assert_eq!(ids(&logs("q=a_b").await), [3]);
    assert_eq!(ids(&logs("q=_").await), [3]);
    assert_eq!(ids(&logs("q=%25").await), [1]);
    assert_eq!(ids(&logs("q=hello%20WORLD").await), [3]);
    assert_eq!(ids(&logs(r"q=C:\dir").await), [5]);
    assert_eq!(ids(&logs(r"q=\x").await), [5]);
    assert_eq!(ids(&logs("q=partial&errors_only=true").await), [7]);

    let admin = &bridge.admin_url;
    bad_request(
        &format!("{admin}/api/logs?status=99"),
        "invalid 'status': expected a status code like 404 or a class like 5xx, got '99'",
    )
    .await;
    bad_request(
        &format!("{admin}/api/logs?limit=0"),
        "invalid 'limit': expected a whole number from 1 to 500, got '0'",
    )
    .await;
    bad_request(
        &format!("{admin}/api/logs?cursor=x"),
        "invalid 'cursor': expected a row id (a whole number from 1), got 'x'",
    )
    .await;
    bad_request(
        &format!("{admin}/api/logs?errors_only=yes"),
        "invalid 'errors_only': expected true or false, got 'yes'",
    )
    .await;
    bad_request_starting(
        &format!("{admin}/api/logs?since=tuesday"),
        "invalid 'since': expected RFC 3339",
    )
    .await;
    bad_request(
        &format!("{admin}/api/logs?error_only=true"),
        "unknown parameter 'error_only' (known: model, status, errors_only, since, until, q, limit, cursor, starred)",
    )
    .await;
    bad_request(
        &format!("{admin}/api/logs?limit=1&limit=2"),
        "parameter 'limit' given more than once",
    )
    .await;
    // Regression: SQLite read `q=%00` as an empty search and matched every row.
    bad_request(
        &format!("{admin}/api/logs?q=%00"),
        "invalid 'q': must not contain NUL (%00)",
    )
    .await;
    bad_request(
        &format!("{admin}/api/logs?model=a%00b"),
        "invalid 'model': must not contain NUL (%00)",
    )
    .await;
    let (status, body) = get_json(&format!("{admin}/api/nothing-here")).await;
    assert_eq!((status, body), (404, json!({"error": "not found"})));
}

#[tokio::test]
async fn one_log_row_with_everything_in_it() {
    let bridge = idle_bridge().await;
    let messages = json!([{"role": "user", "content": "Weather in Paris?"}]);
    let tool_calls = json!([{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]);
    let mut chat = row("2026-03-01 10:00:00.000", Some("tiny"), 321);
    chat.prompt = Some(messages.to_string());
    chat.response = Some(String::new());
    chat.thinking = Some("Use the tool.".into());
    chat.tool_calls = Some(tool_calls.to_string());
    chat.done_reason = Some("stop".into());
    chat.prompt_tokens = Some(30);
    chat.completion_tokens = Some(12);
    chat.ttft_ms = Some(45.25);
    chat.prompt_eval_ms = Some(3.5);
    chat.eval_ms = Some(120.0);
    chat.tokens_per_second = Some(100.0);
    chat.request_bytes = 77;
    chat.response_bytes = 555;
    chat.client_addr = Some("127.0.0.1:5555".into());
    chat.cost = Some(0.0001);
    // A generate prompt that happens to be JSON text stays text.
    let mut generate = row("2026-03-01 10:01:00.000", Some("tiny"), 5);
    generate.endpoint = "/api/generate".into();
    generate.prompt = Some("[1, 2]".into());
    generate.tokens_estimated = true;
    generate.stream = false;
    write_rows(&bridge.db, vec![chat, generate]).await;

    let (status, one) = get_json(&format!("{}/api/logs/1", bridge.admin_url)).await;
    assert_eq!(status, 200);
    assert_eq!(
        one,
        json!({
            "id": 1, "timestamp": "2026-03-01 10:00:00.000", "request_id": "req 2026-03-01 10:00:00.000",
            "endpoint": "/api/chat", "method": "POST", "model": "tiny", "backend_model": "tiny-backend",
            "backend_type": "openai", "status_code": 200, "error": null, "stream": true, "done_reason": "stop",
            "prompt": messages, "response": "", "thinking": "Use the tool.", "tool_calls": tool_calls,
            "latency_ms": 321, "ttft_ms": 45.25, "prompt_eval_ms": 3.5, "eval_ms": 120.0,
            "tokens_per_second": 100.0, "prompt_tokens": 30, "completion_tokens": 12, "tokens_estimated": false,
            "request_bytes": 77, "response_bytes": 555, "client_addr": "127.0.0.1:5555", "client_key": null,
            "cost": 0.0001, "in_flight": false, "starred": false, "replay_of": null, "cache_hit": false, "replays": [],
            "request_body": null, "backend_request": null, "backend_response": null,
            "backend": null, "attempts": null, "cache_hit": false,
        })
    );
    let (_, two) = get_json(&format!("{}/api/logs/2", bridge.admin_url)).await;
    assert_eq!(two["prompt"], "[1, 2]");
    assert_eq!(two["tokens_estimated"], true);
    assert_eq!(two["stream"], false);
    assert_eq!(two["tool_calls"], Value::Null);

    let (status, missing) = get_json(&format!("{}/api/logs/7", bridge.admin_url)).await;
    assert_eq!((status, missing), (404, json!({"error": "log 7 not found"})));
    bad_request(
        &format!("{}/api/logs/seven", bridge.admin_url),
        "invalid 'id': expected a row id (a whole number from 1), got 'seven'",
    )
    .await;
}

// ---------------------------------------------------------------------------
// /metrics

/// One sample line of an exposition.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A strict reader of the OpenMetrics text format (the subset a Prometheus server
/// relies on): `# HELP`/`# TYPE`/`# UNIT` before a family's samples, families not
/// interleaved, sample names matching their family's type, well-formed and unique
/// label sets, numeric values, cumulative histogram buckets ending in `+Inf` equal to
/// `_count`, and a single final `# EOF`. Any other line is an error.
fn parse_openmetrics(text: &str) -> Result<(HashMap<String, String>, Vec<Sample>), String> {
    let body = text.strip_suffix("# EOF\n").ok_or("missing final '# EOF'")?;
    let mut types: HashMap<String, String> = HashMap::new();
    let mut helps: HashMap<String, String> = HashMap::new();
    let mut finished: Vec<String> = Vec::new();
    let mut current: Option<String> = None;
    let mut samples: Vec<Sample> = Vec::new();
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.chars()
                .enumerate()
                .all(|(i, c)| c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit()))
    };
    let mut enter = |family: &str, current: &mut Option<String>| -> Result<(), String> {
        if current.as_deref() != Some(family) {
            if finished.iter().any(|f| f == family) {
                return Err(format!("family {family} interleaved with another"));
            }
            if let Some(done) = current.take() {
                finished.push(done);
            }
            *current = Some(family.to_owned());
        }
        Ok(())
    };
    for (n, line) in body.lines().enumerate() {
        let at = |m: String| format!("line {}: {m}: {line:?}", n + 1);
        if let Some(meta) = line.strip_prefix("# ") {
            let mut parts = meta.splitn(3, ' ');
            let (kind, family, rest) = (parts.next().unwrap(), parts.next(), parts.next());
            let family = family
                .filter(|f| valid_name(f))
                .ok_or_else(|| at("bad family name".into()))?;
            enter(family, &mut current).map_err(at)?;
            match kind {
                "HELP" => {
                    if helps.insert(family.into(), rest.unwrap_or("").into()).is_some() {
                        return Err(at("second HELP".into()));
                    }
                }
                "TYPE" => {
                    let t = rest.ok_or_else(|| at("TYPE without a type".into()))?;
                    let known = [
                        "counter",
                        "gauge",
                        "histogram",
                        "gaugehistogram",
                        "summary",
                        "info",
                        "stateset",
                        "unknown",
                    ];
                    if !known.contains(&t) {
                        return Err(at(format!("unknown type {t}")));
                    }
                    if types.insert(family.into(), t.into()).is_some() {
                        return Err(at("second TYPE".into()));
                    }
                }
                "UNIT" => {}
                _ => return Err(at("unknown comment".into())),
            }
            continue;
        }
        // name{labels} value [timestamp]
        let name_end = line.find(['{', ' ']).ok_or_else(|| at("no value".into()))?;
        let name = &line[..name_end];
        if !valid_name(name) {
            return Err(at("bad metric name".into()));
        }
        let mut rest = &line[name_end..];
        let mut labels = BTreeMap::new();
        if let Some(inner) = rest.strip_prefix('{') {
            let mut chars = inner.char_indices().peekable();
            let close;
            loop {
                let start = chars
                    .peek()
                    .map(|&(i, _)| i)
                    .ok_or_else(|| at("open label set".into()))?;
                if inner[start..].starts_with('}') {
                    close = start;
                    break;
                }
                let eq = inner[start..]
                    .find("=\"")
                    .ok_or_else(|| at("label without =\"".into()))?
                    + start;
                let label = &inner[start..eq];
                if !valid_name(label) || label.contains(':') {
                    return Err(at(format!("bad label name {label:?}")));
                }
                while chars.peek().is_some_and(|&(i, _)| i < eq + 2) {
                    chars.next();
                }
                let mut value = String::new();
                loop {
                    match chars.next().ok_or_else(|| at("open label value".into()))?.1 {
                        '"' => break,
                        '\\' => match chars.next().ok_or_else(|| at("open escape".into()))?.1 {
                            '\\' => value.push('\\'),
                            '"' => value.push('"'),
                            'n' => value.push('\n'),
                            c => return Err(at(format!("bad escape \\{c}"))),
                        },
                        '\n' => return Err(at("newline in label value".into())),
                        c => value.push(c),
                    }
                }
                if labels.insert(label.to_owned(), value).is_some() {
                    return Err(at(format!("label {label} twice")));
                }
                match chars.peek() {
                    Some(&(_, ',')) => {
                        chars.next();
                    }
                    Some(&(_, '}')) => {}
                    _ => return Err(at("expected , or } after a label".into())),
                }
            }
            rest = &inner[close + 1..];
        }
        let rest = rest
            .strip_prefix(' ')
            .ok_or_else(|| at("no space before the value".into()))?;
        let mut fields = rest.split(' ');
        let value = match fields.next().unwrap() {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse::<f64>().map_err(|_| at(format!("bad value {v:?}")))?,
        };
        if let Some(ts) = fields.next() {
            ts.parse::<f64>().map_err(|_| at("bad timestamp".into()))?;
        }
        if fields.next().is_some() {
            return Err(at("trailing fields (exemplars are not expected)".into()));
        }
        let family = current.clone().ok_or_else(|| at("sample before any TYPE".into()))?;
        let kind = types.get(&family).ok_or_else(|| at("sample before its TYPE".into()))?;
        let suffix = name
            .strip_prefix(family.as_str())
            .ok_or_else(|| at(format!("not in family {family}")))?;
        let allowed: &[&str] = match kind.as_str() {
            "counter" => &["_total", "_created"],
            "gauge" | "unknown" => &[""],
            "histogram" => &["_bucket", "_count", "_sum", "_created"],
            "info" => &["_info"],
            _ => &["", "_count", "_sum", "_created", "_bucket", "_gcount", "_gsum"],
        };
        if !allowed.contains(&suffix) {
            return Err(at(format!("sample name not allowed for a {kind}")));
        }
        if (suffix == "_bucket") != labels.contains_key("le") {
            return Err(at("le label on a non-bucket or a bucket without le".into()));
        }
        if kind == "counter" && suffix == "_total" && (value.is_nan() || value < 0.0) {
            return Err(at("negative counter".into()));
        }
        let sample = Sample {
            name: name.to_owned(),
            labels,
            value,
        };
        if samples
            .iter()
            .any(|s| s.name == sample.name && s.labels == sample.labels)
        {
            return Err(at("duplicate sample".into()));
        }
        samples.push(sample);
    }
    // Histograms: cumulative buckets, the last one +Inf and equal to _count.
    for (family, _) in types.iter().filter(|(_, t)| t.as_str() == "histogram") {
        let mut series: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
        for s in samples.iter().filter(|s| s.name == format!("{family}_bucket")) {
            let mut key = s.labels.clone();
            let le = key.remove("le").unwrap();
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().map_err(|_| format!("{family}: bad le {le}"))?
            };
            series.entry(key).or_default().push((le, s.value));
        }
        for (key, buckets) in series {
            if !buckets.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1) {
                return Err(format!("{family}{key:?}: buckets not cumulative"));
            }
            let &(le, total) = buckets.last().unwrap();
            let count = samples
                .iter()
                .find(|s| s.name == format!("{family}_count") && s.labels == key)
                .ok_or(format!("{family}{key:?}: no _count"))?;
            if le != f64::INFINITY || total != count.value {
                return Err(format!(
                    "{family}{key:?}: +Inf bucket {total} is not _count {}",
                    count.value
                ));
            }
        }
    }
    Ok((types, samples))
}

/// The value of the sample `name` with exactly `labels`, 0 when absent.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let labels: BTreeMap<String, String> = labels.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
    samples
        .iter()
        .find(|s| s.name == name && s.labels == labels)
        .map_or(0.0, |s| s.value)
}

/// Scrapes `/metrics`; with `requests_seen`, every family must be there (before any
/// request, labelled families have no series and are left out entirely).
async fn scrape(bridge: &Bridge, requests_seen: bool) -> Vec<Sample> {
    let r = reqwest::get(format!("{}/metrics", bridge.admin_url)).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()[header::CONTENT_TYPE],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let text = r.text().await.unwrap();
    let (types, samples) = parse_openmetrics(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let families = [
        ("ollabridge_requests", "counter"),
        ("ollabridge_request_duration_seconds", "histogram"),
        ("ollabridge_time_to_first_token_seconds", "histogram"),
        ("ollabridge_tokens", "counter"),
        ("ollabridge_generation_tokens_per_second", "histogram"),
        ("ollabridge_cost", "counter"),
        ("ollabridge_inflight_requests", "gauge"),
        ("ollabridge_log_dropped", "counter"),
        ("ollabridge_log_queue_depth", "gauge"),
    ];
    for (family, kind) in families {
        if requests_seen || kind == "gauge" {
            assert_eq!(types.get(family).map(String::as_str), Some(kind), "{family}\n{text}");
        }
    }
    samples
}

#[test]
fn the_openmetrics_reader_is_strict() {
    let good = "# HELP x_requests Requests.\n# TYPE x_requests counter\nx_requests_total{a=\"1\",b=\"q\\\"\"} 3\n\
                # TYPE x_h histogram\nx_h_sum 1.5\nx_h_count 2\nx_h_bucket{le=\"1.0\"} 1\nx_h_bucket{le=\"+Inf\"} 2\n\
                # TYPE x_g gauge\nx_g -1\n# EOF\n";
    let (_, samples) = parse_openmetrics(good).unwrap();
    assert_eq!(value(&samples, "x_requests_total", &[("a", "1"), ("b", "q\"")]), 3.0);
    for bad in [
        good.replace("# EOF\n", ""),
        good.replace("x_g -1", "x_g"),
        good.replace("x_g -1", "x_g one"),
        good.replace("x_requests_total", "x_requests"),
        good.replace("a=\"1\"", "a=1"),
        good.replace("a=\"1\",", "a=\"1\" "),
        good.replace("x_h_count 2", "x_h_count 3"),
        good.replace("le=\"1.0\"} 1", "le=\"1.0\"} 5"),
        good.replace("# TYPE x_g gauge\n", ""),
        good.replace("x_g -1", "x_g -1\nx_requests_total 1"),
        good.replace("x_g -1", "x_g -1\nx_g -1"),
        good.replace("# TYPE x_g gauge", "# TYPE x_g thing"),
        good.replace("x_g -1", "x_g -1 # {} 1"),
        good.replace("x_g -1", "garbage line"),
    ] {
        assert!(parse_openmetrics(&bad).is_err(), "accepted:\n{bad}");
    }
}

#[tokio::test]
async fn metrics_parse_strictly_and_move_by_exactly_the_requests_made() {
    let mock = mock_backend().await;
    let mut bridge = Bridge::start(json!({
        "backend": {"type": "openai", "endpoint": mock.url, "timeout": 30},
        "models": {"mappings": {"m": "mock-model"}},
        "pricing": {"m": {"input": 1.0, "output": 3.0}},
    }))
    .await;
    let before = scrape(&bridge, false).await;
    let chat_200 = [
        ("model", "m"),
        ("backend", "openai"),
        ("endpoint", "/api/chat"),
        ("status", "200"),
    ];
    assert_eq!(value(&before, "ollabridge_requests_total", &chat_200), 0.0);

    for (content, stream) in [("one", true), ("second", true), ("the third", false)] {
        let (status, body) = chat(&bridge, "m", content, stream).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, _) = chat(&bridge, "nope", "x", true).await;
    assert_eq!(status, 404);

    let after = scrape(&bridge, true).await;
    assert_eq!(value(&after, "ollabridge_requests_total", &chat_200), 3.0);
    // Any client may name any model: an unknown one is not a label of its own, and no
    // backend was asked (unbounded label sets grew the exposition without end).
    let chat_404 = [
        ("model", ""),
        ("backend", ""),
        ("endpoint", "/api/chat"),
        ("status", "404"),
    ];
    assert_eq!(value(&after, "ollabridge_requests_total", &chat_404), 1.0);
    let requests: f64 = after
        .iter()
        .filter(|s| s.name == "ollabridge_requests_total")
        .map(|s| s.value)
        .sum();
    assert_eq!(requests, 4.0);
    let m = [("model", "m")];
    assert_eq!(value(&after, "ollabridge_request_duration_seconds_count", &m), 3.0);
    assert_eq!(value(&after, "ollabridge_time_to_first_token_seconds_count", &m), 3.0);
    assert_eq!(value(&after, "ollabridge_generation_tokens_per_second_count", &m), 3.0);
    assert_eq!(value(&after, "ollabridge_inflight_requests", &[]), 0.0);
    assert_eq!(value(&after, "ollabridge_log_dropped_total", &[]), 0.0);

    dashboard_names_only_exported_series(&after);

    let rows = bridge.rows().await;
    assert_eq!(rows.len(), 4);
    let priced: Vec<&Value> = rows.iter().filter(|r| r["model"] == "m").collect();
    let sum = |column: &str| priced.iter().map(|r| r[column].as_i64().unwrap()).sum::<i64>() as f64;
    // The mock counts a prompt token per character: 3 + 6 + 9.
    assert_eq!(sum("prompt_tokens"), 18.0);
    assert_eq!(sum("completion_tokens"), 12.0);
    let tokens = |direction| [("model", "m"), ("direction", direction)];
    assert_eq!(
        value(&after, "ollabridge_tokens_total", &tokens("prompt")),
        sum("prompt_tokens")
    );
    assert_eq!(
        value(&after, "ollabridge_tokens_total", &tokens("completion")),
        sum("completion_tokens")
    );
    let cost: f64 = priced.iter().map(|r| r["cost"].as_f64().unwrap()).sum();
    assert!((value(&after, "ollabridge_cost_total", &m) - cost).abs() < 1e-12);
    assert_eq!(cost, (18.0 * 1.0 + 12.0 * 3.0) / 1e6);
    let latency: f64 = priced.iter().map(|r| r["latency_ms"].as_f64().unwrap() / 1000.0).sum();
    assert!((value(&after, "ollabridge_request_duration_seconds_sum", &m) - latency).abs() < 1e-9);
}

/// `docs/grafana-dashboard.json` is a dashboard whose every query names series that
/// `/metrics` really exports.
fn dashboard_names_only_exported_series(samples: &[Sample]) {
    let text = std::fs::read_to_string(repo_root().join("docs/grafana-dashboard.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(dashboard["uid"], "ollabridge");
    let panels = dashboard["panels"].as_array().unwrap();
    let mut panel_ids: Vec<u64> = panels.iter().map(|p| p["id"].as_u64().unwrap()).collect();
    panel_ids.sort_unstable();
    panel_ids.dedup();
    assert_eq!(panel_ids.len(), panels.len(), "panel ids are unique");
    let exprs: Vec<&str> = panels
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .map(|t| t["expr"].as_str().unwrap())
        .collect();
    assert!(exprs.len() >= 15, "{exprs:?}");
    let mut named = std::collections::BTreeSet::new();
    for expr in &exprs {
        let mut rest = *expr;
        while let Some(at) = rest.find("ollabridge_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            named.insert(name);
        }
    }
    for name in &named {
        assert!(
            samples.iter().any(|s| &s.name == name),
            "the dashboard queries {name}, which /metrics does not export"
        );
    }
    assert!(named.len() >= 10, "{named:?}");
}

// ---------------------------------------------------------------------------
// request ids

#[tokio::test]
async fn request_ids_are_returned_and_logged() {
    let mock = mock_backend().await;
    let mut bridge = Bridge::openai(&mock.url, json!({"m": "mock-model"})).await;
    let http = reqwest::Client::new();
    let send = |id: Option<&str>| {
        let mut request = http
            .post(format!("{}/api/chat", bridge.url))
            .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": false}));
        if let Some(id) = id {
            request = request.header("X-Request-Id", id);
        }
        async move {
            let r = request.send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.headers()["x-request-id"].to_str().unwrap().to_owned()
        }
    };
    let fresh = send(None).await;
    assert_eq!(fresh.len(), 32);
    assert!(fresh.bytes().all(|b| b.is_ascii_hexdigit()), "{fresh}");
    assert_eq!(send(Some("trace-42:a.b_c")).await, "trace-42:a.b_c");
    let replaced = send(Some("not plain!")).await;
    assert_eq!(replaced.len(), 32);
    assert_ne!(replaced, fresh);
    // Metadata routes answer with an id too (they are not logged).
    let tags = http.get(format!("{}/api/tags", bridge.url)).send().await.unwrap();
    assert_eq!(tags.headers()["x-request-id"].len(), 32);

    let listed = wait_rows(&bridge, 3).await;
    let listed_ids: Vec<&str> = listed.iter().map(|l| l["request_id"].as_str().unwrap()).collect();
    assert_eq!(listed_ids, [replaced.as_str(), "trace-42:a.b_c", fresh.as_str()]);
    let rows = bridge.rows().await;
    let row_ids: Vec<&str> = rows.iter().map(|r| r["request_id"].as_str().unwrap()).collect();
    assert_eq!(row_ids, [fresh.as_str(), "trace-42:a.b_c", replaced.as_str()]);
}

// ---------------------------------------------------------------------------
// an old database

#[tokio::test]
async fn a_database_from_the_first_schema_is_migrated_with_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("old.db");
    // The database as the first release left it: only the first migration applied,
    // with sqlx's own bookkeeping.
    let first = dir.path().join("migrations-v1");
    std::fs::create_dir(&first).unwrap();
    std::fs::copy(
        repo_root().join("migrations/20261123000000_create_logs.sql"),
        first.join("20261123000000_create_logs.sql"),
    )
    .unwrap();
    {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&db)
            .create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
        sqlx::migrate::Migrator::new(first.as_path())
            .await
            .unwrap()
            .run(&pool)
            .await
            .unwrap();
        for (ts, model, response, status, error) in [
            ("2026-01-05 08:00:00.000", "old-model", Some("old answer"), 200, None),
            (
                "2026-01-05 08:01:00.000",
                "old-model",
                None,
                502,
                Some("backend unreachable"),
            ),
        ] {
            sqlx::query(
                "INSERT INTO logs (timestamp, endpoint, method, model, backend_model, prompt, response, status_code, \
                 latency_ms, stream, backend_type, done_reason, prompt_tokens, completion_tokens, error) \
                 VALUES (?, '/api/chat', 'POST', ?, 'old-backend', '[]', ?, ?, 42, 1, 'openai', 'stop', 5, 6, ?)",
            )
            .bind(ts)
            .bind(model)
            .bind(response)
            .bind(status)
            .bind(error)
            .execute(&pool)
            .await
            .unwrap();
        }
        pool.close().await;
    }
    // The CLI reads but never migrates: it says what to do.
    let out = run_cli(&["logs", "--db", db.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("older schema; start the ollabridge server on it once"),
        "{out:?}"
    );

    let mock = mock_backend().await;
    let mut bridge = Bridge::start_with_db(
        json!({
            "backend": {"type": "openai", "endpoint": mock.url, "timeout": 30},
            "models": {"mappings": {"m": "mock-model"}},
        }),
        dir,
        db,
    )
    .await;
    let (status, old) = get_json(&format!("{}/api/logs/2", bridge.admin_url)).await;
    assert_eq!(status, 200);
    assert_eq!(old["error"], "backend unreachable");
    assert_eq!(old["prompt_tokens"], 5);
    for new_column in [
        "request_id",
        "ttft_ms",
        "eval_ms",
        "tokens_per_second",
        "cost",
        "client_addr",
    ] {
        assert_eq!(old[new_column], Value::Null, "{new_column}");
    }
    assert_eq!(old["tokens_estimated"], false);
    let (status, _) = chat(&bridge, "m", "new", false).await;
    assert_eq!(status, 200);
    let listed = wait_rows(&bridge, 3).await;
    assert_eq!(listed[0]["model"], "m");
    assert_eq!(listed[2]["response_preview"], "old answer");
    let (_, stats) = get_json(&format!(
        "{}/api/stats?window=1d&until=2026-01-06T00:00:00Z",
        bridge.admin_url
    ))
    .await;
    assert_eq!(stats["overall"]["count"], 2);
    assert_eq!(stats["overall"]["ttft_ms"], json!({"p50": null, "p95": null}));

    let rows = bridge.rows().await;
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0]["response"], "old answer");
    assert_eq!(rows[2]["response"], MOCK_TEXT);
    assert!(rows[2]["request_id"].as_str().is_some_and(|id| id.len() == 32));
    let columns: Vec<String> = common::query_rows(&bridge.db, "SELECT name FROM pragma_table_info('logs')")
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect();
    for new_column in [
        "request_id",
        "ttft_ms",
        "prompt_eval_ms",
        "eval_ms",
        "tokens_per_second",
        "cost",
    ] {
        assert!(columns.iter().any(|c| c == new_column), "{new_column} in {columns:?}");
    }
    let applied = common::query_rows(&bridge.db, "SELECT version FROM _sqlx_migrations ORDER BY version");
    // (PostgreSQL's are in migrations/postgres/.)
    let migrations = std::fs::read_dir(repo_root().join("migrations"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().is_file())
        .count();
    assert_eq!(applied.len(), migrations);
}

// ---------------------------------------------------------------------------
// /api/events

/// Reads SSE events until `want` ones for `request_id` have come (or 10 s pass).
async fn events_for(
    events: &mut (impl futures::Stream<Item = Result<eventsource_stream::Event, impl std::fmt::Debug>> + Unpin),
    request_id: &str,
    want: usize,
) -> Vec<(String, Value)> {
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        while seen.len() < want {
            let event = events.next().await.expect("event stream ended").expect("event");
            let data: Value = serde_json::from_str(&event.data).unwrap();
            if data["request_id"] == request_id {
                seen.push((event.event, data));
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("events for {request_id}: only {seen:?}"));
    seen
}

#[tokio::test]
async fn events_stream_started_then_finished_and_end_at_shutdown() {
    use eventsource_stream::Eventsource;
    let mock = mock_backend().await;
    let mut bridge = Bridge::openai(&mock.url, json!({"m": "mock-model"})).await;
    let response = reqwest::get(format!("{}/api/events", bridge.admin_url)).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "text/event-stream");
    let mut events = response.bytes_stream().eventsource();

    let r = reqwest::Client::new()
        .post(format!("{}/api/chat", bridge.url))
        .header("X-Request-Id", "evt-1")
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    assert_eq!(ndjson(&body).last().unwrap()["done"], true);

    let mut seen = events_for(&mut events, "evt-1", 3).await;
    while seen.last().unwrap().0 == "progress" {
        seen.extend(events_for(&mut events, "evt-1", 1).await);
    }
    assert_eq!(seen[0].0, "started");
    assert_eq!(seen[0].1["type"], "started");
    assert_eq!(seen[0].1["endpoint"], "/api/chat");
    assert_eq!(seen[0].1["model"], "m");
    // Progress from the first token on, at most every 250 ms: growing counts.
    assert_eq!((seen[1].0.as_str(), &seen[1].1["tokens"]), ("progress", &json!(1)));
    let progress: Vec<u64> = seen[1..seen.len() - 1]
        .iter()
        .map(|(name, data)| {
            assert_eq!(name, "progress");
            data["tokens"].as_u64().unwrap()
        })
        .collect();
    assert!(progress.is_sorted() && progress.len() <= 4, "{progress:?}");
    let (name, finished) = seen.last().unwrap();
    assert_eq!(name, "finished");
    assert_eq!(finished["type"], "finished");
    assert_eq!(finished["status_code"], 200);
    assert_eq!(finished["model"], "m");
    assert_eq!(finished["response"], MOCK_TEXT);
    assert_eq!(finished["completion_tokens"], 4);

    // A listener still connected does not hold the shutdown up; its stream ends.
    tokio::time::timeout(Duration::from_secs(10), bridge.stop())
        .await
        .expect("shutdown with an event listener connected");
    let rest = tokio::time::timeout(Duration::from_secs(10), async {
        let mut rest = Vec::new();
        while let Some(event) = events.next().await {
            rest.push(event);
        }
        rest
    })
    .await
    .expect("the event stream ends at shutdown");
    assert!(rest.iter().all(|e| {
        e.as_ref()
            .is_ok_and(|e| e.data.contains("keep-alive") || e.event != "finished")
    }));
}

// ---------------------------------------------------------------------------
// ollabridge logs

async fn run_cli(args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_ollabridge"))
        .args(args)
        .env_remove("OLLABRIDGE_CONFIG")
        .output()
        .await
        .expect("run ollabridge")
}

fn cli_rows() -> Vec<LogRecord> {
    let mut first = row("2026-11-20 10:00:00.000", Some("alpha"), 120);
    first.prompt = Some(r#"[{"role":"user","content":"one"}]"#.into());
    first.response = Some("First answer".into());
    first.ttft_ms = Some(30.5);
    first.prompt_tokens = Some(10);
    first.completion_tokens = Some(5);
    first.tokens_per_second = Some(50.0);
    first.done_reason = Some("stop".into());
    let mut second = failed(
        row("2026-11-20 10:01:00.000", Some("beta"), 15),
        502,
        "backend answered HTTP 502",
    );
    second.endpoint = "/api/generate".into();
    second.prompt = Some("p2".into());
    second.stream = false;
    let mut third = row("2026-11-20 10:02:00.000", Some("alpha"), 2000);
    third.prompt = Some("three".into());
    third.response = Some("A response that is longer than forty\ncharacters, to be cut".into());
    third.ttft_ms = Some(1500.25);
    third.prompt_tokens = Some(7);
    third.completion_tokens = Some(3);
    third.cost = Some(0.5);
    third.done_reason = Some("length".into());
    vec![first, second, third]
}

fn lines(out: &std::process::Output) -> Vec<String> {
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn logs_command_prints_json_lines_and_a_table() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("log.db");
    write_rows(&db, cli_rows()).await;
    let db_arg = db.to_str().unwrap();

    let second = json!({
        "id": 2, "timestamp": "2026-11-20 10:01:00.000", "request_id": "req 2026-11-20 10:01:00.000",
        "endpoint": "/api/generate", "method": "POST", "model": "beta", "backend_model": "beta-backend",
        "status_code": 502, "latency_ms": 15, "ttft_ms": null, "stream": false, "done_reason": null,
        "prompt_tokens": null, "completion_tokens": null, "tokens_per_second": null, "cost": null,
        "error": "backend answered HTTP 502", "in_flight": false, "starred": false, "replay_of": null, "cache_hit": false,
        "prompt_preview": "p2", "response_preview": null,
    });
    let third = json!({
        "id": 3, "timestamp": "2026-11-20 10:02:00.000", "request_id": "req 2026-11-20 10:02:00.000",
        "endpoint": "/api/chat", "method": "POST", "model": "alpha", "backend_model": "alpha-backend",
        "status_code": 200, "latency_ms": 2000, "ttft_ms": 1500.25, "stream": true, "done_reason": "length",
        "prompt_tokens": 7, "completion_tokens": 3, "tokens_per_second": null, "cost": 0.5, "error": null,
        "in_flight": false, "starred": false, "replay_of": null, "cache_hit": false, "prompt_preview": "three", "response_preview": "A response that is longer than forty\ncharacters, to be cut",
    });
    // The latest two, oldest first, one JSON object a line.
    let out = run_cli(&["logs", "--db", db_arg, "--json", "--limit", "2"]).await;
    assert_eq!(lines(&out), [second.to_string(), third.to_string()]);

    let out = run_cli(&["logs", "--db", db_arg, "--errors", "--json"]).await;
    assert_eq!(lines(&out), [second.to_string()]);
    let out = run_cli(&["logs", "--db", db_arg, "--model", "alpha", "--json"]).await;
    let listed: Vec<i64> = lines(&out)
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["id"].as_i64().unwrap())
        .collect();
    assert_eq!(listed, [1, 3]);

    // The table: a header and one line per row.
    let out = run_cli(&["logs", "--db", db_arg]).await;
    assert_eq!(
        lines(&out),
        [
            "    ID  TIME                 MODEL                 STATUS  LATENCY_MS   TTFT_MS  TOKENS_IN/OUT  RESPONSE / ERROR",
            "     1  2026-11-20 10:00:00  alpha                    200         120        30           10/5  First answer",
            "     2  2026-11-20 10:01:00  beta                     502          15         -            -/-  backend answered HTTP 502",
            "     3  2026-11-20 10:02:00  alpha                    200        2000      1500            7/3  A response that is longer than forty cha",
        ]
    );

    // The database named by the config file (with the flag after the command or before it).
    let config = dir.path().join("config.json");
    std::fs::write(
        &config,
        json!({"backend": {"type": "openai", "endpoint": "http://127.0.0.1:9"}, "database": {"path": db}}).to_string(),
    )
    .unwrap();
    let config_arg = config.to_str().unwrap();
    let out = run_cli(&["logs", "--config", config_arg, "--json", "--limit", "1"]).await;
    assert_eq!(lines(&out), [third.to_string()]);
    let out = run_cli(&["--config", config_arg, "logs", "--json", "--limit", "1"]).await;
    assert_eq!(lines(&out), [third.to_string()]);

    // Mistakes.
    let missing = dir.path().join("missing.db");
    let out = run_cli(&["logs", "--db", missing.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!("ollabridge: no log database at {}\n", missing.display())
    );
    assert!(!missing.exists(), "reading never creates a database");
    let out = run_cli(&["logs", "--config", dir.path().join("nope.json").to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(2));
    let out = run_cli(&["logs", "--db", db_arg, "--limit", "0"]).await;
    assert_eq!(out.status.code(), Some(2), "clap refuses it");
}

async fn next_json_line(out: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>) -> Value {
    let line = tokio::time::timeout(Duration::from_secs(10), out.next_line())
        .await
        .expect("a line within 10 s")
        .unwrap()
        .expect("a line");
    serde_json::from_str(&line).unwrap()
}

#[tokio::test]
async fn logs_follow_prints_new_rows_as_they_come() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("log.db");
    write_rows(&db, cli_rows()).await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ollabridge"))
        .args([
            "logs",
            "--db",
            db.to_str().unwrap(),
            "--json",
            "--follow",
            "--limit",
            "1",
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(next_json_line(&mut out).await["id"], 3);
    let mut fourth = row("2026-11-20 10:03:00.000", Some("gamma"), 9);
    fourth.response = Some("fourth".into());
    let fifth = row("2026-11-20 10:04:00.000", Some("gamma"), 9);
    write_rows(&db, vec![fourth, fifth]).await;
    let four = next_json_line(&mut out).await;
    assert_eq!((&four["id"], &four["response_preview"]), (&json!(4), &json!("fourth")));
    assert_eq!(next_json_line(&mut out).await["id"], 5);
    child.kill().await.unwrap();
}
