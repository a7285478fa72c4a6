//! Pure translation between Ollama requests/answers and OpenAI's chat/completions API.
//! No I/O here: requests in, JSON out (`request.rs`); SSE event data in, neutral chunks
//! out (`answer.rs`, `logprobs.rs`); a history cut to fit the context (`context.rs`).

mod answer;
mod context;
mod logprobs;
mod request;

pub use crate::config::ThinkingStyle;
pub use answer::{Translator, openai_embeddings_to_vectors, props_to_capabilities, tool_arguments, tool_call};
pub use context::{context_exceeded, fit_to_context};
pub use request::{embeddings_request, ollama_chat_to_openai, ollama_generate_to_openai};

/// Which upstream route a call uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Chat,
    Completions,
}

impl Route {
    pub fn path(self) -> &'static str {
        match self {
            Route::Chat => "v1/chat/completions",
            Route::Completions => "v1/completions",
        }
    }
}

#[cfg(test)]
mod tests;
