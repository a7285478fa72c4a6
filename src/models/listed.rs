//! The models clients are shown (`/api/tags`, `/api/ps`, `/v1/models`, `/api/show`): every
//! mapped name, then what the backends offer under their `discover` prefix, each with
//! what ollabridge knows of it. Config settings win over what the backend reports.

use std::sync::Arc;

use super::{Models, normalize};
use crate::backend::{BackendModel, Upstream};
use crate::config::ModelMapping;

/// Context length reported when neither the config nor the backend tells.
const FALLBACK_CONTEXT: u64 = 4096;

/// A model as clients see it: its listed name, its mapping (if any) and what the
/// backend says about it.
pub struct Described<'a> {
    pub name: String,
    pub mapping: Option<&'a ModelMapping>,
    pub backend: Option<&'a BackendModel>,
}

impl Described<'_> {
    pub fn context_length(&self) -> u64 {
        self.mapping
            .and_then(|m| m.context_length)
            .or(self.backend.and_then(|m| m.context_length))
            .unwrap_or(FALLBACK_CONTEXT)
    }

    /// Without better knowledge, a chat model that takes tools: refusing tools is the
    /// most common way Home Assistant breaks, so they are offered and forwarded.
    pub fn capabilities(&self) -> Vec<String> {
        self.mapping
            .and_then(|m| m.capabilities.clone())
            .or(self.backend.and_then(|m| m.capabilities.clone()))
            .unwrap_or_else(|| vec!["completion".into(), "tools".into()])
    }
}

/// The model named `name` (compared normalised) in a backend's list.
pub fn find<'a>(offered: &'a [BackendModel], name: &str) -> Option<&'a BackendModel> {
    let key = normalize(name);
    offered.iter().find(|m| normalize(&m.name) == key)
}

impl Models {
    /// Each backend's own list, by backend index; a backend that is down lists nothing,
    /// so the mapping table still answers and clients such as Home Assistant can finish
    /// their setup.
    pub async fn offered_or_empty(&self, upstreams: &[Upstream]) -> Vec<Arc<Vec<BackendModel>>> {
        let lists = (0..upstreams.len()).map(|index| async move {
            match self.offered(upstreams, index, false).await {
                Ok(list) => list,
                Err(e) => {
                    let backend = upstreams[index].name();
                    tracing::warn!(backend, error = %e, "cannot list the backend's models; leaving them out");
                    Arc::new(Vec::new())
                }
            }
        });
        futures::future::join_all(lists).await
    }

    /// Every mapped name, then every model a backend offers (its `discover` prefix and
    /// filters applied) that is not already listed under that name.
    pub fn described<'a>(
        &'a self,
        upstreams: &'a [Upstream],
        offered: &'a [Arc<Vec<BackendModel>>],
    ) -> Vec<Described<'a>> {
        let mut listed: Vec<Described<'a>> = self
            .mappings()
            .iter()
            .map(|m| Described {
                name: m.name.clone(),
                mapping: Some(m),
                backend: find(&offered[m.targets[0].backend], &m.target),
            })
            .collect();
        for (upstream, models) in upstreams.iter().zip(offered) {
            let Some(discovery) = &upstream.config.discover else {
                continue;
            };
            for model in models.iter().filter(|m| discovery.offers(&m.name)) {
                let name = format!("{}{}", discovery.prefix, model.name);
                let key = normalize(&name);
                if !listed.iter().any(|d| normalize(&d.name) == key) {
                    listed.push(Described {
                        name,
                        mapping: None,
                        backend: Some(model),
                    });
                }
            }
        }
        listed
    }

    /// The names clients are shown (before `/api/tags` adds `:latest`).
    pub async fn listed_names(&self, upstreams: &[Upstream]) -> Vec<String> {
        let offered = self.offered_or_empty(upstreams).await;
        self.described(upstreams, &offered)
            .into_iter()
            .map(|m| m.name)
            .collect()
    }
}
