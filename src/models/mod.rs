//! The model map: which backend model serves the name a client asks for. Names match
//! case-insensitively, with or without `:latest`; the client always sees its own name.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use crate::backend::{AnyBackend, BackendError, BackendModel};
use crate::config::{ModelMapping, ModelsConfig};

/// How long the backend's own model list is trusted before it is asked again.
const OFFERED_TTL: Duration = Duration::from_secs(10);

/// The outcome of resolving a client's model name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub client: String,
    pub backend: String,
    /// The mapping's `strip_think` switch (off for unmapped names).
    pub strip_think: bool,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ResolveError {
    /// 400: no `model` and no `models.default`.
    #[error("model is required")]
    Missing,
    /// 404: neither mapped nor offered by the backend.
    #[error("model '{0}' not found")]
    NotFound(String),
    #[error(transparent)]
    Backend(#[from] BackendError),
}

pub struct Models {
    default: Option<String>,
    mappings: Vec<ModelMapping>,
    offered: Mutex<Option<(Instant, Arc<Vec<BackendModel>>)>>,
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
    pub fn new(config: &ModelsConfig) -> Models {
        Models {
            default: config.default.clone(),
            mappings: config.mappings.clone(),
            offered: Mutex::new(None),
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

    pub async fn resolve(&self, requested: Option<&str>, backend: &AnyBackend) -> Result<Resolved, ResolveError> {
        let client = requested
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .or(self.default.as_deref())
            .ok_or(ResolveError::Missing)?
            .to_owned();
        if let Some(mapping) = self.mapping(&client) {
            return Ok(Resolved {
                backend: mapping.target.clone(),
                strip_think: mapping.strip_think,
                client,
            });
        }
        let key = normalize(&client);
        let find = |list: &[BackendModel]| list.iter().find(|m| normalize(&m.name) == key).map(|m| m.name.clone());
        let (offered, fresh) = self.offered_with_age(backend, false).await?;
        let mut found = find(&offered);
        // A model loaded since the list was cached should not be refused.
        if found.is_none() && !fresh {
            found = find(&self.offered_with_age(backend, true).await?.0);
        }
        match found {
            Some(name) => Ok(Resolved {
                backend: name,
                client,
                strip_think: false,
            }),
            None => Err(ResolveError::NotFound(client)),
        }
    }

    /// What the backend itself offers, cached for a few seconds.
    pub async fn offered(&self, backend: &AnyBackend, refresh: bool) -> Result<Arc<Vec<BackendModel>>, BackendError> {
        Ok(self.offered_with_age(backend, refresh).await?.0)
    }

    /// The list, and whether it was fetched just now (less than a second ago).
    async fn offered_with_age(
        &self,
        backend: &AnyBackend,
        refresh: bool,
    ) -> Result<(Arc<Vec<BackendModel>>, bool), BackendError> {
        let mut cached = self.offered.lock().await;
        if let Some((at, list)) = cached.as_ref() {
            if !refresh && at.elapsed() < OFFERED_TTL {
                return Ok((list.clone(), at.elapsed() < Duration::from_secs(1)));
            }
        }
        let list = Arc::new(backend.models().await?);
        *cached = Some((Instant::now(), list.clone()));
        Ok((list, true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn models() -> Models {
        Models::new(&ModelsConfig {
            default: Some("llama2".into()),
            mappings: vec![
                ModelMapping::new("Llama2", "llama-2-7b-chat"),
                ModelMapping::new("qwen:7b", "qwen-7b"),
            ],
        })
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
