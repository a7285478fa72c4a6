//! The wall-clock time as the APIs write it.

/// RFC 3339 in UTC with nanoseconds, as Ollama writes `created_at` (and `/api/tags` the
/// server's start as `modified_at`).
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}
