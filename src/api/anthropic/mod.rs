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
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
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
        .layer(axum::middleware::map_response(move |response: Response| async move {
            body_too_large(response, max_body_bytes)
        }))
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

/// axum refuses an oversized body in plain text; a backend's own 413 (JSON) passes.
fn body_too_large(response: Response, limit: usize) -> Response {
    if !crate::api::edge::is_body_limit_refusal(&response) {
        return response;
    }
    let message = format!("request body is larger than server.max_body_bytes ({limit} bytes)");
    AnthropicError::new(StatusCode::PAYLOAD_TOO_LARGE, message).into_response()
}

/// A missing or wrong API key: the Ollama routes' 401, in Anthropic's shape.
pub fn unauthorized(message: &str) -> Response {
    let mut response = AnthropicError::new(StatusCode::UNAUTHORIZED, message).into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}
