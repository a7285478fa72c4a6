//! A real Ollama behind us: requests go through with only the model name mapped, and
//! the answer's bytes come back as they arrive, parsed on the side for the log.

mod client;
pub mod translate;

pub use client::OllamaBackend;
