//! Neutral chunks → a Responses answer: the streamed events (`response.created` and
//! `response.in_progress`; per output item `response.output_item.added`, its deltas and
//! `.done` events, `response.output_item.done`; `response.completed`, each with its
//! `sequence_number`), and the whole response object built from the same items.
//! Reasoning and text open an item when their kind changes (a `reasoning` item with
//! `reasoning_text`, a `message` with one `output_text` part); a tool call is a whole
//! `function_call` item with its arguments as one delta. Pure.

use serde_json::{Value, json};

use crate::api::passthrough::{Encoder, End, event};
use crate::backend::Chunk;
use crate::backend::request::ToolCall;

/// Writes one answer.
pub struct ResponseEncoder {
    request_id: String,
    model: String,
    created: u64,
    /// The next event's `sequence_number`; 0 until the answer opened.
    sequence: u64,
    /// The items so far; the last is still open while `open` is set.
    output: Vec<Value>,
    open: Option<Kind>,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Reasoning,
    Message,
}

impl ResponseEncoder {
    pub fn new(request_id: &str, model: &str, created: u64) -> ResponseEncoder {
        ResponseEncoder {
            request_id: request_id.to_owned(),
            model: model.to_owned(),
            created,
            sequence: 0,
            output: Vec::new(),
            open: None,
        }
    }

    /// The response object: in progress (no output yet), or ended.
    fn response(&self, end: Option<&End>) -> Value {
        let (status, incomplete) = match end.map(|e| e.reason.as_str()) {
            None => ("in_progress", Value::Null),
            Some("length") => ("incomplete", json!({"reason": "max_output_tokens"})),
            Some(_) => ("completed", Value::Null),
        };
        let usage = end.map(|e| {
            json!({
                "input_tokens": e.input_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": e.output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                // The backend's counts: whatever they are, no overflow.
                "total_tokens": e.input_tokens.saturating_add(e.output_tokens),
            })
        });
        json!({
            "id": format!("resp_{}", self.request_id),
            "object": "response",
            "created_at": self.created,
            "status": status,
            "error": null,
            "incomplete_details": incomplete,
            "model": self.model,
            "output": if end.is_some() { Value::from(self.output.clone()) } else { json!([]) },
            "usage": usage,
        })
    }

    /// One event, numbered.
    fn emit(&mut self, kind: &str, mut data: Value, out: &mut String) {
        data["type"] = kind.into();
        data["sequence_number"] = self.sequence.into();
        self.sequence += 1;
        out.push_str(&event(kind, &data));
    }

    fn item_id(&self, prefix: &str) -> String {
        format!("{prefix}_{}_{}", self.request_id, self.output.len())
    }

    /// An item of `kind` open for more: the open one, or a new one after closing it.
    fn open(&mut self, kind: Kind, out: &mut String) {
        if self.open == Some(kind) {
            return;
        }
        self.close(out);
        let item = match kind {
            Kind::Reasoning => json!({"id": self.item_id("rs"), "type": "reasoning", "summary": [], "content": []}),
            Kind::Message => json!({"id": self.item_id("msg"), "type": "message", "status": "in_progress",
                                    "role": "assistant", "content": []}),
        };
        self.add_item(item, out);
        let index = self.output.len() - 1;
        let id = self.output[index]["id"].clone();
        let part = match kind {
            Kind::Reasoning => json!({"type": "reasoning_text", "text": ""}),
            Kind::Message => {
                let part = json!({"type": "output_text", "text": "", "annotations": []});
                let added = json!({"item_id": id, "output_index": index, "content_index": 0, "part": part});
                self.emit("response.content_part.added", added, out);
                part
            }
        };
        self.output[index]["content"] = json!([part]);
        self.open = Some(kind);
    }

    fn add_item(&mut self, item: Value, out: &mut String) {
        let index = self.output.len();
        self.emit(
            "response.output_item.added",
            json!({"output_index": index, "item": item}),
            out,
        );
        self.output.push(item);
    }

