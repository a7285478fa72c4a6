//! The model map: which backend model serves the name a client asks for. Names match
//! case-insensitively, with or without `:latest`; the client always sees its own name.

mod listed;

pub use listed::{Described, find};

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use crate::backend::{BackendError, BackendModel, Upstream};
use crate::config::{ModelMapping, ModelsConfig, Target};

/// How long the backend's own model list is trusted before it is asked again.
const OFFERED_TTL: Duration = Duration::from_secs(10);

/// The outcome of resolving a client's model name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub client: String,
    /// The backend model name on the first target.
    pub backend: String,
    /// The mapping's `strip_think` switch (off for unmapped names).
    pub strip_think: bool,
    /// Where to send it, in order (a mapping's fallbacks after its first target).
    pub targets: Vec<Target>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ResolveError {
    /// 400: no `model` and no `models.default`.
    #[error("model is required")]
    Missing,
    /// 404: neither mapped nor offered by a backend.
    #[error("model '{0}' not found")]
    NotFound(String),
    /// 400: longer than any model name (it would be echoed and logged).
    #[error("model name is {0} bytes long; at most {MAX_MODEL_NAME_BYTES} are accepted")]
    TooLong(usize),
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// Longest model name accepted. Ollama's own names have at most ~600 characters (host
/// 350, namespace, model and tag 80 each).
pub const MAX_MODEL_NAME_BYTES: usize = 1024;

/// The model a request names (trimmed), else `default`; neither is a 400, and so is a
/// name longer than [`MAX_MODEL_NAME_BYTES`].
pub fn requested_name(requested: Option<&str>, default: Option<&str>) -> Result<String, ResolveError> {
    let name = requested
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .or(default)
        .ok_or(ResolveError::Missing)?;
    if name.len() > MAX_MODEL_NAME_BYTES {
        return Err(ResolveError::TooLong(name.len()));
    }
    Ok(name.to_owned())
}

/// A backend's model list and when it was fetched.
type Listed = (Instant, Arc<Vec<BackendModel>>);

pub struct Models {
    default: Option<String>,
    mappings: Vec<ModelMapping>,
    /// Each backend's own list, by backend index.
    offered: Vec<Mutex<Option<Listed>>>,
}

/// The form names are compared in: lower case, no `:latest`.
pub fn normalize(name: &str) -> String {
    let lower = name.trim().to_lowercase();
    match lower.strip_suffix(":latest") {
        Some(base) => base.to_owned(),
        None => lower,
    }
}

/// The form names are listed in: with an explicit tag, as Ollama lists them (Home
/// Assistant compares the configured name to the listed one verbatim).
pub fn listed_name(name: &str) -> String {
    if name.contains(':') {
        name.to_owned()
    } else {
        format!("{name}:latest")
    }
}

impl Models {
    pub fn new(config: &ModelsConfig, backends: usize) -> Models {
        Models {
            default: config.default.clone(),
            mappings: config.mappings.clone(),
            offered: (0..backends).map(|_| Mutex::new(None)).collect(),
        }
    }

    pub fn mappings(&self) -> &[ModelMapping] {
        &self.mappings
    }

    /// The backend name for a mapped client name.
    pub fn mapped(&self, name: &str) -> Option<&str> {
        self.mapping(name).map(|m| m.target.as_str())
    }

    /// The mapping entry for a client name.
    pub fn mapping(&self, name: &str) -> Option<&ModelMapping> {
        let key = normalize(name);
        self.mappings.iter().find(|m| normalize(&m.name) == key)
    }

    pub async fn resolve(&self, requested: Option<&str>, upstreams: &[Upstream]) -> Result<Resolved, ResolveError> {
        let client = requested_name(requested, self.default.as_deref())?;
        if let Some(mapping) = self.mapping(&client) {
            return Ok(Resolved {
                backend: mapping.target.clone(),
                strip_think: mapping.strip_think,
                targets: mapping.targets.clone(),
                client,
            });
        }
        // Boxed: only a name that is not mapped pays, in its request's future, for the
        // room that asking backends for their lists takes (~1.4 KB).
        Box::pin(self.discovered(client, upstreams)).await
    }

    /// The first backend that discovers `client` (not mapped) among the models it offers.
    async fn discovered(&self, client: String, upstreams: &[Upstream]) -> Result<Resolved, ResolveError> {
        let key = normalize(&client);
        let mut first_error = None;
        for (index, upstream) in upstreams.iter().enumerate() {
            let Some(discovery) = &upstream.config.discover else {
                continue;
            };
            let Some(unprefixed) = without_prefix(&key, &normalize(&discovery.prefix)) else {
                continue;
            };
            let find = |list: &[BackendModel]| {
                list.iter()
                    .find(|m| normalize(&m.name) == unprefixed && discovery.offers(&m.name))
                    .map(|m| m.name.clone())
            };
            let (offered, fresh) = match self.offered_with_age(upstreams, index, false).await {
                Ok(list) => list,
                Err(e) => {
                    first_error.get_or_insert(e);
                    continue;
                }
            };
            let mut found = find(&offered);
            // A model loaded since the list was cached should not be refused.
            if found.is_none() && !fresh {
                if let Ok((list, _)) = self.offered_with_age(upstreams, index, true).await {
                    found = find(&list);
                }
            }
            if let Some(name) = found {
                return Ok(Resolved {
                    backend: name.clone(),
                    client,
                    strip_think: false,
                    targets: vec![Target {
                        backend: index,
                        model: name,
                    }],
                });
            }
        }
        match first_error {
            Some(e) => Err(ResolveError::Backend(e)),
            None => Err(ResolveError::NotFound(client)),
        }
    }

    /// What backend `index` offers itself (all of it, before discovery filters),
    /// cached for a few seconds.
    pub async fn offered(
        &self,
        upstreams: &[Upstream],
        index: usize,
        refresh: bool,
    ) -> Result<Arc<Vec<BackendModel>>, BackendError> {
        Ok(self.offered_with_age(upstreams, index, refresh).await?.0)
    }

    /// The list, and whether it was fetched just now (less than a second ago).
    async fn offered_with_age(
        &self,
        upstreams: &[Upstream],
        index: usize,
        refresh: bool,
    ) -> Result<(Arc<Vec<BackendModel>>, bool), BackendError> {
        let mut cached = self.offered[index].lock().await;
        if let Some((at, list)) = cached.as_ref() {
            if !refresh && at.elapsed() < OFFERED_TTL {
                return Ok((list.clone(), at.elapsed() < Duration::from_secs(1)));
            }
        }
        let list = Arc::new(upstreams[index].client.models().await?);
        *cached = Some((Instant::now(), list.clone()));
        Ok((list, true))
    }
}

/// `name` without `prefix` (both normalised); `None` when it does not start so.
fn without_prefix<'a>(name: &'a str, prefix: &str) -> Option<&'a str> {
    name.strip_prefix(prefix).filter(|rest| !rest.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn models() -> Models {
        Models::new(
            &ModelsConfig {
                default: Some("llama2".into()),
                mappings: vec![
                    ModelMapping::new("Llama2", "llama-2-7b-chat"),
                    ModelMapping::new("qwen:7b", "qwen-7b"),
                ],
            },
            1,
        )
    }

    #[test]
    fn names_match_without_case_or_latest() {
        let m = models();
        assert_eq!(m.mapped("llama2"), Some("llama-2-7b-chat"));
        assert_eq!(m.mapped("LLAMA2:latest"), Some("llama-2-7b-chat"));
        assert_eq!(m.mapped("qwen:7B"), Some("qwen-7b"));
        assert_eq!(m.mapped("qwen"), None);
    }

    #[test]
    fn listed_names_carry_a_tag() {
        assert_eq!(listed_name("llama2"), "llama2:latest");
        assert_eq!(listed_name("qwen:7b"), "qwen:7b");
    }
}
