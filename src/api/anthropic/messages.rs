//! `/v1/messages` passed through to a backend that serves it, and its answer read for the
//! log row: text and thinking from `content_block_delta`, `tool_use` blocks from their
//! start and `input_json_delta` pieces (complete at `content_block_stop`), input tokens
//! from `message_start`, the stop reason and output tokens from `message_delta`, the end
//! at `message_stop` (or the backend's `error` event, which the client gets as it is).
//! A whole answer is the same message object. Pure.
//!
//! What the reader cannot make sense of (say, a tool call's input cut short by
//! `max_tokens`) is only the row's problem: the client gets the backend's events all the
//! same, and the row the first such problem when the answer ends.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::error::AnthropicError;
use crate::api::passthrough::{self, Logged, SideReader, Translation};
use crate::backend::openai::translate::{tool_arguments, tool_call};
use crate::backend::{BackendError, Chunk, Completion, Delta};
use crate::config::NativeRoute;

/// `/v1/messages`.
#[derive(Debug, Clone, Copy)]
pub struct Messages;

impl passthrough::Route for Messages {
    type Error = AnthropicError;
    type Reader = Reader;

    fn endpoint(self) -> &'static str {
        "/v1/messages"
    }

    /// The messages as JSON, as a chat's are kept (`system` is not).
    fn prompt(self, body: &Map<String, Value>) -> Option<String> {
        body.get("messages").filter(|m| !m.is_null()).map(Value::to_string)
    }

    fn reader(self, _strip_think: bool) -> Reader {
        Reader::default()
    }

    fn native(self) -> Option<NativeRoute> {
        Some(NativeRoute::Messages)
    }

    fn translation(self) -> Option<&'static dyn Translation> {
        Some(&super::translate::Anthropic)
    }
}

/// Reads a Messages stream (or a whole message) into neutral chunks.
#[derive(Debug, Default)]
pub struct Reader {
    /// `tool_use` blocks being streamed, by block index: id, name, input so far.
    calls: BTreeMap<u64, (String, String, String)>,
    /// Tool calls completed so far.
    calls_done: usize,
    usage: Usage,
    stop_reason: Option<String>,
    ended: bool,
    /// Why the row is failed: the backend's error event, else the first event the
    /// reader could not read.
    error: Option<BackendError>,
}

#[derive(Deserialize)]
struct Event {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    index: Option<u64>,
    #[serde(default)]
    message: Option<Message>,
    #[serde(default)]
    content_block: Option<Block>,
    #[serde(default)]
    delta: Option<Value>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    error: Option<Value>,
}

/// A whole message, or `message_start`'s beginning of one.
#[derive(Deserialize, Default)]
struct Message {
    #[serde(default)]
    content: Vec<Block>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize, Default)]
struct Block {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    thinking: Option<String>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    input: Option<Value>,
}

/// Anthropic counts cached input apart: the prompt is all three.
#[derive(Deserialize, Default, Debug, Clone, Copy)]
struct Usage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
}

impl Usage {
    fn prompt_tokens(&self) -> Option<u64> {
        // The backend's counts: whatever they are, no overflow.
        self.input_tokens.map(|n| {
            n.saturating_add(self.cache_read_input_tokens.unwrap_or(0))
                .saturating_add(self.cache_creation_input_tokens.unwrap_or(0))
        })
    }

    /// Later counts (`message_delta`'s) replace earlier ones.
    fn update(&mut self, later: Usage) {
        if later.input_tokens.is_some() {
            self.input_tokens = later.input_tokens;
            self.cache_read_input_tokens = later.cache_read_input_tokens.or(self.cache_read_input_tokens);
            self.cache_creation_input_tokens = later.cache_creation_input_tokens.or(self.cache_creation_input_tokens);
        }
        self.output_tokens = later.output_tokens.or(self.output_tokens);
    }
}

