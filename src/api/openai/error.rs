//! Errors as OpenAI writes them: `{"error": {"message", "type", "param", "code"}}` with
//! a fitting status. OpenAI's SDKs pick the exception by status and show `message`. In a
//! stream that had begun, chat completions' last event is the same object; the Responses
//! API's is its own `error` event ([`ResponsesError`]).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};

use crate::api::exchange::ExchangeError;
use crate::api::passthrough::DialectError;
use crate::backend::BackendError;
use crate::models::ResolveError;

#[derive(Debug, Clone, PartialEq)]
pub struct OpenAiError {
    pub status: StatusCode,
    pub message: String,
    /// OpenAI's `type`: `invalid_request_error`, `authentication_error`, `api_error`, ...
    pub kind: String,
    pub param: Option<String>,
    pub code: Option<String>,
    /// 503 from a full backend queue: clients may retry (OpenAI's SDKs honour `Retry-After`).
    pub retry_after: bool,
}

impl OpenAiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> OpenAiError {
        OpenAiError {
            status,
            message: message.into(),
            kind: type_for(status).to_owned(),
            param: None,
            code: None,
            retry_after: false,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> OpenAiError {
        OpenAiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// A backend failure, with the backend's own `type`, `param` and `code` when it sent
    /// an OpenAI-shaped error object (`detail`): clients such as LangChain read `code`.
    pub fn from_backend(error: &BackendError, detail: Option<&Value>) -> OpenAiError {
        let mut e = OpenAiError::new(error.status_code(), error.to_string());
        e.retry_after = matches!(error, BackendError::Busy(_));
        let Some(detail) = detail.filter(|d| d.is_object()) else {
            return e;
        };
        if let Some(kind) = detail.get("type").and_then(Value::as_str).filter(|t| !t.is_empty()) {
            e.kind = kind.to_owned();
        }
        for (key, field) in [("param", &mut e.param), ("code", &mut e.code)] {
            if let Some(value) = detail.get(key).and_then(Value::as_str) {
                *field = Some(value.to_owned());
            }
        }
        e
    }

    pub fn body(&self) -> Value {
        json!({ "error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        } })
    }
}

/// OpenAI's error types, by status.
fn type_for(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

impl DialectError for OpenAiError {
    fn new(status: StatusCode, message: String) -> OpenAiError {
        OpenAiError::new(status, message)
    }

    fn from_backend(error: &BackendError, detail: Option<&Value>) -> OpenAiError {
        OpenAiError::from_backend(error, detail)
    }

    fn from_resolve(error: ResolveError) -> OpenAiError {
        OpenAiError::from(error)
    }

    fn status(&self) -> StatusCode {
        self.status
    }

    fn message(&self) -> &str {
        &self.message
    }

    /// Chat completions' (and completions'): the error object as one `data` event.
    fn event(&self, _sequence_number: u64) -> Bytes {
        Bytes::from(format!("data: {}\n\n", self.body()))
    }
}

/// An error on `/v1/responses`: OpenAI's error object as an answer, and in a stream the
/// Responses API's `error` event, `{"type": "error", "code", "message", "param",
/// "sequence_number"}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponsesError(pub OpenAiError);

impl DialectError for ResponsesError {
    fn new(status: StatusCode, message: String) -> ResponsesError {
        ResponsesError(OpenAiError::new(status, message))
    }

    fn from_backend(error: &BackendError, detail: Option<&Value>) -> ResponsesError {
        ResponsesError(OpenAiError::from_backend(error, detail))
    }

    fn from_resolve(error: ResolveError) -> ResponsesError {
        ResponsesError(OpenAiError::from(error))
    }

    fn status(&self) -> StatusCode {
        self.0.status
    }

    fn message(&self) -> &str {
        &self.0.message
    }

    /// `code` is the backend's code, else the error's type (clients branch on it).
    fn event(&self, sequence_number: u64) -> Bytes {
        let e = &self.0;
        let data = json!({
            "type": "error",
            "code": e.code.as_deref().unwrap_or(&e.kind),
            "message": e.message,
            "param": e.param,
            "sequence_number": sequence_number,
        });
        Bytes::from(format!("event: error\ndata: {data}\n\n"))
    }
}

impl IntoResponse for ResponsesError {
    fn into_response(self) -> Response {
        self.0.into_response()
    }
}

impl From<ExchangeError> for OpenAiError {
    fn from(error: ExchangeError) -> OpenAiError {
        match error {
            ExchangeError::Backend(e) => OpenAiError::from_backend(&e, None),
            ExchangeError::Busy(_) => OpenAiError {
                retry_after: true,
                ..OpenAiError::new(error.status_code(), error.to_string())
            },
            _ => OpenAiError::new(error.status_code(), error.to_string()),
        }
    }
}

impl From<ResolveError> for OpenAiError {
    fn from(error: ResolveError) -> OpenAiError {
        let not_found = matches!(error, ResolveError::NotFound(_));
        let mut e = OpenAiError::from(ExchangeError::from(error));
        if not_found {
            // What OpenAI itself answers for an unknown model.
            e.code = Some("model_not_found".into());
        }
        e
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        crate::api::passthrough::error_response(self.status, &self.body(), self.retry_after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_get_openai_types() {
        let body = |status: u16| OpenAiError::new(StatusCode::from_u16(status).unwrap(), "m").body();
        assert_eq!(
            body(400),
            json!({"error": {"message": "m", "type": "invalid_request_error", "param": null, "code": null}})
        );
        assert_eq!(body(401)["error"]["type"], "authentication_error");
        assert_eq!(body(404)["error"]["type"], "invalid_request_error");
        assert_eq!(body(429)["error"]["type"], "rate_limit_error");
        assert_eq!(body(502)["error"]["type"], "api_error");
    }

    #[test]
    fn backend_errors_keep_their_type_and_code() {
        let error = BackendError::Status {
            status: 400,
            message: "too long".into(),
        };
        let detail = json!({"message": "too long", "type": "exceed_context_size_error", "code": 400,
            "param": "messages"});
        assert_eq!(
            OpenAiError::from_backend(&error, Some(&detail)).body(),
            json!({"error": {"message": "too long", "type": "exceed_context_size_error",
                "param": "messages", "code": null}})
        );
        assert_eq!(
            DialectError::event(&OpenAiError::from_backend(&BackendError::Truncated, None), 3),
            Bytes::from(
                "data: {\"error\":{\"message\":\"backend stream ended before the response was complete\",\
                 \"type\":\"api_error\",\"param\":null,\"code\":null}}\n\n"
            )
        );
    }

    /// The Responses API's own error event, numbered, with a code its clients can read.
    #[test]
    fn responses_errors_are_the_responses_api_s_error_event() {
        let truncated = ResponsesError::from_backend(&BackendError::Truncated, None);
        assert_eq!(
            truncated.event(7),
            Bytes::from(
                "event: error\ndata: {\"type\":\"error\",\"code\":\"api_error\",\"message\":\"backend stream \
                 ended before the response was complete\",\"param\":null,\"sequence_number\":7}\n\n"
            )
        );
        let error = BackendError::Status {
            status: 400,
            message: "too long".into(),
        };
        let detail = json!({"type": "invalid_request_error", "code": "context_length_exceeded", "param": "input"});
        let data = ResponsesError::from_backend(&error, Some(&detail)).event(0);
        let data: Value = serde_json::from_slice(data.strip_prefix(b"event: error\ndata: ").unwrap()).unwrap();
        assert_eq!(
            data,
            json!({"type": "error", "code": "context_length_exceeded", "message": "too long", "param": "input",
                   "sequence_number": 0})
        );
    }

    #[test]
    fn unknown_models_are_model_not_found() {
        let e = OpenAiError::from(ResolveError::NotFound("x".into()));
        assert_eq!(
            (e.status, e.body()),
            (
                StatusCode::NOT_FOUND,
                json!({"error": {"message": "model 'x' not found", "type": "invalid_request_error",
                    "param": null, "code": "model_not_found"}})
            )
        );
    }
}
