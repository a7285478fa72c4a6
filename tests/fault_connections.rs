//! The fault suite, connection part: clients that connect and then send nothing, or
//! trickle their headers, or never start their TLS handshake, must not keep the others
//! from being served (`server.max_connections`, `server.header_read_timeout`, the TLS
//! handshake in each connection's own task). Loopback only, bounded in count and time.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::{get, post};
use common::Bridge;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longer than any of these tests takes when the server behaves; only a hang hits it.
const HANG: Duration = Duration::from_secs(10);

/// An OpenAI backend answering every chat with "ok".
async fn backend() -> String {
    let app = Router::new()
        .route("/v1/models", get(|| async { axum::Json(json!({"data": [{"id": "m"}]})) }))
        .route(
        "/v1/chat/completions",
        post(|| async {
            axum::Json(json!({
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1}
            }))
        }),
    );
    common::serve(app).await.0
}

fn address(url: &str) -> SocketAddr {
    url.trim_start_matches("http://").parse().expect("bridge address")
}

/// POST /api/chat, non-streaming, through `client`; the status and the answer's content.
async fn chat(client: &reqwest::Client, base: &str) -> (u16, Value) {
    let request = client
        .post(format!("{base}/api/chat"))
        .json(&json!({"model": "m", "stream": false, "messages": [{"role": "user", "content": "hi"}]}))
        .send();
    let response = tokio::time::timeout(HANG, request)
        .await
        .expect("the request hung")
        .expect("request");
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("JSON body");
    (status, json!([body["message"], body["done"]]))
}

/// Reads until the server closes the connection: `Ok(bytes read)`, or `Err` when the
/// read hung (the server kept it open).
async fn closed_by_server(mut socket: TcpStream) -> Result<usize, String> {
    let mut received = Vec::new();
    match tokio::time::timeout(HANG, socket.read_to_end(&mut received)).await {
        Ok(Ok(n)) => Ok(n),
        Ok(Err(e)) => Err(format!("read failed: {e}")),
        Err(_) => Err("still open".into()),
    }
}

fn answered() -> Value {
    json!([{"role": "assistant", "content": "ok"}, true])
}

/// More idle connections than `max_connections`: each is closed once the header timeout
/// passes, the ones waiting in the backlog get their turn, and real requests are served
/// and logged. Without the fix the idle connections stay open for ever (the reads hang).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_flood_neither_starves_clients_nor_stays_open() {
    const CAP: usize = 32;
    const IDLE: usize = CAP + 16;
    let backend = backend().await;
    let mut bridge = Bridge::start(json!({
        "server": {"max_connections": CAP, "header_read_timeout": 1},
        "backend": {"type": "openai", "endpoint": backend},
    }))
    .await;
    let mut idle = Vec::new();
    for _ in 0..IDLE {
        idle.push(TcpStream::connect(address(&bridge.url)).await.expect("connect"));
    }
    // The admin listener has the same limits.
    let idle_admin = TcpStream::connect(address(&bridge.admin_url))
        .await
        .expect("connect admin");

    let client = reqwest::Client::new();
    let answers = futures::future::join_all((0..4).map(|_| chat(&client, &bridge.url))).await;
    assert_eq!(answers, vec![(200, answered()); 4]);

    let closed = futures::future::join_all(idle.into_iter().map(closed_by_server)).await;
    assert_eq!(
        closed,
        vec![Ok(0); IDLE],
        "every idle connection is closed, nothing sent"
    );
    assert_eq!(closed_by_server(idle_admin).await, Ok(0));

    let rows = bridge.rows().await;
    let logged: Vec<(&Value, &Value)> = rows.iter().map(|r| (&r["endpoint"], &r["status_code"])).collect();
    assert_eq!(logged, vec![(&json!("/api/chat"), &json!(200)); 4]);
}

/// At the cap nothing more is accepted until a connection closes: a request behind an
/// idle connection is answered only once the idle one has been closed. Without the cap
/// it is answered at once, while the idle one is still open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_cap_a_new_connection_waits_for_one_to_close() {
    let backend = backend().await;
    let mut bridge = Bridge::start(json!({
        "server": {"max_connections": 1, "header_read_timeout": 1},
        "backend": {"type": "openai", "endpoint": backend},
    }))
    .await;
    // Connected first, so accepted first (the backlog is a queue).
    let idle = std::net::TcpStream::connect(address(&bridge.url)).expect("connect");
    idle.set_nonblocking(true).expect("non-blocking");
    assert_eq!(chat(&reqwest::Client::new(), &bridge.url).await, (200, answered()));
    let now = std::io::Read::read(&mut &idle, &mut [0; 16]).map_err(|e| e.kind());
    assert_eq!(
        now,
        Ok(0),
        "the idle connection is closed by the time the request is answered"
    );
    let rows = bridge.rows().await;
    let logged: Vec<(&Value, &Value)> = rows.iter().map(|r| (&r["endpoint"], &r["status_code"])).collect();
    assert_eq!(logged, vec![(&json!("/api/chat"), &json!(200))]);
}

