//! Unit tests of the OpenAI translation: request bodies built from Ollama requests, and
//! neutral chunks built from the SSE streams and bodies a real llama-server sent
//! (`fixtures/llama-server/`, see its README).

use std::path::PathBuf;

use serde_json::{Value, json};

use super::answer::tool_call_id;
use super::*;
use crate::backend::request::{ChatRequest, GenerateRequest, Think, ToolCall, ToolCallFunction};
use crate::backend::{BackendError, Chunk, Completion, Delta};

mod fields;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

const CHAT_TEXT: &str = "Hello from the tiny scripted model.";
const AFTER_TOOL: &str = "It is sunny in Paris today.";
const THINKING: &str = "The user greets me, so I greet back.\n";
const THINK_ANSWER: &str = "Hello from the tiny thinking model.";

fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/llama-server")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The `data` of every event of an SSE body: events are separated by blank lines, and
/// an event's `data:` lines are joined by newlines.
fn sse_data(body: &str) -> Vec<String> {
    body.replace("\r\n", "\n")
        .split("\n\n")
        .filter_map(|event| {
            let lines: Vec<&str> = event
                .lines()
                .filter_map(|line| line.strip_prefix("data:"))
                .map(|data| data.strip_prefix(' ').unwrap_or(data))
                .collect();
            (!lines.is_empty()).then(|| lines.join("\n"))
        })
        .collect()
}

/// Feeds every event to a translator, then ends it; any error is returned.
fn translate_events<S: AsRef<str>>(hide_thinking: bool, events: &[S]) -> Result<Vec<Chunk>, BackendError> {
    let mut translator = Translator::new(hide_thinking, false);
    let mut chunks = Vec::new();
    for event in events {
        chunks.extend(translator.on_event(event.as_ref())?);
    }
    chunks.extend(translator.finish()?);
    Ok(chunks)
}

fn translate_sse(name: &str, hide_thinking: bool) -> Vec<Chunk> {
    let events = sse_data(&fixture(name));
    translate_events(hide_thinking, &events).unwrap_or_else(|e| panic!("{name}: {e:?}"))
}

fn translate_body(name: &str, hide_thinking: bool) -> Vec<Chunk> {
    Translator::new(hide_thinking, false)
        .on_body(fixture(name).as_bytes())
        .unwrap_or_else(|e| panic!("{name}: {e:?}"))
}

