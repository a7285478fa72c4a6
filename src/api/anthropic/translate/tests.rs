use serde_json::{Value, json};

use super::*;
use crate::api::anthropic::messages::Reader;
use crate::api::passthrough::End;
use crate::api::passthrough::test_support::{fixture, read_sse, whole_chunk};
use crate::backend::request::{ToolCall, ToolCallFunction};
use crate::backend::{Chunk, Completion, Delta};

fn request(body: Value) -> Value {
    serde_json::to_value(chat_request(body.to_string().as_bytes()).unwrap()).unwrap()
}

#[test]
fn a_conversation_with_tools_becomes_a_chat() {
    let body = json!({
        "model": "tiny",
        "max_tokens": 64,
        "system": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Use tools.", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "What is the weather in Paris?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
            ]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "The user wants weather.", "signature": "sig"},
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "18 C, sunny"}]}
            ]},
            {"role": "assistant", "content": "It is sunny."},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "no such city", "is_error": true},
                {"type": "text", "text": "And London?"}
            ]},
            {"role": "system", "content": "Claude Code sends these."}
        ],
        "tools": [{"name": "get_weather", "description": "Weather for a city",
                   "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
        "tool_choice": {"type": "auto"},
        "temperature": 0.5,
        "top_p": 0.9,
        "top_k": 40,
        "stop_sequences": ["END"],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "stream": true,
        "metadata": {"user_id": "u"}
    });
    assert_eq!(
        request(body),
        json!({
            "model": "tiny",
            "messages": [
                {"role": "system", "content": "Be brief.\nUse tools."},
                {"role": "user", "content": "What is the weather in Paris?", "images": ["iVBORw0KGgo="]},
                {"role": "assistant", "content": "Let me look.", "thinking": "The user wants weather.",
                 "tool_calls": [{"id": "toolu_1", "function": {"index": null, "name": "get_weather", "arguments": {"city": "Paris"}}}]},
                {"role": "tool", "content": "18 C, sunny", "tool_call_id": "toolu_1"},
                {"role": "assistant", "content": "It is sunny."},
                {"role": "tool", "content": "Error: no such city", "tool_call_id": "toolu_2"},
                {"role": "user", "content": "And London?"},
                {"role": "system", "content": "Claude Code sends these."}
            ],
            "stream": null,
            "format": null,
            "options": {"num_predict": 64, "temperature": 0.5, "top_p": 0.9, "top_k": 40, "stop": ["END"]},
            "keep_alive": null,
            "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                       "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
            "think": true
        })
    );
}

#[test]
fn tool_choice_none_drops_the_tools_and_thinking_can_be_off() {
    let body = json!({
        "model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "Hi"}],
        "tools": [{"name": "t", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "none"},
        "thinking": {"type": "disabled"}
    });
    let chat = request(body);
    assert_eq!((&chat["tools"], &chat["think"]), (&Value::Null, &json!(false)));
}

#[test]
fn what_cannot_be_translated_is_named() {
    let refused = |body: Value| chat_request(body.to_string().as_bytes()).unwrap_err();
    let hi = json!([{"role": "user", "content": "Hi"}]);
    assert_eq!(
        refused(json!({"model": "m", "messages": hi, "tool_choice": {"type": "any"}})),
        "tool_choice 'any' or 'tool' cannot be honoured by a backend answering through chat completions; use 'auto'"
    );
    assert_eq!(
        refused(
            json!({"model": "m", "messages": hi, "tools": [{"type": "web_search_20250305", "name": "web_search"}]})
        ),
        "tools: 'web_search' is an Anthropic server tool (web_search_20250305), which a backend answering through \
         chat completions does not have"
    );
    assert_eq!(
        refused(json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}]}]})),
        "messages[0]: an image by URL (https://x/y.png) cannot be passed to a backend answering through chat \
         completions; send it as base64"
    );
    let unknown = refused(json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "document"}]}]}));
    assert!(
        unknown.starts_with("invalid value for 'messages[0].content': unknown variant `document`"),
        "{unknown}"
    );
    assert_eq!(
        refused(json!({"model": "m"})),
        "invalid request body: missing field `messages` at line 1 column 13"
    );
    let role = refused(json!({"model": "m", "messages": [{"role": "tool", "content": "x"}]}));
    assert!(
        role.starts_with("invalid value for 'messages[0].role': unknown variant `tool`"),
        "{role}"
    );
}

