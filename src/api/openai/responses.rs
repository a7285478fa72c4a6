//! OpenAI's Responses API (`/v1/responses`, Codex and `client.responses.create`), passed
//! through to a backend that serves it, and its answer read for the log row: text from
//! `response.output_text.delta`, reasoning from `response.reasoning_text.delta` (or the
//! summary's), function calls from `response.output_item.done`, usage and llama.cpp's
//! timings from `response.completed`. A whole answer is the same response object. Pure.
//!
//! The backend's `response.failed` and `error` events go to the client as they are (Codex
//! reads their `code`) and fail the row; what the reader cannot make sense of (a function
//! call's arguments that are not JSON) is only the row's problem, told when it ends.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::error::ResponsesError;
use crate::api::passthrough::{self, Logged, SideReader, Translation};
use crate::backend::openai::translate::{tool_arguments, tool_call};
use crate::backend::openai::types::Timings;
use crate::backend::request::ToolCall;
use crate::backend::{BackendError, Chunk, Completion, Delta};
use crate::config::NativeRoute;

/// `/v1/responses`.
#[derive(Debug, Clone, Copy)]
pub struct Responses;

impl passthrough::Route for Responses {
    type Error = ResponsesError;
    type Reader = Reader;

    fn endpoint(self) -> &'static str {
        "/v1/responses"
    }

    /// `input`: its text, or its items as JSON; `instructions` is not kept (as a chat's
    /// system message is kept only inside the messages).
    fn prompt(self, body: &Map<String, Value>) -> Option<String> {
        match body.get("input")? {
            Value::Null => None,
            Value::String(text) => Some(text.clone()),
            other => Some(other.to_string()),
        }
    }

    fn reader(self, _strip_think: bool) -> Reader {
        Reader::default()
    }

    fn native(self) -> Option<NativeRoute> {
        Some(NativeRoute::Responses)
    }

    fn translation(self) -> Option<&'static dyn Translation> {
        Some(&super::responses_translate::OpenAiResponses)
    }
}

/// Reads a Responses stream (or a whole response) into neutral chunks.
#[derive(Debug, Default)]
pub struct Reader {
    /// Function calls so far.
    calls: usize,
    ended: bool,
    /// Why the row is failed: the backend's failure, else the first event the reader
    /// could not read.
    error: Option<BackendError>,
    /// The `sequence_number` of the client's next event: one after the backend's last
    /// (llama.cpp numbers none: then the events counted).
    next_sequence: u64,
}

/// One streamed event, read only as far as the row needs.
#[derive(Deserialize)]
struct Event {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    delta: Option<String>,
    #[serde(default)]
    item: Option<Value>,
    #[serde(default)]
    response: Option<Response>,
    /// llama.cpp's, beside the `response` of `response.completed`.
    #[serde(default)]
    timings: Option<Timings>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    sequence_number: Option<u64>,
}

#[derive(Deserialize, Default)]
struct Response {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    output: Vec<Value>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    incomplete_details: Option<Value>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize, Default)]
struct Usage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
}

/// The events that end a response.
const ENDS: [&str; 4] = ["response.completed", "response.incomplete", "response.failed", "error"];