fn content(text: &str) -> Chunk {
    Chunk {
        delta: Delta {
            content: text.into(),
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

fn tool_calls(calls: Vec<ToolCall>) -> Chunk {
    Chunk {
        delta: Delta {
            tool_calls: calls,
            ..Default::default()
        },
        ..Default::default()
    }
}

fn done(completion: Completion) -> Chunk {
    Chunk {
        done: Some(completion),
        ..Default::default()
    }
}

fn call(id: &str, index: u32, name: &str, arguments: Value) -> ToolCall {
    ToolCall {
        id: Some(id.into()),
        function: ToolCallFunction {
            index: Some(index),
            name: name.into(),
            arguments,
        },
    }
}

/// A completion as llama-server reports it: usage, and timings in ns.
fn completion(done_reason: &str, prompt: u64, completion: u64, prompt_ns: u64, eval_ns: u64) -> Completion {
    Completion {
        done_reason: done_reason.into(),
        prompt_tokens: Some(prompt),
        completion_tokens: Some(completion),
        prompt_eval_ns: Some(prompt_ns),
        eval_ns: Some(eval_ns),
        total_ns: None,
        load_ns: None,
    }
}

/// Only `done_reason` set: an answer that reported neither usage nor timings.
fn bare_completion(done_reason: &str) -> Completion {
    Completion {
        done_reason: done_reason.into(),
        ..Default::default()
    }
}

fn is_well_formed_id(id: &str) -> bool {
    id.strip_prefix("call_")
        .is_some_and(|tail| tail.len() == 8 && tail.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
}

/// The only tool-call id of a translated answer.
fn only_call_id(chunks: &[Chunk]) -> String {
    let ids: Vec<&ToolCall> = chunks.iter().flat_map(|c| &c.delta.tool_calls).collect();
    assert_eq!(ids.len(), 1, "{chunks:?}");
    ids[0].id.clone().expect("tool call has an id")
}

/// Everything an answer says, concatenated: what a non-streamed reply is made of.
#[derive(Debug, PartialEq)]
struct Aggregate {
    content: String,
    thinking: String,
    tool_calls: Vec<(String, Value)>,
    done_reason: String,
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
}

fn aggregate(chunks: &[Chunk]) -> Aggregate {
    let last = chunks.last().expect("at least one chunk");
    let end = last.done.as_ref().expect("the last chunk is the end");
    assert!(
        chunks[..chunks.len() - 1].iter().all(|c| c.done.is_none()),
        "only the last chunk ends the answer: {chunks:?}"
    );
    Aggregate {
        content: chunks.iter().map(|c| c.delta.content.as_str()).collect(),
        thinking: chunks.iter().map(|c| c.delta.thinking.as_str()).collect(),
        tool_calls: chunks
            .iter()
            .flat_map(|c| &c.delta.tool_calls)
            .map(|c| (c.function.name.clone(), c.function.arguments.clone()))
            .collect(),
        done_reason: end.done_reason.clone(),
        prompt_tokens: end.prompt_tokens,
        completion_tokens: end.completion_tokens,
    }
}

/// Checks a hard-coded completion against the usage and timings of the fixture's own
/// JSON (the last object carrying `timings`), so the tables below cannot drift from it.
fn assert_matches_fixture(name: &str, expected: &Completion) {
    let text = fixture(name);
    let objects: Vec<Value> = if name.ends_with(".sse") {
        sse_data(&text)
            .iter()
            .filter(|d| !d.starts_with("[DONE]"))
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    } else {
        vec![serde_json::from_str(&text).unwrap()]
    };
    let last = objects
        .iter()
        .rev()
        .find(|o| o.get("timings").is_some())
        .expect("timings");
    let ms_to_ns = |v: &Value| (v.as_f64().unwrap() * 1e6).round() as u64;
    assert_eq!(
        expected.prompt_tokens,
        last["usage"]["prompt_tokens"].as_u64(),
        "{name}"
    );
    assert_eq!(
        expected.completion_tokens,
        last["usage"]["completion_tokens"].as_u64(),
        "{name}"
    );
    assert_eq!(
        expected.prompt_eval_ns,
        Some(ms_to_ns(&last["timings"]["prompt_ms"])),
        "{name}"
    );
    assert_eq!(
        expected.eval_ns,
        Some(ms_to_ns(&last["timings"]["predicted_ms"])),
        "{name}"
    );
}

fn chat_request(value: Value) -> ChatRequest {
    serde_json::from_value(value).expect("a valid Ollama chat request")
}

fn generate_request(value: Value) -> GenerateRequest {
    serde_json::from_value(value).expect("a valid Ollama generate request")
}

// ---------------------------------------------------------------------------------------
// The SSE parser of these tests
// ---------------------------------------------------------------------------------------

#[test]
fn sse_helper_splits_events_and_strips_data_prefix() {
    let events = sse_data("data: {\"a\":1}\n\ndata:{\"b\":2}\r\n\r\n: comment\n\ndata: x\ndata: y\n\ndata: [DONE]\n\n");
    assert_eq!(events, vec!["{\"a\":1}", "{\"b\":2}", "x\ny", "[DONE]"]);
    // Every captured stream ends with [DONE].
    for name in [
        "chat-text.sse",
        "chat-text-sampled.sse",
        "chat-tools.sse",
        "chat-after-tool.sse",
        "think.sse",
        "think-off.sse",
        "think-tools.sse",
        "completions.sse",
    ] {
        assert_eq!(
            sse_data(&fixture(name)).last().map(String::as_str),
            Some("[DONE]"),
            "{name}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Captured llama-server streams → neutral chunks
// ---------------------------------------------------------------------------------------

#[test]
fn stream_chat_text() {
    let expected_end = completion("stop", 126, 8, 2_205_000, 1_045_000);
    assert_matches_fixture("chat-text.sse", &expected_end);
    let chunks = translate_sse("chat-text.sse", false);
    assert_eq!(
        chunks,
        vec![
            content("Hello"),
            content(" from"),
            content(" the"),
            content(" tiny"),
            content(" scripted"),
            content(" model"),
            content("."),
            done(expected_end),
        ]
    );
    assert_eq!(aggregate(&chunks).content, CHAT_TEXT);
}

#[test]
fn stream_chat_text_sampled() {
    let expected_end = completion("stop", 126, 8, 400_000, 658_000);
    assert_matches_fixture("chat-text-sampled.sse", &expected_end);
    let chunks = translate_sse("chat-text-sampled.sse", false);
    assert_eq!(
        chunks,
        vec![
            content("Hello"),
            content(" from"),
            content(" the"),
            content(" tiny"),
            content(" scripted"),
            content(" model"),
            content("."),
            done(expected_end),
        ]
    );
    assert_eq!(aggregate(&chunks).content, CHAT_TEXT);
}

#[test]
fn stream_chat_tools_gives_one_complete_call_before_the_end() {
    let expected_end = completion("stop", 828, 16, 5_400_000, 3_672_000);
    assert_matches_fixture("chat-tools.sse", &expected_end);
    let chunks = translate_sse("chat-tools.sse", false);
    // llama-server's id is not Ollama-shaped: a `call_` + 8 id is derived from it.
    let id = only_call_id(&chunks);
    assert!(is_well_formed_id(&id), "{id}");
    assert_eq!(id, tool_call_id("FAC2m7U5tf5QhKxqR3GJhBzQXlgdsfmY"));
    assert_eq!(
        chunks,
        vec![
            tool_calls(vec![call(&id, 0, "get_weather", json!({"city": "Paris"}))]),
            done(expected_end),
        ]
    );
}

#[test]
fn stream_chat_after_tool() {
    let expected_end = completion("stop", 972, 7, 2_064_000, 1_767_000);
    assert_matches_fixture("chat-after-tool.sse", &expected_end);
    let chunks = translate_sse("chat-after-tool.sse", false);
    assert_eq!(
        chunks,
        vec![
            content("It"),
            content(" is"),
            content(" sunny"),
            content(" in"),
            content(" Paris"),
            content(" today."),
            done(expected_end),
        ]
    );
    assert_eq!(aggregate(&chunks).content, AFTER_TOOL);
}

fn think_answer_chunks() -> Vec<Chunk> {
    vec![
        content("Hello"),
        content(" from"),
        content(" the"),
        content(" tiny"),
        content(" thinking"),
        content(" model"),
        content("."),
    ]
}

#[test]
fn stream_think_gives_thinking_then_content() {
    let expected_end = completion("stop", 26, 21, 1_764_000, 2_545_000);
    assert_matches_fixture("think.sse", &expected_end);
    let chunks = translate_sse("think.sse", false);
    let mut expected: Vec<Chunk> = [
        "The", " user", " greets", " me", ",", " so", " I", " greet", " back", ".\n",
    ]
    .into_iter()
    .map(thinking)
    .collect();
    expected.extend(think_answer_chunks());
    expected.push(done(expected_end));
    assert_eq!(chunks, expected);
    let all = aggregate(&chunks);
    assert_eq!(all.thinking, THINKING);
    assert_eq!(all.content, THINK_ANSWER);
}

#[test]
fn stream_think_hidden_when_think_is_false() {
    let chunks = translate_sse("think.sse", true);
    let mut expected = think_answer_chunks();
    expected.push(done(completion("stop", 26, 21, 1_764_000, 2_545_000)));
    // No thinking, and no empty chunks where the thinking was.
    assert_eq!(chunks, expected);
}

#[test]
fn stream_think_off() {
    let expected_end = completion("stop", 26, 8, 4_067_000, 666_000);
    assert_matches_fixture("think-off.sse", &expected_end);
    let mut expected = think_answer_chunks();
    expected.push(done(expected_end));
    assert_eq!(translate_sse("think-off.sse", false), expected);
    assert_eq!(translate_sse("think-off.sse", true), expected);
}

#[test]
fn stream_think_tools() {
    let expected_end = completion("stop", 733, 16, 3_467_000, 39_322_000);
    assert_matches_fixture("think-tools.sse", &expected_end);
    let chunks = translate_sse("think-tools.sse", false);
    let id = only_call_id(&chunks);
    assert!(is_well_formed_id(&id), "{id}");
    assert_eq!(id, tool_call_id("NbQ7wyUVHei4g3ToxLHGc0PqrTVGcn0a"));
    assert_eq!(
        chunks,
        vec![
            tool_calls(vec![call(&id, 0, "get_weather", json!({"city": "Paris"}))]),
            done(expected_end),
        ]
    );
}

#[test]
fn stream_completions_text() {
    // Usage and timings ride on the finish chunk itself, whose text is "".
    let expected_end = completion("stop", 22, 8, 4_210_000, 871_000);
    assert_matches_fixture("completions.sse", &expected_end);
    let chunks = translate_sse("completions.sse", false);
    assert_eq!(
        chunks,
        vec![
            content("Hello"),
            content(" from"),
            content(" the"),
            content(" tiny"),
            content(" scripted"),
            content(" model"),
            content("."),
            done(expected_end),
        ]
    );
    assert_eq!(aggregate(&chunks).content, CHAT_TEXT);
}

#[test]
fn streams_never_yield_empty_chunks() {
    for name in [
        "chat-text.sse",
        "chat-text-sampled.sse",
        "chat-tools.sse",
        "chat-after-tool.sse",
        "think.sse",
        "think-off.sse",
        "think-tools.sse",
        "completions.sse",
    ] {
        for hide in [false, true] {
            let chunks = translate_sse(name, hide);
            let (end, pieces) = chunks.split_last().unwrap();
            assert!(end.done.is_some() && end.delta.is_empty(), "{name}: {end:?}");
            assert!(
                pieces
                    .iter()
                    .all(|c| !c.delta.is_empty() && c.done.is_none() && c.raw.is_none()),
                "{name}: {pieces:?}"
            );
        }
    }
}

#[test]
fn tool_call_ids_are_deterministic_per_backend_id() {
    let first = only_call_id(&translate_sse("chat-tools.sse", false));
    let again = only_call_id(&translate_sse("chat-tools.sse", false));
    assert_eq!(first, again);
    let other = only_call_id(&translate_sse("think-tools.sse", false));
    assert_ne!(first, other, "different backend ids give different ids");
    assert!(is_well_formed_id(&first) && is_well_formed_id(&other));
}

// ---------------------------------------------------------------------------------------
// Captured non-streamed bodies → the same as the stream, aggregated
// ---------------------------------------------------------------------------------------

#[test]
fn body_chat_text() {
    let expected_end = completion("stop", 126, 8, 8_441_000, 702_000);
    assert_matches_fixture("chat-text.json", &expected_end);
    assert_eq!(
        translate_body("chat-text.json", false),
        vec![content(CHAT_TEXT), done(expected_end)]
    );
}

#[test]
fn body_chat_text_sampled() {
    let expected_end = completion("stop", 126, 8, 1_212_000, 635_000);
    assert_matches_fixture("chat-text-sampled.json", &expected_end);
    assert_eq!(
        translate_body("chat-text-sampled.json", false),
        vec![content(CHAT_TEXT), done(expected_end)]
    );
}

#[test]
fn body_chat_tools() {
    // The message has `content: ""`: no content chunk.
    let expected_end = completion("stop", 828, 16, 9_479_000, 3_959_000);
    assert_matches_fixture("chat-tools.json", &expected_end);
    let chunks = translate_body("chat-tools.json", false);
    let id = only_call_id(&chunks);
    assert_eq!(id, tool_call_id("g5IGXqpf17zqOViOhT1qdYGnR96v82No"));
    assert!(is_well_formed_id(&id), "{id}");
    assert_eq!(
        chunks,
        vec![
            tool_calls(vec![call(&id, 0, "get_weather", json!({"city": "Paris"}))]),
            done(expected_end),
        ]
    );
}

#[test]
fn body_chat_after_tool() {
    let expected_end = completion("stop", 972, 7, 7_543_000, 1_975_000);
    assert_matches_fixture("chat-after-tool.json", &expected_end);
    assert_eq!(
        translate_body("chat-after-tool.json", false),
        vec![content(AFTER_TOOL), done(expected_end)]
    );
}

#[test]
fn body_think() {
    let expected_end = completion("stop", 26, 21, 275_000, 1_300_000);
    assert_matches_fixture("think.json", &expected_end);
    let both = Chunk {
        delta: Delta {
            content: THINK_ANSWER.into(),
            thinking: THINKING.into(),
            tool_calls: vec![],
            logprobs: vec![],
        },
        ..Default::default()
    };
    assert_eq!(
        translate_body("think.json", false),
        vec![both, done(expected_end.clone())]
    );
    assert_eq!(
        translate_body("think.json", true),
        vec![content(THINK_ANSWER), done(expected_end)]
    );
}

#[test]
fn body_think_off() {
    let expected_end = completion("stop", 26, 8, 323_000, 357_000);
    assert_matches_fixture("think-off.json", &expected_end);
    assert_eq!(
        translate_body("think-off.json", false),
        vec![content(THINK_ANSWER), done(expected_end)]
    );
}

#[test]
fn body_think_tools() {
    let expected_end = completion("stop", 733, 16, 516_000, 2_664_000);
    assert_matches_fixture("think-tools.json", &expected_end);
    let chunks = translate_body("think-tools.json", false);
    let id = only_call_id(&chunks);
    assert_eq!(id, tool_call_id("IcumGYV8X8qd5WBdnGfCHjOxB9FMITUT"));
    assert_eq!(
        chunks,
        vec![
            tool_calls(vec![call(&id, 0, "get_weather", json!({"city": "Paris"}))]),
            done(expected_end),
        ]
    );
}

#[test]
fn body_completions() {
    let expected_end = completion("stop", 22, 8, 309_000, 367_000);
    assert_matches_fixture("completions.json", &expected_end);
    assert_eq!(
        translate_body("completions.json", false),
        vec![content(CHAT_TEXT), done(expected_end)]
    );
}

/// The `.json` and `.sse` of a name are two separate requests: their timings and
/// backend tool-call ids differ, everything else must not.
#[test]
fn bodies_aggregate_like_their_streams() {
    for name in [
        "chat-text",
        "chat-text-sampled",
        "chat-tools",
        "chat-after-tool",
        "think",
        "think-off",
        "think-tools",
        "completions",
    ] {
        for hide in [false, true] {
            let streamed = aggregate(&translate_sse(&format!("{name}.sse"), hide));
            let whole = aggregate(&translate_body(&format!("{name}.json"), hide));
            assert_eq!(whole, streamed, "{name} (hide_thinking: {hide})");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Stream edge cases
// ---------------------------------------------------------------------------------------

#[test]
fn done_marker_without_finish_reason_ends_with_stop() {
    let chunks = translate_events(
        false,
        &[r#"{"choices":[{"index":0,"delta":{"content":"Hi"}}]}"#, "[DONE]"],
    );
    assert_eq!(chunks, Ok(vec![content("Hi"), done(bare_completion("stop"))]));
}

#[test]
fn finish_reason_without_done_marker_is_complete() {
    let chunks = translate_events(
        false,
        &[r#"{"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":"stop"}]}"#],
    );
    assert_eq!(chunks, Ok(vec![content("Hi"), done(bare_completion("stop"))]));
}

#[test]
fn finish_reason_length_is_kept() {
    let chunks = translate_events(
        false,
        &[
            r#"{"choices":[{"index":0,"delta":{"content":"Hi"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"length"}]}"#,
            "[DONE]",
        ],
    );
    assert_eq!(chunks, Ok(vec![content("Hi"), done(bare_completion("length"))]));
}

#[test]
fn other_finish_reasons_become_stop() {
    for reason in ["tool_calls", "content_filter", "function_call", "eos"] {
        let event = json!({"choices": [{"index": 0, "delta": {}, "finish_reason": reason}]}).to_string();
        assert_eq!(
            translate_events(false, &[event]),
            Ok(vec![done(bare_completion("stop"))]),
            "{reason}"
        );
    }
}

#[test]
fn empty_finish_reason_does_not_count_as_finished() {
    let chunks = translate_events(
        false,
        &[r#"{"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":""}]}"#],
    );
    assert_eq!(chunks, Err(BackendError::Truncated));
}

#[test]
fn stream_without_finish_or_done_is_truncated() {
    let chunks = translate_events(
        false,
        &[
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":null}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"Hel"}}]}"#,
        ],
    );
    assert_eq!(chunks, Err(BackendError::Truncated));
    assert_eq!(translate_events::<&str>(false, &[]), Err(BackendError::Truncated));
}

#[test]
fn truncated_captured_stream_is_an_error() {
    // chat-tools.sse cut before its finish chunk: the half call must not be sent on.
    let events = sse_data(&fixture("chat-tools.sse"));
    let cut = &events[..events.len() - 3];
    assert_eq!(translate_events(false, cut), Err(BackendError::Truncated));
}

#[test]
fn error_event_is_a_status_error() {
    let mut translator = Translator::new(false, false);
    assert_eq!(
        translator.on_event(r#"{"error":{"message":"x","code":400}}"#),
        Err(BackendError::Status {
            status: 400,
            message: "x".into()
        })
    );
}

#[test]
fn error_event_shapes() {
    let cases = [
        // llama.cpp
        (
            r#"{"error":{"code":500,"message":"context full","type":"server_error"}}"#,
            500,
            "context full",
        ),
        // OpenAI: a string code is no HTTP status.
        (
            r#"{"error":{"message":"bad key","type":"invalid_request_error","code":"invalid_api_key"}}"#,
            502,
            "bad key",
        ),
        // A code that is no error status.
        (r#"{"error":{"message":"odd","code":200}}"#, 502, "odd"),
        // A bare string.
        (r#"{"error":"overloaded"}"#, 502, "overloaded"),
        // No message at all: the object itself.
        (r#"{"error":{"code":503}}"#, 503, r#"{"code":503}"#),
    ];
    for (event, status, message) in cases {
        assert_eq!(
            Translator::new(false, false).on_event(event),
            Err(BackendError::Status {
                status,
                message: message.into()
            }),
            "{event}"
        );
    }
    // `"error": null` is no error.
    assert_eq!(
        Translator::new(false, false).on_event(r#"{"error":null,"choices":[{"index":0,"delta":{"content":"ok"}}]}"#),
        Ok(Some(content("ok")))
    );
}

#[test]
fn error_event_mid_stream() {
    let chunks = translate_events(
        false,
        &[
            r#"{"choices":[{"index":0,"delta":{"content":"Hi"}}]}"#,
            r#"{"error":{"message":"x","code":400}}"#,
            "[DONE]",
        ],
    );
    assert_eq!(
        chunks,
        Err(BackendError::Status {
            status: 400,
            message: "x".into()
        })
    );
}

#[test]
fn invalid_json_event_is_a_protocol_error() {
    let result = Translator::new(false, false).on_event("{not json");
    assert_eq!(
        result,
        Err(BackendError::Protocol(
            "unreadable stream event (key must be a string at line 1 column 2): {not json".into()
        ))
    );
    // Long events are cut in the message.
    let long = format!("{{\"choices\": {}", "x".repeat(500));
    match Translator::new(false, false).on_event(&long) {
        Err(BackendError::Protocol(message)) => {
            assert!(message.ends_with('…'), "{message}");
            assert!(message.len() < 300, "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn done_marker_is_recognised_with_surrounding_whitespace() {
    assert_eq!(
        translate_events(
            false,
            &[r#"{"choices":[{"index":0,"delta":{"content":"a"}}]}"#, " [DONE]\n"]
        ),
        Ok(vec![content("a"), done(bare_completion("stop"))])
    );
}

#[test]
fn usage_last_wins_and_choices_null_is_accepted() {
    let chunks = translate_events(
        false,
        &[
            r#"{"choices":[{"index":0,"delta":{"content":"Hi"}}],"usage":{"prompt_tokens":1,"completion_tokens":1}}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":2}}"#,
            r#"{"choices":null,"usage":{"prompt_tokens":12,"completion_tokens":3}}"#,
            r#"{"choices":[],"usage":null}"#,
            "[DONE]",
        ],
    );
    assert_eq!(
        chunks,
        Ok(vec![
            content("Hi"),
            done(Completion {
                done_reason: "stop".into(),
                prompt_tokens: Some(12),
                completion_tokens: Some(3),
                ..Default::default()
            }),
        ])
    );
}

#[test]
fn usage_only_chunk_without_choices_key() {
    let chunks = translate_events(
        false,
        &[
            r#"{"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":"stop"}]}"#,
            r#"{"usage":{"prompt_tokens":7,"completion_tokens":1}}"#,
        ],
    );
    assert_eq!(
        chunks,
        Ok(vec![
            content("Hi"),
            done(Completion {
                done_reason: "stop".into(),
                prompt_tokens: Some(7),
                completion_tokens: Some(1),
                ..Default::default()
            }),
        ])
    );
}

#[test]
fn token_counts_fall_back_to_timings() {
    // No usage: prompt tokens are the evaluated plus the cached ones.
    let chunks = translate_events(
        false,
        &[
            r#"{"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":"stop"}],"timings":{"cache_n":10,"prompt_n":3,"prompt_ms":1.5,"predicted_n":4,"predicted_ms":2.25}}"#,
        ],
    );
    assert_eq!(
        chunks,
        Ok(vec![
            content("Hi"),
            done(completion("stop", 13, 4, 1_500_000, 2_250_000))
        ])
    );
}

#[test]
fn timings_round_to_the_nearest_nanosecond() {
    let chunks = translate_events(
        false,
        &[
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1},"timings":{"prompt_ms":0.0000004,"predicted_ms":1.0000006}}"#,
        ],
    );
    assert_eq!(chunks, Ok(vec![done(completion("stop", 1, 1, 0, 1_000_001))]));
}

#[test]
fn reasoning_and_reasoning_content() {
    // `reasoning` (OpenRouter, vLLM) and `reasoning_content` (llama.cpp) are both thinking.
    let chunks = translate_events(
        false,
        &[
            r#"{"choices":[{"index":0,"delta":{"reasoning":"a"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"reasoning_content":"b"}}]}"#,
            // A server sending both says the same thing twice: once is kept.
            r#"{"choices":[{"index":0,"delta":{"reasoning":"c","reasoning_content":"c"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"d"},"finish_reason":"stop"}]}"#,
        ],
    );
    assert_eq!(
        chunks,
        Ok(vec![
            thinking("a"),
            thinking("b"),
            thinking("c"),
            content("d"),
            done(bare_completion("stop"))
        ])
    );
}

#[test]
fn hidden_thinking_leaves_no_empty_chunks() {
    let chunks = translate_events(
        true,
        &[
            r#"{"choices":[{"index":0,"delta":{"reasoning":"a"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"reasoning_content":"b"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"d"},"finish_reason":"stop"}]}"#,
        ],
    );
    assert_eq!(chunks, Ok(vec![content("d"), done(bare_completion("stop"))]));
}

#[test]
fn refusal_is_content() {
    let chunks = translate_events(
        false,
        &[
            r#"{"choices":[{"index":0,"delta":{"refusal":"I can't help with that."}}]}"#,
            "[DONE]",
        ],
    );
    assert_eq!(
        chunks,
        Ok(vec![content("I can't help with that."), done(bare_completion("stop"))])
    );
}

#[test]
fn null_and_empty_fields_give_no_chunk() {
    let mut translator = Translator::new(false, false);
    for event in [
        r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":null}}]}"#,
        r#"{"choices":[{"index":0,"delta":{"content":""}}]}"#,
        r#"{"choices":[{"index":0,"delta":{"content":null,"reasoning_content":null,"refusal":null,"tool_calls":null}}]}"#,
        r#"{"choices":[{"index":0,"delta":{}}]}"#,
        r#"{"choices":[{"index":0,"delta":null,"text":null}]}"#,
        r#"{"choices":[]}"#,
        r#"{}"#,
        r#"{"choices":[{"index":0,"delta":{"content":"x"},"logprobs":null,"whatever":[1,2]}],"provider":"OpenRouter"}"#,
    ] {
        let got = translator.on_event(event);
        if event.contains("\"x\"") {
            assert_eq!(got, Ok(Some(content("x"))), "{event}");
        } else {
            assert_eq!(got, Ok(None), "{event}");
        }
    }
}

#[test]
fn other_choices_than_the_first_are_ignored() {
    let chunks = translate_events(
        false,
        &[
            r#"{"choices":[{"index":1,"delta":{"content":"other"},"finish_reason":"length"},{"index":0,"delta":{"content":"mine"}}]}"#,
            r#"{"choices":[{"delta":{"content":" too"},"finish_reason":"stop"}]}"#,
        ],
    );
    assert_eq!(
        chunks,
        Ok(vec![content("mine"), content(" too"), done(bare_completion("stop"))])
    );
}

#[test]
fn content_and_finish_in_the_same_event() {
    let chunks = translate_events(
        false,
        &[
            r#"{"choices":[{"index":0,"text":"abc","finish_reason":"length"}],"usage":{"prompt_tokens":2,"completion_tokens":3}}"#,
        ],
    );
    assert_eq!(
        chunks,
        Ok(vec![
            content("abc"),
            done(Completion {
                done_reason: "length".into(),
                prompt_tokens: Some(2),
                completion_tokens: Some(3),
                ..Default::default()
            })
        ])
    );
}

// ---------------------------------------------------------------------------------------
// Tool calls
// ---------------------------------------------------------------------------------------

/// Translates a stream and returns its tool calls (the stream must end well).
fn calls_of<S: AsRef<str>>(events: &[S]) -> Vec<ToolCall> {
    let chunks = translate_events(false, events).expect("a complete answer");
    let with_calls: Vec<&Chunk> = chunks.iter().filter(|c| !c.delta.tool_calls.is_empty()).collect();
    assert!(with_calls.len() <= 1, "calls come in one chunk: {chunks:?}");
    if let Some(chunk) = with_calls.first() {
        assert_eq!(chunks[chunks.len() - 2], **chunk, "calls come right before the end");
    }
    with_calls
        .first()
        .map(|c| c.delta.tool_calls.clone())
        .unwrap_or_default()
}

#[test]
fn tool_call_arguments_as_a_whole_object() {
    let calls = calls_of(&[
        r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_abc","type":"function","function":{"name":"get_weather","arguments":{"city":"Paris"}}}]},"finish_reason":"tool_calls"}]}"#,
    ]);
    assert_eq!(
        calls,
        vec![call("call_abc", 0, "get_weather", json!({"city": "Paris"}))]
    );
}

#[test]
fn tool_call_empty_or_missing_arguments_are_an_empty_object() {
    for arguments in [r#""""#, "null", r#""  ""#] {
        let event = format!(
            r#"{{"choices":[{{"index":0,"delta":{{"tool_calls":[{{"index":0,"id":"call_a","function":{{"name":"ping","arguments":{arguments}}}}}]}},"finish_reason":"tool_calls"}}]}}"#
        );
        assert_eq!(
            calls_of(&[event]),
            vec![call("call_a", 0, "ping", json!({}))],
            "{arguments}"
        );
    }
    let no_arguments = r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_a","function":{"name":"ping"}}]},"finish_reason":"stop"}]}"#;
    assert_eq!(calls_of(&[no_arguments]), vec![call("call_a", 0, "ping", json!({}))]);
}

#[test]
fn tool_call_arguments_that_are_not_an_object_are_an_error() {
    let event = r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_a","function":{"name":"f","arguments":"[1, 2]"}}]},"finish_reason":"tool_calls"}]}"#;
    assert_eq!(
        translate_events(false, &[event]),
        Err(BackendError::Protocol(
            "tool call 'f' has arguments that are not a JSON object: [1, 2]".into()
        ))
    );
    // Sent as a whole array rather than a string: the same.
    let event = r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_a","function":{"name":"f","arguments":[1,2]}}]},"finish_reason":"tool_calls"}]}"#;
    assert_eq!(
        translate_events(false, &[event]),
        Err(BackendError::Protocol(
            "tool call 'f' has arguments that are not a JSON object: [1,2]".into()
        ))
    );
}

#[test]
fn tool_call_arguments_that_are_not_json_are_an_error() {
    let event = r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_a","function":{"name":"f","arguments":"{\"city\": "}}]},"finish_reason":"tool_calls"}]}"#;
    assert_eq!(
        translate_events(false, &[event]),
        Err(BackendError::Protocol(
            "tool call 'f' has arguments that are not valid JSON (EOF while parsing a value at line 1 column 8): {\"city\":"
                .into()
        ))
    );
}

#[test]
fn tool_call_id_formats() {
    // OpenAI-style ids pass as they are.
    assert_eq!(tool_call_id("call_abc123"), "call_abc123");
    assert_eq!(tool_call_id("call_Xy-9_long_id"), "call_Xy-9_long_id");
    // Others are hashed: deterministic and Ollama-shaped.
    for backend in ["FAC2m7U5tf5QhKxqR3GJhBzQXlgdsfmY", "chatcmpl-tool-1", "x", "0"] {
        let id = tool_call_id(backend);
        assert!(is_well_formed_id(&id), "{backend} → {id}");
        assert_eq!(id, tool_call_id(backend), "{backend}");
    }
    // vLLM-style ids share a long prefix: the whole id counts.
    assert_ne!(
        tool_call_id("chatcmpl-tool-aaaaaaaaaaaaaaaa1"),
        tool_call_id("chatcmpl-tool-aaaaaaaaaaaaaaaa2")
    );
    // No id: random, well-formed.
    let random: Vec<String> = (0..20).map(|_| tool_call_id("")).collect();
    assert!(random.iter().all(|id| is_well_formed_id(id)), "{random:?}");
    let distinct: std::collections::HashSet<&String> = random.iter().collect();
    assert!(distinct.len() > 1, "{random:?}");
}

#[test]
fn tool_call_ids_in_answers() {
    let answer = |id: &str| {
        format!(
            r#"{{"choices":[{{"index":0,"delta":{{"tool_calls":[{{"index":0,{id}"function":{{"name":"f","arguments":"{{}}"}}}}]}},"finish_reason":"tool_calls"}}]}}"#
        )
    };
    // A `call_` id is kept.
    assert_eq!(
        calls_of(&[answer(r#""id":"call_k33p1t","#)]),
        vec![call("call_k33p1t", 0, "f", json!({}))]
    );
    // Another id: derived, the same every time.
    let derived = calls_of(&[answer(r#""id":"abc-123","#)]);
    assert_eq!(derived, calls_of(&[answer(r#""id":"abc-123","#)]));
    assert_eq!(derived, vec![call(&tool_call_id("abc-123"), 0, "f", json!({}))]);
    // No id, a null id or an empty id: random but well-formed.
    for missing in ["", r#""id":null,"#, r#""id":"","#] {
        let calls = calls_of(&[answer(missing)]);
        assert_eq!(calls.len(), 1);
        let id = calls[0].id.clone().unwrap();
        assert!(is_well_formed_id(&id), "{missing} → {id}");
    }
}

#[test]
fn streamed_tool_call_fragments_assemble() {
    let calls = calls_of(&[
        r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get_weather","arguments":""}}]}}]}"#,
        r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_2","type":"function","function":{"name":"get_time","arguments":"{\"tz\""}}]}}]}"#,
        r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]}}]}"#,
        r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"arguments":": \"UTC\"}"}}]}}]}"#,
        r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":" \"Paris\"}"}}]}}]}"#,
        r#"{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
        "[DONE]",
    ]);
    assert_eq!(
        calls,
        vec![
            call("call_1", 0, "get_weather", json!({"city": "Paris"})),
            call("call_2", 1, "get_time", json!({"tz": "UTC"})),
        ]
    );
}

