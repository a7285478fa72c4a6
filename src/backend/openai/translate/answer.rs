//! OpenAI answers → neutral chunks: SSE data or a whole body, text and thinking as they
//! come (`<think>` tags split out), tool calls assembled from fragments, the end with its
//! usage and timings; also embeddings and what `/props` says a model can do. Pure: no I/O.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::super::types::{Completion as OpenAiCompletion, EmbeddingList, MessageFields, Props, Timings, Usage};
use super::logprobs::choice_logprobs;
use crate::backend::request::{ToolCall, ToolCallFunction};
use crate::backend::{BackendError, Chunk, Completion, Delta, Embeddings};

/// `/v1/embeddings` answer → vectors in input order (servers may reorder `data`).
pub fn openai_embeddings_to_vectors(body: &[u8], expected: usize) -> Result<Embeddings, BackendError> {
    let mut list: EmbeddingList = serde_json::from_slice(body).map_err(|e| {
        BackendError::Protocol(format!(
            "unreadable embeddings ({e}): {}",
            preview(&String::from_utf8_lossy(body))
        ))
    })?;
    list.data.sort_by_key(|e| e.index.unwrap_or(usize::MAX));
    if list.data.len() != expected {
        return Err(BackendError::Protocol(format!(
            "asked for {expected} embeddings, got {}",
            list.data.len()
        )));
    }
    Ok(Embeddings {
        vectors: list.data.into_iter().map(|e| e.embedding).collect(),
        prompt_tokens: list.usage.and_then(|u| u.prompt_tokens),
    })
}

/// Ollama capabilities read from llama.cpp's `/props`: tools when the template
/// handles tool calls, thinking when it has a thinking switch or tags, vision when a
/// projector is loaded.
pub fn props_to_capabilities(props: &Props) -> Vec<String> {
    let mut capabilities = vec!["completion".to_owned()];
    let caps = props.chat_template_caps.as_ref();
    if caps.is_some_and(|c| c.supports_tool_calls == Some(true) || c.supports_tools == Some(true)) {
        capabilities.push("tools".into());
    }
    let template = props.chat_template.as_deref().unwrap_or_default();
    if ["enable_thinking", "<think>", "reasoning_content"]
        .iter()
        .any(|marker| template.contains(marker))
    {
        capabilities.push("thinking".into());
    }
    if props.modalities.as_ref().and_then(|m| m.vision) == Some(true) {
        capabilities.push("vision".into());
    }
    capabilities
}

/// A tool call being assembled from streamed fragments.
#[derive(Debug, Default)]
struct PartialCall {
    id: String,
    name: String,
    arguments: String,
}

/// Turns one upstream answer (a stream of SSE data, or one whole body) into neutral
/// chunks: text and thinking as they come, complete tool calls and the end last.
#[derive(Debug, Default)]
pub struct Translator {
    hide_thinking: bool,
    /// Set for models whose backend inlines `<think>…</think>` in the text.
    think_tags: Option<ThinkTags>,
    calls: BTreeMap<u32, PartialCall>,
    last_call: Option<u32>,
    finish_reason: Option<String>,
    usage: Option<Usage>,
    timings: Option<Timings>,
    saw_done: bool,
    /// With `logprobs` asked for: how many alternatives per position to keep.
    logprobs: Option<usize>,
}

impl Translator {
    pub fn new(hide_thinking: bool, strip_think: bool) -> Translator {
        Translator {
            hide_thinking,
            think_tags: strip_think.then(ThinkTags::default),
            ..Default::default()
        }
    }

    /// Keeps the answer's log probabilities, with at most `top` alternatives per
    /// position (`None`: the client did not ask, and none are passed on).
    pub fn with_logprobs(mut self, top: Option<usize>) -> Translator {
        self.logprobs = top;
        self
    }

