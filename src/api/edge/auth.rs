//! Client API keys on the Ollama port. With keys configured, every route but
//! `/health` needs `Authorization: Bearer <key>` (or Anthropic's `x-api-key: <key>`), unless the client's address is in
//! `auth.allow_unauthenticated_from`. Keys are compared as SHA-256 digests in
//! constant time; the matching key's id goes into the request's log row.

use axum::extract::Request;
use axum::http::header;
use axum::response::Response;

use super::context::RequestContext;
use crate::api::Dialect;
use crate::config::ClientKey;
use crate::reload::Live;

/// Why the request is not let in (401, in the shape of the API it asked), or `None`
/// when it is; then the matching key's id is set on its [`RequestContext`].
pub fn refusal(live: &Live, request: &mut Request) -> Option<Response> {
    let state = live.load();
    let auth = &state.config.auth;
    if auth.keys.is_empty() || request.uri().path() == "/health" {
        return None;
    }
    let presented = bearer_token(request.headers()).or_else(|| api_key_header(request.headers()));
    let key_sent = presented.is_some();
    let key_id = presented
        .and_then(|token| matching_key(&auth.keys, token))
        .map(|k| k.id.clone());
    let path = request.uri().path().to_owned();
    let Some(context) = request.extensions_mut().get_mut::<RequestContext>() else {
        return Some(unauthorized("request context missing"));
    };
    let trusted_network = context
        .client_addr
        .is_some_and(|a| auth.allow_unauthenticated_from.iter().any(|net| net.contains(&a.ip())));
    match key_id {
        Some(id) => context.client_key = Some(id),
        None if trusted_network => {}
        None => {
            tracing::warn!(
                client = ?context.client_addr,
                path = %path,
                key_sent,
                "rejected: no valid API key"
            );
            let reason = if key_sent { "invalid API key" } else { "missing API key" };
            // OpenAI and Anthropic clients read `error.message`: the same words in their shapes.
            return Some(Dialect::of(&path).unauthorized(unauthorized_message(reason)));
        }
    }
    None
}

/// Every key is compared, so the time taken does not tell which one nearly matched.
fn matching_key<'a>(keys: &'a [ClientKey], token: &str) -> Option<&'a ClientKey> {
    keys.iter().fold(None, |found, key| {
        let equal = key.matches(token);
        found.or(equal.then_some(key))
    })
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
}

/// Anthropic's SDKs and Claude Code send the key as `x-api-key: <key>`.
fn api_key_header(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::trim)
}

/// A 401 in Ollama's shape.
pub fn unauthorized(reason: &str) -> Response {
    Dialect::Ollama.unauthorized(unauthorized_message(reason))
}

pub fn unauthorized_message(reason: &str) -> String {
    format!("unauthorized: {reason} (send Authorization: Bearer <key>)")
}