    /// Adds to the open item's text and says so in a delta.
    fn extend(&mut self, kind: &str, text: &str, out: &mut String) {
        let index = self.output.len() - 1;
        if let Some(Value::String(so_far)) = self.output[index].pointer_mut("/content/0/text") {
            so_far.push_str(text);
        }
        let id = self.output[index]["id"].clone();
        let mut delta = json!({"item_id": id, "output_index": index, "content_index": 0, "delta": text});
        if kind == "response.output_text.delta" {
            delta["logprobs"] = json!([]);
        }
        self.emit(kind, delta, out);
    }

    fn close(&mut self, out: &mut String) {
        let Some(kind) = self.open.take() else {
            return;
        };
        let index = self.output.len() - 1;
        let id = self.output[index]["id"].clone();
        let part = self.output[index]["content"][0].clone();
        let text = part["text"].clone();
        let at = |extra: Value| {
            let mut data = json!({"item_id": id, "output_index": index, "content_index": 0});
            if let (Some(data), Value::Object(extra)) = (data.as_object_mut(), extra) {
                data.extend(extra);
            }
            data
        };
        match kind {
            Kind::Reasoning => self.emit("response.reasoning_text.done", at(json!({"text": text})), out),
            Kind::Message => {
                let done = at(json!({"text": text, "logprobs": []}));
                self.emit("response.output_text.done", done, out);
                self.emit("response.content_part.done", at(json!({"part": part})), out);
            }
        }
        self.output[index]["status"] = "completed".into();
        let item = self.output[index].clone();
        self.emit(
            "response.output_item.done",
            json!({"output_index": index, "item": item}),
            out,
        );
    }

    fn function_call(&mut self, call: &ToolCall, out: &mut String) {
        self.close(out);
        let id = self.item_id("fc");
        let call_id = call.id.clone().unwrap_or_else(|| format!("call_{id}"));
        let arguments = call.function.arguments.to_string();
        let mut item = json!({"id": id, "type": "function_call", "status": "in_progress", "call_id": call_id,
                              "name": call.function.name, "arguments": ""});
        self.add_item(item.clone(), out);
        let index = self.output.len() - 1;
        let delta = json!({"item_id": id, "output_index": index, "delta": arguments});
        self.emit("response.function_call_arguments.delta", delta, out);
        let done = json!({"item_id": id, "output_index": index, "name": call.function.name, "arguments": arguments});
        self.emit("response.function_call_arguments.done", done, out);
        item["status"] = "completed".into();
        item["arguments"] = arguments.into();
        self.output[index] = item.clone();
        self.emit(
            "response.output_item.done",
            json!({"output_index": index, "item": item}),
            out,
        );
    }
}

impl Encoder for ResponseEncoder {
    fn next_sequence(&self) -> u64 {
        self.sequence
    }

    fn chunk(&mut self, chunk: &Chunk, end: Option<&End>) -> String {
        let mut out = String::new();
        if self.sequence == 0 {
            let response = self.response(None);
            self.emit("response.created", json!({"response": response}), &mut out);
            self.emit("response.in_progress", json!({"response": response}), &mut out);
        }
        let delta = &chunk.delta;
        if !delta.thinking.is_empty() {
            self.open(Kind::Reasoning, &mut out);
            self.extend("response.reasoning_text.delta", &delta.thinking, &mut out);
        }
        if !delta.content.is_empty() {
            self.open(Kind::Message, &mut out);
            self.extend("response.output_text.delta", &delta.content, &mut out);
        }
        for call in &delta.tool_calls {
            self.function_call(call, &mut out);
        }
        if let Some(end) = end {
            self.close(&mut out);
            let response = self.response(Some(end));
            let kind = match end.reason.as_str() {
                "length" => "response.incomplete",
                _ => "response.completed",
            };
            self.emit(kind, json!({"response": response}), &mut out);
        }
        out
    }

    fn ended(&self, end: &End) -> Value {
        self.response(Some(end))
    }
}
