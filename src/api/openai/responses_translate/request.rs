//! A Responses request → the neutral chat request: `instructions` as the system message;
//! `input` as a string or items (messages with `input_text`/`output_text` parts and
//! base64 `input_image`s, `function_call`, `function_call_output`; `reasoning` items are
//! left out); function `tools`; `tool_choice` when it needs no forcing (`auto`, `none`);
//! `max_output_tokens`, `temperature`, `top_p` as options; `reasoning.effort` as `think`;
//! `text.format` as `format`. Pure.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::passthrough::{Sampling, TextOrParts, function_tool, read_body};
use crate::backend::request::{ChatRequest, Message, Think, ThinkLevel, ToolCall, ToolCallFunction};

#[derive(Deserialize)]
struct Request {
    #[serde(default)]
    model: Option<String>,
    input: Input,
    #[serde(default)]
    instructions: Option<String>,
    #[serde(default)]
    tools: Option<Vec<Tool>>,
    #[serde(default)]
    tool_choice: Option<Value>,
    #[serde(default)]
    max_output_tokens: Option<u64>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    reasoning: Option<Reasoning>,
    #[serde(default)]
    text: Option<TextConfig>,
    #[serde(default)]
    previous_response_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Input {
    Text(String),
    Items(Vec<Value>),
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Item {
    Message {
        role: Role,
        content: Content,
    },
    FunctionCall {
        call_id: String,
        name: String,
        #[serde(default)]
        arguments: String,
    },
    FunctionCallOutput {
        call_id: String,
        output: Content,
    },
    /// The model's reasoning in an earlier turn: not sent back to the model.
    Reasoning {},
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum Role {
    User,
    Assistant,
    System,
    Developer,
}

type Content = TextOrParts<Part>;

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Part {
    InputText {
        text: String,
    },
    OutputText {
        text: String,
    },
    Refusal {
        refusal: String,
    },
    InputImage {
        #[serde(default)]
        image_url: Option<String>,
    },
}

#[derive(Deserialize)]
struct Tool {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parameters: Option<Value>,
}

#[derive(Deserialize)]
struct Reasoning {
    #[serde(default)]
    effort: Option<String>,
}

#[derive(Deserialize)]
struct TextConfig {
    #[serde(default)]
    format: Option<Value>,
}

/// Reads a Responses request; the error names the field.
pub fn chat_request(body: &[u8]) -> Result<ChatRequest, String> {
    let request: Request = read_body(body)?;
    if request.previous_response_id.is_some() {
        return Err(
            "previous_response_id cannot be followed: ollabridge keeps no responses when the backend \
                    answers through chat completions; send the whole conversation in input"
                .into(),
        );
    }
    let mut messages = Vec::new();
    if let Some(instructions) = request.instructions.filter(|i| !i.is_empty()) {
        messages.push(message("system", instructions));
    }
    match request.input {
        Input::Text(text) => messages.push(message("user", text)),
        Input::Items(items) => {
            for (i, item) in items.into_iter().enumerate() {
                add_item(&mut messages, item, i)?;
            }
        }
    }
    let mut tools = match request.tools {
        Some(tools) => Some(tools.into_iter().map(tool).collect::<Result<Vec<_>, _>>()?),
        None => None,
    };
    match request.tool_choice.as_ref() {
        None => {}
        Some(Value::String(choice)) if choice == "auto" => {}
        Some(Value::String(choice)) if choice == "none" => tools = None,
        Some(_) => {
            return Err(
                "tool_choice other than 'auto' or 'none' cannot be honoured by a backend answering \
                        through chat completions"
                    .into(),
            );
        }
    }
    let options = Sampling {
        num_predict: request.max_output_tokens,
        temperature: request.temperature,
        top_p: request.top_p,
        ..Default::default()
    }
    .options();
    Ok(ChatRequest {
        model: request.model,
        messages: Some(messages),
        options,
        tools,
        think: request
            .reasoning
            .and_then(|r| r.effort)
            .map(|e| think(&e))
            .transpose()?,
        format: request
            .text
            .and_then(|t| t.format)
            .map(|f| format(&f))
            .transpose()?
            .flatten(),
        ..Default::default()
    })
}

fn message(role: &str, content: String) -> Message {
    Message {
        role: role.into(),
        content,
        ..Default::default()
    }
}

/// One input item; an item without a `type` is a message (the API's short form).
fn add_item(messages: &mut Vec<Message>, mut item: Value, index: usize) -> Result<(), String> {
    if let Some(object) = item.as_object_mut() {
        object.entry("type").or_insert_with(|| "message".into());
    }
    let item: Item = serde_json::from_value(item).map_err(|e| format!("invalid value for 'input[{index}]': {e}"))?;
    match item {
        Item::Message { role, content } => {
            let role = match role {
                Role::User => "user",
                Role::Assistant => "assistant",
                Role::System | Role::Developer => "system",
            };
            let (content, images) = content_text(content, index)?;
            messages.push(Message {
                images: (!images.is_empty()).then_some(images),
                ..message(role, content)
            });
        }
        Item::FunctionCall {
            call_id,
            name,
            arguments,
        } => {
            let arguments: Value = match arguments.trim() {
                "" => json!({}),
                text => serde_json::from_str(text).map_err(|e| format!("input[{index}].arguments: not JSON ({e})"))?,
            };
            let call = ToolCall {
                id: Some(call_id),
                function: ToolCallFunction {
                    index: None,
                    name,
                    arguments,
                },
            };
            // Calls made together are one assistant turn, with its text if it came first.
            match messages.last_mut() {
                Some(last) if last.role == "assistant" => last.tool_calls.get_or_insert_with(Vec::new).push(call),
                _ => messages.push(Message {
                    tool_calls: Some(vec![call]),
                    ..message("assistant", String::new())
                }),
            }
        }
        Item::FunctionCallOutput { call_id, output } => {
            let (content, _) = content_text(output, index)?;
            messages.push(Message {
                tool_call_id: Some(call_id),
                ..message("tool", content)
            });
        }
        Item::Reasoning {} => {}
    }
    Ok(())
}

/// A message's text (its parts joined) and its images as bare base64.
fn content_text(content: Content, index: usize) -> Result<(String, Vec<String>), String> {
    let parts = match content {
        TextOrParts::Text(text) => return Ok((text, Vec::new())),
        TextOrParts::Parts(parts) => parts,
    };
    let mut texts = Vec::new();
    let mut images = Vec::new();
    for part in parts {
        match part {
            Part::InputText { text } | Part::OutputText { text } | Part::Refusal { refusal: text } => texts.push(text),
            Part::InputImage { image_url } => {
                let data = image_url
                    .as_deref()
                    .and_then(|url| url.strip_prefix("data:"))
                    .and_then(|url| url.split_once(";base64,"))
                    .map(|(_, data)| data.to_owned());
                match data {
                    Some(data) => images.push(data),
                    None => {
                        return Err(format!(
                            "input[{index}]: an image must be a base64 data URL when the backend answers \
                             through chat completions"
                        ));
                    }
                }
            }
        }
    }
    Ok((texts.join("\n"), images))
}

/// A Responses function tool → an Ollama (OpenAI chat) function.
fn tool(tool: Tool) -> Result<Value, String> {
    let (Some(name), "function") = (tool.name, tool.kind.as_str()) else {
        return Err(format!(
            "tools: a '{}' tool cannot be offered by a backend answering through chat completions; only \
             function tools",
            tool.kind
        ));
    };
    Ok(function_tool(name, tool.description, tool.parameters))
}

/// `reasoning.effort` → Ollama's `think`.
fn think(effort: &str) -> Result<Think, String> {
    Ok(match effort {
        "none" => Think::Off,
        "minimal" | "low" => Think::Level(ThinkLevel::Low),
        "medium" => Think::Level(ThinkLevel::Medium),
        "high" => Think::Level(ThinkLevel::High),
        "xhigh" => Think::Level(ThinkLevel::Max),
        other => return Err(format!("reasoning.effort: unknown effort {other:?}")),
    })
}

/// `text.format` → Ollama's `format` (`None` for plain text).
fn format(format: &Value) -> Result<Option<Value>, String> {
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some("json".into())),
        Some("json_schema") => match format.get("schema") {
            Some(schema @ Value::Object(_)) => Ok(Some(schema.clone())),
            _ => Err("text.format: a json_schema format needs its schema".into()),
        },
        _ => Err(format!("text.format: unknown format {format}")),
    }
}
