//! The admin listener, apart from the public Ollama port so that one can be exposed
//! safely: Prometheus metrics and the log API.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use sqlx::SqlitePool;

use crate::Telemetry;

pub struct AdminState {
    pub telemetry: Arc<Telemetry>,
    /// The log database, for reading.
    pub pool: SqlitePool,
}

pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route(
            "/health",
            get(|| async { axum::Json(serde_json::json!({ "status": "ok" })) }),
        )
        .with_state(state)
}

async fn metrics_handler(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    let body = state.telemetry.metrics.render(&state.telemetry.logger);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
}
