//! Pure translation between Ollama requests/answers and OpenAI's chat/completions API.
//! No I/O here: requests in, JSON out; SSE event data in, neutral chunks out.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::types::{Completion as OpenAiCompletion, EmbeddingList, MessageFields, Props, Timings, Usage};
use crate::api::ollama::types::{ChatRequest, GenerateRequest, Message, ToolCall, ToolCallFunction};
use crate::backend::{BackendError, Chunk, Completion, Delta, Embeddings};
pub use crate::config::ThinkingStyle;

/// Ollama `options` that OpenAI-compatible servers understand under the same name
/// (llama.cpp accepts the non-OpenAI samplers too).
const SAME_NAME_OPTIONS: &[&str] = &[
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "typical_p",
    "seed",
    "stop",
    "repeat_penalty",
    "repeat_last_n",
    "presence_penalty",
    "frequency_penalty",
    "mirostat",
    "mirostat_tau",
    "mirostat_eta",
];
// Other Ollama options (num_ctx, num_batch, num_gpu, num_thread, use_mmap, num_keep, ...)
// are load-time knobs of Ollama's own runner: accepted and not sent, as Ollama itself
// ignores options it does not know.

/// Which upstream route a call uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Chat,
    Completions,
}

impl Route {
    pub fn path(self) -> &'static str {
        match self {
            Route::Chat => "v1/chat/completions",
            Route::Completions => "v1/completions",
        }
    }
}

/// `/api/chat` → `/v1/chat/completions` body.
pub fn ollama_chat_to_openai(
    req: &ChatRequest,
    backend_model: &str,
    stream: bool,
    thinking: ThinkingStyle,
) -> Map<String, Value> {
    let messages = req.messages.as_deref().unwrap_or_default();
    let mut body = Map::new();
    body.insert("model".into(), backend_model.into());
    body.insert("messages".into(), Value::Array(messages_to_openai(messages)));
    if let Some(tools) = req.tools.as_ref().filter(|t| !t.is_empty()) {
        body.insert("tools".into(), Value::Array(tools.iter().map(tool_to_openai).collect()));
    }
    apply_common(
        &mut body,
        stream,
        req.options.as_ref(),
        req.format.as_ref(),
        req.think.as_ref(),
        thinking,
    );
    body
}

/// `/api/generate` → the upstream route and its body. `raw` and `suffix` prompts go
/// to `/v1/completions` verbatim; the rest become a chat with an optional system turn.
pub fn ollama_generate_to_openai(
    req: &GenerateRequest,
    backend_model: &str,
    stream: bool,
    thinking: ThinkingStyle,
) -> (Route, Map<String, Value>) {
    let prompt = req.prompt.clone().unwrap_or_default();
    let mut body = Map::new();
    body.insert("model".into(), backend_model.into());
    let route = if req.raw == Some(true) || req.suffix.is_some() {
        body.insert("prompt".into(), prompt.into());
        if let Some(suffix) = &req.suffix {
            body.insert("suffix".into(), suffix.clone().into());
        }
        Route::Completions
    } else {
        let mut messages = Vec::new();
        if let Some(system) = req.system.as_ref().filter(|s| !s.is_empty()) {
            messages.push(Message {
                role: "system".into(),
                content: system.clone(),
                ..Default::default()
            });
        }
        messages.push(Message {
            role: "user".into(),
            content: prompt,
            images: req.images.clone(),
            ..Default::default()
        });
        body.insert("messages".into(), Value::Array(messages_to_openai(&messages)));
        Route::Chat
    };
    apply_common(
        &mut body,
        stream,
        req.options.as_ref(),
        req.format.as_ref(),
        req.think.as_ref(),
        thinking,
    );
    (route, body)
}

/// `/api/embed` inputs → `/v1/embeddings` body.
pub fn embeddings_request(backend_model: &str, inputs: &[String]) -> Value {
    json!({ "model": backend_model, "input": inputs })
}

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

/// Whether the client asked not to see thinking (`think: false`).
pub fn thinking_disabled(think: Option<&Value>) -> bool {
    matches!(think, Some(Value::Bool(false)))
}

