use serde_json::{Value, json};

use super::*;
use crate::api::openai::responses::Reader;
use crate::api::passthrough::End;
use crate::api::passthrough::test_support::{fixture, read_sse, whole_chunk};
use crate::backend::request::{ToolCall, ToolCallFunction};
use crate::backend::{Chunk, Completion, Delta};

fn request(body: Value) -> Value {
    serde_json::to_value(chat_request(body.to_string().as_bytes()).unwrap()).unwrap()
}

#[test]
fn input_items_become_a_chat() {
    let body = json!({
        "model": "tiny",
        "instructions": "Be brief.",
        "input": [
            {"role": "developer", "content": "Use tools."},
            {"role": "user", "content": [
                {"type": "input_text", "text": "What is the weather in Paris?"},
                {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="}
            ]},
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "18 C, sunny"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "It is sunny."}]},
            {"role": "user", "content": "And London?"}
        ],
        "tools": [{"type": "function", "name": "get_weather", "description": "Weather for a city",
                   "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}, "strict": true}],
        "tool_choice": "auto",
        "max_output_tokens": 64,
        "temperature": 0.5,
        "top_p": 0.9,
        "reasoning": {"effort": "high"},
        "text": {"format": {"type": "json_object"}},
        "store": false,
        "stream": true
    });
    assert_eq!(
        request(body),
        json!({
            "model": "tiny",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "system", "content": "Use tools."},
                {"role": "user", "content": "What is the weather in Paris?", "images": ["iVBORw0KGgo="]},
                {"role": "assistant", "content": "",
                 "tool_calls": [{"id": "call_1", "function": {"index": null, "name": "get_weather", "arguments": {"city": "Paris"}}}]},
                {"role": "tool", "content": "18 C, sunny", "tool_call_id": "call_1"},
                {"role": "assistant", "content": "It is sunny."},
                {"role": "user", "content": "And London?"}
            ],
            "stream": null,
            "format": "json",
            "options": {"num_predict": 64, "temperature": 0.5, "top_p": 0.9},
            "keep_alive": null,
            "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                       "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
            "think": "high"
        })
    );
    let plain = request(json!({"model": "m", "input": "Hi", "reasoning": {"effort": "none"}}));
    assert_eq!(
        (&plain["messages"], &plain["think"]),
        (&json!([{"role": "user", "content": "Hi"}]), &json!(false))
    );
}

#[test]
fn what_cannot_be_translated_is_named() {
    let refused = |body: Value| chat_request(body.to_string().as_bytes()).unwrap_err();
    assert_eq!(
        refused(json!({"model": "m", "input": "Hi", "tool_choice": "required"})),
        "tool_choice other than 'auto' or 'none' cannot be honoured by a backend answering through chat completions"
    );
    assert_eq!(
        refused(json!({"model": "m", "input": "Hi", "tools": [{"type": "web_search"}]})),
        "tools: a 'web_search' tool cannot be offered by a backend answering through chat completions; only \
         function tools"
    );
    assert_eq!(
        refused(json!({"model": "m", "input": "Hi", "previous_response_id": "resp_1"})),
        "previous_response_id cannot be followed: ollabridge keeps no responses when the backend answers through \
         chat completions; send the whole conversation in input"
    );
    let file = refused(
        json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}),
    );
    assert!(
        file.starts_with("invalid value for 'input[0]': unknown variant `input_file`"),
        "{file}"
    );
    assert_eq!(
        refused(
            json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_image", "image_url": "https://x/y.png"}]}]})
        ),
        "input[0]: an image must be a base64 data URL when the backend answers through chat completions"
    );
}