/// A client that sends its headers a byte a second is cut off once the header timeout
/// has passed, however steadily it sends. Without the fix it stays connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_client_is_disconnected_after_the_header_timeout() {
    const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
    let mut bridge = Bridge::start(json!({
        "server": {"header_read_timeout": HEADER_TIMEOUT.as_secs_f64()},
        "backend": {"type": "openai", "endpoint": "http://127.0.0.1:1"},
    }))
    .await;
    let head = b"POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\r\n";
    // Before connecting: the server's timer starts at accept.
    let started = Instant::now();
    let socket = TcpStream::connect(address(&bridge.url)).await.expect("connect");
    let (mut reader, mut writer) = socket.into_split();
    let trickle = tokio::spawn(async move {
        let mut sent = 0;
        for byte in head {
            if writer.write_all(&[*byte]).await.is_err() {
                break;
            }
            sent += 1;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        sent
    });
    let mut received = Vec::new();
    let read = tokio::time::timeout(HANG, reader.read_to_end(&mut received)).await;
    let elapsed = started.elapsed();
    // The server closes with the trickle's latest byte still unread in its socket, and
    // a kernel closing a socket with unread data resets the connection instead of
    // ending it: either way the server closed it (this client never does), with nothing sent.
    let closed =
        matches!(read, Ok(Ok(0))) || matches!(&read, Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset);
    assert!(closed, "not closed by the server: {read:?}");
    assert_eq!(received, b"", "the server answered the unfinished head");
    assert!(
        elapsed >= HEADER_TIMEOUT,
        "closed after {elapsed:?}, before the header timeout"
    );
    trickle.abort();
    let sent = trickle.await.unwrap_or(0);
    assert!(sent < head.len(), "the whole head went through ({sent} bytes)");
    assert_eq!(bridge.rows().await, Vec::<Value>::new(), "no request, no row");
}

/// hyper's header timer also runs while a keep-alive connection waits for its next
/// request, so `server.header_read_timeout` is the idle timeout too: a client that got
/// its answer and then sends nothing is closed once it passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    const HEADER_TIMEOUT: Duration = Duration::from_secs(1);
    let bridge = Bridge::start(json!({
        "server": {"header_read_timeout": HEADER_TIMEOUT.as_secs_f64()},
        "backend": {"type": "openai", "endpoint": "http://127.0.0.1:1"},
    }))
    .await;
    let mut socket = TcpStream::connect(address(&bridge.url)).await.expect("connect");
    socket
        .write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .expect("send request");
    let asked = Instant::now();
    let mut received = Vec::new();
    let read = tokio::time::timeout(HANG, socket.read_to_end(&mut received)).await;
    let elapsed = asked.elapsed();
    assert!(matches!(read, Ok(Ok(_))), "not closed by the server: {read:?}");
    let response = String::from_utf8_lossy(&received);
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(
        response.ends_with("\r\n\r\nOllama is running"),
        "one answer, then the close: {response}"
    );
    assert!(!response.contains("connection: close"), "kept alive: {response}");
    assert!(
        elapsed >= HEADER_TIMEOUT,
        "closed after {elapsed:?}, before the timeout"
    );
}

/// Connections that never send a ClientHello do not hold up an HTTPS client: each
/// handshake runs in its connection's task. Before, the accept loop waited out each
/// one's 10 s handshake timeout in turn, ~60 s for these six.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_tls_handshakes_do_not_delay_other_clients() {
    const BOUND: Duration = Duration::from_secs(5);
    let dir = tempfile::tempdir().unwrap();
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, generated.cert.pem()).unwrap();
    std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
    let backend = backend().await;
    let mut bridge = Bridge::start(json!({
        "server": {"tls": {"cert": cert, "key": key}},
        "backend": {"type": "openai", "endpoint": backend},
    }))
    .await;
    let addr = address(&bridge.url);
    let mut silent = Vec::new();
    for _ in 0..6 {
        silent.push(TcpStream::connect(addr).await.expect("connect"));
    }
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(generated.cert.pem().as_bytes()).unwrap())
        .resolve("localhost", addr)
        .build()
        .unwrap();
    let https = format!("https://localhost:{}", addr.port());
    let answer = tokio::time::timeout(BOUND, chat(&client, &https))
        .await
        .expect("the HTTPS request waited behind the silent handshakes");
    assert_eq!(answer, (200, answered()));

    // Shutdown drops the connections still handshaking instead of waiting for them.
    let rows = tokio::time::timeout(BOUND, bridge.rows())
        .await
        .expect("shutdown waited for the silent handshakes");
    let logged: Vec<(&Value, &Value)> = rows.iter().map(|r| (&r["endpoint"], &r["status_code"])).collect();
    assert_eq!(logged, vec![(&json!("/api/chat"), &json!(200))]);
    drop(silent);
}
