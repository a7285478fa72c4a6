//! The newer Ollama request fields over OpenAI backends: `logprobs`/`top_logprobs` (request
//! bodies, and the log probabilities in the answers a real llama-server sent), `think`
//! levels, and the context overflow llama-server reports.

use super::*;
use crate::backend::request::{Message, ThinkLevel};
use crate::backend::{Logprob, TokenLogprob};

/// The tokens tiny-chat answers with, one per chunk.
const CHAT_TOKENS: [&str; 7] = ["Hello", " from", " the", " tiny", " scripted", " model", "."];

fn translate_with_logprobs(name: &str, top: Option<usize>) -> Vec<Chunk> {
    let mut translator = Translator::new(false, false).with_logprobs(top);
    let mut chunks = Vec::new();
    if name.ends_with(".sse") {
        for event in sse_data(&fixture(name)) {
            chunks.extend(translator.on_event(&event).expect("a readable event"));
        }
        chunks.extend(translator.finish().expect("a finished stream"));
    } else {
        chunks = translator.on_body(fixture(name).as_bytes()).expect("a readable body");
    }
    chunks
}

fn all_logprobs(chunks: &[Chunk]) -> Vec<Logprob> {
    chunks.iter().flat_map(|c| c.delta.logprobs.clone()).collect()
}

fn tokens(logprobs: &[Logprob]) -> Vec<&str> {
    logprobs.iter().map(|l| l.token.as_str()).collect()
}

fn token(text: &str, logprob: f64, bytes: &[u8]) -> TokenLogprob {
    TokenLogprob {
        token: text.into(),
        logprob,
        bytes: bytes.to_vec(),
    }
}

// ---------------------------------------------------------------------------------------
// logprobs: requests
// ---------------------------------------------------------------------------------------

#[test]
fn chat_request_logprobs() {
    let body = |fields: Value| {
        let mut request = json!({"model": "m", "messages": []});
        request
            .as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        Value::Object(ollama_chat_to_openai(
            &chat_request(request),
            "m",
            false,
            ThinkingStyle::ChatTemplateKwargs,
        ))
    };
    let plain = json!({"model": "m", "messages": [], "stream": false});
    let with = |top: u64| {
        let mut expected = plain.clone();
        expected["logprobs"] = true.into();
        expected["top_logprobs"] = top.into();
        expected
    };
    assert_eq!(body(json!({"logprobs": true, "top_logprobs": 2})), with(2));
    assert_eq!(body(json!({"logprobs": true, "top_logprobs": 20})), with(20));
    // llama.cpp sends no log probabilities at all for top_logprobs 0: one is asked, and cut.
    assert_eq!(body(json!({"logprobs": true, "top_logprobs": 0})), with(1));
    assert_eq!(body(json!({"logprobs": true})), with(1));
    // Like Ollama, top_logprobs alone asks for nothing.
    assert_eq!(body(json!({"logprobs": false, "top_logprobs": 3})), plain);
    assert_eq!(body(json!({"top_logprobs": 3})), plain);
}

#[test]
fn generate_request_logprobs_on_either_route() {
    let req = generate_request(
        json!({"model": "m", "prompt": "Once upon a time", "raw": true, "logprobs": true, "top_logprobs": 2}),
    );
    let (route, body) = ollama_generate_to_openai(&req, "m", false, ThinkingStyle::ChatTemplateKwargs);
    assert_eq!(route, Route::Completions);
    // /v1/completions takes the count of alternatives as `logprobs` itself.
    assert_eq!(
        Value::Object(body),
        json!({"model": "m", "prompt": "Once upon a time", "stream": false, "logprobs": 2})
    );
    let req = generate_request(json!({"model": "m", "prompt": "Hi", "raw": true, "logprobs": true}));
    let (_, body) = ollama_generate_to_openai(&req, "m", false, ThinkingStyle::ChatTemplateKwargs);
    assert_eq!(body["logprobs"], 1);

    let req = generate_request(json!({"model": "m", "prompt": "Hi", "logprobs": true, "top_logprobs": 3}));
    let (route, body) = ollama_generate_to_openai(&req, "m", false, ThinkingStyle::ChatTemplateKwargs);
    assert_eq!(route, Route::Chat);
    assert_eq!((&body["logprobs"], &body["top_logprobs"]), (&json!(true), &json!(3)));
}

