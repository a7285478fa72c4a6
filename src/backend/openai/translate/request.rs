//! Ollama requests → OpenAI request bodies: messages, tools, images, options, thinking.
//! Pure: no I/O.

use serde_json::{Map, Value, json};

use super::{Route, ThinkingStyle};
use crate::backend::request::{ChatRequest, GenerateRequest, Message, Think, ThinkLevel, logprobs_asked};

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
        req.think,
        thinking,
    );
    apply_logprobs(&mut body, Route::Chat, logprobs_asked(req.logprobs, req.top_logprobs));
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
        req.think,
        thinking,
    );
    apply_logprobs(&mut body, route, logprobs_asked(req.logprobs, req.top_logprobs));
    (route, body)
}

/// `/api/embed` inputs → `/v1/embeddings` body.
pub fn embeddings_request(backend_model: &str, inputs: &[String]) -> Value {
    json!({ "model": backend_model, "input": inputs })
}

/// `logprobs` and `top_logprobs`. llama.cpp sends no log probabilities at all for
/// `top_logprobs: 0` (chat) or `logprobs: 0` (completions, where the count is `logprobs`
/// itself), so at least one alternative is asked for and the translator cuts the lists
/// back to what the client asked.
fn apply_logprobs(body: &mut Map<String, Value>, route: Route, asked: Option<usize>) {
    let Some(top) = asked else {
        return;
    };
    let top = top.max(1);
    match route {
        Route::Chat => {
            body.insert("logprobs".into(), true.into());
            body.insert("top_logprobs".into(), top.into());
        }
        Route::Completions => {
            body.insert("logprobs".into(), top.into());
        }
    }
}

fn apply_common(
    body: &mut Map<String, Value>,
    stream: bool,
    options: Option<&Map<String, Value>>,
    format: Option<&Value>,
    think: Option<Think>,
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
    // Ollama's `think`: a switch, or a level. No OpenAI-compatible server knows Ollama's
    // "max": it becomes the strongest effort they do know, "high".
    let (enable, level) = match think {
        Some(Think::On) => (Some(true), None),
        Some(Think::Off) => (Some(false), None),
        Some(Think::Level(ThinkLevel::Max)) => (Some(true), Some(ThinkLevel::High.as_str())),
        Some(Think::Level(level)) => (Some(true), Some(level.as_str())),
        None => (None, None),
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