#[test]
fn tool_call_name_pieces_and_resent_names() {
    // Pieces are joined; a re-sent full name (llama.cpp revising its parse) replaces.
    let calls = calls_of(&[
        r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_a","function":{"name":"get_"}}]}}]}"#,
        r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"name":"weather"}}]}}]}"#,
        r#"{"choices":[{"index":1,"delta":{"tool_calls":[{"index":0,"function":{"name":"ignored"}}]}}]}"#,
        r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_b","function":{"name":"get"}}]}}]}"#,
        r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"name":"get_time","arguments":"{}"}}]}}]}"#,
        r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"name":"get_time"}}]}}]}"#,
        r#"{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
    ]);
    assert_eq!(
        calls,
        vec![
            call("call_a", 0, "get_weather", json!({})),
            call("call_b", 1, "get_time", json!({})),
        ]
    );
}

#[test]
fn tool_calls_without_index_are_told_apart_by_id() {
    // Gemini's OpenAI endpoint sends no `index`: a new id is a new call.
    let calls = calls_of(&[
        r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"id":"call_g1","function":{"name":"a","arguments":"{\"x\":"}}]}}]}"#,
        r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"function":{"arguments":"1}"}}]}}]}"#,
        r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"id":"call_g2","function":{"name":"b","arguments":"{}"}}]}}]}"#,
        r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
    ]);
    assert_eq!(
        calls,
        vec![
            call("call_g1", 0, "a", json!({"x": 1})),
            call("call_g2", 1, "b", json!({}))
        ]
    );
}

