//! The client API: what a request goes through on the Ollama port (and on the admin
//! port's `/ollama/...` for the dashboard), from the edge to the handler of its dialect.
//!
//! - `edge`: what every request passes before a handler: its context and id, the
//!   `Origin` check, the API key, the 413 (each in the path's API's shape).
//! - `exchange`: what every dialect shares for one exchange: the recorder that turns it
//!   into one log row.
//! - `ollama`: the Ollama API (routes under `/api`): handlers, wire types, NDJSON.
//! - `openai`: OpenAI's API on the same port (`/v1`).
//! - `anthropic`: Anthropic's Messages API on the same port (`/v1/messages`).
//! - `passthrough`: what both share to relay a request to a backend that speaks the
//!   client's dialect itself.
//!
//! [`Dialect`] says which API a path is, for the errors answered before any handler (the
//! edge, the body budget) in that API's shape.

pub mod anthropic;
pub mod edge;
pub(crate) mod exchange;
pub mod ollama;
pub mod openai;
mod passthrough;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};

use crate::reload::Live;

/// The API a request's path belongs to, each with its own error shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `{"error": "..."}`: the Ollama routes, and any path no other API claims.
    Ollama,
    /// `{"error": {"message", "type", "param", "code"}}` on `/v1`.
    OpenAi,
    /// `{"type": "error", "error": {"type", "message"}}` on `/v1/messages`.
    Anthropic,
}

impl Dialect {
    pub fn of(path: &str) -> Dialect {
        if anthropic::serves(path) {
            Dialect::Anthropic
        } else if openai::serves(path) {
            Dialect::OpenAi
        } else {
            Dialect::Ollama
        }
    }

    /// An error in the dialect's shape; `retry_after` adds `Retry-After: 1` (the SDKs
    /// honour it).
    pub fn error(self, status: StatusCode, message: String, retry_after: bool) -> Response {
        match self {
            Dialect::Ollama => {
                let mut response = (status, axum::Json(serde_json::json!({ "error": message }))).into_response();
                if retry_after {
                    response
                        .headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                }
                response
            }
            Dialect::OpenAi => openai::OpenAiError {
                retry_after,
                ..openai::OpenAiError::new(status, message)
            }
            .into_response(),
            Dialect::Anthropic => anthropic::AnthropicError {
                retry_after,
                ..anthropic::AnthropicError::new(status, message)
            }
            .into_response(),
        }
    }

    /// A missing or wrong API key: 401 with `WWW-Authenticate: Bearer` (OpenAI's with
    /// the code it answers itself, `invalid_api_key`).
    pub fn unauthorized(self, message: String) -> Response {
        let mut response = match self {
            Dialect::OpenAi => openai::OpenAiError {
                code: Some("invalid_api_key".into()),
                ..openai::OpenAiError::new(StatusCode::UNAUTHORIZED, message)
            }
            .into_response(),
            dialect => dialect.error(StatusCode::UNAUTHORIZED, message, false),
        };
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        response
    }
}

/// The Ollama API for clients: origins and API keys checked, CORS when configured.
pub fn router(live: Arc<Live>) -> Router {
    let cors = live.load().config.server.enable_cors;
    let router = routes(live.clone()).layer(axum::middleware::from_fn_with_state(live.clone(), edge::client_edge));
    if cors {
        return router.layer(edge::origin::cors(live));
    }
    router
}

/// The same API for the dashboard on the admin listener (playground and replay), which
/// checked the admin token already: logged like any client, as key id `dashboard`.
pub fn dashboard_router(live: Arc<Live>) -> Router {
    routes(live.clone()).layer(axum::middleware::from_fn_with_state(live, edge::dashboard_edge))
}

fn routes(live: Arc<Live>) -> Router {
    // Read once: needs a restart to change.
    let max_body_bytes = live.load().config.server.max_body_bytes;
    Router::new()
        .route("/", get(ollama::handlers::root_handler))
        .route("/health", get(ollama::handlers::health_handler))
        .route("/api/version", get(ollama::models_routes::version_handler))
        .route("/api/tags", get(ollama::models_routes::tags_handler))
        .route(
            "/api/show",
            post(ollama::models_routes::show_handler).get(ollama::models_routes::show_query_handler),
        )
        .route("/api/ps", get(ollama::models_routes::ps_handler))
        .route("/api/chat", post(ollama::handlers::chat_handler))
        .route("/api/generate", post(ollama::handlers::generate_handler))
        .route("/api/embed", post(ollama::embed::embed_handler))
        .route("/api/embeddings", post(ollama::embed::embeddings_handler))
        .route("/api/pull", post(ollama::models_routes::pull_handler))
        .route("/api/{*rest}", any(ollama::models_routes::other_api_handler))
        // Images make bodies big; the default allows far more than axum's 2 MB.
        .layer(DefaultBodyLimit::max(max_body_bytes))
        // OpenAI's and Anthropic's APIs, after the layers above: they answer errors in
        // their own shapes.
        .merge(openai::routes(max_body_bytes))
        .merge(anthropic::routes(max_body_bytes))
        .with_state(live)
}
