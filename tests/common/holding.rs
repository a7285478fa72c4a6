//! An OpenAI-style mock backend whose answers the test can hold open: a user message
//! "hold" streams its first piece, then waits for `release` before finishing.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::Notify;

pub const ANSWER: &str = "Hi from the mock.";

/// An OpenAI-style backend. A user message "hold" streams its first piece, then waits
/// for `release` before finishing, so the test decides how long the request runs.
pub struct Mock {
    pub url: String,
    pub release: Arc<Notify>,
    _task: tokio::task::JoinHandle<()>,
}

pub async fn mock() -> Mock {
    async fn chat(State(release): State<Arc<Notify>>, body: Bytes) -> Response {
        let request: Value = serde_json::from_slice(&body).unwrap();
        let model = request["model"].as_str().unwrap().to_owned();
        let usage = json!({"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7});
        if request["stream"] != true {
            return axum::Json(json!({
                "object": "chat.completion", "model": model,
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": format!("{ANSWER} ({model})")}}],
                "usage": usage,
            }))
            .into_response();
        }
        let hold = request["messages"][0]["content"] == "hold";
        let chunk = |content: &str, finish: Value| {
            json!({"object": "chat.completion.chunk", "model": model,
                   "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}]})
        };
        let first = format!("data: {}\n\n", chunk("Hi", Value::Null));
        let rest = format!(
            "data: {}\n\ndata: {}\n\ndata: [DONE]\n\n",
            chunk(" from the mock.", Value::Null),
            chunk("", json!("stop"))
        );
        let pieces = futures::stream::unfold(0, move |step| {
            let (release, first, rest) = (release.clone(), first.clone(), rest.clone());
            async move {
                match step {
                    0 => Some((Ok::<_, std::io::Error>(first), 1)),
                    1 => {
                        if hold {
                            release.notified().await;
                        }
                        Some((Ok(rest), 2))
                    }
                    _ => None,
                }
            }
        });
        (
            [(header::CONTENT_TYPE, "text/event-stream")],
            axum::body::Body::from_stream(pieces),
        )
            .into_response()
    }
    let release = Arc::new(Notify::new());
    let app = axum::Router::new()
        .route(
            "/v1/models",
            axum::routing::get(|| async { axum::Json(json!({"object": "list", "data": [{"id": "mock-model"}]})) }),
        )
        .route("/v1/chat/completions", axum::routing::post(chat))
        .with_state(release.clone());
    let (url, task) = super::serve(app).await;
    Mock {
        url,
        release,
        _task: task,
    }
}
