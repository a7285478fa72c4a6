//! The in-flight request-body budget (`server.max_inflight_body_bytes`): request bodies
//! held at once, all requests on both listeners together. `server.max_body_bytes` bounds
//! one body; without this, 16 clients sending 32 MiB each at once took 2.3 GB.
//!
//! A body's declared length (`Content-Length`) is reserved before the request goes on;
//! a chunked body is counted as it is read. The reservation is held until the answer
//! (a streamed one included) has been sent, as the handlers keep the body until then.
//! A request that would go over the budget is refused at once: 503 with `Retry-After`,
//! in the shape of the path's API ([`Dialect`]). The refused body is then read and thrown away
//! for a while, so the client, still sending it, gets the answer rather than a reset
//! connection.
//!
//! Requests without a body pass untouched. A body costs one small allocation (the
//! reservation both the body and the answer hold) and an atomic add and subtract.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::http::{Request, Response, StatusCode, header};
use bytes::{Buf, Bytes};
use hyper::body::{Body, Frame, SizeHint};

use crate::api::Dialect;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long a refused request's body is read and thrown away at most, so that the client
/// sees the refusal; then the connection is closed.
const DRAIN_FOR: Duration = Duration::from_secs(10);

/// The budget, shared by every connection of both listeners.
#[derive(Debug)]
pub struct BodyBudget {
    limit: usize,
    /// The most any route reads of one body (`server.max_body_bytes`): a longer
    /// declared length is refused by the route with 413, so only this much is reserved.
    max_body: usize,
    in_use: AtomicUsize,
}

impl BodyBudget {
    pub fn new(limit: usize, max_body: usize) -> BodyBudget {
        BodyBudget {
            limit,
            max_body,
            in_use: AtomicUsize::new(0),
        }
    }

    fn try_reserve(&self, bytes: usize) -> bool {
        self.in_use
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(bytes).filter(|total| *total <= self.limit)
            })
            .is_ok()
    }

    fn release(&self, bytes: usize) {
        self.in_use.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// The 503 for a request that would go over the budget, in the shape of its API.
    fn refusal(&self, dialect: Dialect) -> axum::response::Response {
        let message = format!(
            "server busy: request bodies in flight would exceed server.max_inflight_body_bytes ({} bytes); \
             retry shortly",
            self.limit
        );
        dialect.error(StatusCode::SERVICE_UNAVAILABLE, message, true)
    }
}

/// One request's share of the budget, held by its body and by its answer: given back
/// when both are gone.
pub struct Reservation<B> {
    budget: Arc<BodyBudget>,
    /// Bytes taken from the budget; only the body adds to them.
    bytes: AtomicUsize,
    /// The body went over the budget: its answer becomes the refusal.
    refused: AtomicBool,
    /// The rest of the refused body, for the answer to read and throw away.
    unread: Mutex<Option<B>>,
    /// The API the body was sent to: the refusal takes its shape.
    dialect: Dialect,
}

impl<B> Reservation<B> {
    /// Makes the reservation cover `read` bytes; false (and marked refused) if the
    /// budget cannot.
    fn cover(&self, read: usize) -> bool {
        let held = self.bytes.load(Ordering::Relaxed);
        if read <= held {
            return true;
        }
        if !self.budget.try_reserve(read - held) {
            self.refused.store(true, Ordering::Relaxed);
            return false;
        }
        self.bytes.store(read, Ordering::Relaxed);
        true
    }
}

impl<B> Drop for Reservation<B> {
    fn drop(&mut self) {
        self.budget.release(*self.bytes.get_mut());
    }
}

/// A request body counted against the budget as it is read.
pub struct Budgeted<B> {
    /// `None` once refused: the rest went to the reservation, for the answer to drain.
    inner: Option<B>,
    reservation: Option<Arc<Reservation<B>>>,
    read: usize,
}

/// The body went over `server.max_inflight_body_bytes`; the answer is replaced by the 503.
#[derive(Debug, thiserror::Error)]
#[error("request bodies in flight exceed server.max_inflight_body_bytes")]
struct OverBudget;

impl<B> Body for Budgeted<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let Some(inner) = &mut this.inner else {
            return Poll::Ready(None);
        };
        let frame = ready!(Pin::new(inner).poll_frame(cx));
        let data_len = match &frame {
            Some(Ok(frame)) => frame.data_ref().map_or(0, Bytes::len),
            _ => 0,
        };
        if let Some(reservation) = &this.reservation {
            this.read = this.read.saturating_add(data_len);
            if !reservation.cover(this.read) {
                if let (Ok(mut unread), Some(rest)) = (reservation.unread.lock(), this.inner.take()) {
                    *unread = Some(rest);
                }
                return Poll::Ready(Some(Err(OverBudget.into())));
            }
        }
        Poll::Ready(frame.map(|f| f.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|inner| inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |inner| inner.size_hint())
    }
}

/// An answer, holding its request's reservation until it has been sent.
pub struct Held<B> {
    inner: axum::body::Body,
    _reservation: Option<Arc<Reservation<B>>>,
    /// A refused request's body, read and thrown away once the answer is out.
    drain: Option<Box<Drain<B>>>,
}