impl Reader {
    fn read(&mut self, data: &str) -> Result<Option<Chunk>, BackendError> {
        let event: Event = serde_json::from_str(data)
            .map_err(|e| BackendError::Protocol(format!("unreadable /v1/messages event: {e}")))?;
        let delta = match event.kind.as_str() {
            "message_start" => {
                if let Some(usage) = event.message.and_then(|m| m.usage) {
                    self.usage.update(usage);
                }
                return Ok(None);
            }
            "content_block_start" => {
                let block = event.content_block.unwrap_or_default();
                if block.kind == "tool_use" {
                    let (id, name) = (block.id.unwrap_or_default(), block.name.unwrap_or_default());
                    self.calls.insert(event.index.unwrap_or(0), (id, name, String::new()));
                }
                return Ok(None);
            }
            "content_block_delta" => {
                let delta = event.delta.unwrap_or_default();
                let text = |key: &str| delta.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => Delta {
                        content: text("text"),
                        ..Default::default()
                    },
                    Some("thinking_delta") => Delta {
                        thinking: text("thinking"),
                        ..Default::default()
                    },
                    Some("input_json_delta") => {
                        if let Some((_, _, input)) = self.calls.get_mut(&event.index.unwrap_or(0)) {
                            input.push_str(&text("partial_json"));
                        }
                        return Ok(None);
                    }
                    _ => return Ok(None),
                }
            }
            "content_block_stop" => match self.calls.remove(&event.index.unwrap_or(0)) {
                Some((id, name, input)) => {
                    let arguments = tool_arguments(&name, &input)?;
                    self.calls_done += 1;
                    Delta {
                        tool_calls: vec![tool_call(self.calls_done - 1, &id, name, arguments)],
                        ..Default::default()
                    }
                }
                None => return Ok(None),
            },
            "message_delta" => {
                if let Some(reason) = event
                    .delta
                    .as_ref()
                    .and_then(|d| d.get("stop_reason"))
                    .and_then(Value::as_str)
                {
                    self.stop_reason = Some(reason.to_owned());
                }
                if let Some(usage) = event.usage {
                    self.usage.update(usage);
                }
                return Ok(None);
            }
            "message_stop" => {
                self.ended = true;
                return Ok(Some(Chunk {
                    done: Some(completion(self.stop_reason.as_deref(), &self.usage)),
                    ..Default::default()
                }));
            }
            // Already in the client's dialect: it goes to the client as it is, and
            // fails the row.
            "error" => {
                self.ended = true;
                let error = event.error.unwrap_or_default();
                let message = error.get("message").and_then(Value::as_str).unwrap_or(data);
                self.error = Some(BackendError::Status {
                    status: 502,
                    message: message.to_owned(),
                });
                return Ok(None);
            }
            _ => return Ok(None),
        };
        Ok(Some(Chunk {
            delta,
            ..Default::default()
        }))
    }
}

impl SideReader for Reader {
    /// Never fails: a problem is kept for [`finish`](SideReader::finish), so the client
    /// still gets the backend's events.
    fn on_event(&mut self, _name: &str, data: &str) -> Result<Option<Chunk>, BackendError> {
        Ok(self.read(data).unwrap_or_else(|e| {
            self.error.get_or_insert(e);
            None
        }))
    }

    fn ends(&self, name: &str, data: &str) -> bool {
        match name {
            "" => data.contains("\"type\":\"message_stop\"") || data.contains("\"type\":\"error\""),
            name => name == "message_stop" || name == "error",
        }
    }

    fn finish(&mut self) -> Result<Vec<Chunk>, BackendError> {
        if !self.ended {
            return Err(BackendError::Truncated);
        }
        match self.error.take() {
            Some(error) => Err(error),
            None => Ok(Vec::new()),
        }
    }

    fn on_body(self, body: &[u8]) -> Result<Logged, BackendError> {
        let message: Message = serde_json::from_slice(body)
            .map_err(|e| BackendError::Protocol(format!("unreadable /v1/messages answer: {e}")))?;
        let mut delta = Delta::default();
        for block in message.content {
            match block.kind.as_str() {
                "text" => delta.content.push_str(block.text.as_deref().unwrap_or_default()),
                "thinking" => delta.thinking.push_str(block.thinking.as_deref().unwrap_or_default()),
                "tool_use" => delta.tool_calls.push(tool_call(
                    delta.tool_calls.len(),
                    block.id.as_deref().unwrap_or_default(),
                    block.name.unwrap_or_default(),
                    block.input.unwrap_or_else(|| Value::Object(Map::new())),
                )),
                _ => {}
            }
        }
        let usage = message.usage.unwrap_or_default();
        Ok(Logged::Chunks(vec![Chunk {
            delta,
            done: Some(completion(message.stop_reason.as_deref(), &usage)),
            raw: None,
        }]))
    }
}

