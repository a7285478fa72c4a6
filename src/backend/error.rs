//! Errors a backend call can end in. Each knows its HTTP status and a message that is
//! safe to show the client (it names the backend URL, never a secret).

use axum::http::StatusCode;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BackendError {
    /// 502: nothing answered at the endpoint.
    #[error("backend at {endpoint} is unreachable: {reason}")]
    Unreachable { endpoint: String, reason: String },
    /// 504: the backend went silent for longer than `backend.timeout`.
    #[error("backend at {endpoint} timed out")]
    Timeout { endpoint: String },
    /// The backend's own HTTP error; its status is passed on.
    #[error("{message}")]
    Status { status: u16, message: String },
    /// 400: the prompt is longer than the backend's context (llama.cpp's
    /// `exceed_context_size_error`); its token counts let a chat be cut to fit.
    #[error("{message}")]
    ContextExceeded {
        message: String,
        prompt_tokens: u64,
        context: u64,
    },
    /// 502: the backend answered something we cannot read.
    #[error("backend sent an invalid response: {0}")]
    Protocol(String),
    /// 502: the stream stopped before the backend said it was finished.
    #[error("backend stream ended before the response was complete")]
    Truncated,
    /// 503: the server shut down before the answer was complete.
    #[error("the server is shutting down; the answer was cut off")]
    ShuttingDown,
    /// 503 with `Retry-After`: every slot of the backend stayed busy for the whole
    /// `queue_timeout`.
    #[error("{0}")]
    Busy(String),
    /// 500: the backend section of the config cannot be used.
    #[error("{0}")]
    Config(String),
}

impl BackendError {
    pub fn status_code(&self) -> StatusCode {
        match self {
            BackendError::Unreachable { .. } | BackendError::Protocol(_) | BackendError::Truncated => {
                StatusCode::BAD_GATEWAY
            }
            BackendError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            BackendError::ContextExceeded { .. } => StatusCode::BAD_REQUEST,
            BackendError::Status { status, .. } => StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY),
            BackendError::Config(_) => StatusCode::INTERNAL_SERVER_ERROR,
            BackendError::ShuttingDown | BackendError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Whether another backend may be asked instead: the failure left nothing sent to
    /// the client and is the backend's, not the request's.
    pub fn may_fail_over(&self) -> bool {
        match self {
            BackendError::Unreachable { .. }
            | BackendError::Timeout { .. }
            | BackendError::Protocol(_)
            | BackendError::Truncated
            | BackendError::Busy(_) => true,
            BackendError::Status { status, .. } => *status >= 500 || *status == 429,
            BackendError::ShuttingDown | BackendError::Config(_) | BackendError::ContextExceeded { .. } => false,
        }
    }

    /// Classifies a transport error from reqwest.
    pub fn from_reqwest(endpoint: &str, error: &reqwest::Error) -> BackendError {
        if error.is_timeout() {
            return BackendError::Timeout {
                endpoint: endpoint.to_owned(),
            };
        }
        if error.is_decode() || error.is_body() && !error.is_connect() && !is_io(error) {
            return BackendError::Protocol(root_cause(error));
        }
        BackendError::Unreachable {
            endpoint: endpoint.to_owned(),
            reason: root_cause(error),
        }
    }

    /// Reads a non-2xx answer: OpenAI's `{"error":{"message"}}`, Ollama's `{"error":"..."}`,
    /// a flat `{"message"}`, or plain text from a proxy in front.
    pub fn from_status(status: u16, body: &[u8]) -> BackendError {
        let message = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| {
                let error = v.get("error").unwrap_or(&v);
                error
                    .get("message")
                    .and_then(|m| m.as_str())
                    .or_else(|| error.as_str())
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| {
                let text = String::from_utf8_lossy(body).trim().to_owned();
                if text.is_empty() {
                    format!("backend answered HTTP {status}")
                } else {
                    text
                }
            });
        // llama.cpp answers some client mistakes with 500; they are the client's to fix.
        let status = if status == 500 && CLIENT_MISTAKES_SEEN_AS_500.iter().any(|m| message.contains(m)) {
            400
        } else {
            status
        };
        BackendError::Status { status, message }
    }
}

/// Messages llama.cpp sends with HTTP 500 for what is really a bad request
/// (its handlers turn every exception into a server error).
const CLIENT_MISTAKES_SEEN_AS_500: &[&str] = &[
    "image input is not supported",
    "audio input is not supported",
    "Failed to parse messages",
    "tools param requires --jinja",
    "Unsupported param",
    "Failed to load image",
    "Failed to download image",
];

fn is_io(error: &reqwest::Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// The innermost cause reads best ("Connection refused (os error 111)"). When that is
/// reqwest's own error, its text names the URL: credentials in it are masked.
fn root_cause(error: &reqwest::Error) -> String {
    let mut last: &dyn std::error::Error = error;
    while let Some(s) = last.source() {
        last = s;
    }
    let text = last.to_string();
    match error.url() {
        Some(url) => text.replace(url.as_str(), &crate::config::masked_url(url)),
        None => text,
    }
}
