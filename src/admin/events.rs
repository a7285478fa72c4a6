//! `GET /api/events`: requests as they start and finish, as Server-Sent Events.
//!
//! ```text
//! event: started
//! data: {"type":"started","request_id":"…","endpoint":"/api/chat","timestamp":"…","model":"…"}
//!
//! event: progress
//! data: {"type":"progress","request_id":"…","tokens":42}
//!
//! event: finished
//! data: {"type":"finished", …every field of the log row except its id…}
//! ```
//!
//! A comment (`: keep-alive`) goes out every 15 s of quiet. A listener too slow for
//! the traffic misses events rather than slowing requests down: it gets
//! `event: lagged` with `{"skipped": n}` and the stream goes on. The stream ends when
//! the server shuts down.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::AdminState;
use crate::metrics::RequestEvent;

const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub async fn events_handler(
    State(state): State<Arc<AdminState>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    // Subscribed before the answer goes out: nothing after the headers is missed.
    let events = named_events(state.telemetry.events.subscribe(), state.stop.clone())
        .map(|(name, data)| Ok(Event::default().event(name).data(data)));
    Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"))
}

/// The events as (SSE event name, JSON data), until the server stops.
fn named_events(
    receiver: Receiver<RequestEvent>,
    stop: CancellationToken,
) -> impl Stream<Item = (&'static str, String)> {
    futures::stream::unfold((receiver, stop), |(mut receiver, stop)| async move {
        let received = tokio::select! {
            () = stop.cancelled() => return None,
            received = receiver.recv() => received,
        };
        let event = match received {
            Ok(event) => named(&event),
            Err(RecvError::Lagged(skipped)) => {
                tracing::warn!(skipped, "event listener too slow: events skipped");
                ("lagged", serde_json::json!({ "skipped": skipped }).to_string())
            }
            Err(RecvError::Closed) => return None,
        };
        Some((event, (receiver, stop)))
    })
}

fn named(event: &RequestEvent) -> (&'static str, String) {
    let name = match event {
        RequestEvent::Started { .. } => "started",
        RequestEvent::Progress { .. } => "progress",
        RequestEvent::Finished(_) => "finished",
    };
    // Strings and numbers only: serialising cannot fail.
    let data =
        serde_json::to_string(event).unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }).to_string());
    (name, data)
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use tokio::sync::broadcast;

    use super::*;

    fn started(n: usize) -> RequestEvent {
        RequestEvent::Started {
            request_id: format!("r{n}"),
            endpoint: "/api/chat".into(),
            timestamp: "2026-01-01 00:00:00.000".into(),
            model: Some("m".into()),
        }
    }

    #[tokio::test]
    async fn a_lagging_listener_skips_events_and_goes_on() {
        let (tx, rx) = broadcast::channel(4);
        let stop = CancellationToken::new();
        let mut events = Box::pin(named_events(rx, stop.clone()));
        for n in 0..10 {
            tx.send(started(n)).unwrap();
        }
        assert_eq!(events.next().await.unwrap(), ("lagged", r#"{"skipped":6}"#.to_owned()));
        for n in 6..10 {
            let (name, data) = events.next().await.unwrap();
            assert_eq!(name, "started");
            assert_eq!(
                data,
                format!(
                    r#"{{"type":"started","request_id":"r{n}","endpoint":"/api/chat","timestamp":"2026-01-01 00:00:00.000","model":"m"}}"#
                )
            );
        }
        tx.send(RequestEvent::Progress {
            request_id: "r9".into(),
            tokens: 3,
        })
        .unwrap();
        assert_eq!(
            events.next().await.unwrap(),
            (
                "progress",
                r#"{"type":"progress","request_id":"r9","tokens":3}"#.to_owned()
            )
        );
        let finished = RequestEvent::Finished(Box::default());
        tx.send(finished).unwrap();
        let (name, data) = events.next().await.unwrap();
        assert_eq!(name, "finished");
        assert!(data.starts_with(r#"{"type":"finished","timestamp":"#), "{data}");
        stop.cancel();
        assert_eq!(events.next().await, None);
    }

    #[tokio::test]
    async fn the_stream_ends_when_the_sender_is_gone() {
        let (tx, rx) = broadcast::channel(4);
        let mut events = Box::pin(named_events(rx, CancellationToken::new()));
        tx.send(started(1)).unwrap();
        drop(tx);
        assert_eq!(events.next().await.unwrap().0, "started");
        assert_eq!(events.next().await, None);
    }
}
