//! The accept loop: each connection served by hyper's HTTP/1 server directly.
//!
//! `axum::serve` reads the start of every connection to tell HTTP/2 from HTTP/1 and then
//! serves it through a rewinding wrapper. Ollama speaks HTTP/1.1 only, and so do its
//! clients; serving HTTP/1 directly costs ~8 % less CPU per request with ~1000 clients
//! connected. Graceful shutdown as in `axum::serve`: stop accepting, let each
//! connection finish the request it is on, then return.
//!
//! Every connection runs in its own task from accept on: a TLS handshake too, so a
//! client that never sends its ClientHello holds up no one else. Each listener caps its
//! open connections and times out request headers, idle keep-alive waits included
//! ([`Limits`]), so idle or slow clients cannot use up the process's file descriptors.
//!
//! Request bodies are detached from hyper's read buffer on the way in (see
//! [`detached`]) and counted against the in-flight body budget ([`crate::body_budget`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use bytes::Bytes;
use futures::FutureExt;
use futures::future::Either;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::Service;

use crate::body_budget::{self, Admission, BodyBudget};

/// What each listener allows its connections (`server.header_read_timeout`,
/// `server.max_connections`); the client and admin ports share them.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest wait for a request's headers, on a new connection or an idle keep-alive
    /// one (hyper's header timer runs whenever the connection waits for a request head).
    pub header_read_timeout: Duration,
    /// Connections open at once; at the cap, new ones wait in the kernel's backlog.
    pub max_connections: usize,
}

/// Serves `app` on every connection `listener` accepts (through TLS with `tls`) until
/// `stop` is cancelled, then waits for the connections to finish their requests.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: axum::Router,
    budget: Arc<BodyBudget>,
    stop: CancellationToken,
    limits: Limits,
) -> std::io::Result<()> {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut accept_errors = AcceptErrors::new(listener.local_addr().ok());
    let connections = TaskTracker::new();
    loop {
        // A slot first, then accept: at the cap nothing is accepted until a connection
        // closes, and the kernel's backlog holds the clients meanwhile.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot,
            () = stop.cancelled() => break,
        };
        let Ok(slot) = slot else {
            break;
        };
        let (tcp, client) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    if is_connection_error(&e) {
                        continue;
                    }
                    accept_errors.failed(&e, Instant::now());
                    // EMFILE and the like: the pending connection stays in the backlog and
                    // accept would fail again at once; a pause instead of a spin.
                    tokio::select! {
                        () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                        () = stop.cancelled() => break,
                    }
                }
            },
            () = stop.cancelled() => break,
        };
        // Without TCP_NODELAY, Nagle's algorithm meets delayed ACKs and stalls streams ~40 ms.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let (app, stop, builder, budget) = (app.clone(), stop.clone(), builder.clone(), budget.clone());
        // Two tasks, not one with a `match`: a plain connection's task would otherwise keep
        // room for the TLS session and a connection over it, which it never uses.
        match tls.clone() {
            None => {
                connections.spawn(async move {
                    let _slot = slot;
                    connection(&builder, TokioIo::new(tcp), client, app, budget, stop).await;
                });
            }
            Some(acceptor) => {
                connections.spawn(async move {
                    let _slot = slot;
                    // A connection still handshaking at shutdown has no request to finish.
                    let handshake = tokio::select! {
                        tls = crate::tls::handshake(&acceptor, tcp, client) => tls,
                        () = stop.cancelled() => None,
                    };
                    if let Some(tls) = handshake {
                        connection(&builder, TokioIo::new(tls), client, app, budget, stop).await;
                    }
                });
            }
        }
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}

/// How long the accept loop pauses after an accept error other than a client's own.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Accept errors are reported at most this often, with how many were not.
const ACCEPT_ERROR_REPORT_EVERY: Duration = Duration::from_secs(10);

/// Errors of one connection that is already gone; the next accept is unaffected.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(e.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset)
}

/// Reports accept errors without a line per error: out of file descriptors, accept
/// fails ten times a second until a connection closes.
#[derive(Debug)]
struct AcceptErrors {
    listener: Option<SocketAddr>,
    last_report: Option<Instant>,
    unreported: u64,
}

impl AcceptErrors {
    fn new(listener: Option<SocketAddr>) -> AcceptErrors {
        AcceptErrors {
            listener,
            last_report: None,
            unreported: 0,
        }
    }

    /// Counts a failure; returns whether it was reported (logged).
    fn failed(&mut self, e: &std::io::Error, now: Instant) -> bool {
        if self
            .last_report
            .is_some_and(|last| now.duration_since(last) < ACCEPT_ERROR_REPORT_EVERY)
        {
            self.unreported += 1;
            return false;
        }
        tracing::error!(
            listener = ?self.listener,
            error = %e,
            failures_since_last_report = self.unreported,
            "cannot accept connections (out of file descriptors? see server.max_connections); retrying"
        );
        self.last_report = Some(now);
        self.unreported = 0;
        true
    }
}

