//! Why an exchange was refused or failed before any answer, in no dialect's shape: each
//! dialect renders it as its clients expect (Ollama's `{"error": "..."}`, OpenAI's error
//! object, ...), with the status and `Retry-After` it names.

use axum::http::StatusCode;
use axum::response::Response;
use serde::de::DeserializeOwned;

use crate::backend::BackendError;
use crate::json::JsonError;
use crate::models::ResolveError;

#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// 400: the request is malformed; the message names the field.
    #[error("{0}")]
    BadRequest(String),
    /// 404, e.g. `model 'x' not found`.
    #[error("{0}")]
    NotFound(String),
    /// 501: the route exists in the dialect but this backend cannot serve it.
    #[error("{0}")]
    Unsupported(String),
    /// 503 with `Retry-After`: every backend slot stayed busy for the whole queue wait.
    #[error("{0}")]
    Busy(String),
    /// The backend's failure, with its status (502/504 or the backend's own).
    #[error(transparent)]
    Backend(BackendError),
}

/// How a dialect answers a refused exchange.
pub type Render = fn(ExchangeError) -> Response;

impl ExchangeError {
    pub fn status_code(&self) -> StatusCode {
        match self {
            ExchangeError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ExchangeError::NotFound(_) => StatusCode::NOT_FOUND,
            ExchangeError::Unsupported(_) => StatusCode::NOT_IMPLEMENTED,
            ExchangeError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            ExchangeError::Backend(e) => e.status_code(),
        }
    }

    /// Whether the client may retry shortly (answered with `Retry-After: 1`).
    pub fn retry_after(&self) -> bool {
        matches!(self, ExchangeError::Busy(_))
    }
}

impl From<BackendError> for ExchangeError {
    fn from(e: BackendError) -> ExchangeError {
        match e {
            BackendError::Busy(message) => ExchangeError::Busy(message),
            e => ExchangeError::Backend(e),
        }
    }
}

impl From<ResolveError> for ExchangeError {
    fn from(e: ResolveError) -> ExchangeError {
        match e {
            ResolveError::Missing | ResolveError::TooLong(_) => ExchangeError::BadRequest(e.to_string()),
            ResolveError::NotFound(_) => ExchangeError::NotFound(e.to_string()),
            ResolveError::Backend(b) => b.into(),
        }
    }
}

/// Parses a JSON body; errors name the path of the offending field.
pub fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ExchangeError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ExchangeError::BadRequest("missing request body".into()));
    }
    crate::json::from_slice_with_path(body).map_err(|e| {
        ExchangeError::BadRequest(match e {
            JsonError::Syntax(message) => format!("invalid JSON body: {message}"),
            JsonError::Data {
                path: Some(path),
                message,
            } => format!("invalid value for '{path}': {message}"),
            JsonError::Data { path: None, message } => format!("invalid request body: {message}"),
        })
    })
}