fn text(content: &str) -> Chunk {
    Chunk {
        delta: Delta {
            content: content.into(),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn thinking(text: &str) -> Chunk {
    Chunk {
        delta: Delta {
            thinking: text.into(),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn weather_call() -> Chunk {
    Chunk {
        delta: Delta {
            tool_calls: vec![ToolCall {
                id: Some("call_x1".into()),
                function: ToolCallFunction {
                    index: Some(0),
                    name: "get_weather".into(),
                    arguments: json!({"city": "Paris"}),
                },
            }],
            ..Default::default()
        },
        ..Default::default()
    }
}

fn done() -> Chunk {
    Chunk {
        done: Some(Completion {
            done_reason: "stop".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn end(reason: &str) -> End {
    End {
        reason: reason.into(),
        input_tokens: 12,
        output_tokens: 5,
    }
}

/// The events of a stream of chunks, the last with `end`.
fn events(chunks: &[Chunk], end: &End) -> String {
    let mut encoder = MessageEncoder::new("req1", "tiny");
    let last = chunks.len() - 1;
    chunks
        .iter()
        .enumerate()
        .map(|(i, c)| encoder.chunk(c, (i == last).then_some(end)))
        .collect()
}

fn sse(events: &[(&str, Value)]) -> String {
    events
        .iter()
        .map(|(name, data)| format!("event: {name}\ndata: {data}\n\n"))
        .collect()
}

fn start() -> (&'static str, Value) {
    (
        "message_start",
        json!({"type": "message_start", "message": {"id": "msg_req1", "type": "message", "role": "assistant",
               "model": "tiny", "content": [], "stop_reason": null, "stop_sequence": null,
               "usage": {"input_tokens": 0, "output_tokens": 0}}}),
    )
}

fn stop(reason: &str) -> [(&'static str, Value); 2] {
    [
        (
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": null},
                   "usage": {"input_tokens": 12, "output_tokens": 5}}),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ]
}

fn delta(index: usize, delta: Value) -> (&'static str, Value) {
    (
        "content_block_delta",
        json!({"type": "content_block_delta", "index": index, "delta": delta}),
    )
}

fn block_start(index: usize, block: Value) -> (&'static str, Value) {
    (
        "content_block_start",
        json!({"type": "content_block_start", "index": index, "content_block": block}),
    )
}

fn block_stop(index: usize) -> (&'static str, Value) {
    (
        "content_block_stop",
        json!({"type": "content_block_stop", "index": index}),
    )
}

#[test]
fn streamed_text() {
    let got = events(&[text("Hello"), text(" there"), done()], &end("stop"));
    let mut want = vec![
        start(),
        block_start(0, json!({"type": "text", "text": ""})),
        delta(0, json!({"type": "text_delta", "text": "Hello"})),
        delta(0, json!({"type": "text_delta", "text": " there"})),
        block_stop(0),
    ];
    want.extend(stop("end_turn"));
    assert_eq!(got, sse(&want));
}

#[test]
fn streamed_thinking_then_text_then_a_tool_call() {
    let chunks = [thinking("Weather?"), text("Looking."), weather_call(), done()];
    let got = events(&chunks, &end("stop"));
    let mut want = vec![
        start(),
        block_start(0, json!({"type": "thinking", "thinking": "", "signature": ""})),
        delta(0, json!({"type": "thinking_delta", "thinking": "Weather?"})),
        block_stop(0),
        block_start(1, json!({"type": "text", "text": ""})),
        delta(1, json!({"type": "text_delta", "text": "Looking."})),
        block_stop(1),
        block_start(
            2,
            json!({"type": "tool_use", "id": "call_x1", "name": "get_weather", "input": {}}),
        ),
        delta(
            2,
            json!({"type": "input_json_delta", "partial_json": "{\"city\":\"Paris\"}"}),
        ),
        block_stop(2),
    ];
    want.extend(stop("tool_use"));
    assert_eq!(got, sse(&want));
    // Read back as the pass-through reads a backend's events: the same answer.
    let read = whole_chunk(read_sse(Reader::default(), &got).unwrap());
    assert_eq!(
        (read.delta.thinking.as_str(), read.delta.content.as_str()),
        ("Weather?", "Looking.")
    );
    assert_eq!(read.delta.tool_calls[0].function.arguments, json!({"city": "Paris"}));
    assert_eq!(read.done.unwrap().done_reason, "stop");
}

#[test]
fn whole_messages() {
    let whole = |delta: Delta, reason: &str| Box::new(MessageEncoder::new("req1", "tiny")).whole(&delta, &end(reason));
    let message = |content: Value, stop_reason: &str| {
        json!({"id": "msg_req1", "type": "message", "role": "assistant", "model": "tiny", "content": content,
               "stop_reason": stop_reason, "stop_sequence": null, "usage": {"input_tokens": 12, "output_tokens": 5}})
    };
    assert_eq!(
        whole(text("Hello").delta, "stop"),
        message(json!([{"type": "text", "text": "Hello"}]), "end_turn")
    );
    assert_eq!(
        whole(text("Hel").delta, "length"),
        message(json!([{"type": "text", "text": "Hel"}]), "max_tokens")
    );
    assert_eq!(
        whole(weather_call().delta, "stop"),
        message(
            json!([{"type": "tool_use", "id": "call_x1", "name": "get_weather", "input": {"city": "Paris"}}]),
            "tool_use"
        )
    );
    let thought = Delta {
        thinking: "The user greets me, so I greet back.\n".into(),
        content: "Hello from the tiny thinking model.".into(),
        ..Default::default()
    };
    // llama-server's own rendition of the same answer has the same blocks.
    let native: Value = serde_json::from_str(&fixture("messages-think.json")).unwrap();
    assert_eq!(whole(thought, "stop")["content"], native["content"]);
}
