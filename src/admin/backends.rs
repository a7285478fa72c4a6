//! `GET /api/backends`: every configured backend with its health check verdict, its
//! circuit breaker, its concurrency limit and the models it offers. `?refresh=true`
//! lists the models again now (and counts that as a health check, reading a
//! llama-server's slot count again too) instead of using the cached lists.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use serde_json::{Value, json};

use super::{AdminError, AdminState, Params};

pub async fn backends_handler(
    State(state): State<Arc<AdminState>>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<Value>, AdminError> {
    let params = Params::new(query, &["refresh"])?;
    let refresh = params.parse("refresh", super::logs::parse_bool)?.unwrap_or(false);
    let live = state.live.load();
    let lists = (0..live.backends.len()).map(|index| {
        let live = live.clone();
        async move {
            let listed = live.models.offered(&live.backends, index, refresh).await;
            if refresh {
                let outcome = listed.as_ref().map(|_| ()).map_err(ToString::to_string);
                let upstream = &live.backends[index];
                upstream.health.checked(outcome, Instant::now());
                if listed.is_ok() {
                    upstream.detect_limit().await;
                }
            }
            listed
        }
    });
    let lists = futures::future::join_all(lists).await;
    let now = Instant::now();
    let backends: Vec<Value> = live
        .backends
        .iter()
        .zip(lists)
        .map(|(upstream, listed)| {
            let config = &upstream.config;
            let (models, list_error) = match listed {
                Ok(list) => (
                    list.iter()
                        .filter(|m| config.discover.as_ref().is_none_or(|d| d.offers(&m.name)))
                        .map(|m| m.name.clone())
                        .collect(),
                    None,
                ),
                Err(e) => (Vec::new(), Some(e.to_string())),
            };
            let (max_concurrent, max_concurrent_source) = upstream.max_concurrent();
            json!({
                "name": config.name,
                "type": config.kind.as_str(),
                "endpoint": config.shown_endpoint(),
                "max_concurrent": max_concurrent,
                "max_concurrent_source": max_concurrent_source,
                "discover": config.discover.as_ref().map(|d| json!({"prefix": d.prefix})),
                "health": upstream.health.report(now),
                "models": models,
                "models_error": list_error,
            })
        })
        .collect();
    Ok(Json(json!({ "backends": backends })))
}
