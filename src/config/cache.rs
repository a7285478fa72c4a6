//! `cache`: the response cache's models, rules and bounds.

use std::time::Duration;

use serde::Deserialize;

use super::seconds;

/// The response cache (off while `models` is empty).
#[derive(Debug, Clone, PartialEq)]
pub struct CacheConfig {
    /// Client model names (wildcards allowed) whose answers are cached.
    pub models: Vec<String>,
    pub ttl: Duration,
    /// Bounds of the in-memory LRU; read at start.
    pub max_entries: usize,
    pub max_bytes: usize,
    /// Only requests whose answer cannot vary (temperature 0 or a seed).
    pub only_deterministic: bool,
    /// Also cache answers that call tools.
    pub tool_calls: bool,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            models: Vec::new(),
            ttl: Duration::from_secs(3600),
            max_entries: 10_000,
            max_bytes: 64 << 20,
            only_deterministic: true,
            tool_calls: false,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawCache {
    pub(super) models: Vec<String>,
    pub(super) ttl: f64,
    pub(super) max_entries: usize,
    pub(super) max_bytes: usize,
    /// `deterministic` (temperature 0 or a seed) or `always`.
    pub(super) when: String,
    pub(super) tool_calls: bool,
}

impl Default for RawCache {
    fn default() -> Self {
        let d = CacheConfig::default();
        RawCache {
            models: d.models,
            ttl: d.ttl.as_secs_f64(),
            max_entries: d.max_entries,
            max_bytes: d.max_bytes,
            when: "deterministic".into(),
            tool_calls: d.tool_calls,
        }
    }
}

pub(super) fn cache(raw: RawCache) -> Result<CacheConfig, String> {
    let only_deterministic = match raw.when.as_str() {
        "deterministic" => true,
        "always" => false,
        other => return Err(format!("cache.when: '{other}' is not one of deterministic, always")),
    };
    if raw.max_entries == 0 {
        return Err("cache.max_entries: must be at least 1".into());
    }
    Ok(CacheConfig {
        models: raw.models,
        ttl: seconds("cache.ttl", raw.ttl, false)?,
        max_entries: raw.max_entries,
        max_bytes: raw.max_bytes,
        only_deterministic,
        tool_calls: raw.tool_calls,
    })
}
