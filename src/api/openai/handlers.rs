//! `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings` and `/v1/responses`: passed
//! through to the backend's route of the same name (see `api::passthrough`).

use axum::body::Bytes;
use axum::extract::Extension;
use axum::response::Response;

use super::responses::Responses;
use super::route::Route;
use crate::api::edge::context::RequestContext;
use crate::api::passthrough::pass_through;
use crate::reload::Snapshot;

pub fn chat_handler(
    Snapshot(state): Snapshot,
    Extension(context): Extension<RequestContext>,
    body: Bytes,
) -> impl Future<Output = Response> {
    pass_through(state, context, Route::Chat, body)
}

pub fn completions_handler(
    Snapshot(state): Snapshot,
    Extension(context): Extension<RequestContext>,
    body: Bytes,
) -> impl Future<Output = Response> {
    pass_through(state, context, Route::Completions, body)
}

pub fn embeddings_handler(
    Snapshot(state): Snapshot,
    Extension(context): Extension<RequestContext>,
    body: Bytes,
) -> impl Future<Output = Response> {
    pass_through(state, context, Route::Embeddings, body)
}

pub fn responses_handler(
    Snapshot(state): Snapshot,
    Extension(context): Extension<RequestContext>,
    body: Bytes,
) -> impl Future<Output = Response> {
    pass_through(state, context, Responses, body)
}
