//! OpenAI chat/completions wire types, read loosely: every field may be missing or
//! null, unknown fields are ignored (llama.cpp adds `timings`, OpenRouter `provider`).

use serde::Deserialize;
use serde_json::Value;

/// A streamed chunk (`chat.completion.chunk`, `text_completion`) or a whole
/// non-streamed completion: the same reader serves both.
#[derive(Debug, Default, Deserialize)]
pub struct Completion {
    #[serde(default)]
    pub choices: Option<Vec<Choice>>,
    #[serde(default)]
    pub usage: Option<Usage>,
    #[serde(default)]
    pub timings: Option<Timings>,
    #[serde(default)]
    pub error: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Choice {
    #[serde(default)]
    pub index: Option<u32>,
    /// Streamed chat.
    #[serde(default)]
    pub delta: Option<MessageFields>,
    /// Non-streamed chat.
    #[serde(default)]
    pub message: Option<MessageFields>,
    /// `/v1/completions`, streamed or not.
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub finish_reason: Option<String>,
    #[serde(default)]
    pub logprobs: Option<ChoiceLogprobs>,
}

/// A choice's log probabilities: chat's `content` list (llama.cpp answers
/// `/v1/completions` with it too), or the legacy completions columns (vLLM, OpenAI).
#[derive(Debug, Default, Deserialize)]
pub struct ChoiceLogprobs {
    #[serde(default)]
    pub content: Option<Vec<TokenLogprob>>,
    #[serde(default)]
    pub tokens: Option<Vec<String>>,
    #[serde(default)]
    pub token_logprobs: Option<Vec<Option<f64>>>,
    /// Per position, token → log probability.
    #[serde(default)]
    pub top_logprobs: Option<Vec<Option<serde_json::Map<String, Value>>>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct TokenLogprob {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub logprob: Option<f64>,
    #[serde(default)]
    pub bytes: Option<Vec<u8>>,
    #[serde(default)]
    pub top_logprobs: Option<Vec<TokenLogprob>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct MessageFields {
    #[serde(default)]
    pub content: Option<String>,
    /// llama.cpp, DeepSeek, older vLLM.
    #[serde(default)]
    pub reasoning_content: Option<String>,
    /// OpenRouter, newer vLLM, Ollama's `/v1`.
    #[serde(default)]
    pub reasoning: Option<String>,
    #[serde(default)]
    pub refusal: Option<String>,
    #[serde(default)]
    pub tool_calls: Option<Vec<ToolCallFragment>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ToolCallFragment {
    #[serde(default)]
    pub index: Option<u32>,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub function: Option<FunctionFragment>,
}

#[derive(Debug, Default, Deserialize)]
pub struct FunctionFragment {
    #[serde(default)]
    pub name: Option<String>,
    /// A piece of a JSON text when streamed; some servers send the whole object.
    #[serde(default)]
    pub arguments: Option<Value>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: Option<u64>,
    #[serde(default)]
    pub completion_tokens: Option<u64>,
}

/// llama.cpp's per-request timings (milliseconds, token counts).
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct Timings {
    #[serde(default)]
    pub cache_n: Option<f64>,
    #[serde(default)]
    pub prompt_n: Option<f64>,
    #[serde(default)]
    pub prompt_ms: Option<f64>,
    #[serde(default)]
    pub predicted_n: Option<f64>,
    #[serde(default)]
    pub predicted_ms: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ModelList {
    #[serde(default)]
    pub data: Vec<ModelEntry>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ModelEntry {
    pub id: String,
    #[serde(default)]
    pub meta: Option<ModelMeta>,
    /// Other names a llama-server answers to.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// A llama-server router's: whether the model is loaded.
    #[serde(default)]
    pub status: Option<super::router::WireStatus>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ModelMeta {
    #[serde(default)]
    pub n_ctx: Option<u64>,
    #[serde(default)]
    pub n_ctx_train: Option<u64>,
    /// The model file's size in bytes.
    #[serde(default)]
    pub size: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct EmbeddingList {
    #[serde(default)]
    pub data: Vec<EmbeddingEntry>,
    #[serde(default)]
    pub usage: Option<Usage>,
}

#[derive(Debug, Default, Deserialize)]
pub struct EmbeddingEntry {
    #[serde(default)]
    pub index: Option<usize>,
    pub embedding: Vec<f64>,
}

/// llama.cpp's `GET /props`: what the loaded model and its template can do.
#[derive(Debug, Default, Deserialize)]
pub struct Props {
    /// `router` for a llama-server in router mode (no model of its own).
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub default_generation_settings: Option<GenerationSettings>,
    /// How many requests llama-server decodes at once (`-np`).
    #[serde(default)]
    pub total_slots: Option<usize>,
    #[serde(default)]
    pub chat_template: Option<String>,
    #[serde(default)]
    pub chat_template_caps: Option<TemplateCaps>,
    #[serde(default)]
    pub modalities: Option<Modalities>,
}

#[derive(Debug, Default, Deserialize)]
pub struct GenerationSettings {
    #[serde(default)]
    pub n_ctx: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct TemplateCaps {
    #[serde(default)]
    pub supports_tools: Option<bool>,
    #[serde(default)]
    pub supports_tool_calls: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Modalities {
    #[serde(default)]
    pub vision: Option<bool>,
}
