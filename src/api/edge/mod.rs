//! What every request goes through before a handler, on both routers (the client
//! API's and the dashboard's): its context and id (`context`), the page it comes from
//! (`origin`), its API key (`auth`), and axum's plain-text 413 turned into the JSON of
//! the path's API.

pub mod auth;
pub(crate) mod context;
pub(super) mod origin;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use self::context::RequestContext;
use crate::reload::Live;

pub use context::REQUEST_ID;

// One middleware per router, doing all the edge's work in turn: each layer costs a
// boxed future per request, and every request passes them all.

/// The client API's edge: the page it comes from (`Origin`) and its API key checked.
pub(super) fn client_edge(
    State(live): State<Arc<Live>>,
    request: Request,
    next: Next,
) -> impl Future<Output = Response> {
    edge(live, request, next, |live, request| {
        origin::refusal(live, request).or_else(|| auth::refusal(live, request))
    })
}

/// The dashboard's edge: no API key (the admin token was checked), the key id
/// `dashboard` and the replay headers honoured.
pub(super) fn dashboard_edge(
    State(live): State<Arc<Live>>,
    request: Request,
    next: Next,
) -> impl Future<Output = Response> {
    edge(live, request, next, |_, request| {
        from_dashboard(request);
        None
    })
}

/// Attaches the request's context, lets `admit` refuse it, turns axum's plain-text 413
/// into the JSON of the path's API, echoes the request id.
///
/// The checks run before the returned future, which holds only the route's: it lives
/// as long as the request waits for its answer.
fn edge(
    live: Arc<Live>,
    mut request: Request,
    next: Next,
    admit: impl FnOnce(&Live, &mut Request) -> Option<Response>,
) -> impl Future<Output = Response> {
    let id = context::attach(&mut request);
    let dialect = super::Dialect::of(request.uri().path());
    let answered = match admit(&live, &mut request) {
        None => futures::future::Either::Left(next.run(request)),
        Some(refused) => futures::future::Either::Right(std::future::ready(refused)),
    };
    // A combinator, not an async block: the block would keep `answered` twice.
    futures::FutureExt::map(answered, move |mut response| {
        response = body_too_large_as_json(&live, dialect, response);
        context::echo_id(&mut response, id);
        response
    })
}

fn from_dashboard(request: &mut Request) {
    let replay_of = request
        .headers()
        .get(REPLAY_OF)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let backend = request
        .headers()
        .get(PINNED_BACKEND)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Some(context) = request.extensions_mut().get_mut::<RequestContext>() {
        context.client_key = Some(DASHBOARD_KEY_ID.to_owned());
        context.replay_of = replay_of;
        context.pinned_backend = backend;
    }
}

/// The log row a replayed request repeats; honoured on the dashboard router only.
pub const REPLAY_OF: &str = "x-ollabridge-replay-of";
/// Sends a chat or generate request to this backend (by name) instead of the model's
/// targets; honoured on the dashboard router only (replay on another backend).
pub const PINNED_BACKEND: &str = "x-ollabridge-backend";
/// `client_key` of requests made from the dashboard.
pub const DASHBOARD_KEY_ID: &str = "dashboard";

/// axum refuses an oversized body with plain text; clients expect their API's JSON.
fn body_too_large_as_json(live: &Live, dialect: super::Dialect, response: Response) -> Response {
    if !is_body_limit_refusal(&response) {
        return response;
    }
    let state = live.load();
    let limit = state.config.server.max_body_bytes;
    let error = format!("request body is larger than server.max_body_bytes ({limit} bytes)");
    dialect.error(response.status(), error, false)
}

/// axum's own refusal of a body over its limit: a 413 in plain text, which each API
/// answers again in its own JSON. A backend's 413, passed through, is JSON already.
pub fn is_body_limit_refusal(response: &Response) -> bool {
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"application/json"));
    response.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE && !is_json
}