#[test]
fn text_then_tool_calls_then_end() {
    let chunks = translate_events(
        false,
        &[
            r#"{"choices":[{"index":0,"delta":{"content":"Let me check."}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_z","function":{"name":"f","arguments":"{\"a\":1}"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
            "[DONE]",
        ],
    );
    assert_eq!(
        chunks,
        Ok(vec![
            content("Let me check."),
            tool_calls(vec![call("call_z", 0, "f", json!({"a": 1}))]),
            done(bare_completion("stop")),
        ])
    );
}

#[test]
fn distinct_backend_ids_stay_distinct() {
    let calls = calls_of(&[
        r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"A1","function":{"name":"f","arguments":"{}"}},{"index":1,"id":"A2","function":{"name":"g","arguments":"{}"}},{"index":2,"function":{"name":"h","arguments":"{}"}},{"index":3,"function":{"name":"i","arguments":"{}"}}]},"finish_reason":"tool_calls"}]}"#,
    ]);
    let ids: Vec<String> = calls.iter().map(|c| c.id.clone().unwrap()).collect();
    assert_eq!(ids[0], tool_call_id("A1"));
    assert_eq!(ids[1], tool_call_id("A2"));
    assert!(ids.iter().all(|id| is_well_formed_id(id)), "{ids:?}");
    let distinct: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), 4, "{ids:?}");
    let indexes: Vec<Option<u32>> = calls.iter().map(|c| c.function.index).collect();
    assert_eq!(indexes, vec![Some(0), Some(1), Some(2), Some(3)]);
}

