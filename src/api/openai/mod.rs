//! OpenAI's API on the Ollama port (`/v1/chat/completions`, `/v1/completions`,
//! `/v1/embeddings`, `/v1/responses`, `/v1/models`), for clients that speak it there
//! (newer Copilot, Open WebUI, Codex). Requests pass through to the backend's own `/v1`
//! routes (a real Ollama serves them too) with the model mapped; answers come back as the
//! backend sent them, and each request is logged like an Ollama one. Errors are
//! OpenAI-shaped.

mod error;
mod handlers;
mod models;
mod responses;
mod responses_translate;
mod route;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{StatusCode, Uri};
use axum::routing::{any, get, post};

pub use error::OpenAiError;

use crate::reload::Live;

/// Whether a path belongs to this API (its errors then take OpenAI's shape).
pub fn serves(path: &str) -> bool {
    path == "/v1" || path.starts_with("/v1/")
}

/// The `/v1` routes, with their own body limit so a too-large body gets OpenAI's shape.
pub fn routes(max_body_bytes: usize) -> Router<Arc<Live>> {
    Router::new()
        .route("/v1/chat/completions", post(handlers::chat_handler))
        .route("/v1/completions", post(handlers::completions_handler))
        .route("/v1/embeddings", post(handlers::embeddings_handler))
        .route("/v1/responses", post(handlers::responses_handler))
        .route("/v1/models", get(models::list_handler))
        .route("/v1/models/{*model}", get(models::retrieve_handler))
        .route("/v1/{*rest}", any(unknown_route))
        .layer(DefaultBodyLimit::max(max_body_bytes))
}

async fn unknown_route(uri: Uri) -> OpenAiError {
    OpenAiError::new(
        StatusCode::NOT_FOUND,
        format!("{} is not an OpenAI route ollabridge serves", uri.path()),
    )
}