    /// One SSE event's data. Returns the chunk to send on, if the event carried any text.
    pub fn on_event(&mut self, data: &str) -> Result<Option<Chunk>, BackendError> {
        let data = data.trim();
        if data.starts_with("[DONE]") {
            self.saw_done = true;
            return Ok(None);
        }
        let parsed: OpenAiCompletion = serde_json::from_str(data)
            .map_err(|e| BackendError::Protocol(format!("unreadable stream event ({e}): {}", preview(data))))?;
        self.on_completion(parsed)
    }

    /// A whole non-streamed body: everything it holds, then the end.
    pub fn on_body(mut self, body: &[u8]) -> Result<Vec<Chunk>, BackendError> {
        let parsed: OpenAiCompletion = serde_json::from_slice(body).map_err(|e| {
            BackendError::Protocol(format!(
                "unreadable response ({e}): {}",
                preview(&String::from_utf8_lossy(body))
            ))
        })?;
        // A whole body cannot have been cut off, whatever its finish_reason says.
        self.saw_done = true;
        let mut chunks: Vec<Chunk> = self.on_completion(parsed)?.into_iter().collect();
        chunks.extend(self.finish()?);
        Ok(chunks)
    }

    fn on_completion(&mut self, parsed: OpenAiCompletion) -> Result<Option<Chunk>, BackendError> {
        if let Some(error) = parsed.error.filter(|e| !e.is_null()) {
            return Err(upstream_error(&error));
        }
        if parsed.usage.is_some() {
            self.usage = parsed.usage;
        }
        if parsed.timings.is_some() {
            self.timings = parsed.timings;
        }
        let mut delta = Delta::default();
        for choice in parsed.choices.unwrap_or_default() {
            if choice.index.unwrap_or(0) != 0 {
                continue;
            }
            if let Some(text) = choice.text {
                delta.content.push_str(&text);
            }
            if let Some(fields) = choice.delta.or(choice.message) {
                self.take_fields(fields, &mut delta);
            }
            if let Some(reason) = choice.finish_reason.filter(|r| !r.is_empty()) {
                self.finish_reason = Some(reason);
            }
            if let (Some(top), Some(logprobs)) = (self.logprobs, choice.logprobs) {
                delta.logprobs.extend(choice_logprobs(logprobs, top));
            }
        }
        if let Some(tags) = &mut self.think_tags {
            let (content, thinking) = tags.split(&std::mem::take(&mut delta.content));
            delta.content = content;
            if !self.hide_thinking {
                delta.thinking.push_str(&thinking);
            }
        }
        Ok((!delta.is_empty()).then(|| Chunk {
            delta,
            ..Default::default()
        }))
    }

    fn take_fields(&mut self, fields: MessageFields, delta: &mut Delta) {
        if let Some(text) = fields.content {
            delta.content.push_str(&text);
        }
        if let Some(text) = fields.refusal {
            delta.content.push_str(&text);
        }
        let thinking = fields.reasoning_content.or(fields.reasoning).unwrap_or_default();
        if !self.hide_thinking {
            delta.thinking.push_str(&thinking);
        }
        for fragment in fields.tool_calls.unwrap_or_default() {
            let index = match fragment.index {
                Some(index) => index,
                // No index (Gemini's endpoint): a new id starts a new call.
                None => match (self.last_call, fragment.id.as_deref().filter(|id| !id.is_empty())) {
                    (Some(last), Some(id)) if self.calls.get(&last).is_some_and(|c| !c.id.is_empty() && c.id != id) => {
                        last + 1
                    }
                    (last, _) => last.unwrap_or(0),
                },
            };
            self.last_call = Some(index);
            let call = self.calls.entry(index).or_default();
            if let Some(id) = fragment.id.filter(|id| !id.is_empty()) {
                if call.id.is_empty() {
                    call.id = id;
                }
            }
            if let Some(function) = fragment.function {
                if let Some(name) = function.name.filter(|n| !n.is_empty()) {
                    // llama.cpp re-sends the full name when its parser revises it.
                    if call.name.is_empty() || name.starts_with(&call.name) {
                        call.name = name;
                    } else {
                        call.name.push_str(&name);
                    }
                }
                match function.arguments {
                    Some(Value::String(piece)) => call.arguments.push_str(&piece),
                    Some(Value::Null) | None => {}
                    Some(whole) => call.arguments.push_str(&whole.to_string()),
                }
            }
        }
    }

