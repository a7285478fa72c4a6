//! Errors as Anthropic writes them: `{"type": "error", "error": {"type", "message"}}` with
//! a fitting status; the SDKs pick the exception by status and show `message`. In a
//! stream that had begun, the same object is an `event: error`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};

use crate::api::passthrough::DialectError;
use crate::backend::BackendError;

#[derive(Debug, Clone, PartialEq)]
pub struct AnthropicError {
    pub status: StatusCode,
    pub message: String,
    /// Anthropic's `type`: `invalid_request_error`, `not_found_error`, `api_error`, ...
    pub kind: &'static str,
    /// 503 from a full backend queue: clients may retry.
    pub retry_after: bool,
}

/// The error types Anthropic's API answers with.
const KINDS: [&str; 9] = [
    "invalid_request_error",
    "authentication_error",
    "permission_error",
    "not_found_error",
    "request_too_large",
    "rate_limit_error",
    "api_error",
    "overloaded_error",
    "billing_error",
];

impl AnthropicError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> AnthropicError {
        AnthropicError {
            status,
            message: message.into(),
            kind: kind_for(status),
            retry_after: false,
        }
    }

    pub fn body(&self) -> Value {
        json!({ "type": "error", "error": { "type": self.kind, "message": self.message } })
    }
}

/// Anthropic's error types, by status.
fn kind_for(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

impl DialectError for AnthropicError {
    fn new(status: StatusCode, message: String) -> AnthropicError {
        AnthropicError::new(status, message)
    }

    /// A backend's failure; the backend's own `type` is kept when it is one of Anthropic's.
    fn from_backend(error: &BackendError, detail: Option<&Value>) -> AnthropicError {
        let mut e = AnthropicError::new(error.status_code(), error.to_string());
        e.retry_after = matches!(error, BackendError::Busy(_));
        let kind = detail.and_then(|d| d.get("type")).and_then(Value::as_str);
        if let Some(kind) = KINDS.iter().find(|k| Some(**k) == kind) {
            e.kind = kind;
        }
        e
    }

    fn status(&self) -> StatusCode {
        self.status
    }

    fn message(&self) -> &str {
        &self.message
    }

    fn event(&self, _sequence_number: u64) -> Bytes {
        Bytes::from(format!("event: error\ndata: {}\n\n", self.body()))
    }
}

impl IntoResponse for AnthropicError {
    fn into_response(self) -> Response {
        crate::api::passthrough::error_response(self.status, &self.body(), self.retry_after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::ResolveError;

    #[test]
    fn statuses_get_anthropic_types() {
        let kind = |status: u16| AnthropicError::new(StatusCode::from_u16(status).unwrap(), "m").kind;
        assert_eq!(
            AnthropicError::new(StatusCode::BAD_REQUEST, "m").body(),
            json!({"type": "error", "error": {"type": "invalid_request_error", "message": "m"}})
        );
        assert_eq!(
            [401, 403, 404, 413, 429, 422, 500, 502, 503, 504].map(kind),
            [
                "authentication_error",
                "permission_error",
                "not_found_error",
                "request_too_large",
                "rate_limit_error",
                "invalid_request_error",
                "api_error",
                "api_error",
                "overloaded_error",
                "api_error"
            ]
        );
    }

    #[test]
    fn unknown_models_are_not_found_and_backend_types_kept_when_anthropic_s() {
        let e = <AnthropicError as DialectError>::from_resolve(ResolveError::NotFound("x".into()));
        assert_eq!(
            (e.status, e.body()),
            (
                StatusCode::NOT_FOUND,
                json!({"type": "error", "error": {"type": "not_found_error", "message": "model 'x' not found"}})
            )
        );
        let error = BackendError::Status {
            status: 400,
            message: "bad".into(),
        };
        let with = |kind: &str| AnthropicError::from_backend(&error, Some(&json!({"type": kind}))).kind;
        assert_eq!(with("permission_error"), "permission_error");
        // llama.cpp's OpenAI-shaped types are not Anthropic's.
        assert_eq!(with("server_error"), "invalid_request_error");
        let busy = AnthropicError::from_backend(&BackendError::Busy("full".into()), None);
        assert_eq!(
            (busy.status.as_u16(), busy.kind, busy.retry_after),
            (503, "overloaded_error", true)
        );
        assert_eq!(
            AnthropicError::from_backend(&BackendError::Truncated, None).event(0),
            Bytes::from(
                "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\
                 \"message\":\"backend stream ended before the response was complete\"}}\n\n"
            )
        );
    }
}
