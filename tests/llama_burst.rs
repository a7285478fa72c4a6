//! Bursts through ollabridge to the real llama-server with a default config.
//!
//! llama-server serves each HTTP connection on one of its few HTTP threads
//! (max(-np + 2, cores - 1)) and keeps an idle keep-alive connection, and its thread,
//! for 5 s. Sending it more requests at once than it has threads made the rest wait
//! behind ollabridge's idle pooled connections, 5 s per wave; by default ollabridge now
//! sends a llama-server at most as many requests as it has slots.

mod common;

use std::time::{Duration, Instant};

use common::{Bridge, LlamaServer, get_json, post, script};
use serde_json::{Value, json};

/// A hang detector, not a speed target: the stall was 5 s; unstalled, a burst of these
/// tiny answers takes well under a second.
const STALL: Duration = Duration::from_secs(4);

#[tokio::test]
async fn bursts_beyond_llama_servers_http_threads_never_stall_with_the_default_config() {
    // `-np 4`: four slots, six HTTP threads.
    let llama = LlamaServer::start("tiny-chat").await;
    let mut bridge = Bridge::openai(&llama.url, json!({"tiny": "tiny-chat"})).await;
    let text = script("tiny-chat")["text"].as_str().unwrap().to_owned();
    let body =
        json!({"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "stream": false, "think": false});
    for burst in 0..4 {
        let requests = (0..16).map(|_| async {
            let started = Instant::now();
            let (status, _, answer) = post(&format!("{}/api/chat", bridge.url), body.clone()).await;
            (status, answer, started.elapsed())
        });
        for (status, answer, took) in futures::future::join_all(requests).await {
            let answer: Value = serde_json::from_str(&answer).unwrap();
            assert_eq!(
                (status, answer["message"]["content"].as_str()),
                (200, Some(text.as_str())),
                "burst {burst}: {answer}"
            );
            assert!(took < STALL, "burst {burst}: a request took {took:?}");
        }
    }
    let (_, backends) = get_json(&format!("{}/api/backends", bridge.admin_url)).await;
    let backend = &backends["backends"][0];
    assert_eq!(
        (&backend["max_concurrent"], &backend["max_concurrent_source"]),
        (&json!(4), &json!("llama-server"))
    );
    let rows = bridge.rows().await;
    assert_eq!(rows.len(), 64);
    assert!(rows.iter().all(|r| r["status_code"] == 200 && r["error"].is_null()));
}