    /// The upstream stream has ended: complete tool calls (one chunk), then the end.
    /// A stream that stops without a finish reason or `[DONE]` was cut off.
    pub fn finish(&mut self) -> Result<Vec<Chunk>, BackendError> {
        if self.finish_reason.is_none() && !self.saw_done {
            return Err(BackendError::Truncated);
        }
        let mut chunks = Vec::new();
        if let Some((content, thinking)) = self.think_tags.as_mut().map(ThinkTags::flush) {
            let thinking = if self.hide_thinking { String::new() } else { thinking };
            let delta = Delta {
                content,
                thinking,
                ..Default::default()
            };
            if !delta.is_empty() {
                chunks.push(Chunk {
                    delta,
                    ..Default::default()
                });
            }
        }
        let calls = std::mem::take(&mut self.calls);
        if !calls.is_empty() {
            let mut tool_calls = calls
                .into_values()
                .enumerate()
                .map(|(i, call)| complete_call(i, call))
                .collect::<Result<Vec<ToolCall>, _>>()?;
            // Ids must tell calls apart, whatever the backend sent.
            let mut seen = std::collections::HashSet::new();
            for (i, call) in tool_calls.iter_mut().enumerate() {
                if let Some(id) = &call.id {
                    if !seen.insert(id.clone()) {
                        let unique = hashed_call_id(&format!("{id}#{i}"));
                        seen.insert(unique.clone());
                        call.id = Some(unique);
                    }
                }
            }
            chunks.push(Chunk {
                delta: Delta {
                    tool_calls,
                    ..Default::default()
                },
                ..Default::default()
            });
        }
        chunks.push(Chunk {
            done: Some(self.completion()),
            ..Default::default()
        });
        Ok(chunks)
    }

    fn completion(&self) -> Completion {
        let timings = self.timings.unwrap_or_default();
        let usage = self.usage.unwrap_or_default();
        let ms_to_ns = |ms: f64| (ms * 1e6).round() as u64;
        Completion {
            done_reason: match self.finish_reason.as_deref() {
                Some("length") => "length".into(),
                _ => "stop".into(),
            },
            prompt_tokens: usage
                .prompt_tokens
                .or_else(|| timings.prompt_n.map(|n| (n + timings.cache_n.unwrap_or(0.0)) as u64)),
            completion_tokens: usage.completion_tokens.or(timings.predicted_n.map(|n| n as u64)),
            prompt_eval_ns: timings.prompt_ms.map(ms_to_ns),
            eval_ns: timings.predicted_ms.map(ms_to_ns),
            total_ns: None,
            load_ns: None,
        }
    }
}

/// Splits text with inlined `<think>…</think>` into answer and thinking, even when a
/// tag is cut across chunks: a trailing piece that may start a tag is held back. Like
/// Ollama's parser it drops the whitespace right after each tag and at the end of the
/// thinking, so `<think>\nPlan\n</think>\n\nHi` gives "Plan" and "Hi".
#[derive(Debug, Default)]
struct ThinkTags {
    inside: bool,
    /// Just past a tag: leading whitespace is dropped.
    after_tag: bool,
    held: String,
}

impl ThinkTags {
    const OPEN: &str = "<think>";
    const CLOSE: &str = "</think>";

