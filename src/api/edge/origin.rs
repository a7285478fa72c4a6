//! Web pages on the client port, as Ollama lets them in: a request whose `Origin` is not
//! allowed (`server.allowed_origins` beyond Ollama's defaults: this machine's pages,
//! desktop and editor apps) is refused with 403, so a page on another site cannot run
//! chats here with a form or a `text/plain` POST. Requests without `Origin` (curl, SDKs,
//! Home Assistant) pass. With `server.enable_cors`, CORS answers the allowed origins only.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::response::Response;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

use crate::api::Dialect;
use crate::reload::Live;

/// 403 when the request comes from a page whose origin is not allowed; `None` otherwise.
pub fn refusal(live: &Live, request: &Request) -> Option<Response> {
    let origin = request.headers().get(header::ORIGIN)?;
    if live.load().config.server.allowed_origins.allows(origin.as_bytes()) {
        return None;
    }
    let origin = String::from_utf8_lossy(origin.as_bytes());
    let path = request.uri().path();
    tracing::warn!(%origin, path, "rejected: origin not allowed");
    let message = format!("origin '{origin}' is not allowed (add it to server.allowed_origins)");
    Some(Dialect::of(path).error(StatusCode::FORBIDDEN, message, false))
}

/// CORS for the allowed origins (read live, as the check above); others get no
/// `Access-Control-Allow-Origin`, so their pages cannot read the answers.
pub fn cors(live: Arc<Live>) -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin, _| {
            live.load().config.server.allowed_origins.allows(origin.as_bytes())
        }))
        .allow_methods(Any)
        .allow_headers(Any)
        .expose_headers(Any)
}
