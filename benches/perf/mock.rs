//! A mock OpenAI-compatible backend shaped like llama.cpp's `llama-server`, cheap enough
//! that the bench measures ollabridge rather than the backend.
//!
//! - `POST /v1/chat/completions`, streaming (SSE: a role chunk, one content chunk per
//!   token, a `finish_reason` chunk, a usage chunk with llama.cpp `timings` when
//!   `stream_options.include_usage` is set, then `[DONE]`) or not (one JSON body).
//! - The number of tokens is the request's `max_tokens` (Ollama's `num_predict`, which
//!   ollabridge forwards), else `--chunks`. Each token is `--token-bytes` of text.
//! - `--ttft-us` before the first token, `--chunk-delay-us` between tokens (both 0 by
//!   default: no think time). A non-streamed answer waits as long as the stream would.
//!   A request's model name can override them: `mock+delay=2000+ttft=5000` (µs), so one
//!   mock serves paced and unpaced workloads (map a client name to it in ollabridge).
//! - `GET /v1/models` lists `--model`; `GET /health` answers ok; anything else is 404.
//!
//! It prints `listening http://HOST:PORT` on stdout once bound, and stops by itself
//! after `--lifetime-s`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use futures::{StreamExt, stream};
use serde::Deserialize;
use serde_json::json;

#[derive(Debug, Clone, clap::Args)]
pub struct MockArgs {
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// 0 picks a free port (printed on stdout).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// The model `/v1/models` lists (any name is answered).
    #[arg(long, default_value = "mock")]
    model: String,
    /// Tokens per answer when the request has no `max_tokens`.
    #[arg(long, default_value_t = 16)]
    chunks: usize,
    /// Bytes of text per token.
    #[arg(long, default_value_t = 4)]
    token_bytes: usize,
    /// Microseconds before the first token.
    #[arg(long, default_value_t = 0)]
    ttft_us: u64,
    /// Microseconds between two tokens.
    #[arg(long, default_value_t = 0)]
    chunk_delay_us: u64,
    /// Runtime worker threads (1: a current-thread runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Exit after this many seconds, whatever happens.
    #[arg(long, default_value_t = 1800)]
    lifetime_s: u64,
}

struct Mock {
    model: String,
    default_chunks: usize,
    token: String,
    ttft: Duration,
    chunk_delay: Duration,
    /// Prebuilt SSE events: every content chunk is the same bytes.
    role_event: Bytes,
    content_event: Bytes,
    finish_event: Bytes,
    done_event: Bytes,
}

const ID: &str = "chatcmpl-mock";
const CREATED: u64 = 1_700_000_000;
/// What the usage chunk claims the prompt was.
const PROMPT_TOKENS: usize = 32;

impl Mock {
    fn new(args: &MockArgs) -> Mock {
        let token: String = "abcdefghijklmnopqrstuvwxyz "
            .chars()
            .cycle()
            .take(args.token_bytes.max(1))
            .collect();
        let event = |choices: serde_json::Value| {
            let chunk = json!({"choices": choices, "created": CREATED, "id": ID, "model": args.model,
                "system_fingerprint": "mock", "object": "chat.completion.chunk"});
            Bytes::from(format!("data: {chunk}\n\n"))
        };
        Mock {
            role_event: event(
                json!([{"finish_reason": null, "index": 0, "delta": {"role": "assistant", "content": null}}]),
            ),
            content_event: event(json!([{"finish_reason": null, "index": 0, "delta": {"content": token}}])),
            finish_event: event(json!([{"finish_reason": "stop", "index": 0, "delta": {}}])),
            done_event: Bytes::from_static(b"data: [DONE]\n\n"),
            model: args.model.clone(),
            default_chunks: args.chunks,
            token,
            ttft: Duration::from_micros(args.ttft_us),
            chunk_delay: Duration::from_micros(args.chunk_delay_us),
        }
    }

    fn usage(&self, n: usize) -> serde_json::Value {
        json!({
            "usage": {"completion_tokens": n, "prompt_tokens": PROMPT_TOKENS, "total_tokens": n + PROMPT_TOKENS},
            "timings": {"cache_n": 0, "prompt_n": PROMPT_TOKENS, "prompt_ms": 1.0,
                "predicted_n": n, "predicted_ms": n as f64 * 0.1},
        })
    }

    fn usage_event(&self, n: usize) -> Bytes {
        let mut chunk = json!({"choices": [], "created": CREATED, "id": ID, "model": self.model,
            "object": "chat.completion.chunk"});
        if let (Some(chunk), serde_json::Value::Object(usage)) = (chunk.as_object_mut(), self.usage(n)) {
            chunk.extend(usage);
        }
        Bytes::from(format!("data: {chunk}\n\n"))
    }
}

/// The pacing of one answer: the mock's own, or what the model name asks for.
#[derive(Debug, Clone, Copy)]
struct Pace {
    ttft: Duration,
    chunk_delay: Duration,
}

