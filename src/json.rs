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
