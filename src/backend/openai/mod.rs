//! OpenAI-compatible backends: llama.cpp `llama-server`, vLLM, LM Studio, OpenRouter.

mod client;
mod lifecycle;
pub mod router;
pub mod sse;
pub mod translate;
pub mod types;

pub use client::OpenAiBackend;
