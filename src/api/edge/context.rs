//! What every request carries from the edge: its id (echoed as `X-Request-Id`), the
//! client's address and the instant it arrived, from which latencies are measured.

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{ConnectInfo, Request};
use axum::http::HeaderValue;
use axum::response::Response;

pub const REQUEST_ID: &str = "x-request-id";
pub const NO_CACHE: &str = "x-ollabridge-no-cache";

#[derive(Debug, Clone)]
pub struct RequestContext {
    pub id: String,
    pub client_addr: Option<SocketAddr>,
    pub received: Instant,
    /// The id of the API key the client authenticated with.
    pub client_key: Option<String>,
    /// The log row this request replays (dashboard replay).
    pub replay_of: Option<i64>,
    /// `X-Ollabridge-No-Cache: true`: answer from the backend, not the response cache.
    pub no_cache: bool,
    /// A dashboard replay sent to this backend rather than the model's targets.
    pub pinned_backend: Option<String>,
}

impl RequestContext {
    pub fn new(id: Option<&str>, client_addr: Option<SocketAddr>) -> RequestContext {
        let id = id.filter(|id| is_acceptable_id(id)).map_or_else(new_id, str::to_owned);
        RequestContext {
            id,
            client_addr,
            received: Instant::now(),
            client_key: None,
            replay_of: None,
            no_cache: false,
            pinned_backend: None,
        }
    }
}

/// A client's own id is kept when it is short and plain, so logs can be joined.
fn is_acceptable_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// 128 random bits in hex: unique across replicas without coordination.
fn new_id() -> String {
    let bits: u128 = rand::random();
    format!("{bits:032x}")
}

/// Attaches a [`RequestContext`] to the request; returns its id for [`echo_id`].
pub fn attach(request: &mut Request) -> Option<HeaderValue> {
    let client_addr = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    let asked = request.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok());
    let mut context = RequestContext::new(asked, client_addr);
    context.no_cache = request
        .headers()
        .get(NO_CACHE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true") || v.as_bytes() == b"1");
    let id = HeaderValue::from_str(&context.id).ok();
    request.extensions_mut().insert(context);
    id
}

/// Answers with the request's id (`X-Request-Id`), whatever the answer.
pub fn echo_id(response: &mut Response, id: Option<HeaderValue>) {
    if let Some(id) = id {
        response.headers_mut().insert(REQUEST_ID, id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_fresh_unless_the_client_sent_a_plain_one() {
        let a = RequestContext::new(None, None);
        let b = RequestContext::new(None, None);
        assert_eq!(a.id.len(), 32);
        assert_ne!(a.id, b.id);
        assert_eq!(RequestContext::new(Some("trace-42"), None).id, "trace-42");
        assert_eq!(RequestContext::new(Some("bad id\n"), None).id.len(), 32);
        assert_eq!(RequestContext::new(Some(&"x".repeat(65)), None).id.len(), 32);
    }
}
