//! Anthropic's Messages API on the Ollama port (`/v1/messages`), for Claude Code and the
//! `anthropic` SDKs. Requests pass through to a backend that serves the route itself
//! (llama-server, a recent Ollama) with the model mapped; answers come back as the backend
//! sent them. A backend that does not serve the route is asked a chat instead (`translate/`).
//! Each request is logged like an Ollama one. Errors are Anthropic-shaped.

mod error;
mod messages;
mod translate;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Extension};
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use axum::routing::{any, post};

pub use error::AnthropicError;

use crate::api::edge::context::RequestContext;
use crate::api::passthrough::pass_through;
use crate::reload::{Live, Snapshot};

/// Whether a path belongs to this API (its errors then take Anthropic's shape).
pub fn serves(path: &str) -> bool {
    path == "/v1/messages" || path.starts_with("/v1/messages/")
}

/// The routes, with their own body limit so a too-large body gets Anthropic's shape.
pub fn routes(max_body_bytes: usize) -> Router<Arc<Live>> {
    Router::new()
        .route("/v1/messages", post(messages_handler))
        .route("/v1/messages/{*rest}", any(unknown_route))
        .layer(DefaultBodyLimit::max(max_body_bytes))
}

fn messages_handler(
    Snapshot(state): Snapshot,
    Extension(context): Extension<RequestContext>,
    body: Bytes,
) -> impl Future<Output = Response> {
    pass_through(state, context, messages::Messages, body)
}

async fn unknown_route(uri: Uri) -> AnthropicError {
    AnthropicError::new(
        StatusCode::NOT_FOUND,
        format!("{} is not an Anthropic route ollabridge serves", uri.path()),
    )
}