fn apply_common(
    body: &mut Map<String, Value>,
    stream: bool,
    options: Option<&Map<String, Value>>,
    format: Option<&Value>,
    think: Option<&Value>,
    thinking: ThinkingStyle,
) {
    body.insert("stream".into(), stream.into());
    if stream {
        body.insert("stream_options".into(), json!({"include_usage": true}));
    }
    if let Some(options) = options {
        for key in SAME_NAME_OPTIONS {
            if let Some(v) = options.get(*key).filter(|v| !v.is_null()) {
                body.insert((*key).into(), v.clone());
            }
        }
        // Ollama's -1 (unlimited) and -2 (fill context) have no OpenAI spelling: omit.
        if let Some(n) = options.get("num_predict").and_then(Value::as_f64).filter(|n| *n > 0.0) {
            body.insert("max_tokens".into(), json!(n as u64));
        }
    }
    match format {
        Some(Value::String(s)) if s == "json" => {
            body.insert("response_format".into(), json!({"type": "json_object"}));
        }
        Some(schema @ Value::Object(_)) => {
            body.insert(
                "response_format".into(),
                json!({"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}),
            );
        }
        _ => {}
    }
    // Ollama's `think`: a switch, or a level ("low" | "medium" | "high").
    let (enable, level) = match think {
        Some(Value::Bool(b)) => (Some(*b), None),
        Some(Value::String(level)) if matches!(level.as_str(), "" | "none" | "false") => (Some(false), None),
        Some(Value::String(level)) => (Some(true), Some(level.as_str())),
        _ => (None, None),
    };
    match (thinking, enable) {
        (_, None) | (ThinkingStyle::None, _) => {}
        (ThinkingStyle::ChatTemplateKwargs, Some(enable)) => {
            body.insert("chat_template_kwargs".into(), json!({"enable_thinking": enable}));
            if let Some(level) = level {
                body.insert("reasoning_effort".into(), level.into());
            }
        }
        // Thinking cannot be switched off this way; the translator hides it instead.
        (ThinkingStyle::ReasoningEffort, Some(false)) => {}
        (ThinkingStyle::ReasoningEffort, Some(true)) => {
            body.insert("reasoning_effort".into(), level.unwrap_or("medium").into());
        }
    }
}

/// Ollama history → OpenAI messages. Tool calls get ids, and tool results are linked
/// to the call they answer by `tool_call_id`, else `tool_name`, else order (Home
/// Assistant sends neither).
fn messages_to_openai(messages: &[Message]) -> Vec<Value> {
    let mut open_calls: Vec<(String, String)> = Vec::new(); // (id, name) not yet answered
    let mut out = Vec::with_capacity(messages.len());
    for (turn, message) in messages.iter().enumerate() {
        let mut m = Map::new();
        m.insert("role".into(), message.role.clone().into());
        m.insert("content".into(), content_to_openai(message));
        if let Some(calls) = message.tool_calls.as_ref().filter(|c| !c.is_empty()) {
            let calls: Vec<Value> = calls
                .iter()
                .enumerate()
                .map(|(i, call)| {
                    let id = call.id.clone().unwrap_or_else(|| format!("call_{turn}_{i}"));
                    open_calls.push((id.clone(), call.function.name.clone()));
                    json!({
                        "id": id,
                        "type": "function",
                        "function": {"name": call.function.name, "arguments": arguments_to_string(&call.function.arguments)},
                    })
                })
                .collect();
            m.insert("tool_calls".into(), Value::Array(calls));
        }
        if message.role == "tool" {
            let by_id = message
                .tool_call_id
                .as_ref()
                .and_then(|id| open_calls.iter().position(|(open, _)| open == id));
            let by_name = || {
                message
                    .tool_name
                    .as_ref()
                    .and_then(|name| open_calls.iter().position(|(_, open)| open == name))
            };
            let position = by_id.or_else(by_name).or((!open_calls.is_empty()).then_some(0));
            if let Some(position) = position {
                let (id, _) = open_calls.remove(position);
                m.insert("tool_call_id".into(), id.into());
            } else if let Some(id) = &message.tool_call_id {
                m.insert("tool_call_id".into(), id.clone().into());
            }
            if let Some(name) = &message.tool_name {
                m.insert("name".into(), name.clone().into());
            }
        }
        out.push(Value::Object(m));
    }
    out
}

fn content_to_openai(message: &Message) -> Value {
    let images = message.images.as_deref().unwrap_or_default();
    if images.is_empty() {
        return message.content.clone().into();
    }
    let mut parts = vec![json!({"type": "text", "text": message.content})];
    for image in images {
        let url = if image.starts_with("data:") {
            image.clone()
        } else {
            format!("data:{};base64,{image}", image_media_type(image))
        };
        parts.push(json!({"type": "image_url", "image_url": {"url": url}}));
    }
    Value::Array(parts)
}

/// Ollama images are bare base64; the media type is sniffed from the encoded magic bytes.
fn image_media_type(base64: &str) -> &'static str {
    match base64.as_bytes() {
        [b'i', b'V', b'B', b'O', b'R', ..] => "image/png",
        [b'/', b'9', b'j', b'/', ..] => "image/jpeg",
        [b'R', b'0', b'l', b'G', b'O', b'D', ..] => "image/gif",
        [b'U', b'k', b'l', b'G', b'R', ..] => "image/webp",
        _ => "image/png",
    }
}

fn arguments_to_string(arguments: &Value) -> String {
    match arguments {
        Value::String(s) => s.clone(),
        Value::Null => "{}".into(),
        other => other.to_string(),
    }
}

fn tool_to_openai(tool: &Value) -> Value {
    let mut tool = tool.clone();
    if let Some(function) = tool.get_mut("function").and_then(Value::as_object_mut) {
        if !function.get("parameters").is_some_and(Value::is_object) {
            function.insert("parameters".into(), json!({"type": "object", "properties": {}}));
        }
    }
    if let Some(obj) = tool.as_object_mut() {
        obj.entry("type").or_insert_with(|| "function".into());
    }
    tool
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
}

impl Translator {
    pub fn new(hide_thinking: bool, strip_think: bool) -> Translator {
        Translator {
            hide_thinking,
            think_tags: strip_think.then(ThinkTags::default),
            ..Default::default()
        }
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
    let text = call.arguments.trim();
    let arguments: Value = if text.is_empty() {
        Value::Object(Map::new())
    } else {
        serde_json::from_str(text).map_err(|e| {
            BackendError::Protocol(format!(
                "tool call '{}' has arguments that are not valid JSON ({e}): {}",
                call.name,
                preview(text)
            ))
        })?
    };
    if !arguments.is_object() {
        return Err(BackendError::Protocol(format!(
            "tool call '{}' has arguments that are not a JSON object: {}",
            call.name,
            preview(text)
        )));
    }
    Ok(ToolCall {
        id: Some(tool_call_id(&call.id)),
        function: ToolCallFunction {
            index: Some(index as u32),
            name: call.name,
            arguments,
        },
    })
}

/// Ollama's ids look like `call_` + 8 lowercase alphanumerics. Derived from a hash of
/// the backend's whole id when it has one (vLLM's ids share a long prefix), so the same
/// answer always gets the same id; random otherwise. OpenAI-style `call_` ids pass as-is.
fn tool_call_id(backend_id: &str) -> String {
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

#[cfg(test)]
mod tests;
