//! Bursts through ollabridge to the real llama-server with a default config.
//!
//! llama-server serves each HTTP connection on one of its HTTP threads and keeps an
//! idle keep-alive connection, and its thread, for 5 s. The build here has
//! max(-np + 4, cores - 1) fixed threads and adds one only when none is idle as a
//! connection is queued, so connections arriving at once outrun it. Sending it more
//! requests at once than it has threads made the rest wait behind ollabridge's idle
//! pooled connections, 5 s per wave; by default ollabridge now sends a llama-server at
//! most as many requests as it has slots.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

mod common;

use std::time::{Duration, Instant};

use common::{Bridge, LlamaServer, get_json, post, script};
use serde_json::{Value, json};

/// A hang detector, not a speed target: the stall was 5 s; unstalled, a burst of these
/// tiny answers takes well under a second after the pause below.
const STALL: Duration = Duration::from_secs(4);

/// How long llama-server is paused while a burst arrives: long enough for ollabridge
/// (a debug build here) to have sent all it will send.
const PAUSE: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_beyond_llama_servers_http_threads_never_stall_with_the_default_config() {
    // `-np 4`: four slots, eight fixed HTTP threads.
    let llama = LlamaServer::start("tiny-chat").await;
    let mut bridge = Bridge::openai(&llama.url, json!({"tiny": "tiny-chat"})).await;
    let text = script("tiny-chat")["text"].as_str().unwrap().to_owned();
    let body =
        json!({"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "stream": false, "think": false});
    let chat = || async {
        let started = Instant::now();
        let (status, _, answer) = post(&format!("{}/api/chat", bridge.url), body.clone()).await;
        let answer: Value = serde_json::from_str(&answer).unwrap();
        (
            status,
            answer["message"]["content"].as_str().map(str::to_owned),
            started.elapsed(),
        )
    };
    // The first request waits for the first look at llama-server's slot count.
    let (status, answer, _) = chat().await;
    assert_eq!((status, answer.as_deref()), (200, Some(text.as_str())));
    for burst in 0..3 {
        // Paused, so all that ollabridge sends arrives at once, as at a busy server;
        // an unpaused tiny model answers faster than a burst builds up.
        llama.pause();
        let requests = futures::future::join_all((0..16).map(|_| chat()));
        let resume = async {
            tokio::time::sleep(PAUSE).await;
            llama.resume();
        };
        let (answers, ()) = tokio::join!(requests, resume);
        for (status, answer, took) in answers {
            assert_eq!((status, answer.as_deref()), (200, Some(text.as_str())), "burst {burst}");
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
    assert_eq!(rows.len(), 49);
    assert!(rows.iter().all(|r| r["status_code"] == 200 && r["error"].is_null()));
}
