//! A Messages request → the neutral chat request: `system` (a string or text blocks)
//! first; each message's blocks (text, base64 images, `tool_use`, `tool_result`,
//! `thinking`); `tools` with their `input_schema`; `tool_choice` when it needs no forcing
//! (`auto`, `none`); `max_tokens`, `temperature`, `top_p`, `top_k`, `stop_sequences` as
//! options; `thinking` as `think`. Pure.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::passthrough::{Sampling, TextOrParts, function_tool, read_body};
use crate::backend::request::{ChatRequest, Message, Think, ToolCall, ToolCallFunction};

#[derive(Deserialize)]
struct Request {
    #[serde(default)]
    model: Option<String>,
    messages: Vec<InMessage>,
    #[serde(default)]
    system: Option<Text>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    top_k: Option<u64>,
    #[serde(default)]
    stop_sequences: Option<Vec<String>>,
    #[serde(default)]
    tools: Option<Vec<Tool>>,
    #[serde(default)]
    tool_choice: Option<ToolChoice>,
    #[serde(default)]
    thinking: Option<Thinking>,
}

type Text = TextOrParts<Block>;

#[derive(Deserialize)]
struct InMessage {
    role: Role,
    content: Text,
}

#[derive(Deserialize, Clone, Copy, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Role {
    User,
    Assistant,
    /// Not Anthropic's, but Claude Code sends one (2.1.328, its first request of a run).
    System,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block {
    Text {
        text: String,
    },
    Image {
        source: ImageSource,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    ToolResult {
        tool_use_id: String,
        #[serde(default)]
        content: Option<Text>,
        #[serde(default)]
        is_error: bool,
    },
    Thinking {
        thinking: String,
    },
    /// Thinking the model's provider encrypted: nothing a backend here can read.
    RedactedThinking {},
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ImageSource {
    Base64 { data: String },
    Url { url: String },
}

#[derive(Deserialize)]
struct Tool {
    /// Absent or `custom` for a client's own tool; Anthropic's server tools have a type.
    #[serde(rename = "type", default)]
    kind: Option<String>,
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    input_schema: Option<Value>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ToolChoice {
    Auto {},
    None {},
    Any {},
    Tool {},
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Thinking {
    Enabled {},
    Adaptive {},
    Disabled {},
}

/// Reads a Messages request; the error names the field.
pub fn chat_request(body: &[u8]) -> Result<ChatRequest, String> {
    let request: Request = read_body(body)?;
    let mut messages = Vec::new();
    if let Some(system) = request.system {
        let content = only_text(system, || "system: only text blocks can be a system prompt".into())?;
        if !content.is_empty() {
            messages.push(Message {
                role: "system".into(),
                content,
                ..Default::default()
            });
        }
    }
    for (i, message) in request.messages.into_iter().enumerate() {
        add_message(&mut messages, message, i)?;
    }
    let mut tools = match request.tools {
        Some(tools) => Some(tools.into_iter().map(tool).collect::<Result<Vec<_>, _>>()?),
        None => None,
    };
    match request.tool_choice {
        None | Some(ToolChoice::Auto {}) => {}
        Some(ToolChoice::None {}) => tools = None,
        Some(ToolChoice::Any {} | ToolChoice::Tool { .. }) => {
            return Err(
                "tool_choice 'any' or 'tool' cannot be honoured by a backend answering through chat completions; \
                 use 'auto'"
                    .into(),
            );
        }
    }
    let options = Sampling {
        num_predict: request.max_tokens,
        temperature: request.temperature,
        top_p: request.top_p,
        top_k: request.top_k,
        stop: request.stop_sequences,
    }
    .options();
    Ok(ChatRequest {
        model: request.model,
        messages: Some(messages),
        options,
        tools,
        think: request.thinking.map(|t| match t {
            Thinking::Enabled {} | Thinking::Adaptive {} => Think::On,
            Thinking::Disabled {} => Think::Off,
        }),
        ..Default::default()
    })
}

/// Text only (a system prompt, a tool result): its blocks joined; `refusal` says what else
/// cannot be there.
fn only_text(content: Text, refusal: impl FnOnce() -> String) -> Result<String, String> {
    let blocks = match content {
        TextOrParts::Text(text) => return Ok(text),
        TextOrParts::Parts(blocks) => blocks,
    };
    let mut texts = Vec::new();
    for block in blocks {
        match block {
            Block::Text { text } => texts.push(text),
            _ => return Err(refusal()),
        }
    }
    Ok(texts.join("\n"))
}

/// One Anthropic message → neutral messages: a user turn's tool results become `tool`
/// messages (before the rest of the turn, as Anthropic places them first), the rest one
/// message with its text joined, its images, thinking and tool calls.
fn add_message(messages: &mut Vec<Message>, message: InMessage, index: usize) -> Result<(), String> {
    let role = match message.role {
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::System => "system",
    };
    let blocks = match message.content {
        TextOrParts::Text(content) => {
            messages.push(Message {
                role: role.into(),
                content,
                ..Default::default()
            });
            return Ok(());
        }
        TextOrParts::Parts(blocks) => blocks,
    };
    let mut turn = Message {
        role: role.into(),
        ..Default::default()
    };
    let mut texts = Vec::new();
    let mut images = Vec::new();
    let mut thinking = String::new();
    let mut calls = Vec::new();
    let mut has_results = false;
    for block in blocks {
        match block {
            Block::Text { text } => texts.push(text),
            Block::Image { source } => images.push(image(source, index)?),
            Block::ToolUse { id, name, input } => calls.push(ToolCall {
                id: Some(id),
                function: ToolCallFunction {
                    index: None,
                    name,
                    arguments: if input.is_null() { json!({}) } else { input },
                },
            }),
            Block::ToolResult {
                tool_use_id,
                content,
                is_error,
            } => {
                has_results = true;
                let mut result = match content {
                    None => String::new(),
                    Some(content) => only_text(content, || {
                        format!("messages[{index}]: a tool_result's content can only be text here")
                    })?,
                };
                if is_error {
                    result = format!("Error: {result}");
                }
                messages.push(Message {
                    role: "tool".into(),
                    content: result,
                    tool_call_id: Some(tool_use_id),
                    ..Default::default()
                });
            }
            Block::Thinking { thinking: text } => thinking.push_str(&text),
            Block::RedactedThinking {} => {}
        }
    }
    turn.content = texts.join("\n");
    turn.images = (!images.is_empty()).then_some(images);
    turn.thinking = (!thinking.is_empty()).then_some(thinking);
    turn.tool_calls = (!calls.is_empty()).then_some(calls);
    // A turn of tool results only has nothing left to say.
    let empty = turn.content.is_empty() && turn.images.is_none() && turn.tool_calls.is_none();
    if !(has_results && empty) {
        messages.push(turn);
    }
    Ok(())
}

/// Ollama's images are bare base64 (the backend's translation adds the media type).
fn image(source: ImageSource, index: usize) -> Result<String, String> {
    match source {
        ImageSource::Base64 { data } => Ok(data),
        ImageSource::Url { url } => Err(format!(
            "messages[{index}]: an image by URL ({url}) cannot be passed to a backend answering through \
             chat completions; send it as base64"
        )),
    }
}

/// An Anthropic tool → an Ollama (OpenAI-style) function.
fn tool(tool: Tool) -> Result<Value, String> {
    if let Some(kind) = tool.kind.as_deref().filter(|k| *k != "custom") {
        return Err(format!(
            "tools: '{}' is an Anthropic server tool ({kind}), which a backend answering through chat \
             completions does not have",
            tool.name
        ));
    }
    Ok(function_tool(tool.name, tool.description, tool.input_schema))
}
