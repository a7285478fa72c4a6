//! llama-server's router mode, read: its model list (`GET /models`, the same as
//! `/v1/models`) with each model's status, `/props` naming the role, and the answers
//! of `POST /models/load` and `/models/unload`. Pure; tested on
//! `fixtures/llama-server/router-*.json`.

use serde::Deserialize;

use super::types::{ModelList, Props};
use crate::backend::BackendError;

/// A model's `status` in a router's list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct WireStatus {
    /// `unloaded`, `loading`, `loaded` or `sleeping`.
    #[serde(default)]
    pub value: String,
    /// Set (with `exit_code`) on an `unloaded` model whose last load failed.
    #[serde(default)]
    pub failed: bool,
    #[serde(default)]
    pub exit_code: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Unloaded,
    Loading,
    Loaded,
    /// Its process idles with the weights freed (`--sleep-idle-seconds`); it wakes on a request.
    Sleeping,
    /// Unloaded after a load that failed.
    Failed {
        exit_code: Option<i64>,
    },
    /// A status this reader does not know.
    Other(String),
}

impl WireStatus {
    pub fn state(&self) -> State {
        match self.value.as_str() {
            "unloaded" if self.failed => State::Failed {
                exit_code: self.exit_code,
            },
            "unloaded" => State::Unloaded,
            "loading" => State::Loading,
            "loaded" => State::Loaded,
            "sleeping" => State::Sleeping,
            other => State::Other(other.to_owned()),
        }
    }
}

/// A model of a router's list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterModel {
    pub id: String,
    pub aliases: Vec<String>,
    pub state: State,
    /// The model file's size in bytes, while loaded.
    pub size: Option<u64>,
    /// The context the loaded model runs with.
    pub context_length: Option<u64>,
}

impl RouterModel {
    pub fn is_named(&self, name: &str) -> bool {
        self.id == name || self.aliases.iter().any(|a| a == name)
    }
}

/// Whether a model list is a router's: its models carry a status.
pub fn is_router_list(list: &ModelList) -> bool {
    list.data.iter().any(|m| m.status.is_some())
}

/// Whether `/props` is a router's.
pub fn is_router_props(props: &Props) -> bool {
    props.role.as_deref() == Some("router")
}

/// The router's models, from its list; `None` when the list is not a router's.
pub fn router_models(list: &ModelList) -> Option<Vec<RouterModel>> {
    if !is_router_list(list) {
        return None;
    }
    let models = list
        .data
        .iter()
        .map(|m| RouterModel {
            id: m.id.clone(),
            aliases: m.aliases.clone(),
            state: m.status.as_ref().map_or(State::Other(String::new()), WireStatus::state),
            size: m.meta.as_ref().and_then(|meta| meta.size),
            context_length: m.meta.as_ref().and_then(|meta| meta.n_ctx),
        })
        .collect();
    Some(models)
}

/// Reads a model list body.
pub fn read_list(body: &[u8], label: &str) -> Result<ModelList, BackendError> {
    serde_json::from_slice(body).map_err(|e| BackendError::Protocol(format!("unreadable model list from {label}: {e}")))
}

/// How `POST /models/load` or `/models/unload` went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Begun (a load) or done (an unload).
    Done,
    /// Nothing to do: the model was already loaded (a load) or not loaded (an unload).
    Already,
}

/// The answer to a load or unload. llama-server refuses, with a 400, to load a model
/// that runs or to unload one that does not; either is the state asked for.
pub fn read_change(status: u16, body: &[u8]) -> Result<Change, BackendError> {
    if (200..300).contains(&status) {
        return Ok(Change::Done);
    }
    let error = BackendError::from_status(status, body);
    match &error {
        BackendError::Status { status: 400, message }
            if message == "model is already running" || message == "model is not running" =>
        {
            Ok(Change::Already)
        }
        _ => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/fixtures/llama-server/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn models(name: &str) -> Vec<RouterModel> {
        let list = read_list(&fixture(name), "router").unwrap();
        router_models(&list).expect("a router's list")
    }

    fn states(name: &str) -> Vec<(String, State)> {
        models(name).into_iter().map(|m| (m.id, m.state)).collect()
    }

    #[test]
    fn a_routers_list_gives_each_models_state() {
        let expect = |broken: State, think: State| {
            vec![
                ("broken".to_owned(), broken),
                ("tiny-chat".to_owned(), State::Unloaded),
                ("tiny-think".to_owned(), think),
            ]
        };
        assert_eq!(
            states("router-models-unloaded.json"),
            expect(State::Unloaded, State::Unloaded)
        );
        assert_eq!(
            states("router-models-loading.json"),
            expect(State::Unloaded, State::Loading)
        );
        assert_eq!(
            states("router-models-loaded.json"),
            expect(State::Unloaded, State::Loaded)
        );
        assert_eq!(
            states("router-models-failed.json"),
            expect(State::Failed { exit_code: Some(1) }, State::Unloaded)
        );
    }

    #[test]
    fn a_loaded_model_tells_its_size_and_context() {
        let loaded = models("router-models-loaded.json");
        let think = loaded.iter().find(|m| m.is_named("tiny-think")).unwrap();
        assert_eq!(
            (&think.state, think.size, think.context_length),
            (&State::Loaded, Some(321280), Some(32768))
        );
        let chat = loaded.iter().find(|m| m.is_named("tiny-chat")).unwrap();
        assert_eq!(
            (&chat.state, chat.size, chat.context_length),
            (&State::Unloaded, None, None)
        );
    }

    #[test]
    fn only_a_router_is_taken_for_one() {
        let single = read_list(&fixture("models.json"), "single").unwrap();
        assert!(!is_router_list(&single));
        assert_eq!(router_models(&single), None);
        let props = |name: &str| serde_json::from_slice::<Props>(&fixture(name)).unwrap();
        assert!(is_router_props(&props("router-props.json")));
        assert!(!is_router_props(&props("props-chat.json")));
    }

    #[test]
    fn loading_a_loaded_model_or_unloading_an_unloaded_one_is_no_error() {
        let read = |status, name: &str| read_change(status, &fixture(name));
        assert_eq!(read(200, "router-load-ok.json"), Ok(Change::Done));
        assert_eq!(read(200, "router-unload-ok.json"), Ok(Change::Done));
        assert_eq!(read(400, "router-load-already-running.json"), Ok(Change::Already));
        assert_eq!(read(400, "router-unload-not-running.json"), Ok(Change::Already));
        assert_eq!(
            read(404, "router-load-unknown.json"),
            Err(BackendError::Status {
                status: 404,
                message: "File Not Found".into()
            })
        );
    }
}
