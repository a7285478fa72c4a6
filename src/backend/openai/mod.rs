//! OpenAI-compatible backends: llama.cpp `llama-server`, vLLM, LM Studio, OpenRouter.

mod client;
pub mod sse;
pub mod translate;
pub mod types;

pub use client::OpenAiBackend;