#[test]
fn top_logprobs_out_of_range_is_refused_in_ollamas_words() {
    for bad in [json!(21), json!(-1), json!("2")] {
        let error = serde_json::from_value::<ChatRequest>(json!({"logprobs": true, "top_logprobs": bad}))
            .expect_err("out of range");
        assert!(
            error.to_string().contains(if bad.is_string() {
                "invalid type"
            } else {
                "top_logprobs must be between 0 and 20"
            }),
            "{bad}: {error}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// logprobs: answers
// ---------------------------------------------------------------------------------------

/// Every token of the answer comes with the chunk that carries its text, its bytes, and
/// the two likeliest tokens at its position (the chosen one first).
#[test]
fn stream_chat_logprobs() {
    let chunks = translate_with_logprobs("chat-logprobs.sse", Some(2));
    let text_chunks: Vec<&Chunk> = chunks.iter().filter(|c| !c.delta.content.is_empty()).collect();
    assert_eq!(text_chunks.len(), CHAT_TOKENS.len());
    for (chunk, expected) in text_chunks.iter().zip(CHAT_TOKENS) {
        assert_eq!(tokens(&chunk.delta.logprobs), [expected]);
        assert_eq!(chunk.delta.content, expected);
    }
    let logprobs = all_logprobs(&chunks);
    assert_eq!(tokens(&logprobs), CHAT_TOKENS);
    for logprob in &logprobs {
        assert_eq!(logprob.bytes, logprob.token.as_bytes(), "{logprob:?}");
        assert_eq!(logprob.top_logprobs.len(), 2, "{logprob:?}");
        assert_eq!(
            logprob.top_logprobs[0],
            token(&logprob.token, logprob.logprob, &logprob.bytes)
        );
    }
    assert_eq!(
        logprobs[0],
        Logprob {
            token: "Hello".into(),
            logprob: 0.0,
            bytes: b"Hello".to_vec(),
            top_logprobs: vec![
                token("Hello", 0.0, b"Hello"),
                token("\u{fffd}", -59.20257568359375, &[134]),
            ],
        }
    );
    assert!(chunks.last().unwrap().done.is_some());
}

#[test]
fn body_chat_logprobs_are_the_streams() {
    let streamed = all_logprobs(&translate_with_logprobs("chat-logprobs.sse", Some(2)));
    let whole = translate_with_logprobs("chat-logprobs.json", Some(2));
    assert_eq!(all_logprobs(&whole), streamed);
    assert_eq!(whole[0].delta.content, CHAT_TEXT);
}

/// `top_logprobs` 0 keeps the chosen tokens' numbers only; what the backend sends beyond
/// what was asked is cut.
#[test]
fn alternatives_are_cut_to_what_was_asked() {
    for (top, kept) in [(0, 0), (1, 1), (2, 2), (5, 2)] {
        let logprobs = all_logprobs(&translate_with_logprobs("chat-logprobs.json", Some(top)));
        assert_eq!(tokens(&logprobs), CHAT_TOKENS);
        assert!(logprobs.iter().all(|l| l.top_logprobs.len() == kept), "top {top}");
    }
}

#[test]
fn logprobs_not_asked_for_are_not_passed_on() {
    for name in ["chat-logprobs.sse", "chat-logprobs.json", "completions-logprobs.sse"] {
        assert_eq!(all_logprobs(&translate_with_logprobs(name, None)), [], "{name}");
    }
    assert_eq!(
        aggregate(&translate_with_logprobs("chat-logprobs.sse", None)),
        aggregate(&translate_sse("chat-text.sse", false))
    );
}

/// llama.cpp puts the `<think>` token's numbers on the chunk that opens the answer, which
/// has no text: it goes on as a chunk of its own. Thinking tokens carry theirs.
#[test]
fn stream_think_logprobs() {
    let chunks = translate_with_logprobs("think-logprobs.sse", Some(1));
    assert_eq!(
        chunks[0].delta,
        Delta {
            logprobs: vec![Logprob {
                token: "<think>".into(),
                logprob: 0.0,
                bytes: b"<think>".to_vec(),
                top_logprobs: vec![token("<think>", 0.0, b"<think>")],
            }],
            ..Default::default()
        }
    );
    assert_eq!(chunks[1].delta.thinking, "The");
    assert_eq!(tokens(&chunks[1].delta.logprobs), ["\nThe"]);
    let logprobs = all_logprobs(&chunks);
    let answer_start = tokens(&logprobs).iter().position(|t| *t == "Hello").unwrap();
    assert_eq!(
        tokens(&logprobs[answer_start..]).concat(),
        THINK_ANSWER,
        "the answer's tokens spell the answer"
    );
    // A whole answer also has the numbers of the tokens that close the thinking, which
    // llama.cpp's stream leaves out with the empty chunks they would have made.
    let whole = all_logprobs(&translate_with_logprobs("think-logprobs.json", Some(1)));
    let (before, after) = whole.split_at(answer_start);
    assert_eq!(tokens(after)[..2], ["</think>", "\n\n"]);
    assert_eq!([before, &after[2..]].concat(), logprobs);
}

/// llama.cpp answers `/v1/completions` with chat's `content` list too. Its stream ends
/// with the end-of-generation token's numbers (no text), which are left out.
#[test]
fn completions_logprobs() {
    let streamed = all_logprobs(&translate_with_logprobs("completions-logprobs.sse", Some(2)));
    assert_eq!(tokens(&streamed), CHAT_TOKENS);
    assert!(streamed.iter().all(|l| l.top_logprobs.len() == 2));
    assert_eq!(
        all_logprobs(&translate_with_logprobs("completions-logprobs.json", Some(2))),
        streamed
    );
}

/// OpenAI's legacy completions columns (vLLM answers `/v1/completions` this way):
/// alternatives come as an object, put likeliest first.
#[test]
fn legacy_completions_logprobs() {
    let body = json!({
        "choices": [{"index": 0, "text": "Hi!", "finish_reason": "stop", "logprobs": {
            "tokens": ["Hi", "!"],
            "token_logprobs": [-0.25, null],
            "top_logprobs": [{"Hello": -2.5, "Hi": -0.25, "Hey": -1.5}, null],
            "text_offset": [0, 2],
        }}],
    });
    let chunks = Translator::new(false, false)
        .with_logprobs(Some(2))
        .on_body(body.to_string().as_bytes())
        .unwrap();
    assert_eq!(
        all_logprobs(&chunks),
        [
            Logprob {
                token: "Hi".into(),
                logprob: -0.25,
                bytes: b"Hi".to_vec(),
                top_logprobs: vec![token("Hi", -0.25, b"Hi"), token("Hey", -1.5, b"Hey")],
            },
            // No number: OpenAI's "very unlikely".
            Logprob {
                token: "!".into(),
                logprob: -9999.0,
                bytes: b"!".to_vec(),
                top_logprobs: vec![],
            },
        ]
    );
}

// ---------------------------------------------------------------------------------------
// think
// ---------------------------------------------------------------------------------------

/// Ollama's values and no others, refused in its own words.
#[test]
fn think_takes_ollamas_values() {
    for (value, think) in [
        (json!(true), Think::On),
        (json!(false), Think::Off),
        (json!("low"), Think::Level(ThinkLevel::Low)),
        (json!("medium"), Think::Level(ThinkLevel::Medium)),
        (json!("high"), Think::Level(ThinkLevel::High)),
        (json!("max"), Think::Level(ThinkLevel::Max)),
    ] {
        let request = chat_request(json!({"think": value}));
        assert_eq!(request.think, Some(think));
        assert_eq!(
            serde_json::to_value(&request).unwrap()["think"],
            value,
            "written back as it came"
        );
    }
    assert_eq!(chat_request(json!({"think": null})).think, None);
    for (value, error) in [
        (
            json!("none"),
            r#"invalid think value: "none" (must be "high", "medium", "low", "max", true, or false)"#,
        ),
        (
            json!("HIGH"),
            r#"invalid think value: "HIGH" (must be "high", "medium", "low", "max", true, or false)"#,
        ),
        (
            json!(1),
            r#"think must be a boolean or string (must be "high", "medium", "low", "max", true, or false)"#,
        ),
    ] {
        let refused = serde_json::from_value::<GenerateRequest>(json!({"think": value})).unwrap_err();
        assert_eq!(refused.to_string(), error, "{value}");
    }
}

// ---------------------------------------------------------------------------------------
// The context overflow
// ---------------------------------------------------------------------------------------

fn message(role: &str, content: &str) -> Message {
    Message {
        role: role.into(),
        content: content.into(),
        ..Default::default()
    }
}

fn contents(messages: &[Message]) -> Vec<&str> {
    messages.iter().map(|m| m.content.as_str()).collect()
}

/// What a llama-server started with `-c 256` answers the captured request.
#[test]
fn context_exceeded_is_read_from_llama_servers_refusal() {
    let body = fixture("context-exceeded.json");
    assert_eq!(
        context_exceeded(400, body.as_bytes()),
        Some(BackendError::ContextExceeded {
            message: "request (458 tokens) exceeds the available context size (256 tokens), try increasing it".into(),
            prompt_tokens: 458,
            context: 256,
        })
    );
    // Another status, another error, or the counts missing (older llama.cpp): not it.
    assert_eq!(context_exceeded(500, body.as_bytes()), None);
    let without_counts = json!({"error": {"code": 400, "message": "the request exceeds the available context size",
        "type": "exceed_context_size_error"}});
    assert_eq!(context_exceeded(400, without_counts.to_string().as_bytes()), None);
    let other = json!({"error": {"code": 400, "message": "bad", "type": "invalid_request_error"}});
    assert_eq!(context_exceeded(400, other.to_string().as_bytes()), None);
}

/// The captured request: a system message, six older turns and the question. At 458 tokens
/// for 256, about half the history goes (by length), oldest first; the system message and
/// the question stay.
#[test]
fn the_oldest_messages_go_to_fit() {
    let request: ChatRequest = serde_json::from_str(&fixture("context-exceeded.request.json")).unwrap();
    let messages = request.messages.unwrap();
    let fitted = fit_to_context(&messages, 458, 256).unwrap();
    assert_eq!(
        contents(&fitted),
        [
            "Be brief.",
            "Message number 4 with some filler words here",
            "Message number 5 with some filler words here",
            "Hello!"
        ]
    );
    // A count just over the context drops one message; the last is never dropped.
    assert_eq!(fit_to_context(&messages, 257, 256).unwrap().len(), messages.len() - 1);
    let (system, question) = (message("system", "Be brief."), message("user", "Hello!"));
    assert_eq!(fit_to_context(&[system.clone(), question.clone()], 9000, 256), None);
    assert_eq!(fit_to_context(std::slice::from_ref(&question), 9000, 256), None);
    assert_eq!(fit_to_context(&[], 9000, 256), None);
}

/// A tool result whose call was dropped goes too; a system message anywhere stays.
#[test]
fn a_tool_result_goes_with_its_call() {
    let call = Message {
        role: "assistant".into(),
        tool_calls: Some(vec![ToolCall {
            id: None,
            function: ToolCallFunction {
                index: None,
                name: "get_weather".into(),
                arguments: json!({"city": "Paris"}),
            },
        }]),
        ..Default::default()
    };
    let messages = [
        call,
        message("tool", "sunny"),
        message("system", "Answer in French."),
        message("user", "And tomorrow?"),
    ];
    // Just over: the call alone would do, but its result cannot stay without it.
    let fitted = fit_to_context(&messages, 101, 100).unwrap();
    assert_eq!(contents(&fitted), ["Answer in French.", "And tomorrow?"]);
}
