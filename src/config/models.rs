//! `models`: the default model and the mapping table (client names to backend models,
//! with their targets and what the backend cannot tell).

use serde::Deserialize;

use super::BackendConfig;

#[derive(Debug, Clone, Default)]
pub struct ModelsConfig {
    pub default: Option<String>,
    /// Client-facing names and what serves them, in file order.
    pub mappings: Vec<ModelMapping>,
}

/// One `models.mappings` entry: `"name": "backend-model"`, or the object form
/// `"name": {"model": "backend-model", "context_length": 8192, "capabilities": [...],
/// "strip_think": true}` for what the backend cannot tell us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelMapping {
    pub name: String,
    /// The backend model name on the first target.
    pub target: String,
    /// Where to send it, in order: the mapping's backend and model, then its fallbacks.
    pub targets: Vec<Target>,
    /// Reported by `/api/show`, `/api/tags`, `/api/ps` instead of the backend's value.
    pub context_length: Option<u64>,
    /// Reported by `/api/show` instead of what is read from the backend.
    pub capabilities: Option<Vec<String>>,
    /// Move `<think>…</think>` found in the answer's text into `thinking`.
    pub strip_think: bool,
}

/// A model on a backend (by its index in [`Config::backends`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub backend: usize,
    pub model: String,
}

impl ModelMapping {
    /// A mapping to `target` on the default backend.
    pub fn new(name: &str, target: &str) -> ModelMapping {
        ModelMapping {
            name: name.to_owned(),
            target: target.to_owned(),
            targets: vec![Target {
                backend: 0,
                model: target.to_owned(),
            }],
            context_length: None,
            capabilities: None,
            strip_think: false,
        }
    }
}

/// Ollama's capability vocabulary (`types/model/capability.go`).
pub const CAPABILITIES: &[&str] = &["completion", "tools", "insert", "vision", "embedding", "thinking"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMappingObject {
    pub(super) model: String,
    #[serde(default)]
    pub(super) backend: Option<String>,
    #[serde(default)]
    pub(super) fallbacks: Vec<RawTarget>,
    #[serde(default)]
    pub(super) context_length: Option<u64>,
    #[serde(default)]
    pub(super) capabilities: Option<Vec<String>>,
    #[serde(default)]
    pub(super) strip_think: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTarget {
    pub(super) backend: String,
    pub(super) model: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawModels {
    pub(super) default: Option<String>,
    /// serde_json's `preserve_order` map keeps the file's order for `/api/tags`.
    pub(super) mappings: serde_json::Map<String, serde_json::Value>,
}

pub(super) fn mapping(
    name: String,
    value: serde_json::Value,
    backends: &[BackendConfig],
) -> Result<ModelMapping, String> {
    let key = format!("models.mappings.{name}");
    let expected = "expected the backend model name, or an object with \"model\"";
    match value {
        serde_json::Value::String(target) if !target.is_empty() => Ok(ModelMapping::new(&name, &target)),
        object @ serde_json::Value::Object(_) => {
            let raw: RawMappingObject = serde_json::from_value(object).map_err(|e| format!("{key}: {e}"))?;
            if raw.model.is_empty() {
                return Err(format!("{key}.model: must not be empty"));
            }
            if let Some(unknown) = raw
                .capabilities
                .iter()
                .flatten()
                .find(|c| !CAPABILITIES.contains(&c.as_str()))
            {
                return Err(format!(
                    "{key}.capabilities: '{unknown}' is not one of {}",
                    CAPABILITIES.join(", ")
                ));
            }
            let backend_index = |field: &str, backend: &str| {
                backends.iter().position(|b| b.name == backend).ok_or_else(|| {
                    let known: Vec<&str> = backends.iter().map(|b| b.name.as_str()).collect();
                    format!(
                        "{key}.{field}: no backend named '{backend}' (backends: {})",
                        known.join(", ")
                    )
                })
            };
            let mut targets = vec![Target {
                backend: raw.backend.as_deref().map_or(Ok(0), |b| backend_index("backend", b))?,
                model: raw.model.clone(),
            }];
            for (i, fallback) in raw.fallbacks.into_iter().enumerate() {
                targets.push(Target {
                    backend: backend_index(&format!("fallbacks[{i}].backend"), &fallback.backend)?,
                    model: fallback.model,
                });
            }
            Ok(ModelMapping {
                name,
                target: raw.model,
                targets,
                context_length: raw.context_length,
                capabilities: raw.capabilities,
                strip_think: raw.strip_think,
            })
        }
        other => Err(format!("{key}: {expected}, got {other}")),
    }
}