async fn connection<I>(
    builder: &http1::Builder,
    io: TokioIo<I>,
    client: SocketAddr,
    app: axum::Router,
    budget: Arc<BodyBudget>,
    stop: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let mut request = request.map(|body| body.map_frame(|frame| frame.map_data(detached)));
        collapse_slashes(request.uri_mut());
        let (mut request, reservation) = match body_budget::admit(&budget, request, client) {
            Admission::Admitted { request, reservation } => (request, reservation),
            Admission::Refused(refusal) => return Either::Right(std::future::ready(Ok::<_, Infallible>(refusal))),
        };
        // What axum's `into_make_service_with_connect_info` would insert.
        request.extensions_mut().insert(ConnectInfo(client));
        let future: axum::routing::future::RouteFuture<Infallible> = app.clone().call(request);
        Either::Left(
            future.map(move |answered| answered.map(|response| body_budget::answer(response, reservation, client))),
        )
    });
    let mut conn = pin!(builder.serve_connection(io, service));
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::trace!(client = %client, error = %e, "connection ended with an error");
    }
}

/// `//v1/models` is `/v1/models`: clients that join a base URL ending in `/` with a path
/// starting with one send such paths, and they would otherwise miss every route (and get
/// the fallback's error in the wrong API's shape).
fn collapse_slashes(uri: &mut hyper::Uri) {
    let path = uri.path();
    if !path.contains("//") {
        return;
    }
    let mut collapsed = String::with_capacity(uri.path_and_query().map_or(0, |p| p.as_str().len()));
    for c in path.chars() {
        if !(c == '/' && collapsed.ends_with('/')) {
            collapsed.push(c);
        }
    }
    if let Some(query) = uri.query() {
        collapsed.push('?');
        collapsed.push_str(query);
    }
    let mut parts = std::mem::take(uri).into_parts();
    parts.path_and_query = collapsed.parse().ok();
    // Parts from a valid URI with a path and query that parsed stay a valid URI.
    *uri = hyper::Uri::from_parts(parts).unwrap_or_default();
}

/// Frames up to this size are copied out of hyper's read buffer.
const DETACH_UP_TO: usize = 16 * 1024;

/// hyper hands a request body over as slices of the connection's read buffer, and the
/// handlers keep the body for the whole request (to ask another backend, to pass it
/// through). A slice keeps the whole 8 KB buffer alive next to the one hyper reads into
/// meanwhile to notice the client leaving; a copy of the small frames lets it go: 8 KB less
/// per request in flight. Larger frames are mostly their buffer already and pass as they are.
fn detached(data: Bytes) -> Bytes {
    if data.len() <= DETACH_UP_TO {
        Bytes::copy_from_slice(&data)
    } else {
        data
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_errors_are_reported_once_per_period_with_the_count_in_between() {
        let mut errors = AcceptErrors::new(None);
        let emfile = std::io::Error::from_raw_os_error(24);
        let start = Instant::now();
        assert!(errors.failed(&emfile, start), "the first is reported");
        let reported: Vec<bool> = (1..=50)
            .map(|tenth| errors.failed(&emfile, start + Duration::from_millis(100 * tenth)))
            .collect();
        // 5 s of failures every 100 ms: none reported, all counted.
        assert_eq!(reported, vec![false; 50]);
        assert_eq!(errors.unreported, 50);
        assert!(errors.failed(&emfile, start + ACCEPT_ERROR_REPORT_EVERY));
        assert_eq!(errors.unreported, 0);
        assert!(!errors.failed(&emfile, start + ACCEPT_ERROR_REPORT_EVERY + Duration::from_secs(1)));
    }

    #[test]
    fn only_a_clients_own_failures_skip_the_pause() {
        use std::io::{Error, ErrorKind};
        for kind in [
            ErrorKind::ConnectionAborted,
            ErrorKind::ConnectionReset,
            ErrorKind::ConnectionRefused,
        ] {
            assert!(is_connection_error(&Error::from(kind)), "{kind:?}");
        }
        // EMFILE, ENFILE, ENOBUFS.
        for errno in [24, 23, 105] {
            assert!(!is_connection_error(&Error::from_raw_os_error(errno)), "{errno}");
        }
    }

    #[test]
    fn repeated_slashes_in_the_path_are_collapsed() {
        for (sent, seen) in [
            ("//v1/models", "//v1/models".replace("//", "/")),
            ("/api//tags?x=a//b", "/api/tags?x=a//b".to_owned()),
            ("/api/tags", "/api/tags".to_owned()),
            (
                "http://host:1///v1//chat/completions",
                "http://host:1/v1/chat/completions".to_owned(),
            ),
        ] {
            let mut uri: hyper::Uri = sent.parse().unwrap();
            collapse_slashes(&mut uri);
            assert_eq!(uri.to_string(), seen, "{sent}");
        }
    }

    #[test]
    fn a_small_frame_lets_go_of_the_buffer_it_came_in() {
        let read_buffer = Bytes::from(vec![7u8; 8192]);
        let frame = detached(read_buffer.slice(100..500));
        assert_eq!(frame, vec![7u8; 400]);
        assert!(read_buffer.is_unique(), "the frame still holds the read buffer");
    }

    #[test]
    fn a_large_frame_passes_as_it_is() {
        let read_buffer = Bytes::from(vec![7u8; DETACH_UP_TO + 1]);
        let frame = detached(read_buffer.clone());
        assert_eq!(frame.as_ptr(), read_buffer.as_ptr());
        assert_eq!(frame.len(), DETACH_UP_TO + 1);
    }
}
