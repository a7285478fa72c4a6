//! The Ollama dialect of the client API: the chat/generate, embed and model routes'
//! handlers, wire types, NDJSON encoding and Ollama-shaped errors.

pub(crate) mod embed;
pub mod error;
pub(crate) mod handlers;
pub(crate) mod models_routes;
mod respond;
pub mod types;

/// The request recorder, its context, the Ollama renderer and the clock every NDJSON line
/// reads, for `benches/perf` only (it measures the real logging path with them); not an
/// API to build on.
#[doc(hidden)]
pub mod bench {
    pub use super::error::render;
    pub use crate::api::edge::context::RequestContext;
    pub use crate::api::exchange::{CacheSlot, Recorder, request_line};
    pub use crate::clock::now_rfc3339;
}
