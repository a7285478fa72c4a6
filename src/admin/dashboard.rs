//! The web dashboard: files under `web/`, embedded in the binary at build time (read
//! from disk in debug builds, so editing them needs no rebuild). The page shell and
//! its assets hold no data and are served without the admin token; everything they
//! fetch is behind it.

use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

#[derive(rust_embed::RustEmbed)]
#[folder = "web/"]
struct Assets;

/// `GET /` and `GET /<file>`: the file, or 404 in the admin API's shape.
pub async fn asset_handler(uri: Uri) -> Response {
    let path = uri.path().trim_start_matches('/');
    let path = if path.is_empty() { "index.html" } else { path };
    match Assets::get(path) {
        Some(file) => (
            [
                (header::CONTENT_TYPE, file.metadata.mimetype().to_owned()),
                // Revalidated each load: a new binary must not be shadowed by a cached page.
                (header::CACHE_CONTROL, "no-cache".to_owned()),
            ],
            file.data,
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({ "error": format!("not found: /{path}") })),
        )
            .into_response(),
    }
}

/// Whether a path is a dashboard file (served without the admin token).
pub fn is_public(path: &str) -> bool {
    !path.starts_with("/api/") && !path.starts_with("/ollama/") && path != "/metrics"
}
