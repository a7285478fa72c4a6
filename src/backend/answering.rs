//! A backend's answer under way: its first chunk awaited before the client is answered,
//! and the backend slot it was asked with held until the answer is dropped.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};
use tokio::sync::OwnedSemaphorePermit;

use super::{BackendError, Chunk, ChunkStream};

/// Waits for a chunk stream's first item: a failure up to there has sent the client
/// nothing, so another target may answer it ([`BackendError::may_fail_over`]), and the
/// `slot` is given back before it is tried. Otherwise the stream returned holds the slot
/// until it is dropped: when the client's answer has ended, however it ended.
pub async fn first_chunk(
    mut chunks: ChunkStream,
    slot: Option<OwnedSemaphorePermit>,
) -> Result<ChunkStream, BackendError> {
    match chunks.next().await {
        Some(Err(e)) if e.may_fail_over() => Err(e),
        first => Ok(Box::pin(Answering {
            first,
            rest: chunks,
            _slot: slot,
        })),
    }
}

/// The first item read ahead, then the rest.
struct Answering {
    first: Option<Result<Chunk, BackendError>>,
    rest: ChunkStream,
    /// A backend slot (`max_concurrent`), held as long as the answer is.
    _slot: Option<OwnedSemaphorePermit>,
}

impl Stream for Answering {
    type Item = Result<Chunk, BackendError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        match this.first.take() {
            Some(first) => Poll::Ready(Some(first)),
            None => this.rest.poll_next_unpin(cx),
        }
    }
}
