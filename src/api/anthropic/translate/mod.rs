//! `/v1/messages` answered from a chat, for a backend that does not serve the route:
//! the request translated into the neutral chat (`request.rs`), the answer written back
//! as Anthropic's events or message (`answer.rs`). Pure.

mod answer;
mod request;
#[cfg(test)]
mod tests;

pub use answer::MessageEncoder;
pub use request::chat_request;

use crate::api::passthrough::{Encoder, Translation};
use crate::backend::request::ChatRequest;

/// The Messages API's [`Translation`].
pub struct Anthropic;

impl Translation for Anthropic {
    fn request(&self, body: &[u8]) -> Result<ChatRequest, String> {
        chat_request(body)
    }

    fn encoder(&self, id: &str, model: &str, _created: u64) -> Box<dyn Encoder> {
        Box::new(MessageEncoder::new(id, model))
    }
}