    fn split(&mut self, text: &str) -> (String, String) {
        let mut rest = std::mem::take(&mut self.held) + text;
        let (mut content, mut thinking) = (String::new(), String::new());
        loop {
            if self.after_tag {
                let trimmed = rest.trim_start();
                if trimmed.is_empty() {
                    return (content, thinking);
                }
                rest = trimmed.to_owned();
                self.after_tag = false;
            }
            let tag = if self.inside { Self::CLOSE } else { Self::OPEN };
            let out = if self.inside { &mut thinking } else { &mut content };
            if let Some(at) = rest.find(tag) {
                let before = &rest[..at];
                out.push_str(if self.inside { before.trim_end() } else { before });
                rest = rest[at + tag.len()..].to_owned();
                self.inside = !self.inside;
                self.after_tag = true;
                continue;
            }
            let partial_tag = (1..tag.len()).rev().find(|n| rest.ends_with(&tag[..*n])).unwrap_or(0);
            let mut cut = rest.len() - partial_tag;
            // Inside, trailing whitespace waits: it is dropped if the closing tag follows.
            if self.inside {
                cut = rest[..cut].trim_end().len();
            }
            out.push_str(&rest[..cut]);
            self.held = rest[cut..].to_owned();
            return (content, thinking);
        }
    }

    /// The end of the answer: whatever was held back is plain text after all.
    fn flush(&mut self) -> (String, String) {
        let held = std::mem::take(&mut self.held);
        if self.inside {
            (String::new(), held.trim_end().to_owned())
        } else {
            (held, String::new())
        }
    }
}

fn complete_call(index: usize, call: PartialCall) -> Result<ToolCall, BackendError> {
    let arguments = tool_arguments(&call.name, &call.arguments)?;
    Ok(tool_call(index, &call.id, call.name, arguments))
}

/// A tool call's arguments sent as JSON text (OpenAI's `arguments`, Anthropic's streamed
/// `tool_use` input): a JSON object, `{}` when empty.
pub fn tool_arguments(name: &str, text: &str) -> Result<Value, BackendError> {
    let text = text.trim();
    let arguments: Value = if text.is_empty() {
        Value::Object(Map::new())
    } else {
        serde_json::from_str(text).map_err(|e| {
            BackendError::Protocol(format!(
                "tool call '{name}' has arguments that are not valid JSON ({e}): {}",
                preview(text)
            ))
        })?
    };
    if !arguments.is_object() {
        return Err(BackendError::Protocol(format!(
            "tool call '{name}' has arguments that are not a JSON object: {}",
            preview(text)
        )));
    }
    Ok(arguments)
}

/// The `index`-th tool call of an answer, with an Ollama-style id made from the backend's.
pub fn tool_call(index: usize, backend_id: &str, name: String, arguments: Value) -> ToolCall {
    ToolCall {
        id: Some(tool_call_id(backend_id)),
        function: ToolCallFunction {
            index: Some(index as u32),
            name,
            arguments,
        },
    }
}

/// Ollama's ids look like `call_` + 8 lowercase alphanumerics. Derived from a hash of
/// the backend's whole id when it has one (vLLM's ids share a long prefix), so the same
/// answer always gets the same id; random otherwise. OpenAI-style `call_` ids pass as-is.
pub(super) fn tool_call_id(backend_id: &str) -> String {
    if backend_id.starts_with("call_") {
        backend_id.to_owned()
    } else if backend_id.is_empty() {
        id_from_bytes(rand::random())
    } else {
        hashed_call_id(backend_id)
    }
}

fn hashed_call_id(seed: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(seed.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    id_from_bytes(bytes)
}

fn id_from_bytes(bytes: [u8; 8]) -> String {
    const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let tail: String = bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect();
    format!("call_{tail}")
}

/// An error object inside the stream (`{"error":{"message","code"}}` or a string).
fn upstream_error(error: &Value) -> BackendError {
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .or_else(|| error.as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| error.to_string());
    let status = error
        .get("code")
        .and_then(Value::as_u64)
        .and_then(|c| u16::try_from(c).ok());
    BackendError::Status {
        status: status.filter(|s| (400..600).contains(s)).unwrap_or(502),
        message,
    }
}

fn preview(text: &str) -> String {
    const MAX: usize = 200;
    if text.len() <= MAX {
        return text.to_owned();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}
