//! For the dialects' reader tests: fixtures, and a stream read as the relay reads it.

use super::SideReader;
use crate::backend::openai::sse::SseSplitter;
use crate::backend::{BackendError, Chunk};

/// A capture of `fixtures/llama-server/`.
pub fn fixture(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/llama-server")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Every event of an SSE body through `reader`, as the relay feeds it, then its end.
pub fn read_sse(mut reader: impl SideReader, body: &str) -> Result<Vec<Chunk>, BackendError> {
    let mut splitter = SseSplitter::default();
    splitter.push(body.as_bytes());
    let mut chunks = Vec::new();
    while let Some(event) = splitter.next_event().unwrap() {
        let Some(data) = event.data() else { continue };
        let ends = reader.ends(&event.name, data);
        chunks.extend(reader.on_event(&event.name, data)?);
        if ends {
            break;
        }
    }
    chunks.extend(reader.finish()?);
    Ok(chunks)
}

/// The chunks as one: their deltas joined, the end kept.
pub fn whole_chunk(chunks: Vec<Chunk>) -> Chunk {
    let mut whole = Chunk::default();
    for chunk in chunks {
        whole.delta.content.push_str(&chunk.delta.content);
        whole.delta.thinking.push_str(&chunk.delta.thinking);
        whole.delta.tool_calls.extend(chunk.delta.tool_calls);
        whole.done = chunk.done.or(whole.done);
    }
    whole
}
