//! Errors as Ollama writes them: `{"error": "..."}` with a fitting status.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::backend::BackendError;
use crate::json::JsonError;
use crate::models::ResolveError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed; the message names the field.
    #[error("{0}")]
    BadRequest(String),
    /// 404, e.g. `model 'x' not found`.
    #[error("{0}")]
    NotFound(String),
    /// 501: the route exists in Ollama but this backend cannot serve it.
    #[error("{0}")]
    Unsupported(String),
    /// 503 with `Retry-After`: every backend slot stayed busy for the whole queue wait.
    #[error("{0}")]
    Busy(String),
    /// The backend's failure, with its status (502/504 or the backend's own).
    #[error(transparent)]
    Backend(BackendError),
}

impl ApiError {
    pub fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unsupported(_) => StatusCode::NOT_IMPLEMENTED,
            ApiError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Backend(e) => e.status_code(),
        }
    }
}

impl From<BackendError> for ApiError {
    fn from(e: BackendError) -> ApiError {
        match e {
            BackendError::Busy(message) => ApiError::Busy(message),
            e => ApiError::Backend(e),
        }
    }
}

impl From<ResolveError> for ApiError {
    fn from(e: ResolveError) -> ApiError {
        match e {
            ResolveError::Missing | ResolveError::TooLong(_) => ApiError::BadRequest(e.to_string()),
            ResolveError::NotFound(_) => ApiError::NotFound(e.to_string()),
            ResolveError::Backend(b) => b.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status_code(),
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response();
        if matches!(self, ApiError::Busy(_)) {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        response
    }
}

/// Parses a JSON body; errors name the path of the offending field.
pub fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::BadRequest("missing request body".into()));
    }
    crate::json::from_slice_with_path(body).map_err(|e| {
        ApiError::BadRequest(match e {
            JsonError::Syntax(message) => format!("invalid JSON body: {message}"),
            JsonError::Data {
                path: Some(path),
                message,
            } => format!("invalid value for '{path}': {message}"),
            JsonError::Data { path: None, message } => format!("invalid request body: {message}"),
        })
    })
}