fn delta(content: &str, thinking: &str) -> Chunk {
    Chunk {
        delta: Delta {
            content: content.into(),
            thinking: thinking.into(),
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

fn encoder() -> ResponseEncoder {
    ResponseEncoder::new("req1", "tiny", 1700000000)
}

/// The events of a stream of chunks (the last ends it), as (name, data) pairs.
fn events(chunks: &[Chunk]) -> Vec<(String, Value)> {
    let mut encoder = encoder();
    let last = chunks.len() - 1;
    let text: String = chunks
        .iter()
        .enumerate()
        .map(|(i, c)| encoder.chunk(c, (i == last).then_some(&end("stop"))))
        .collect();
    text.split_terminator("\n\n")
        .map(|e| {
            let (name, data) = e.split_once('\n').unwrap();
            let name = name.strip_prefix("event: ").unwrap().to_owned();
            (
                name,
                serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap(),
            )
        })
        .collect()
}

fn response(status: &str, output: Value, usage: Value) -> Value {
    json!({"id": "resp_req1", "object": "response", "created_at": 1700000000, "status": status, "error": null,
           "incomplete_details": null, "model": "tiny", "output": output, "usage": usage})
}

fn usage() -> Value {
    json!({"input_tokens": 12, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 5,
           "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 17})
}

fn message(text: &str) -> Value {
    json!({"id": "msg_req1_0", "type": "message", "status": "completed", "role": "assistant",
           "content": [{"type": "output_text", "text": text, "annotations": []}]})
}

#[test]
fn streamed_text() {
    let got = events(&[delta("Hello", ""), delta(" there", ""), done()]);
    let at = json!({"item_id": "msg_req1_0", "output_index": 0, "content_index": 0});
    let with = |extra: Value| {
        let mut data = at.clone();
        data.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        data
    };
    let in_progress = response("in_progress", json!([]), Value::Null);
    let part = json!({"type": "output_text", "text": "", "annotations": []});
    let want = [
        ("response.created", json!({"response": in_progress})),
        ("response.in_progress", json!({"response": in_progress})),
        (
            "response.output_item.added",
            json!({"output_index": 0, "item": {"id": "msg_req1_0", "type": "message", "status": "in_progress",
                   "role": "assistant", "content": []}}),
        ),
        ("response.content_part.added", with(json!({"part": part}))),
        (
            "response.output_text.delta",
            with(json!({"delta": "Hello", "logprobs": []})),
        ),
        (
            "response.output_text.delta",
            with(json!({"delta": " there", "logprobs": []})),
        ),
        (
            "response.output_text.done",
            with(json!({"text": "Hello there", "logprobs": []})),
        ),
        (
            "response.content_part.done",
            with(json!({"part": {"type": "output_text", "text": "Hello there", "annotations": []}})),
        ),
        (
            "response.output_item.done",
            json!({"output_index": 0, "item": message("Hello there")}),
        ),
        (
            "response.completed",
            json!({"response": response("completed", json!([message("Hello there")]), usage())}),
        ),
    ];
    let want: Vec<(String, Value)> = want
        .into_iter()
        .enumerate()
        .map(|(i, (name, mut data))| {
            data["type"] = name.into();
            data["sequence_number"] = i.into();
            (name.to_owned(), data)
        })
        .collect();
    assert_eq!(got, want);
}

#[test]
fn streamed_reasoning_then_a_function_call() {
    let got = events(&[delta("", "Weather?"), weather_call(), done()]);
    let names: Vec<&str> = got.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.reasoning_text.delta",
            "response.reasoning_text.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    let call = json!({"id": "fc_req1_1", "type": "function_call", "status": "completed", "call_id": "call_x1",
                      "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"});
    assert_eq!(
        got[7].1,
        json!({"type": "response.function_call_arguments.delta", "sequence_number": 7, "item_id": "fc_req1_1",
               "output_index": 1, "delta": "{\"city\":\"Paris\"}"})
    );
    assert_eq!(got[9].1["item"], call);
    let reasoning = json!({"id": "rs_req1_0", "type": "reasoning", "summary": [], "status": "completed",
                           "content": [{"type": "reasoning_text", "text": "Weather?"}]});
    assert_eq!(got[10].1["response"]["output"], json!([reasoning, call]));
    // Read back as the pass-through reads a backend's events: the same answer.
    let text: String = got
        .iter()
        .map(|(name, data)| format!("event: {name}\ndata: {data}\n\n"))
        .collect();
    let read = whole_chunk(read_sse(Reader::default(), &text).unwrap());
    assert_eq!(read.delta.thinking, "Weather?");
    assert_eq!(read.delta.tool_calls[0].function.arguments, json!({"city": "Paris"}));
    assert_eq!(read.done.unwrap().prompt_tokens, Some(12));
}

/// Counts a backend made up do not overflow the total.
#[test]
fn huge_token_counts_total_without_overflow() {
    let end = End {
        reason: "stop".into(),
        input_tokens: u64::MAX - 1,
        output_tokens: 5,
    };
    let answer = Box::new(encoder()).whole(&delta("Hi", "").delta, &end);
    assert_eq!(answer["usage"]["total_tokens"], json!(u64::MAX), "{answer}");
}

#[test]
fn whole_responses() {
    let whole = |chunk: Chunk, reason: &str| Box::new(encoder()).whole(&chunk.delta, &end(reason));
    assert_eq!(
        whole(delta("Hello", ""), "stop"),
        response("completed", json!([message("Hello")]), usage())
    );
    let mut cut = response("incomplete", json!([message("Hel")]), usage());
    cut["incomplete_details"] = json!({"reason": "max_output_tokens"});
    assert_eq!(whole(delta("Hel", ""), "length"), cut);
    let call = whole(weather_call(), "stop");
    assert_eq!(
        call["output"],
        json!([{"id": "fc_req1_0", "type": "function_call", "status": "completed", "call_id": "call_x1",
                "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}])
    );
    // llama-server's own rendition of a thinking answer has the same kinds of items.
    let native: Value = serde_json::from_str(&fixture("responses-think.json")).unwrap();
    let ours = whole(
        delta(
            "Hello from the tiny thinking model.",
            "The user greets me, so I greet back.\n",
        ),
        "stop",
    );
    let shape = |r: &Value| -> Vec<(Value, Value)> {
        r["output"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| (item["type"].clone(), item["content"][0].clone()))
            .map(|(kind, mut part)| {
                part.as_object_mut().unwrap().retain(|k, _| k == "type" || k == "text");
                (kind, part)
            })
            .collect()
    };
    assert_eq!(shape(&ours), shape(&native));
}