struct Drain<B> {
    body: B,
    /// Bytes still to read before giving up (and closing the connection).
    left: usize,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl<B: Body + Unpin> Drain<B> {
    fn new(body: B, left: usize) -> Box<Drain<B>> {
        Box::new(Drain {
            body,
            left,
            deadline: Box::pin(tokio::time::sleep(DRAIN_FOR)),
        })
    }

    /// Ready when the body has ended, or is too long or too slow to wait for.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(());
        }
        loop {
            match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    let read = frame.data_ref().map_or(0, Buf::remaining);
                    if read >= self.left {
                        return Poll::Ready(());
                    }
                    self.left -= read;
                }
                Some(Err(_)) | None => return Poll::Ready(()),
            }
        }
    }
}

impl<B: Body + Unpin> Body for Held<B> {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let Some(drain) = &mut this.drain else {
            return Pin::new(&mut this.inner).poll_frame(cx);
        };
        if !this.inner.is_end_stream() {
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(frame) => return Poll::Ready(Some(frame)),
                None => this.inner = axum::body::Body::empty(),
            }
        }
        ready!(drain.poll(cx));
        this.drain = None;
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.drain.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request on its way in: its body counted, or the refusal to send instead.
pub enum Admission<B> {
    Admitted {
        request: Request<Budgeted<B>>,
        reservation: Option<Arc<Reservation<B>>>,
    },
    Refused(Response<Held<B>>),
}

/// Reserves the request's declared body length, or refuses the request.
pub fn admit<B>(budget: &Arc<BodyBudget>, request: Request<B>, client: std::net::SocketAddr) -> Admission<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    if request.body().is_end_stream() {
        let request = request.map(|body| Budgeted {
            inner: Some(body),
            reservation: None,
            read: 0,
        });
        return Admission::Admitted {
            request,
            reservation: None,
        };
    }
    let declared = request.body().size_hint().exact();
    let reserved = declared.map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX).min(budget.max_body));
    let path = request.uri().path();
    if !budget.try_reserve(reserved) {
        tracing::warn!(
            client = %client,
            path,
            declared_bytes = declared,
            limit = budget.limit,
            "refused: request bodies in flight would exceed server.max_inflight_body_bytes"
        );
        let refusal = budget.refusal(dialect_of(path));
        // A client waiting for `100 Continue` sends no body after a refusal.
        let expects_continue = request
            .headers()
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        let drain = (!expects_continue).then(|| Drain::new(request.into_body(), budget.max_body));
        return Admission::Refused(refusal.map(|inner| Held {
            inner,
            _reservation: None,
            drain,
        }));
    }
    let reservation = Arc::new(Reservation {
        budget: budget.clone(),
        bytes: AtomicUsize::new(reserved),
        refused: AtomicBool::new(false),
        unread: Mutex::new(None),
        dialect: dialect_of(path),
    });
    let request = request.map(|body| Budgeted {
        inner: Some(body),
        reservation: Some(reservation.clone()),
        read: 0,
    });
    Admission::Admitted {
        request,
        reservation: Some(reservation),
    }
}

/// The API of the path; the dashboard's copy of the APIs sits under `/ollama` on the
/// admin listener.
fn dialect_of(path: &str) -> Dialect {
    let api_path = path
        .strip_prefix("/ollama")
        .filter(|p| p.starts_with('/'))
        .unwrap_or(path);
    Dialect::of(api_path)
}

/// The answer to an admitted request, holding its reservation until sent; the refusal
/// instead when its body went over the budget while being read.
pub fn answer<B>(
    response: axum::response::Response,
    reservation: Option<Arc<Reservation<B>>>,
    client: std::net::SocketAddr,
) -> Response<Held<B>>
where
    B: Body + Unpin,
{
    let Some(reservation) = reservation else {
        return response.map(|inner| Held {
            inner,
            _reservation: None,
            drain: None,
        });
    };
    if !reservation.refused.load(Ordering::Relaxed) {
        return response.map(|inner| Held {
            inner,
            _reservation: Some(reservation),
            drain: None,
        });
    }
    let budget = &reservation.budget;
    tracing::warn!(
        client = %client,
        read_bytes = reservation.bytes.load(Ordering::Relaxed),
        limit = budget.limit,
        "refused while reading the body: request bodies in flight would exceed server.max_inflight_body_bytes"
    );
    let unread = reservation.unread.lock().ok().and_then(|mut unread| unread.take());
    let drain = unread.map(|body| Drain::new(body, budget.max_body));
    budget.refusal(reservation.dialect).map(|inner| Held {
        inner,
        _reservation: Some(reservation),
        drain,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_stay_within_the_limit_and_are_given_back() {
        let budget = BodyBudget::new(100, 80);
        assert!(budget.try_reserve(60));
        assert!(!budget.try_reserve(41));
        assert!(budget.try_reserve(40));
        budget.release(60);
        budget.release(40);
        assert_eq!(budget.in_use.load(Ordering::Relaxed), 0);
    }
}