#[test]
fn duplicate_backend_ids_are_made_unique() {
    // Two calls with the same `call_` id: the second must get another id.
    let calls = calls_of(&[
        r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_same","function":{"name":"f","arguments":"{}"}},{"index":1,"id":"call_same","function":{"name":"g","arguments":"{}"}}]},"finish_reason":"tool_calls"}]}"#,
    ]);
    assert_eq!(calls[0].id.as_deref(), Some("call_same"));
    assert_ne!(calls[1].id, calls[0].id);
}

#[test]

fn duplicate_backend_ids_are_made_unique_and_well_formed() {
    // Same non-`call_` backend id twice (servers that number calls per answer).
    let calls = calls_of(&[
        r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"0","function":{"name":"f","arguments":"{}"}},{"index":1,"id":"0","function":{"name":"g","arguments":"{}"}}]},"finish_reason":"tool_calls"}]}"#,
    ]);
    let ids: Vec<String> = calls.iter().map(|c| c.id.clone().unwrap()).collect();
    assert_ne!(ids[0], ids[1]);
    assert!(ids.iter().all(|id| is_well_formed_id(id)), "{ids:?}");
}

// ---------------------------------------------------------------------------------------
// Whole bodies
// ---------------------------------------------------------------------------------------

#[test]
fn body_error_and_invalid_body() {
    assert_eq!(
        Translator::new(false, false).on_body(br#"{"error":{"message":"model not found","code":404}}"#),
        Err(BackendError::Status {
            status: 404,
            message: "model not found".into()
        })
    );
    assert_eq!(
        Translator::new(false, false).on_body(b"<html>502 Bad Gateway</html>"),
        Err(BackendError::Protocol(
            "unreadable response (expected value at line 1 column 1): <html>502 Bad Gateway</html>".into()
        ))
    );
}

#[test]
fn body_with_tool_call_arguments_as_object_and_reasoning() {
    let body = json!({
        "choices": [{
            "index": 0,
            "finish_reason": "tool_calls",
            "message": {
                "role": "assistant",
                "content": null,
                "reasoning": "Need weather.",
                "tool_calls": [
                    {"id": "call_w", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
                    {"id": "call_t", "type": "function", "function": {"name": "get_time", "arguments": ""}}
                ]
            }
        }],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5}
    });
    let chunks = Translator::new(false, false).on_body(body.to_string().as_bytes());
    assert_eq!(
        chunks,
        Ok(vec![
            thinking("Need weather."),
            tool_calls(vec![
                call("call_w", 0, "get_weather", json!({"city": "Paris"})),
                call("call_t", 1, "get_time", json!({})),
            ]),
            done(Completion {
                done_reason: "stop".into(),
                prompt_tokens: Some(10),
                completion_tokens: Some(5),
                ..Default::default()
            }),
        ])
    );
}

#[test]
fn body_finish_reason_length() {
    let body = br#"{"choices":[{"index":0,"message":{"content":"Once"},"finish_reason":"length"}]}"#;
    assert_eq!(
        Translator::new(false, false).on_body(body),
        Ok(vec![content("Once"), done(bare_completion("length"))])
    );
}

#[test]

fn body_without_finish_reason_is_complete() {
    // A complete JSON body cannot have been cut off; some servers send `finish_reason: null`.
    let body = br#"{"choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},"finish_reason":null}]}"#;
    assert_eq!(
        Translator::new(false, false).on_body(body),
        Ok(vec![content("Hi"), done(bare_completion("stop"))])
    );
}

// ---------------------------------------------------------------------------------------
// Requests: /api/chat → /v1/chat/completions
// ---------------------------------------------------------------------------------------

#[test]
fn home_assistant_chat_request() {
    let req = chat_request(json!({
        "model": "llama3.2",
        "messages": [
            {"role": "system", "content": "You are a voice assistant for Home Assistant."},
            {"role": "user", "content": "Turn on the kitchen light"}
        ],
        "stream": true,
        "options": {"num_ctx": 8192.0, "num_predict": 100, "temperature": 0.5, "stop": ["x"], "top_k": 40},
        "keep_alive": "-1s",
        "tools": [],
        "think": false,
        "format": ""
    }));
    let body = ollama_chat_to_openai(&req, "llama-3.2-3b-instruct", true, ThinkingStyle::ChatTemplateKwargs);
    assert_eq!(
        Value::Object(body),
        json!({
            "model": "llama-3.2-3b-instruct",
            "messages": [
                {"role": "system", "content": "You are a voice assistant for Home Assistant."},
                {"role": "user", "content": "Turn on the kitchen light"}
            ],
            "stream": true,
            "stream_options": {"include_usage": true},
            "temperature": 0.5,
            "top_k": 40,
            "stop": ["x"],
            "max_tokens": 100,
            "chat_template_kwargs": {"enable_thinking": false}
        })
    );
}

#[test]
fn chat_request_minimal_not_streamed() {
    let req = chat_request(json!({"model": "m", "messages": [{"role": "User", "content": null}]}));
    assert_eq!(
        Value::Object(ollama_chat_to_openai(
            &req,
            "backend-m",
            false,
            ThinkingStyle::ChatTemplateKwargs
        )),
        json!({
            "model": "backend-m",
            "messages": [{"role": "user", "content": ""}],
            "stream": false
        })
    );
    // No messages at all.
    let req = chat_request(json!({"model": "m"}));
    assert_eq!(
        Value::Object(ollama_chat_to_openai(
            &req,
            "backend-m",
            false,
            ThinkingStyle::ChatTemplateKwargs
        )),
        json!({"model": "backend-m", "messages": [], "stream": false})
    );
}

#[test]
fn chat_request_options() {
    let req = chat_request(json!({
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "options": {
            "temperature": 0.7, "top_p": 0.9, "top_k": 20, "min_p": 0.05, "typical_p": 1.0,
            "seed": 42, "stop": ["</s>", "User:"], "repeat_penalty": 1.1, "repeat_last_n": 64,
            "presence_penalty": 0.5, "frequency_penalty": 0.25,
            "num_predict": 256, "num_ctx": 4096, "num_gpu": 99, "mirostat": 0, "penalize_newline": true,
            "tfs_z": null, "low_vram": false
        }
    }));
    assert_eq!(
        Value::Object(ollama_chat_to_openai(
            &req,
            "m",
            false,
            ThinkingStyle::ChatTemplateKwargs
        )),
        json!({
            "model": "m",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": false,
            "temperature": 0.7, "top_p": 0.9, "top_k": 20, "min_p": 0.05, "typical_p": 1.0,
            "seed": 42, "stop": ["</s>", "User:"], "repeat_penalty": 1.1, "repeat_last_n": 64,
            "presence_penalty": 0.5, "frequency_penalty": 0.25,
            "mirostat": 0,
            "max_tokens": 256
        })
    );
}

#[test]
fn chat_request_num_predict_without_openai_spelling() {
    // -1 (unlimited), -2 (fill the context), 0 and null: no max_tokens.
    for num_predict in [json!(-1), json!(-2), json!(0), Value::Null, json!("100")] {
        let req = chat_request(json!({"model": "m", "options": {"num_predict": num_predict, "temperature": null}}));
        assert_eq!(
            Value::Object(ollama_chat_to_openai(
                &req,
                "m",
                false,
                ThinkingStyle::ChatTemplateKwargs
            )),
            json!({"model": "m", "messages": [], "stream": false}),
            "{num_predict}"
        );
    }
    // A float count (JavaScript clients) is still a count.
    let req = chat_request(json!({"model": "m", "options": {"num_predict": 128.0}}));
    assert_eq!(
        Value::Object(ollama_chat_to_openai(
            &req,
            "m",
            false,
            ThinkingStyle::ChatTemplateKwargs
        )),
        json!({"model": "m", "messages": [], "stream": false, "max_tokens": 128})
    );
}

#[test]
fn chat_request_formats() {
    let schema = json!({
        "type": "object",
        "properties": {"age": {"type": "integer"}},
        "required": ["age"]
    });
    let cases = [
        (json!("json"), Some(json!({"type": "json_object"}))),
        (
            schema.clone(),
            Some(json!({"type": "json_schema", "json_schema": {"name": "output", "schema": schema}})),
        ),
        (json!(""), None),
        (Value::Null, None),
    ];
    for (format, response_format) in cases {
        let req = chat_request(json!({"model": "m", "messages": [], "format": format}));
        let mut expected = json!({"model": "m", "messages": [], "stream": false});
        if let Some(rf) = response_format {
            expected["response_format"] = rf;
        }
        assert_eq!(
            Value::Object(ollama_chat_to_openai(
                &req,
                "m",
                false,
                ThinkingStyle::ChatTemplateKwargs
            )),
            expected,
            "{format}"
        );
    }
}

#[test]
fn chat_request_think() {
    let cases = [
        (json!(true), Some(true)),
        (json!(false), Some(false)),
        (json!("high"), Some(true)),
        (json!("medium"), Some(true)),
        (json!("low"), Some(true)),
        (json!("max"), Some(true)),
        (Value::Null, None),
    ];
    for (think, enable) in cases {
        let req = chat_request(json!({"model": "m", "messages": [], "think": think}));
        let mut expected = json!({"model": "m", "messages": [], "stream": false});
        if let Some(enable) = enable {
            expected["chat_template_kwargs"] = json!({"enable_thinking": enable});
        }
        // Levels also go as reasoning_effort, which llama.cpp applies where the template supports it.
        // "max" is Ollama's alone: the strongest effort OpenAI-compatible servers know.
        if let Some(level) = think.as_str() {
            expected["reasoning_effort"] = if level == "max" { "high" } else { level }.into();
        }
        assert_eq!(
            Value::Object(ollama_chat_to_openai(
                &req,
                "m",
                false,
                ThinkingStyle::ChatTemplateKwargs
            )),
            expected,
            "{think}"
        );
    }
    let think_of = |value: Value| chat_request(json!({"think": value})).think;
    assert!(Think::is_off(think_of(json!(false))));
    assert!(!Think::is_off(think_of(json!(true))));
    assert!(!Think::is_off(think_of(json!("low"))));
    assert!(!Think::is_off(think_of(Value::Null)));
}

#[test]
fn chat_request_tools() {
    let req = chat_request(json!({
        "model": "m",
        "messages": [{"role": "user", "content": "weather?"}],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Get the weather",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
                }
            },
            {"type": "function", "function": {"name": "ping", "description": "No parameters"}},
            {"function": {"name": "nulls", "parameters": null}}
        ]
    }));
    assert_eq!(
        Value::Object(ollama_chat_to_openai(
            &req,
            "m",
            true,
            ThinkingStyle::ChatTemplateKwargs
        )),
        json!({
            "model": "m",
            "messages": [{"role": "user", "content": "weather?"}],
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "description": "Get the weather",
                        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
                    }
                },
                {
                    "type": "function",
                    "function": {"name": "ping", "description": "No parameters", "parameters": {"type": "object", "properties": {}}}
                },
                {
                    "type": "function",
                    "function": {"name": "nulls", "parameters": {"type": "object", "properties": {}}}
                }
            ],
            "stream": true,
            "stream_options": {"include_usage": true}
        })
    );
}

