//! What a backend is asked: a chat or a completion, with messages, tools, options and
//! thinking. It keeps Ollama's shape, the richest of the APIs served: each front end reads
//! its own wire format into it (the Ollama API as it is), and each backend translates it
//! into its own. Lenient where real clients need it (roles capitalised, null content,
//! tool arguments as a JSON string).

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct ChatRequest {
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub messages: Option<Vec<Message>>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub format: Option<Value>,
    #[serde(default)]
    pub options: Option<Map<String, Value>>,
    #[serde(default)]
    pub keep_alive: Option<Value>,
    #[serde(default)]
    pub tools: Option<Vec<Value>>,
    #[serde(default)]
    pub think: Option<Think>,
    // The fields below are GenerateRequest's too: kept in each struct, not flattened from
    // a shared one, as serde's `flatten` loses the field's name in errors.
    /// Return the generated tokens' log probabilities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<bool>,
    /// How many of the likeliest tokens to return at each position (0-20), with `logprobs`.
    #[serde(default, deserialize_with = "top_logprobs", skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<u8>,
    /// Drop the oldest messages when the prompt does not fit the context (Ollama's default,
    /// `true`); `false` makes an overflow an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncate: Option<bool>,
    /// Ollama's context shift during generation; the backend's own setting decides here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shift: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct GenerateRequest {
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub prompt: Option<String>,
    #[serde(default)]
    pub suffix: Option<String>,
    #[serde(default)]
    pub system: Option<String>,
    #[serde(default)]
    pub template: Option<String>,
    #[serde(default)]
    pub context: Option<Vec<i64>>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub raw: Option<bool>,
    #[serde(default)]
    pub format: Option<Value>,
    #[serde(default)]
    pub images: Option<Vec<String>>,
    #[serde(default)]
    pub options: Option<Map<String, Value>>,
    #[serde(default)]
    pub keep_alive: Option<Value>,
    #[serde(default)]
    pub think: Option<Think>,
    /// Return the generated tokens' log probabilities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<bool>,
    /// How many of the likeliest tokens to return at each position (0-20), with `logprobs`.
    #[serde(default, deserialize_with = "top_logprobs", skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<u8>,
    /// Drop the oldest messages when the prompt does not fit the context (Ollama's default,
    /// `true`); `false` makes an overflow an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncate: Option<bool>,
    /// Ollama's context shift during generation; the backend's own setting decides here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shift: Option<bool>,
}

/// With `logprobs: true`, how many alternatives per position were asked for (Ollama
/// ignores `top_logprobs` alone).
pub fn logprobs_asked(logprobs: Option<bool>, top_logprobs: Option<u8>) -> Option<usize> {
    (logprobs == Some(true)).then(|| usize::from(top_logprobs.unwrap_or(0)))
}

/// Ollama's `think`: a switch, or how hard to think.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Think {
    Off,
    On,
    Level(ThinkLevel),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThinkLevel {
    Low,
    Medium,
    High,
    Max,
}

impl ThinkLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            ThinkLevel::Low => "low",
            ThinkLevel::Medium => "medium",
            ThinkLevel::High => "high",
            ThinkLevel::Max => "max",
        }
    }
}

impl Think {
    /// Whether the client asked not to see thinking.
    pub fn is_off(think: Option<Think>) -> bool {
        think == Some(Think::Off)
    }
}

/// Ollama's own words for a value it does not take.
const THINK_VALUES: &str = r#"(must be "high", "medium", "low", "max", true, or false)"#;

impl<'de> Deserialize<'de> for Think {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Think, D::Error> {
        use serde::de::Error;
        Ok(match Value::deserialize(d)? {
            Value::Bool(true) => Think::On,
            Value::Bool(false) => Think::Off,
            Value::String(level) => Think::Level(match level.as_str() {
                "low" => ThinkLevel::Low,
                "medium" => ThinkLevel::Medium,
                "high" => ThinkLevel::High,
                "max" => ThinkLevel::Max,
                _ => {
                    return Err(D::Error::custom(format!(
                        "invalid think value: {level:?} {THINK_VALUES}"
                    )));
                }
            }),
            _ => {
                return Err(D::Error::custom(format!(
                    "think must be a boolean or string {THINK_VALUES}"
                )));
            }
        })
    }
}

impl Serialize for Think {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Think::On => s.serialize_bool(true),
            Think::Off => s.serialize_bool(false),
            Think::Level(level) => s.serialize_str(level.as_str()),
        }
    }
}

fn top_logprobs<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u8>, D::Error> {
    match Option::<i64>::deserialize(d)? {
        None => Ok(None),
        Some(n @ 0..=20) => Ok(Some(n as u8)),
        Some(_) => Err(serde::de::Error::custom("top_logprobs must be between 0 and 20")),
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct Message {
    #[serde(deserialize_with = "lowercase")]
    pub role: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub content: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct ToolCall {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub function: ToolCallFunction,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct ToolCallFunction {
    #[serde(default)]
    pub index: Option<u32>,
    pub name: String,
    /// An object on the wire; tolerated as a JSON string on input.
    #[serde(default = "empty_object")]
    pub arguments: Value,
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

fn lowercase<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(String::deserialize(d)?.to_ascii_lowercase())
}

fn null_as_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}