impl Reader {
    fn read(&mut self, data: &str) -> Result<Option<Chunk>, BackendError> {
        let event: Event = serde_json::from_str(data)
            .map_err(|e| BackendError::Protocol(format!("unreadable /v1/responses event: {e}")))?;
        if let Some(n) = event.sequence_number {
            self.next_sequence = n.saturating_add(1);
        }
        let delta = match event.kind.as_str() {
            "response.output_text.delta" => Delta {
                content: event.delta.unwrap_or_default(),
                ..Default::default()
            },
            "response.reasoning_text.delta" | "response.reasoning_summary_text.delta" => Delta {
                thinking: event.delta.unwrap_or_default(),
                ..Default::default()
            },
            "response.output_item.done" => match event.item.as_ref().map(|i| function_call(i, self.calls)) {
                Some(Some(call)) => {
                    self.calls += 1;
                    Delta {
                        tool_calls: vec![call?],
                        ..Default::default()
                    }
                }
                _ => return Ok(None),
            },
            "response.completed" | "response.incomplete" | "response.failed" => {
                self.ended = true;
                let response = event.response.unwrap_or_default();
                return match completion(&response, event.timings) {
                    Ok(done) => Ok(Some(Chunk {
                        done: Some(done),
                        ..Default::default()
                    })),
                    Err(failure) => {
                        self.error = Some(failure);
                        Ok(None)
                    }
                };
            }
            "error" => {
                self.ended = true;
                self.error = Some(BackendError::Status {
                    status: 502,
                    message: event.message.unwrap_or_else(|| data.to_owned()),
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
        self.next_sequence += 1;
        Ok(self.read(data).unwrap_or_else(|e| {
            self.error.get_or_insert(e);
            None
        }))
    }

    fn ends(&self, name: &str, data: &str) -> bool {
        match name {
            "" => ENDS.iter().any(|kind| data.contains(&format!("\"type\":\"{kind}\""))),
            name => ENDS.contains(&name),
        }
    }

    fn next_sequence(&self) -> u64 {
        self.next_sequence
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
        #[derive(Deserialize)]
        struct Whole {
            #[serde(flatten)]
            response: Response,
            #[serde(default)]
            timings: Option<Timings>,
        }
        let whole: Whole = serde_json::from_slice(body)
            .map_err(|e| BackendError::Protocol(format!("unreadable /v1/responses answer: {e}")))?;
        let mut delta = Delta::default();
        for item in &whole.response.output {
            delta_of_item(item, &mut delta)?;
        }
        let done = completion(&whole.response, whole.timings)?;
        Ok(Logged::Chunks(vec![Chunk {
            delta,
            done: Some(done),
            raw: None,
        }]))
    }
}

/// How a response ended; a failed one is the backend's error.
fn completion(response: &Response, timings: Option<Timings>) -> Result<Completion, BackendError> {
    if let Some(error) = response.error.as_ref().filter(|e| !e.is_null()) {
        let message = error
            .get("message")
            .and_then(Value::as_str)
            .map_or_else(|| error.to_string(), str::to_owned);
        return Err(BackendError::Status { status: 502, message });
    }
    let cut_short = response.status.as_deref() == Some("incomplete")
        && response
            .incomplete_details
            .as_ref()
            .and_then(|d| d.get("reason"))
            .and_then(Value::as_str)
            == Some("max_output_tokens");
    let usage = response.usage.as_ref();
    let timings = timings.unwrap_or_default();
    let ms_to_ns = |ms: f64| (ms * 1e6) as u64;
    Ok(Completion {
        done_reason: if cut_short { "length" } else { "stop" }.into(),
        prompt_tokens: usage.and_then(|u| u.input_tokens),
        completion_tokens: usage.and_then(|u| u.output_tokens),
        prompt_eval_ns: timings.prompt_ms.map(ms_to_ns),
        eval_ns: timings.predicted_ms.map(ms_to_ns),
        ..Default::default()
    })
}

/// Adds an output item of a whole response: a message's text, reasoning, a function call.
fn delta_of_item(item: &Value, delta: &mut Delta) -> Result<(), BackendError> {
    let texts = |key: &str, kind: &str| -> String {
        let parts = item
            .get(key)
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        parts
            .iter()
            .filter(|p| p.get("type").and_then(Value::as_str) == Some(kind))
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect()
    };
    match item.get("type").and_then(Value::as_str) {
        Some("message") => delta.content.push_str(&texts("content", "output_text")),
        Some("reasoning") => {
            let mut thinking = texts("content", "reasoning_text");
            if thinking.is_empty() {
                thinking = texts("summary", "summary_text");
            }
            delta.thinking.push_str(&thinking);
        }
        _ => {
            if let Some(call) = function_call(item, delta.tool_calls.len()) {
                delta.tool_calls.push(call?);
            }
        }
    }
    Ok(())
}

/// A `function_call` item, the `index`-th call of the answer; `None` for other items.
fn function_call(item: &Value, index: usize) -> Option<Result<ToolCall, BackendError>> {
    if item.get("type").and_then(Value::as_str) != Some("function_call") {
        return None;
    }
    let field = |key: &str| item.get(key).and_then(Value::as_str).unwrap_or_default();
    let name = field("name");
    Some(
        tool_arguments(name, field("arguments"))
            .map(|arguments| tool_call(index, field("call_id"), name.to_owned(), arguments)),
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api::passthrough::test_support::{fixture, read_sse, whole_chunk};

    fn call(id: &str) -> ToolCall {
        let json = json!({"id": id, "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}}});
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn streamed_text_and_usage() {
        let whole = whole_chunk(read_sse(Reader::default(), &fixture("responses-text.sse")).unwrap());
        assert_eq!(whole.delta.content, "Hello from the tiny scripted model.");
        let done = whole.done.unwrap();
        assert_eq!(
            (done.done_reason.as_str(), done.prompt_tokens, done.completion_tokens),
            ("stop", Some(126), Some(8))
        );
        assert!(done.eval_ns.is_some_and(|ns| ns > 0), "llama.cpp's timings are read");
    }

    #[test]
    fn streamed_reasoning_and_function_call() {
        let think = whole_chunk(read_sse(Reader::default(), &fixture("responses-think.sse")).unwrap());
        assert_eq!(
            (think.delta.thinking.as_str(), think.delta.content.as_str()),
            (
                "The user greets me, so I greet back.\n",
                "Hello from the tiny thinking model."
            )
        );
        let tools = whole_chunk(read_sse(Reader::default(), &fixture("responses-tools.sse")).unwrap());
        let id = tools.delta.tool_calls[0].id.clone().unwrap();
        assert!(id.starts_with("call_"), "{id}");
        assert_eq!(
            (tools.delta.content.as_str(), tools.delta.tool_calls),
            ("", vec![call(&id)])
        );
    }

    #[test]
    fn whole_answers() {
        let read = |name: &str| match Reader::default().on_body(fixture(name).as_bytes()).unwrap() {
            Logged::Chunks(chunks) => whole_chunk(chunks),
            Logged::Summary(..) => panic!("{name}: a summary"),
        };
        let text = read("responses-text.json");
        assert_eq!(text.delta.content, "Hello from the tiny scripted model.");
        assert_eq!(text.done.unwrap().prompt_tokens, Some(126));
        let think = read("responses-think.json");
        assert_eq!(think.delta.thinking, "The user greets me, so I greet back.\n");
        let tools = read("responses-tools.json");
        let id = tools.delta.tool_calls[0].id.clone().unwrap();
        assert_eq!(tools.delta.tool_calls, vec![call(&id)]);
    }

    #[test]
    fn a_stream_without_its_end_is_truncated_and_failures_are_errors() {
        let text = fixture("responses-text.sse");
        let cut = &text[..text.find("event: response.completed").unwrap()];
        assert_eq!(read_sse(Reader::default(), cut), Err(BackendError::Truncated));
        let failed = "event: response.failed\ndata: {\"type\":\"response.failed\",\"response\":{\"status\":\"failed\",\"error\":{\"code\":\"server_error\",\"message\":\"out of memory\"}}}\n\n";
        assert_eq!(
            read_sse(Reader::default(), failed),
            Err(BackendError::Status {
                status: 502,
                message: "out of memory".into()
            })
        );
        let reader = Reader::default();
        assert!(reader.ends("response.completed", ""));
        assert!(reader.ends("", r#"{"type":"response.incomplete","response":{}}"#));
        assert!(!reader.ends("response.output_text.done", ""));
    }

    /// Arguments cut short are the row's problem only, told once the response ended.
    #[test]
    fn a_function_call_that_is_not_json_fails_only_the_row_at_the_end() {
        let mut reader = Reader::default();
        let call = r#"{"type":"response.output_item.done","item":{"type":"function_call","call_id":"c","name":"f","arguments":"{\"a\":"}}"#;
        assert_eq!(reader.on_event("response.output_item.done", call), Ok(None));
        let text = r#"{"type":"response.output_text.delta","delta":"ok"}"#;
        assert_eq!(
            reader
                .on_event("response.output_text.delta", text)
                .unwrap()
                .unwrap()
                .delta
                .content,
            "ok"
        );
        let end = r#"{"type":"response.incomplete","response":{"status":"incomplete","incomplete_details":{"reason":"max_output_tokens"}}}"#;
        assert!(reader.on_event("response.incomplete", end).unwrap().is_some());
        let Err(BackendError::Protocol(problem)) = reader.finish() else {
            panic!("the problem is the row's at the end")
        };
        assert!(
            problem.starts_with("tool call 'f' has arguments that are not valid JSON"),
            "{problem}"
        );
    }

    #[test]
    fn incomplete_for_max_output_tokens_is_length() {
        let data = r#"{"type":"response.incomplete","response":{"status":"incomplete","incomplete_details":{"reason":"max_output_tokens"},"usage":{"input_tokens":3,"output_tokens":2}}}"#;
        let chunk = Reader::default()
            .on_event("response.incomplete", data)
            .unwrap()
            .unwrap();
        let done = chunk.done.unwrap();
        assert_eq!((done.done_reason.as_str(), done.completion_tokens), ("length", Some(2)));
    }
}