#[test]
fn chat_history_tool_calls_without_ids_are_linked_by_order() {
    // Home Assistant sends neither call ids nor tool names.
    let req = chat_request(json!({
        "model": "m",
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
            ]},
            {"role": "tool", "content": "{\"forecast\": \"sunny\"}"},
            {"role": "assistant", "content": "It is sunny in Paris today."},
            {"role": "user", "content": "And Rome?"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"function": {"name": "get_weather", "arguments": {"city": "Rome", "units": {"temp": "C"}}}}
            ]},
            {"role": "tool", "content": "rain"}
        ]
    }));
    assert_eq!(
        Value::Object(ollama_chat_to_openai(
            &req,
            "m",
            false,
            ThinkingStyle::ChatTemplateKwargs
        )),
        json!({
            "model": "m",
            "messages": [
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"id": "call_1_0", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}
                ]},
                {"role": "tool", "content": "{\"forecast\": \"sunny\"}", "tool_call_id": "call_1_0"},
                {"role": "assistant", "content": "It is sunny in Paris today."},
                {"role": "user", "content": "And Rome?"},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"id": "call_5_0", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\",\"units\":{\"temp\":\"C\"}}"}}
                ]},
                {"role": "tool", "content": "rain", "tool_call_id": "call_5_0"}
            ],
            "stream": false
        })
    );
}