impl Pace {
    fn of(mock: &Mock, model: Option<&str>) -> Pace {
        let mut pace = Pace {
            ttft: mock.ttft,
            chunk_delay: mock.chunk_delay,
        };
        for part in model.unwrap_or_default().split('+').skip(1) {
            let (key, value) = part.split_once('=').unwrap_or((part, ""));
            let Ok(us) = value.parse::<u64>() else { continue };
            match key {
                "delay" => pace.chunk_delay = Duration::from_micros(us),
                "ttft" => pace.ttft = Duration::from_micros(us),
                _ => {}
            }
        }
        pace
    }

    /// How long the whole answer takes to produce.
    fn generation_time(&self, n: usize) -> Duration {
        self.ttft + self.chunk_delay * u32::try_from(n.saturating_sub(1)).unwrap_or(u32::MAX)
    }
}

#[derive(Debug, Deserialize)]
struct ChatBody {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    max_tokens: Option<usize>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
}

#[derive(Debug, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

pub fn run(args: MockArgs) -> crate::Result<std::process::ExitCode> {
    let rt = crate::runtime(args.threads)?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
            .await
            .map_err(|e| format!("cannot listen on {}:{}: {e}", args.host, args.port))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let app = router(Arc::new(Mock::new(&args)));
        // As ollabridge does: without TCP_NODELAY small SSE frames stall ~40 ms (Nagle
        // meets delayed ACKs), which would swamp everything measured here.
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        println!("listening http://{addr}");
        use std::io::Write;
        let _ = std::io::stdout().flush();
        let lifetime = tokio::time::sleep(Duration::from_secs(args.lifetime_s));
        let serve = axum::serve(listener, app).with_graceful_shutdown(async {
            tokio::select! {
                () = lifetime => eprintln!("mock: lifetime over, exiting"),
                _ = tokio::signal::ctrl_c() => {},
            }
        });
        serve.await.map_err(|e| format!("mock server failed: {e}"))?;
        Ok(std::process::ExitCode::SUCCESS)
    })
}

fn router(mock: Arc<Mock>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/models", get(models))
        .route("/health", get(|| async { axum::Json(json!({"status": "ok"})) }))
        .with_state(mock)
}

async fn models(State(mock): State<Arc<Mock>>) -> Response {
    axum::Json(json!({"object": "list", "data": [
        {"id": mock.model, "object": "model", "owned_by": "mock", "meta": {"n_ctx": 4096, "n_ctx_train": 4096}}
    ]}))
    .into_response()
}

async fn chat(State(mock): State<Arc<Mock>>, body: Bytes) -> Response {
    let request: ChatBody = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            let error = json!({"error": {"code": 400, "message": e.to_string(), "type": "invalid_request_error"}});
            return (StatusCode::BAD_REQUEST, axum::Json(error)).into_response();
        }
    };
    let n = request.max_tokens.filter(|&n| n > 0).unwrap_or(mock.default_chunks);
    let pace = Pace::of(&mock, request.model.as_deref());
    if request.stream {
        let usage = request.stream_options.is_some_and(|o| o.include_usage);
        return sse(mock, pace, n, usage);
    }
    let wait = pace.generation_time(n);
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
    let mut answer = json!({
        "choices": [{"finish_reason": "stop", "index": 0,
            "message": {"role": "assistant", "content": mock.token.repeat(n)}}],
        "created": CREATED, "model": mock.model, "system_fingerprint": "mock",
        "object": "chat.completion", "id": ID,
    });
    if let (Some(answer), serde_json::Value::Object(usage)) = (answer.as_object_mut(), mock.usage(n)) {
        answer.extend(usage);
    }
    axum::Json(answer).into_response()
}

/// The event stream: each event is its own body frame, as a server flushing token by
/// token sends it. Without delays the frames are all ready at once.
fn sse(mock: Arc<Mock>, pace: Pace, n: usize, usage: bool) -> Response {
    let mut tail = vec![mock.finish_event.clone()];
    if usage {
        tail.push(mock.usage_event(n));
    }
    tail.push(mock.done_event.clone());
    let body = if pace.ttft.is_zero() && pace.chunk_delay.is_zero() {
        let events = std::iter::once(mock.role_event.clone())
            .chain(std::iter::repeat_n(mock.content_event.clone(), n))
            .chain(tail);
        Body::from_stream(stream::iter(events.map(Ok::<_, std::convert::Infallible>)))
    } else {
        let tokens = stream::unfold(0usize, move |i| {
            let mock = mock.clone();
            async move {
                if i >= n {
                    return None;
                }
                let (wait, event) = if i == 0 {
                    let mut first = mock.role_event.to_vec();
                    first.extend_from_slice(&mock.content_event);
                    (pace.ttft, Bytes::from(first))
                } else {
                    (pace.chunk_delay, mock.content_event.clone())
                };
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                Some((event, i + 1))
            }
        });
        let events = tokens.chain(stream::iter(tail));
        Body::from_stream(events.map(Ok::<_, std::convert::Infallible>))
    };
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
