//! The Ollama-shaped frontend: routes, handlers, wire types, NDJSON encoding, and the
//! recorder that turns each exchange into one log row.

pub mod auth;
pub(crate) mod context;
mod embed;
pub mod error;
mod handlers;
pub(crate) mod models_routes;
mod origin;
pub(crate) mod recorder;
mod respond;
pub mod types;

pub use context::REQUEST_ID;
pub use handlers::{DASHBOARD_KEY_ID, PINNED_BACKEND, REPLAY_OF, dashboard_router, router};

/// The request recorder and its context, for `benches/perf` only (it measures the real
/// logging path with them); not an API to build on.
#[doc(hidden)]
pub mod bench {
    pub use super::context::RequestContext;
    pub use super::recorder::{CacheSlot, Recorder, request_line};
}
