//! The floor of the comparison: the least a proxy built on ollabridge's own crates (hyper's
//! HTTP/1 server, reqwest's pooled client, Tokio) costs on this machine, today.
//!
//! It forwards each request's method, path, content type and body to the backend and
//! streams the answer back as it comes: no translation, no model map, no log. `perf load
//! --through-openai` against it, interleaved with the backend direct, measures what no proxy
//! in this stack goes below on this host; ollabridge's own cost is what it adds on top.
//! Its memory with many requests in flight is what those crates keep per request.

use std::convert::Infallible;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::CONTENT_TYPE;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

#[derive(Debug, Clone, clap::Args)]
pub struct FloorArgs {
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// 0 picks a free port (printed on stdout).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// The backend's base URL (`http://HOST:PORT`); request paths are appended to it.
    #[arg(long)]
    backend: String,
    /// Runtime worker threads (ollabridge's default: one per core).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Exit after this many seconds, whatever happens.
    #[arg(long, default_value_t = 1800)]
    lifetime_s: u64,
}

type ProxyBody = UnsyncBoxBody<Bytes, reqwest::Error>;

pub fn run(args: FloorArgs) -> crate::Result<ExitCode> {
    crate::runtime(args.threads)?.block_on(serve(args))
}

async fn serve(args: FloorArgs) -> crate::Result<ExitCode> {
    let listener = TcpListener::bind((args.host.as_str(), args.port))
        .await
        .map_err(|e| format!("floor: cannot listen on {}:{}: {e}", args.host, args.port))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    // The same client settings as ollabridge's backends (src/backend/mod.rs).
    let client = reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .build()
        .map_err(|e| format!("floor: cannot build the HTTP client: {e}"))?;
    let backend: Arc<str> = args.backend.trim_end_matches('/').into();
    println!("listening http://{local}");
    let lifetime = tokio::time::sleep(Duration::from_secs(args.lifetime_s));
    tokio::pin!(lifetime);
    loop {
        let (stream, _) = tokio::select! {
            () = &mut lifetime => return Ok(ExitCode::SUCCESS),
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(_) => continue,
            },
        };
        let _ = stream.set_nodelay(true);
        let (client, backend) = (client.clone(), backend.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| forward(client.clone(), backend.clone(), request));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn forward(
    client: reqwest::Client,
    backend: Arc<str>,
    request: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let (parts, body) = request.into_parts();
    // Copied, as ollabridge does (src/http1.rs): a slice would keep hyper's read buffer
    // alive for the whole request.
    let Ok(body) = body
        .collect()
        .await
        .map(|collected| Bytes::copy_from_slice(&collected.to_bytes()))
    else {
        return Ok(bare(StatusCode::BAD_REQUEST));
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let url = format!("{backend}{path}");
    let upstream = || {
        let upstream = client.request(parts.method.clone(), &url).body(body.clone());
        match parts.headers.get(CONTENT_TYPE) {
            Some(content_type) => upstream.header(CONTENT_TYPE, content_type),
            None => upstream,
        }
    };
    // Sent again, as ollabridge does, when a pooled connection turns out closed:
    // llama-server closes connections after streams while announcing keep-alive.
    let (Ok(answer), _) = ollabridge::backend::send_with_tries(upstream, &backend, ollabridge::backend::TRIES).await
    else {
        return Ok(bare(StatusCode::BAD_GATEWAY));
    };
    let mut response = Response::builder().status(answer.status());
    if let Some(content_type) = answer.headers().get(CONTENT_TYPE) {
        response = response.header(CONTENT_TYPE, content_type);
    }
    let body = StreamBody::new(answer.bytes_stream().map_ok(Frame::data));
    Ok(response
        .body(UnsyncBoxBody::new(body))
        .unwrap_or_else(|_| bare(StatusCode::BAD_GATEWAY)))
}

fn bare(status: StatusCode) -> Response<ProxyBody> {
    let mut response = Response::new(UnsyncBoxBody::new(Empty::new().map_err(|never| match never {})));
    *response.status_mut() = status;
    response
}