#[test]
fn chat_history_tool_results_matched_by_name_then_order() {
    let req = chat_request(json!({
        "model": "m",
        "messages": [
            {"role": "user", "content": "Weather and time?"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
                {"function": {"name": "get_time", "arguments": {}}},
                {"function": {"name": "get_date"}}
            ]},
            {"role": "tool", "tool_name": "get_time", "content": "12:00"},
            {"role": "tool", "content": "sunny"},
            {"role": "tool", "tool_name": "unknown_tool", "content": "monday"}
        ]
    }));
    assert_eq!(
        Value::Object(ollama_chat_to_openai(
            &req,
            "m",
            false,
            ThinkingStyle::ChatTemplateKwargs
        )),
        json!({
            "model": "m",
            "messages": [
                {"role": "user", "content": "Weather and time?"},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"id": "call_1_0", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "call_1_1", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
                    {"id": "call_1_2", "type": "function", "function": {"name": "get_date", "arguments": "{}"}}
                ]},
                {"role": "tool", "content": "12:00", "tool_call_id": "call_1_1", "name": "get_time"},
                {"role": "tool", "content": "sunny", "tool_call_id": "call_1_0"},
                {"role": "tool", "content": "monday", "tool_call_id": "call_1_2", "name": "unknown_tool"}
            ],
            "stream": false
        })
    );
}

#[test]
fn chat_history_tool_results_matched_by_id() {
    let req = chat_request(json!({
        "model": "m",
        "messages": [
            {"role": "assistant", "content": "", "tool_calls": [
                {"id": "call_a", "function": {"name": "f", "arguments": "{\"x\": 1}"}},
                {"id": "call_b", "function": {"name": "f", "arguments": {"x": 2}}}
            ]},
            {"role": "tool", "tool_call_id": "call_b", "tool_name": "f", "content": "two"},
            {"role": "tool", "tool_call_id": "call_a", "tool_name": "f", "content": "one"},
            // Nothing left open: an explicit id is passed on as it is.
            {"role": "tool", "tool_call_id": "call_zzz", "content": "late"},
            // Nothing open and no id: no tool_call_id.
            {"role": "tool", "content": "orphan"}
        ]
    }));
    assert_eq!(
        Value::Object(ollama_chat_to_openai(
            &req,
            "m",
            false,
            ThinkingStyle::ChatTemplateKwargs
        )),
        json!({
            "model": "m",
            "messages": [
                {"role": "assistant", "content": "", "tool_calls": [
                    // A string argument is passed on verbatim.
                    {"id": "call_a", "type": "function", "function": {"name": "f", "arguments": "{\"x\": 1}"}},
                    {"id": "call_b", "type": "function", "function": {"name": "f", "arguments": "{\"x\":2}"}}
                ]},
                {"role": "tool", "content": "two", "tool_call_id": "call_b", "name": "f"},
                {"role": "tool", "content": "one", "tool_call_id": "call_a", "name": "f"},
                {"role": "tool", "content": "late", "tool_call_id": "call_zzz"},
                {"role": "tool", "content": "orphan"}
            ],
            "stream": false
        })
    );
}

#[test]
fn chat_images_become_content_parts() {
    let png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk";
    let jpeg = "/9j/4AAQSkZJRgABAQAAAQABAAD";
    let gif = "R0lGODlhAQABAIAAAAAAAP";
    let webp = "UklGRiQAAABXRUJQVlA4";
    let unknown = "AAAAIGZ0eXBhdmlm";
    let data_url = "data:image/png;base64,iVBORw0KGgo";
    let req = chat_request(json!({
        "model": "m",
        "messages": [
            {"role": "user", "content": "What is in these?", "images": [png, jpeg, gif, webp, unknown, data_url]},
            {"role": "user", "content": "No images here", "images": []}
        ]
    }));
    assert_eq!(
        Value::Object(ollama_chat_to_openai(
            &req,
            "m",
            false,
            ThinkingStyle::ChatTemplateKwargs
        )),
        json!({
            "model": "m",
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "What is in these?"},
                    {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{png}")}},
                    {"type": "image_url", "image_url": {"url": format!("data:image/jpeg;base64,{jpeg}")}},
                    {"type": "image_url", "image_url": {"url": format!("data:image/gif;base64,{gif}")}},
                    {"type": "image_url", "image_url": {"url": format!("data:image/webp;base64,{webp}")}},
                    {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{unknown}")}},
                    {"type": "image_url", "image_url": {"url": data_url}}
                ]},
                {"role": "user", "content": "No images here"}
            ],
            "stream": false
        })
    );
}

