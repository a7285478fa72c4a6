//! What ollabridge reads of a request it passes through, and the body it sends on: the
//! same JSON with only `model` renamed (and usage asked for), so keys it does not know
//! survive. The fields read (`model`, `stream`) are named alike in every dialect.

use bytes::Bytes;
use serde_json::{Map, Value, json};

/// A client's request body, read only as far as ollabridge needs.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientRequest {
    pub body: Map<String, Value>,
    pub model: Option<String>,
    /// OpenAI's default is a whole answer.
    pub stream: bool,
    /// The client asked for the usage chunk (`stream_options.include_usage`).
    pub include_usage: bool,
}

impl ClientRequest {
    /// Reads a body; the error is the message of a 400.
    pub fn read(bytes: &[u8]) -> Result<ClientRequest, String> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err("missing request body".into());
        }
        let value: Value = serde_json::from_slice(bytes).map_err(|e| format!("invalid JSON body: {e}"))?;
        let Value::Object(body) = value else {
            return Err(format!(
                "the request body must be a JSON object, not {}",
                kind_of(&value)
            ));
        };
        let model = match body.get("model") {
            None | Some(Value::Null) => None,
            Some(Value::String(name)) => Some(name.clone()),
            Some(other) => return Err(invalid("model", "a string", other)),
        };
        let stream = match body.get("stream") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => return Err(invalid("stream", "true or false", other)),
        };
        let include_usage = match body.get("stream_options") {
            None | Some(Value::Null) => false,
            Some(Value::Object(options)) => options.get("include_usage") == Some(&Value::Bool(true)),
            Some(other) => return Err(invalid("stream_options", "an object", other)),
        };
        Ok(ClientRequest {
            body,
            model,
            stream,
            include_usage,
        })
    }

    /// The body for one backend: its name for the model and, when `ask_usage` and the
    /// client streams without asking for usage, `stream_options.include_usage` (other
    /// stream options kept). Returns whether usage was added, so its chunk can be left out.
    pub fn for_backend(&self, backend_model: &str, ask_usage: bool) -> (Bytes, bool) {
        let mut body = self.body.clone();
        body.insert("model".into(), backend_model.into());
        let add_usage = ask_usage && self.stream && !self.include_usage;
        if add_usage {
            let options = body.entry("stream_options").or_insert_with(|| json!({}));
            if !options.is_object() {
                *options = json!({});
            }
            options["include_usage"] = true.into();
        }
        // Serialising a map read from JSON cannot fail.
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        (Bytes::from(bytes), add_usage)
    }
}

fn invalid(field: &str, expected: &str, got: &Value) -> String {
    format!("invalid value for '{field}': expected {expected}, got {}", kind_of(got))
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Renames a whole answer's top-level `model` to the client's name; returns whether it
/// changed (then the answer is re-serialised: same meaning, maybe not the same bytes).
pub fn rename_model(answer: &mut Map<String, Value>, client_model: &str) -> bool {
    match answer.get_mut("model") {
        Some(Value::String(name)) if name != client_model => {
            *name = client_model.to_owned();
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<ClientRequest, String> {
        ClientRequest::read(text.as_bytes())
    }

    #[test]
    fn reads_model_stream_and_usage() {
        let r = read(r#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#).unwrap();
        assert_eq!((r.model.as_deref(), r.stream, r.include_usage), (Some("m"), true, true));
        let r = read(r#"{"messages":[],"stream":null,"stream_options":null}"#).unwrap();
        assert_eq!((r.model, r.stream, r.include_usage), (None, false, false));
    }

    #[test]
    fn malformed_bodies_name_the_problem() {
        assert_eq!(read(""), Err("missing request body".into()));
        assert_eq!(
            read("{\"model\": "),
            Err("invalid JSON body: EOF while parsing a value at line 1 column 10".into())
        );
        assert_eq!(
            read("[1]"),
            Err("the request body must be a JSON object, not an array".into())
        );
        assert_eq!(
            read(r#"{"model": 7}"#),
            Err("invalid value for 'model': expected a string, got a number".into())
        );
        assert_eq!(
            read(r#"{"stream": "yes"}"#),
            Err("invalid value for 'stream': expected true or false, got a string".into())
        );
        assert_eq!(
            read(r#"{"stream_options": true}"#),
            Err("invalid value for 'stream_options': expected an object, got a boolean".into())
        );
    }

    #[test]
    fn only_model_changes_and_usage_is_added_when_missing() {
        let text = r#"{"model":"alias","x_unknown":{"keep":[1,2.5]},"stream":true,"stream_options":{"continuous_usage_stats":false},"n":1}"#;
        let (body, added) = ClientRequest::read(text.as_bytes()).unwrap().for_backend("real", true);
        assert!(added);
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"{"model":"real","x_unknown":{"keep":[1,2.5]},"stream":true,"stream_options":{"continuous_usage_stats":false,"include_usage":true},"n":1}"#
        );
        // Asked for by the client, switched off, or not streaming: left as it was.
        for (text, ask) in [
            (
                r#"{"model":"a","stream":true,"stream_options":{"include_usage":true}}"#,
                true,
            ),
            (r#"{"model":"a","stream":true}"#, false),
            (r#"{"model":"a","stream":false}"#, true),
        ] {
            let (body, added) = ClientRequest::read(text.as_bytes()).unwrap().for_backend("b", ask);
            assert!(!added, "{text}");
            assert_eq!(
                String::from_utf8(body.to_vec()).unwrap(),
                text.replace("\"a\"", "\"b\"")
            );
        }
        // No model: the default model's backend name is added at the end.
        let (body, _) = ClientRequest::read(br#"{"prompt":"x"}"#)
            .unwrap()
            .for_backend("b", true);
        assert_eq!(&body[..], br#"{"prompt":"x","model":"b"}"#);
    }

    #[test]
    fn whole_answers_get_the_client_model() {
        let mut answer: Map<String, Value> = serde_json::from_str(r#"{"id":"x","model":"real","choices":[]}"#).unwrap();
        assert!(rename_model(&mut answer, "alias"));
        assert_eq!(
            serde_json::to_string(&answer).unwrap(),
            r#"{"id":"x","model":"alias","choices":[]}"#
        );
        assert!(!rename_model(&mut answer, "alias"));
        assert!(!rename_model(&mut Map::new(), "alias"));
    }
}
