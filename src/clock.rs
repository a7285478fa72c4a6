//! The wall-clock time as the APIs write it.

/// RFC 3339 in UTC with nanoseconds, as Ollama writes `created_at` (and `/api/tags` the
/// server's start as `modified_at`).
pub fn now_rfc3339() -> String {
    rfc3339(chrono::Utc::now())
}

/// A time as Ollama writes it (`created_at`, `/api/ps`'s `expires_at`).
pub fn rfc3339(at: impl Into<chrono::DateTime<chrono::Utc>>) -> String {
    at.into().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}
