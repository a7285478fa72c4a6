//! The admin API the dashboard stands on: rows of requests still running, stars (kept
//! by retention), replay, stored bodies, the dashboard's files and its token rules.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

mod common;

use std::time::Duration;

use axum::http::header;
use common::holding::{ANSWER, Mock, mock};
use common::{Bridge, get_json, ndjson, post, query_rows};
use serde_json::{Value, json};

async fn bridge(mock: &Mock, database: Value, admin_token: Option<&str>) -> Bridge {
    let mut admin = json!({"host": "127.0.0.1", "port": 0});
    if let Some(token) = admin_token {
        admin["token"] = token.into();
    }
    Bridge::start(json!({
        "backend": {"type": "openai", "endpoint": mock.url, "timeout": 30},
        "models": {"mappings": {"m": "mock-model", "other": "other-model"}},
        "database": database,
        "admin": admin,
    }))
    .await
}

/// Polls the database until `sql` returns `expected`.
async fn wait_until(bridge: &Bridge, sql: &str, expected: &[Value]) {
    for _ in 0..400 {
        if query_rows(&bridge.db, sql) == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(query_rows(&bridge.db, sql), expected, "{sql}");
}

/// Polls the database until `sql` returns `n` rows (the writer commits every 50 ms).
async fn wait_for(bridge: &Bridge, sql: &str, n: usize) -> Vec<Value> {
    for _ in 0..400 {
        let rows = query_rows(&bridge.db, sql);
        if rows.len() == n {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("never {n} rows for {sql}: {:?}", query_rows(&bridge.db, sql));
}

async fn send(method: reqwest::Method, url: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

#[tokio::test]
async fn a_long_request_has_an_in_flight_row_until_it_ends() {
    let mock = mock().await;
    let mut bridge = bridge(&mock, json!({}), None).await;
    let url = format!("{}/api/chat", bridge.url);
    let held = tokio::spawn(async move {
        post(
            &url,
            json!({"model": "m", "messages": [{"role": "user", "content": "hold"}]}),
        )
        .await
    });
    // A quick request meanwhile gets its one final row and never an in-flight one.
    let (status, _, _) = post(
        &format!("{}/api/chat", bridge.url),
        json!({"model": "m", "messages": [{"role": "user", "content": "quick"}], "stream": false}),
    )
    .await;
    assert_eq!(status, 200);

    let rows = wait_for(&bridge, "SELECT * FROM logs WHERE in_flight = 1", 1).await;
    let row = &rows[0];
    assert_eq!(
        (
            &row["model"],
            &row["backend_model"],
            &row["status_code"],
            &row["latency_ms"],
            &row["response"]
        ),
        (
            &json!("m"),
            &json!("mock-model"),
            &Value::Null,
            &Value::Null,
            &Value::Null
        )
    );
    let in_flight_id = row["id"].as_i64().unwrap();
    // Listed with the others, marked, and not counted in the stats.
    let (_, page) = get_json(&format!("{}/api/logs", bridge.admin_url)).await;
    let listed: Vec<(i64, bool)> = page["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["id"].as_i64().unwrap(), r["in_flight"].as_bool().unwrap()))
        .collect();
    assert_eq!(listed, [(in_flight_id, true), (1, false)]);
    let (_, stats) = get_json(&format!("{}/api/stats?window=1h", bridge.admin_url)).await;
    assert_eq!(stats["overall"]["count"], 1, "{stats}");
    // A star given while it runs stays with its final row.
    let star = format!("{}/api/logs/{in_flight_id}/starred", bridge.admin_url);
    assert_eq!(
        send(reqwest::Method::PUT, &star, None, Some(json!({"starred": true})))
            .await
            .0,
        200
    );
    let (status, replay) = send(
        reqwest::Method::POST,
        &format!("{}/api/replay/{in_flight_id}", bridge.admin_url),
        None,
        None,
    )
    .await;
    assert_eq!(
        (status, replay),
        (400, json!({"error": format!("log {in_flight_id} is still running")}))
    );

    mock.release.notify_one();
    let (status, _, body) = held.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(ndjson(&body).last().unwrap()["done"], true);
    let rows = bridge.rows().await;
    let summary: Vec<(i64, i64, i64, Value)> = rows
        .iter()
        .map(|r| {
            (
                r["id"].as_i64().unwrap(),
                r["in_flight"].as_i64().unwrap(),
                r["starred"].as_i64().unwrap(),
                r["response"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (1, 0, 0, json!(format!("{ANSWER} (mock-model)"))),
            (in_flight_id + 1, 0, 1, json!(ANSWER)),
        ]
    );
}

#[tokio::test]
async fn rows_left_in_flight_by_a_stopped_server_are_closed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ollabridge.db");
    let pool = ollabridge::store::open(&db).await.unwrap();
    sqlx::query(
        "INSERT INTO logs (timestamp, endpoint, method, model, in_flight) \
         VALUES ('2026-01-01 00:00:00.000', '/api/chat', 'POST', 'm', 1)",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    let mut bridge = Bridge::start_with_db(
        json!({"backend": {"type": "openai", "endpoint": "http://127.0.0.1:9"}}),
        dir,
        db,
    )
    .await;
    let rows = bridge.rows().await;
    assert_eq!(
        (&rows[0]["in_flight"], &rows[0]["error"], &rows[0]["status_code"]),
        (
            &json!(0),
            &json!("ollabridge stopped before the request finished"),
            &Value::Null
        )
    );
}

#[tokio::test]
async fn stars_are_set_listed_and_kept_by_retention() {
    let mock = mock().await;
    // Retention keeps one row; it runs every 0.2 s.
    let bridge = bridge(&mock, json!({"retention": {"max_rows": 1, "interval": 0.2}}), None).await;
    for content in ["one", "two"] {
        let (status, _, _) = post(
            &format!("{}/api/chat", bridge.url),
            json!({"model": "m", "messages": [{"role": "user", "content": content}], "stream": false}),
        )
        .await;
        assert_eq!(status, 200);
        wait_for(
            &bridge,
            &format!("SELECT id FROM logs WHERE prompt LIKE '%\"{content}\"%'"),
            1,
        )
        .await;
        if content == "one" {
            let url = format!("{}/api/logs/1/starred", bridge.admin_url);
            let answer = send(reqwest::Method::PUT, &url, None, Some(json!({"starred": true}))).await;
            assert_eq!(answer, (200, json!({"id": 1, "starred": true})));
        }
    }
    let third = post(
        &format!("{}/api/chat", bridge.url),
        json!({"model": "m", "messages": [{"role": "user", "content": "three"}], "stream": false}),
    )
    .await;
    assert_eq!(third.0, 200);
    // Row 2 goes (beyond the newest one, not starred); starred row 1 stays.
    wait_until(
        &bridge,
        "SELECT id, starred FROM logs ORDER BY id",
        &[json!({"id": 1, "starred": 1}), json!({"id": 3, "starred": 0})],
    )
    .await;
    let (_, starred) = get_json(&format!("{}/api/logs?starred=true", bridge.admin_url)).await;
    let ids: Vec<&Value> = starred["logs"].as_array().unwrap().iter().map(|r| &r["id"]).collect();
    assert_eq!(ids, [&json!(1)]);

    let admin = &bridge.admin_url;
    let put = |id: &str, body: Value| {
        let url = format!("{admin}/api/logs/{id}/starred");
        async move { send(reqwest::Method::PUT, &url, None, Some(body)).await }
    };
    assert_eq!(
        put("1", json!({"starred": false})).await,
        (200, json!({"id": 1, "starred": false}))
    );
    assert_eq!(
        put("99", json!({"starred": true})).await,
        (404, json!({"error": "log 99 not found"}))
    );
    assert_eq!(
        put("1", json!({"star": true})).await,
        (
            400,
            json!({"error": "invalid body: unknown field `star`, expected `starred` at line 1 column 7; expected {\"starred\": true} or false"})
        )
    );
    assert_eq!(
        put("x", json!({"starred": true})).await,
        (
            400,
            json!({"error": "invalid 'id': expected a row id (a whole number from 1), got 'x'"})
        )
    );
}

#[tokio::test]
async fn replay_runs_the_stored_request_again_and_links_the_rows() {
    let mock = mock().await;
    let mut bridge = bridge(&mock, json!({"store_bodies": true}), None).await;
    let request = json!({"model": "m", "messages": [{"role": "user", "content": "quick"}], "stream": false,
                         "options": {"temperature": 0}});
    let (status, _, _) = post(&format!("{}/api/chat", bridge.url), request.clone()).await;
    assert_eq!(status, 200);
    wait_for(&bridge, "SELECT id FROM logs", 1).await;

    let replay_url = format!("{}/api/replay/1", bridge.admin_url);
    let (status, replay) = send(
        reqwest::Method::POST,
        &replay_url,
        None,
        Some(json!({"model": "other"})),
    )
    .await;
    assert_eq!(status, 200, "{replay}");
    assert_eq!(replay["original"]["id"], 1);
    assert_eq!(replay["original"]["request_body"], request);
    let r = &replay["replay"];
    assert_eq!(
        (
            &r["status"],
            &r["source"],
            &r["answer"]["model"],
            &r["answer"]["message"]["content"]
        ),
        (
            &json!(200),
            &json!("request_body"),
            &json!("other"),
            &json!(format!("{ANSWER} (other-model)"))
        )
    );
    assert_eq!(r["request_id"].as_str().unwrap().len(), 32);
    assert!(r["latency_ms"].as_f64().unwrap() > 0.0);
    // Logged like any request, linked to its original, from the dashboard.
    wait_for(&bridge, "SELECT id FROM logs", 2).await;
    let (_, original) = get_json(&format!("{}/api/logs/1", bridge.admin_url)).await;
    assert_eq!(original["replays"], json!([2]));
    let (_, second) = get_json(&format!("{}/api/logs/2", bridge.admin_url)).await;
    assert_eq!(
        (
            &second["replay_of"],
            &second["client_key"],
            &second["model"],
            &second["request_id"]
        ),
        (&json!(1), &json!("dashboard"), &json!("other"), &r["request_id"])
    );
    // The replayed body is the original with the model and `stream` changed, options kept.
    let mut sent = request.clone();
    sent["model"] = "other".into();
    assert_eq!(second["request_body"], sent);
    let backend_request: Value = serde_json::from_str(second["backend_request"].as_str().unwrap()).unwrap();
    assert_eq!(
        (&backend_request["model"], &backend_request["temperature"]),
        (&json!("other-model"), &json!(0))
    );

    // A replay of a replay is linked to the one it repeats.
    let (status, again) = send(
        reqwest::Method::POST,
        &format!("{}/api/replay/2", bridge.admin_url),
        None,
        None,
    )
    .await;
    assert_eq!(
        (status, &again["replay"]["source"]),
        (200, &json!("request_body")),
        "{again}"
    );

    let admin = bridge.admin_url.clone();
    for (path, body, expected) in [
        ("/api/replay/9", json!({}), (404, json!({"error": "log 9 not found"}))),
        (
            "/api/replay/1",
            json!({"modle": "x"}),
            (
                400,
                json!({"error": "invalid body: unknown field `modle`, expected `model` or `backend` at line 1 column 8"}),
            ),
        ),
    ] {
        let got = send(reqwest::Method::POST, &format!("{admin}{path}"), None, Some(body)).await;
        assert_eq!(got, expected, "{path}");
    }
    // A backend that does not exist: the replay's own answer says so (and is logged).
    let (status, pinned) = send(
        reqwest::Method::POST,
        &format!("{admin}/api/replay/1"),
        None,
        Some(json!({"backend": "elsewhere"})),
    )
    .await;
    assert_eq!(
        (status, &pinned["replay"]["status"], &pinned["replay"]["answer"]),
        (
            200,
            &json!(400),
            &json!({"error": "no backend named 'elsewhere' (backends: openai)"})
        )
    );
    let rows = bridge.rows().await;
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[2]["replay_of"], 2);
}

#[tokio::test]
async fn replay_without_stored_bodies_rebuilds_the_request_from_the_row() {
    let mock = mock().await;
    let mut bridge = bridge(&mock, json!({}), None).await;
    let (status, _, _) = post(
        &format!("{}/api/chat", bridge.url),
        json!({"model": "m", "messages": [{"role": "user", "content": "quick"}], "stream": false}),
    )
    .await;
    assert_eq!(status, 200);
    wait_for(&bridge, "SELECT id FROM logs", 1).await;
    let (status, replay) = send(
        reqwest::Method::POST,
        &format!("{}/api/replay/1", bridge.admin_url),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200, "{replay}");
    assert_eq!(
        (
            &replay["replay"]["source"],
            &replay["replay"]["answer"]["message"]["content"]
        ),
        (&json!("rebuilt"), &json!(format!("{ANSWER} (mock-model)")))
    );
    let rows = bridge.rows().await;
    assert_eq!(
        (&rows[1]["replay_of"], &rows[1]["prompt"], &rows[1]["request_body"]),
        (&json!(1), &rows[0]["prompt"], &Value::Null)
    );
}

#[tokio::test]
async fn stored_bodies_hold_what_went_over_the_wire() {
    let mock = mock().await;
    let mut bridge = bridge(&mock, json!({"store_bodies": true, "max_body_bytes": 64}), None).await;
    let request = json!({"model": "m", "messages": [{"role": "user", "content": "quick"}]});
    let (status, _, _) = post(&format!("{}/api/chat", bridge.url), request.clone()).await;
    assert_eq!(status, 200);
    let rows = bridge.rows().await;
    let row = &rows[0];
    assert_eq!(row["request_body"], request.to_string());
    // Cut to 64 bytes in all, the note saying how long they were included.
    let backend_request = row["backend_request"].as_str().unwrap();
    assert_eq!(backend_request.len(), 64, "{backend_request}");
    let (kept, note) = backend_request.split_at(backend_request.find('…').unwrap());
    assert!(
        r#"{"model":"mock-model","messages":[{"role":"user","content":"quic"#.starts_with(kept),
        "{backend_request}"
    );
    let total: usize = note
        .strip_prefix("…[truncated, ")
        .and_then(|n| n.strip_suffix(" bytes in all]"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{backend_request}"));
    assert!(total > 64, "{backend_request}");
    let response = row["backend_response"].as_str().unwrap();
    let whole = format!(
        "data: {}\n\n",
        json!({"object": "chat.completion.chunk", "model": "mock-model",
               "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": null}]})
    );
    let note = format!("…[truncated, {} bytes in all]", response_total(&whole));
    assert_eq!(response, format!("{}{note}", &whole[..64 - note.len()]));
}

/// The mock's whole SSE answer to a streamed "quick", in bytes.
fn response_total(first: &str) -> usize {
    let model = "mock-model";
    let chunk = |content: &str, finish: Value| {
        json!({"object": "chat.completion.chunk", "model": model,
               "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}]})
    };
    let rest = format!(
        "data: {}\n\ndata: {}\n\ndata: [DONE]\n\n",
        chunk(" from the mock.", Value::Null),
        chunk("", json!("stop"))
    );
    first.len() + rest.len()
}

#[tokio::test]
async fn the_dashboard_is_served_and_its_data_needs_the_admin_token() {
    let mock = mock().await;
    let mut bridge = bridge(&mock, json!({}), Some("s3cret-token")).await;
    let admin = bridge.admin_url.clone();
    // The page needs no token; it holds no data.
    let page = reqwest::get(format!("{admin}/")).await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()[header::CONTENT_TYPE], "text/html");
    assert!(page.text().await.unwrap().contains("ollabridge"));
    let (status, missing) = get_json(&format!("{admin}/no-such-file.js")).await;
    assert_eq!(
        (status, missing),
        (404, json!({"error": "not found: /no-such-file.js"}))
    );
    // Data and the Ollama API under /ollama do.
    for path in ["/api/logs", "/ollama/api/tags", "/metrics"] {
        let (status, body) = send(reqwest::Method::GET, &format!("{admin}{path}"), None, None).await;
        assert_eq!(
            (status, body),
            (
                401,
                json!({"error": "unauthorized: missing admin token (send Authorization: Bearer <key>)"})
            ),
            "{path}"
        );
    }
    let (status, answer) = send(
        reqwest::Method::POST,
        &format!("{admin}/ollama/api/chat"),
        Some("s3cret-token"),
        Some(json!({"model": "m", "messages": [{"role": "user", "content": "quick"}], "stream": false})),
    )
    .await;
    assert_eq!(
        (status, &answer["message"]["content"]),
        (200, &json!(format!("{ANSWER} (mock-model)")))
    );
    let rows = bridge.rows().await;
    assert_eq!(
        (&rows[0]["client_key"], &rows[0]["endpoint"]),
        (&json!("dashboard"), &json!("/api/chat"))
    );
}
