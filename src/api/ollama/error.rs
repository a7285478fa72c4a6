//! Errors as Ollama writes them: `{"error": "..."}` with the error's status.

use axum::Json;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::api::exchange::ExchangeError;

/// An exchange error in Ollama's shape (the recorder's [`Render`](crate::api::exchange::Render)
/// for the Ollama routes).
pub fn render(error: ExchangeError) -> Response {
    let mut response = (
        error.status_code(),
        Json(serde_json::json!({ "error": error.to_string() })),
    )
        .into_response();
    if error.retry_after() {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}
