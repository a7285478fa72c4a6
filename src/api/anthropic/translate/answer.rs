//! Neutral chunks → a Messages answer: the streamed events (`message_start`, a
//! `content_block_start`/`_delta`/`_stop` run per block, `message_delta` with the stop
//! reason and usage, `message_stop`), and the whole `message` built from the same blocks.
//! Thinking and text open a block when their kind changes; a tool call is a whole
//! `tool_use` block with its input as one `input_json_delta`. Pure.

use serde_json::{Value, json};

use crate::api::passthrough::{Encoder, End, event};
use crate::backend::Chunk;
use crate::backend::request::ToolCall;

/// Writes one answer.
pub struct MessageEncoder {
    id: String,
    model: String,
    started: bool,
    /// The blocks so far; the last is still open while `open` is set.
    blocks: Vec<Value>,
    open: Option<Kind>,
    called_tools: bool,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Thinking,
    Text,
}

impl MessageEncoder {
    pub fn new(request_id: &str, model: &str) -> MessageEncoder {
        MessageEncoder {
            id: format!("msg_{request_id}"),
            model: model.to_owned(),
            started: false,
            blocks: Vec::new(),
            open: None,
            called_tools: false,
        }
    }

    fn message(&self, stop_reason: Option<&str>, input_tokens: u64, output_tokens: u64) -> Value {
        json!({
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": if stop_reason.is_some() { Value::from(self.blocks.clone()) } else { json!([]) },
            "stop_reason": stop_reason,
            "stop_sequence": null,
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
        })
    }

    /// A block of `kind` open for more: the open one, or a new one after closing it.
    fn open(&mut self, kind: Kind, out: &mut String) {
        if self.open == Some(kind) {
            return;
        }
        self.close(out);
        let block = match kind {
            Kind::Thinking => json!({"type": "thinking", "thinking": "", "signature": ""}),
            Kind::Text => json!({"type": "text", "text": ""}),
        };
        self.start_block(block, out);
        self.open = Some(kind);
    }

    fn start_block(&mut self, block: Value, out: &mut String) {
        let index = self.blocks.len();
        out.push_str(&event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": block}),
        ));
        self.blocks.push(block);
    }

    fn close(&mut self, out: &mut String) {
        if self.open.take().is_some() {
            out.push_str(&self.stop_block());
        }
    }

    fn stop_block(&self) -> String {
        let index = self.blocks.len() - 1;
        event(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": index}),
        )
    }

    /// Adds to the open block's `field` and says so in a delta.
    fn extend(&mut self, field: &str, delta_type: &str, text: &str, out: &mut String) {
        let index = self.blocks.len() - 1;
        if let Some(Value::String(so_far)) = self.blocks[index].get_mut(field) {
            so_far.push_str(text);
        }
        out.push_str(&event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": index, "delta": {"type": delta_type, field: text}}),
        ));
    }

    fn tool_use(&mut self, call: &ToolCall, out: &mut String) {
        self.close(out);
        self.called_tools = true;
        let id = call
            .id
            .clone()
            .unwrap_or_else(|| format!("toolu_{}_{}", self.id, self.blocks.len()));
        let start = json!({"type": "tool_use", "id": id, "name": call.function.name, "input": {}});
        self.start_block(start, out);
        let input = &call.function.arguments;
        let index = self.blocks.len() - 1;
        self.blocks[index]["input"] = input.clone();
        out.push_str(&event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": index,
                    "delta": {"type": "input_json_delta", "partial_json": input.to_string()}}),
        ));
        out.push_str(&self.stop_block());
    }

    /// Anthropic's words for how the answer ended.
    fn stop_reason(&self, end: &End) -> &'static str {
        match (end.reason.as_str(), self.called_tools) {
            ("length", _) => "max_tokens",
            (_, true) => "tool_use",
            _ => "end_turn",
        }
    }
}

impl Encoder for MessageEncoder {
    fn chunk(&mut self, chunk: &Chunk, end: Option<&End>) -> String {
        let mut out = String::new();
        if !self.started {
            self.started = true;
            let message = self.message(None, 0, 0);
            out.push_str(&event(
                "message_start",
                &json!({"type": "message_start", "message": message}),
            ));
        }
        let delta = &chunk.delta;
        if !delta.thinking.is_empty() {
            self.open(Kind::Thinking, &mut out);
            self.extend("thinking", "thinking_delta", &delta.thinking, &mut out);
        }
        if !delta.content.is_empty() {
            self.open(Kind::Text, &mut out);
            self.extend("text", "text_delta", &delta.content, &mut out);
        }
        for call in &delta.tool_calls {
            self.tool_use(call, &mut out);
        }
        if let Some(end) = end {
            self.close(&mut out);
            let usage = json!({"input_tokens": end.input_tokens, "output_tokens": end.output_tokens});
            out.push_str(&event(
                "message_delta",
                &json!({"type": "message_delta",
                        "delta": {"stop_reason": self.stop_reason(end), "stop_sequence": null},
                        "usage": usage}),
            ));
            out.push_str(&event("message_stop", &json!({"type": "message_stop"})));
        }
        out
    }

    fn ended(&self, end: &End) -> Value {
        self.message(Some(self.stop_reason(end)), end.input_tokens, end.output_tokens)
    }
}