/// Ollama's words for Anthropic's stop reasons: `max_tokens` is `length`, the rest `stop`.
fn completion(stop_reason: Option<&str>, usage: &Usage) -> Completion {
    Completion {
        done_reason: match stop_reason {
            Some("max_tokens") => "length",
            _ => "stop",
        }
        .into(),
        prompt_tokens: usage.prompt_tokens(),
        completion_tokens: usage.output_tokens,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api::passthrough::test_support::{fixture, read_sse, whole_chunk};

    fn streamed(name: &str) -> Chunk {
        whole_chunk(read_sse(Reader::default(), &fixture(name)).unwrap())
    }

    fn whole(name: &str) -> Chunk {
        match Reader::default().on_body(fixture(name).as_bytes()).unwrap() {
            Logged::Chunks(chunks) => whole_chunk(chunks),
            Logged::Summary(..) => panic!("{name}: a summary"),
        }
    }

    fn weather(id: &str) -> crate::backend::request::ToolCall {
        tool_call(0, id, "get_weather".into(), json!({"city": "Paris"}))
    }

    #[test]
    fn text_with_the_prompt_counted_with_its_cached_part() {
        for chunk in [streamed("messages-text.sse"), whole("messages-text.json")] {
            assert_eq!(chunk.delta.content, "Hello from the tiny scripted model.");
            let done = chunk.done.unwrap();
            // llama-server counts input apart from cached input: 28 + 98 streamed,
            // 25 + 101 not.
            assert_eq!(
                (done.done_reason.as_str(), done.prompt_tokens, done.completion_tokens),
                ("stop", Some(126), Some(8))
            );
        }
    }

    #[test]
    fn thinking_and_tool_use() {
        for chunk in [streamed("messages-think.sse"), whole("messages-think.json")] {
            assert_eq!(
                (chunk.delta.thinking.as_str(), chunk.delta.content.as_str()),
                (
                    "The user greets me, so I greet back.\n",
                    "Hello from the tiny thinking model."
                )
            );
        }
        for name in ["messages-tools.sse", "messages-tools.json"] {
            let chunk = if name.ends_with(".sse") {
                streamed(name)
            } else {
                whole(name)
            };
            // The row's id is made from the backend's, as for a chat.
            let backend_id = fixture(name)
                .split("\"id\":\"")
                .nth(2)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
                .to_owned();
            assert_eq!(
                (chunk.delta.content.as_str(), chunk.delta.tool_calls),
                ("", vec![weather(&backend_id)])
            );
            assert_eq!(chunk.done.unwrap().done_reason, "stop");
        }
    }

    #[test]
    fn a_stream_without_message_stop_is_truncated() {
        let text = fixture("messages-text.sse");
        let cut = &text[..text.find("event: message_stop").unwrap()];
        assert_eq!(read_sse(Reader::default(), cut), Err(BackendError::Truncated));
        let reader = Reader::default();
        assert!(reader.ends("message_stop", "{}"));
        assert!(reader.ends("", r#"{"type":"message_stop"}"#));
        assert!(!reader.ends("message_delta", "{}"));
    }

    #[test]
    fn max_tokens_is_length_and_error_events_are_errors() {
        let stream = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":5,\"cache_creation_input_tokens\":2,\"output_tokens\":1}}}\n\n\
            event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"max_tokens\"},\"usage\":{\"output_tokens\":4}}\n\n\
            event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        let done = whole_chunk(read_sse(Reader::default(), stream).unwrap()).done.unwrap();
        assert_eq!(
            (done.done_reason.as_str(), done.prompt_tokens, done.completion_tokens),
            ("length", Some(7), Some(4))
        );
        let error =
            "data: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
        assert_eq!(
            read_sse(Reader::default(), error),
            Err(BackendError::Status {
                status: 502,
                message: "Overloaded".into()
            })
        );
    }

    /// Counts a backend made up do not overflow the prompt's.
    #[test]
    fn huge_token_counts_add_up_without_overflow() {
        let start = format!(
            r#"{{"type":"message_start","message":{{"usage":{{"input_tokens":{},"cache_read_input_tokens":{},"cache_creation_input_tokens":2}}}}}}"#,
            u64::MAX - 1,
            u64::MAX
        );
        let stream = format!(
            "event: message_start\ndata: {start}\n\nevent: message_stop\ndata: {{\"type\":\"message_stop\"}}\n\n"
        );
        let done = whole_chunk(read_sse(Reader::default(), &stream).unwrap()).done.unwrap();
        assert_eq!(done.prompt_tokens, Some(u64::MAX));
    }

    /// A tool call cut by `max_tokens` is the backend's fine answer: only the row hears of
    /// its input, at the end, and the events after it are still read.
    #[test]
    fn tool_input_that_is_not_json_fails_only_the_row_at_the_end() {
        let mut reader = Reader::default();
        let events = [
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"t","name":"f"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\"city\":\"Par"}}"#,
            r#"{"type":"content_block_stop","index":0}"#,
            "not JSON",
            r#"{"type":"message_delta","delta":{"stop_reason":"max_tokens"},"usage":{"output_tokens":4}}"#,
        ];
        for data in events {
            assert_eq!(reader.on_event("", data), Ok(None), "{data}");
        }
        assert_eq!(reader.finish(), Err(BackendError::Truncated), "no message_stop yet");
        let end = reader
            .on_event("message_stop", r#"{"type":"message_stop"}"#)
            .unwrap()
            .unwrap();
        assert_eq!(end.done.unwrap().completion_tokens, Some(4));
        let Err(BackendError::Protocol(problem)) = reader.finish() else {
            panic!("the problem is the row's at the end")
        };
        assert!(
            problem.starts_with("tool call 'f' has arguments that are not valid JSON"),
            "{problem}"
        );
    }
}
