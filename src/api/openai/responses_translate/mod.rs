//! `/v1/responses` answered from a chat, for a backend that does not serve the route:
//! the request translated into the neutral chat (`request.rs`), the answer written back
//! as the Responses API's events or response object (`answer.rs`). Pure.

mod answer;
mod request;
#[cfg(test)]
mod tests;

pub use answer::ResponseEncoder;
pub use request::chat_request;

use crate::api::passthrough::{Encoder, Translation};
use crate::backend::request::ChatRequest;

/// The Responses API's [`Translation`].
pub struct OpenAiResponses;

impl Translation for OpenAiResponses {
    fn request(&self, body: &[u8]) -> Result<ChatRequest, String> {
        chat_request(body)
    }

    fn encoder(&self, id: &str, model: &str, created: u64) -> Box<dyn Encoder> {
        Box::new(ResponseEncoder::new(id, model, created))
    }
}