#[test]
fn chat_assistant_thinking_in_history_is_not_sent() {
    let req = chat_request(json!({
        "model": "m",
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!", "thinking": "They greet me."},
            {"role": "user", "content": "Again"}
        ]
    }));
    assert_eq!(
        Value::Object(ollama_chat_to_openai(
            &req,
            "m",
            false,
            ThinkingStyle::ChatTemplateKwargs
        )),
        json!({
            "model": "m",
            "messages": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": "Again"}
            ],
            "stream": false
        })
    );
}

// ---------------------------------------------------------------------------------------
// Requests: /api/generate → chat or completions
// ---------------------------------------------------------------------------------------

#[test]
fn generate_prompt_with_system_is_a_chat() {
    let req = generate_request(json!({
        "model": "m",
        "prompt": "Why is the sky blue?",
        "system": "Answer briefly.",
        "options": {"temperature": 0.2, "num_predict": 50},
        "think": true
    }));
    let (route, body) = ollama_generate_to_openai(&req, "backend-m", true, ThinkingStyle::ChatTemplateKwargs);
    assert_eq!(route, Route::Chat);
    assert_eq!(route.path(), "v1/chat/completions");
    assert_eq!(
        Value::Object(body),
        json!({
            "model": "backend-m",
            "messages": [
                {"role": "system", "content": "Answer briefly."},
                {"role": "user", "content": "Why is the sky blue?"}
            ],
            "stream": true,
            "stream_options": {"include_usage": true},
            "temperature": 0.2,
            "max_tokens": 50,
            "chat_template_kwargs": {"enable_thinking": true}
        })
    );
}

#[test]
fn generate_without_system_or_prompt() {
    let req = generate_request(json!({"model": "m", "prompt": "Hi", "system": ""}));
    let (route, body) = ollama_generate_to_openai(&req, "m", false, ThinkingStyle::ChatTemplateKwargs);
    assert_eq!(route, Route::Chat);
    assert_eq!(
        Value::Object(body),
        json!({"model": "m", "messages": [{"role": "user", "content": "Hi"}], "stream": false})
    );
    // A load request (no prompt) is still a valid chat.
    let req = generate_request(json!({"model": "m"}));
    let (route, body) = ollama_generate_to_openai(&req, "m", false, ThinkingStyle::ChatTemplateKwargs);
    assert_eq!(route, Route::Chat);
    assert_eq!(
        Value::Object(body),
        json!({"model": "m", "messages": [{"role": "user", "content": ""}], "stream": false})
    );
}

#[test]
fn generate_images_go_with_the_prompt() {
    let req = generate_request(json!({"model": "m", "prompt": "Describe", "images": ["/9j/4AAQ"], "format": "json"}));
    let (route, body) = ollama_generate_to_openai(&req, "m", false, ThinkingStyle::ChatTemplateKwargs);
    assert_eq!(route, Route::Chat);
    assert_eq!(
        Value::Object(body),
        json!({
            "model": "m",
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "Describe"},
                {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}}
            ]}],
            "stream": false,
            "response_format": {"type": "json_object"}
        })
    );
}

#[test]
fn generate_raw_is_a_completion_with_the_prompt_verbatim() {
    let prompt = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n";
    let req = generate_request(json!({
        "model": "m",
        "prompt": prompt,
        "raw": true,
        "system": "ignored in raw mode",
        "options": {"num_predict": 32, "stop": ["<|im_end|>"]}
    }));
    let (route, body) = ollama_generate_to_openai(&req, "backend-m", true, ThinkingStyle::ChatTemplateKwargs);
    assert_eq!(route, Route::Completions);
    assert_eq!(route.path(), "v1/completions");
    assert_eq!(
        Value::Object(body),
        json!({
            "model": "backend-m",
            "prompt": prompt,
            "stream": true,
            "stream_options": {"include_usage": true},
            "stop": ["<|im_end|>"],
            "max_tokens": 32
        })
    );
}

#[test]
fn generate_suffix_is_a_completion_with_suffix() {
    let req = generate_request(json!({
        "model": "m",
        "prompt": "def add(a, b):\n    ",
        "suffix": "\n    return c\n",
        "options": {"temperature": 0}
    }));
    let (route, body) = ollama_generate_to_openai(&req, "coder", false, ThinkingStyle::ChatTemplateKwargs);
    assert_eq!(route, Route::Completions);
    assert_eq!(
        Value::Object(body),
        json!({
            "model": "coder",
            "prompt": "def add(a, b):\n    ",
            "suffix": "\n    return c\n",
            "stream": false,
            "temperature": 0
        })
    );
    // raw: false with no suffix stays a chat.
    let req = generate_request(json!({"model": "m", "prompt": "x", "raw": false}));
    assert_eq!(
        ollama_generate_to_openai(&req, "m", false, ThinkingStyle::ChatTemplateKwargs).0,
        Route::Chat
    );
}

/// Backends that inline `<think>…</think>` (strip_think): the tags may be cut anywhere
/// across chunks; the text inside becomes thinking, the rest stays the answer.
#[test]
fn inlined_think_tags_split_across_chunks_become_thinking() {
    let text = "<think>Plan: greet.</think>Hello <b>there</b>.";
    for cut in 1..text.len() {
        let mut translator = Translator::new(false, true);
        let (mut content, mut thinking) = (String::new(), String::new());
        for piece in [&text[..cut], &text[cut..]] {
            let event = json!({"choices": [{"index": 0, "delta": {"content": piece}}]}).to_string();
            if let Some(chunk) = translator.on_event(&event).unwrap() {
                assert!(!chunk.delta.is_empty());
                content.push_str(&chunk.delta.content);
                thinking.push_str(&chunk.delta.thinking);
            }
        }
        translator
            .on_event(r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#)
            .unwrap();
        for chunk in translator.finish().unwrap() {
            content.push_str(&chunk.delta.content);
            thinking.push_str(&chunk.delta.thinking);
        }
        assert_eq!(
            (content.as_str(), thinking.as_str()),
            ("Hello <b>there</b>.", "Plan: greet."),
            "cut at {cut}"
        );
    }
}

#[test]
fn inlined_think_tags_are_dropped_with_think_false_and_a_dangling_prefix_is_text() {
    let mut translator = Translator::new(true, true);
    let chunk = translator.on_event(r#"{"choices":[{"index":0,"delta":{"content":"<think>x</think>a <thi"}}]}"#);
    assert_eq!(
        chunk.unwrap().unwrap().delta,
        Delta {
            content: "a ".into(),
            ..Default::default()
        }
    );
    translator
        .on_event(r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#)
        .unwrap();
    let chunks = translator.finish().unwrap();
    assert_eq!(
        chunks[0].delta,
        Delta {
            content: "<thi".into(),
            ..Default::default()
        }
    );
    assert!(chunks[1].done.is_some());
}

/// OpenAI-style backends know only `reasoning_effort`; `think: false` sends nothing
/// (the translator hides thinking), and `ThinkingStyle::None` never sends a switch.
#[test]
fn chat_request_think_in_other_styles() {
    let cases = [
        (json!(true), Some("medium")),
        (json!("high"), Some("high")),
        (json!("low"), Some("low")),
        (json!("max"), Some("high")),
        (json!(false), None),
        (Value::Null, None),
    ];
    for (think, effort) in cases {
        let req = chat_request(json!({"model": "m", "messages": [], "think": think}));
        let mut expected = json!({"model": "m", "messages": [], "stream": false});
        if let Some(effort) = effort {
            expected["reasoning_effort"] = effort.into();
        }
        assert_eq!(
            Value::Object(ollama_chat_to_openai(&req, "m", false, ThinkingStyle::ReasoningEffort)),
            expected,
            "{think}"
        );
        assert_eq!(
            Value::Object(ollama_chat_to_openai(&req, "m", false, ThinkingStyle::None)),
            json!({"model": "m", "messages": [], "stream": false}),
            "{think}"
        );
    }
}
