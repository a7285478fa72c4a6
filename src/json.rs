//! JSON decoding whose errors say where the problem is (`messages[0].content`).

use serde::de::DeserializeOwned;

/// Why a JSON text could not be decoded.
#[derive(Debug)]
pub enum JsonError {
    /// Not valid JSON at all.
    Syntax(String),
    /// Valid JSON of the wrong shape; `path` names the field when there is one.
    Data { path: Option<String>, message: String },
}

pub fn from_slice_with_path<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, JsonError> {
    // Tracking the path costs ~1.5 % of a request's CPU, so it runs only to explain a
    // failure (decoding the same bytes fails the same way). Like Ollama's decoder, text
    // after the first value is ignored.
    if let Ok(value) = T::deserialize(&mut serde_json::Deserializer::from_slice(bytes)) {
        return Ok(value);
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.classify() != serde_json::error::Category::Data {
            JsonError::Syntax(inner.to_string())
        } else {
            let path = (!matches!(path.as_str(), "." | "") && !path.contains('?')).then_some(path);
            JsonError::Data {
                path,
                message: inner.to_string(),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Outer {
        items: Vec<Inner>,
    }
    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Inner {
        name: String,
    }

    #[test]
    fn decodes_and_ignores_text_after_the_value() {
        let outer: Outer = from_slice_with_path(br#"{"items": [{"name": "a"}]} trailing"#).unwrap();
        assert_eq!(outer.items, vec![Inner { name: "a".into() }]);
    }

    #[test]
    fn a_wrong_shape_names_the_field() {
        match from_slice_with_path::<Outer>(br#"{"items": [{"name": "a"}, {"name": 7}]}"#) {
            Err(JsonError::Data { path, message }) => {
                assert_eq!(path.as_deref(), Some("items[1].name"));
                assert_eq!(
                    message,
                    "invalid type: integer `7`, expected a string at line 1 column 36"
                );
            }
            other => panic!("expected a data error, got {other:?}"),
        }
    }

    #[test]
    fn broken_json_is_a_syntax_error() {
        match from_slice_with_path::<Outer>(br#"{"items": [}"#) {
            Err(JsonError::Syntax(message)) => assert_eq!(message, "expected value at line 1 column 12"),
            other => panic!("expected a syntax error, got {other:?}"),
        }
    }
}
