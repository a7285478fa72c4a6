//! The load driver: the same chat workload sent through ollabridge (Ollama `/api/chat`)
//! and straight to its backend (OpenAI `/v1/chat/completions`), in alternating batches
//! (through, direct, direct, through, …) so drift on a shared machine falls on both
//! sides alike. ollabridge's added latency is "through minus direct".
//!
//! Closed loop (`--concurrency C`: C workers, each sending its next request when the
//! last one ended) or open loop (`--rate R`: requests started on a fixed schedule,
//! whatever is in flight; how late each start was is reported as scheduling lag, and
//! latencies are measured from the actual start).
//!
//! Per request: time to the first byte of answer text (the first `"content":"x` in the
//! body: ollabridge's first NDJSON line, or the first non-empty SSE delta), total time,
//! and whether it ended well (200, the stream's proper end, no error line). With
//! `--pid`, the CPU ollabridge used over the measured batches divided by the requests
//! it served (it does nothing for the direct batches), split by thread group.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::procfs::{self, CpuPerRequest, CpuReading};
use crate::stats::Summary;

#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// ollabridge's base URL; its `/api/chat` is measured.
    #[arg(long)]
    through: Option<String>,
    /// The through side is a proxy that speaks OpenAI (`perf floor`): it is sent exactly
    /// what the direct side is, at `--through`'s `/v1/chat/completions`.
    #[arg(long)]
    through_openai: bool,
    /// The backend's base URL; its `/v1/chat/completions` gets the same workload.
    #[arg(long)]
    direct: Option<String>,
    /// The model name sent to ollabridge.
    #[arg(long, default_value = "mock")]
    model: String,
    /// The model name sent to the backend (default: `--model`).
    #[arg(long)]
    backend_model: Option<String>,
    /// Streamed answers (NDJSON through ollabridge, SSE direct).
    #[arg(long)]
    stream: bool,
    /// Tokens asked for: `options.num_predict` through, `max_tokens` direct (0: none).
    #[arg(long, default_value_t = 0)]
    chunks: usize,
    /// Length of the one user message.
    #[arg(long, default_value_t = 200)]
    prompt_bytes: usize,
    /// Closed loop: requests in flight per side.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Open loop instead: requests started per second (per side, during its batches).
    #[arg(long)]
    rate: Option<f64>,
    /// Rounds of one batch per side each.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Length of one batch.
    #[arg(long, default_value_t = 1000)]
    batch_ms: u64,
    /// At most this many requests per batch (0: no limit; the batch ends by time).
    #[arg(long, default_value_t = 0)]
    batch_requests: usize,
    /// Unmeasured warm-up per side (connections, caches).
    #[arg(long, default_value_t = 300)]
    warmup_ms: u64,
    /// At most this many warm-up requests per side (0: no limit).
    #[arg(long, default_value_t = 0)]
    warmup_requests: usize,
    /// ollabridge's process id, for its CPU per request and memory.
    #[arg(long)]
    pid: Option<u32>,
    /// The backend's process id, for its CPU per request.
    #[arg(long)]
    backend_pid: Option<u32>,
    /// ollabridge's admin URL: log records it dropped (queue full) are read from its
    /// `/metrics` before and after.
    #[arg(long)]
    admin: Option<String>,
    /// The workload's name in reports.
    #[arg(long)]
    name: Option<String>,
    /// Where to write the result as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Driver runtime threads (1: current-thread).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Per-request timeout.
    #[arg(long, default_value_t = 60)]
    timeout_s: u64,
    /// Open loop: requests in flight beyond which new starts are skipped (counted).
    #[arg(long, default_value_t = 4096)]
    max_inflight: usize,
    /// Times a request is sent again when a pooled connection turns out closed before any
    /// answer (llama-server closes kept-alive connections after streams; ollabridge
    /// itself sends again twice).
    #[arg(long, default_value_t = 3)]
    retries: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Through,
    Direct,
}

/// One side's endpoint and the body it is sent each time.
struct Target {
    side: Side,
    /// Answers in Ollama's NDJSON (ollabridge), else in OpenAI's JSON/SSE.
    ollama: bool,
    retries: usize,
    client: reqwest::Client,
    url: String,
    body: Bytes,
    stream: bool,
}

#[derive(Debug, Clone)]
struct Sample {
    ok: bool,
    error: Option<String>,
    retried: bool,
    ttft_ns: u64,
    total_ns: u64,
    lag_ns: u64,
    /// Streams: the time between two reads that brought answer text, each pair.
    gaps_ns: Vec<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SideResult {
    pub requests: usize,
    pub ok: usize,
    pub errors: usize,
    /// Requests sent again because a pooled connection turned out closed.
    pub retries: usize,
    /// Open loop: starts skipped because too many were in flight.
    pub skipped: usize,
    /// Successful requests per second of batch time.
    pub rps: f64,
    /// Milliseconds, successful requests only.
    pub total: Summary,
    pub ttft: Summary,
    /// Open loop: how late requests started.
    pub lag: Summary,
    /// Streams: time between two successive reads that brought answer text (for paced
    /// streams, the inter-chunk gap as the client sees it).
    #[serde(default)]
    pub gap: Summary,
    pub error_kinds: BTreeMap<String, usize>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LoadResult {
    pub kind: String,
    pub name: String,
    pub stream: bool,
    pub chunks: usize,
    pub concurrency: Option<usize>,
    pub rate: Option<f64>,
    pub rounds: usize,
    pub batch_ms: u64,
    pub through: Option<SideResult>,
    pub direct: Option<SideResult>,
    /// ollabridge's CPU over the measured batches, per request it served.
    pub bridge_cpu: Option<CpuPerRequest>,
    /// The backend's CPU per request it served (both sides).
    pub backend_cpu: Option<CpuPerRequest>,
    /// This driver's CPU per request (both sides).
    pub driver_cpu_us_per_req: f64,
    /// ollabridge's resident memory after the run, and its peak (KiB).
    pub bridge_rss_kb: Option<u64>,
    pub bridge_peak_rss_kb: Option<u64>,
    /// Log records ollabridge dropped during the run (its log queue was full): those
    /// requests have no row, and their writing cost is missing from `bridge_cpu`.
    #[serde(default)]
    pub log_dropped: Option<u64>,
}

impl LoadResult {
    pub fn has_errors(&self) -> bool {
        [&self.through, &self.direct]
            .into_iter()
            .flatten()
            .any(|s| s.errors > 0 || s.ok == 0)
    }
}

/// Time for ollabridge's writer to commit what the batches left (it batches for 50 ms).
const SETTLE: Duration = Duration::from_millis(200);

pub fn run(args: LoadArgs) -> crate::Result<ExitCode> {
    if args.through.is_none() && args.direct.is_none() {
        return Err("load: give --through and/or --direct".into());
    }
    let rt = crate::runtime(args.threads)?;
    let result = rt.block_on(drive(&args))?;
    crate::report::print_load_table(std::slice::from_ref(&result));
    if let Some(path) = &args.json {
        crate::write_json(path, &result)?;
    }
    Ok(if result.has_errors() {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}

fn client(timeout: Duration) -> crate::Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .timeout(timeout)
        .build()
        .map_err(|e| format!("cannot build HTTP client: {e}"))
}

fn targets(args: &LoadArgs) -> crate::Result<Vec<Arc<Target>>> {
    let timeout = Duration::from_secs(args.timeout_s);
    let content: String = "Tell me about the weather in Paris today. "
        .chars()
        .cycle()
        .take(args.prompt_bytes.max(1))
        .collect();
    let messages = json!([{"role": "user", "content": content}]);
    // What ollabridge itself sends upstream for an Ollama request.
    let model = args.backend_model.as_deref().unwrap_or(&args.model);
    let mut openai_body = json!({"model": model, "messages": messages, "stream": args.stream});
    if args.stream {
        openai_body["stream_options"] = json!({"include_usage": true});
    }
    if args.chunks > 0 {
        openai_body["max_tokens"] = json!(args.chunks);
    }
    let openai = |side, base: &str| -> crate::Result<Arc<Target>> {
        let base = base.trim_end_matches('/').trim_end_matches("/v1");
        Ok(Arc::new(Target {
            side,
            ollama: false,
            retries: args.retries,
            client: client(timeout)?,
            url: format!("{base}/v1/chat/completions"),
            body: Bytes::from(openai_body.to_string()),
            stream: args.stream,
        }))
    };
    let mut targets = Vec::new();
    match &args.through {
        Some(base) if args.through_openai => targets.push(openai(Side::Through, base)?),
        Some(base) => {
            let mut body = json!({"model": args.model, "messages": messages, "stream": args.stream});
            if args.chunks > 0 {
                body["options"] = json!({"num_predict": args.chunks});
            }
            targets.push(Arc::new(Target {
                side: Side::Through,
                ollama: true,
                retries: args.retries,
                client: client(timeout)?,
                url: format!("{}/api/chat", base.trim_end_matches('/')),
                body: Bytes::from(body.to_string()),
                stream: args.stream,
            }));
        }
        None => {}
    }
    if let Some(base) = &args.direct {
        targets.push(openai(Side::Direct, base)?);
    }
    Ok(targets)
}

async fn drive(args: &LoadArgs) -> crate::Result<LoadResult> {
    let targets = targets(args)?;
    let warmup = Duration::from_millis(args.warmup_ms);
    for target in &targets {
        let samples = closed_batch(target, args.concurrency, warmup, args.warmup_requests).await;
        if let Some(bad) = samples.iter().find(|s| !s.ok) {
            eprintln!(
                "load: warm-up error on {:?}: {}",
                target.side,
                bad.error.as_deref().unwrap_or("?")
            );
        }
    }
    tokio::time::sleep(SETTLE).await;

    let dropped_before = match &args.admin {
        Some(admin) => log_dropped(admin).await,
        None => None,
    };
    let bridge_before = args.pid.and_then(CpuReading::of);
    let backend_before = args.backend_pid.and_then(CpuReading::of);
    let driver_before = procfs::this_process_ns();
    let batch = Duration::from_millis(args.batch_ms);
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); targets.len()];
    let mut busy = vec![Duration::ZERO; targets.len()];
    let mut skipped = vec![0usize; targets.len()];
    for round in 0..args.rounds {
        // Alternate the order (A B, B A, …) so a linear drift cancels out.
        let mut order: Vec<usize> = (0..targets.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let started = Instant::now();
            let got = match args.rate {
                Some(rate) => {
                    let (got, skip) =
                        open_batch(&targets[i], rate, batch, args.batch_requests, args.max_inflight).await;
                    skipped[i] += skip;
                    got
                }
                None => closed_batch(&targets[i], args.concurrency, batch, args.batch_requests).await,
            };
            busy[i] += started.elapsed();
            samples[i].extend(got);
        }
    }
    tokio::time::sleep(SETTLE).await;
    let driver_ns = procfs::this_process_ns().saturating_sub(driver_before);

    let mut result = LoadResult {
        kind: "load".into(),
        name: args.name.clone().unwrap_or_else(|| default_name(args)),
        stream: args.stream,
        chunks: args.chunks,
        concurrency: args.rate.is_none().then_some(args.concurrency),
        rate: args.rate,
        rounds: args.rounds,
        batch_ms: args.batch_ms,
        ..Default::default()
    };
    let mut all_requests = 0u64;
    for (i, target) in targets.iter().enumerate() {
        let side = side_result(&mut samples[i], busy[i], skipped[i]);
        all_requests += side.requests as u64;
        match target.side {
            Side::Through => {
                if let (Some(before), Some(pid)) = (&bridge_before, args.pid) {
                    if let Some(after) = CpuReading::of(pid) {
                        result.bridge_cpu = Some(before.per_request(&after, side.requests as u64));
                    }
                }
                result.through = Some(side);
            }
            Side::Direct => result.direct = Some(side),
        }
    }
    if let (Some(before), Some(pid)) = (&backend_before, args.backend_pid) {
        if let Some(after) = CpuReading::of(pid) {
            result.backend_cpu = Some(before.per_request(&after, all_requests));
        }
    }
    result.driver_cpu_us_per_req = driver_ns as f64 / 1000.0 / all_requests.max(1) as f64;
    if let (Some(admin), Some(before)) = (&args.admin, dropped_before) {
        result.log_dropped = log_dropped(admin).await.map(|after| after.saturating_sub(before));
    }
    if let Some((rss, peak)) = args.pid.and_then(procfs::rss_kb) {
        result.bridge_rss_kb = Some(rss);
        result.bridge_peak_rss_kb = Some(peak);
    }
    Ok(result)
}

/// `ollabridge_log_dropped(_total)` from the admin listener's Prometheus text; `None`
/// (with a warning) when it cannot be read.
async fn log_dropped(admin: &str) -> Option<u64> {
    let url = format!("{}/metrics", admin.trim_end_matches('/'));
    let text = async {
        client(Duration::from_secs(10))?
            .get(&url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| e.to_string())?
            .text()
            .await
            .map_err(|e| e.to_string())
    };
    let value = match text.await {
        Ok(text) => text.lines().find_map(|l| {
            let v = l
                .strip_prefix("ollabridge_log_dropped_total ")
                .or_else(|| l.strip_prefix("ollabridge_log_dropped "))?;
            v.trim().parse::<f64>().ok()
        }),
        Err(e) => {
            eprintln!("load: {url}: {e}");
            return None;
        }
    };
    if value.is_none() {
        eprintln!("load: {url}: no ollabridge_log_dropped_total");
    }
    value.map(|v| v as u64)
}

fn default_name(args: &LoadArgs) -> String {
    let shape = if args.stream {
        format!("stream-{}", if args.chunks > 0 { args.chunks } else { 0 })
    } else {
        "nonstream".into()
    };
    match args.rate {
        Some(rate) => format!("{shape}-r{rate}"),
        None => format!("{shape}-c{}", args.concurrency),
    }
}

fn side_result(samples: &mut [Sample], busy: Duration, skipped: usize) -> SideResult {
    let ok: Vec<&Sample> = samples.iter().filter(|s| s.ok).collect();
    let mut total: Vec<u64> = ok.iter().map(|s| s.total_ns).collect();
    let mut ttft: Vec<u64> = ok.iter().map(|s| s.ttft_ns).collect();
    let mut lag: Vec<u64> = samples.iter().map(|s| s.lag_ns).collect();
    let mut gaps: Vec<u64> = ok.iter().flat_map(|s| s.gaps_ns.iter().copied()).collect();
    let mut error_kinds = BTreeMap::new();
    for s in samples.iter().filter(|s| !s.ok) {
        let kind: String = s.error.as_deref().unwrap_or("?").chars().take(160).collect();
        *error_kinds.entry(kind).or_insert(0) += 1;
    }
    SideResult {
        requests: samples.len(),
        ok: ok.len(),
        errors: samples.len() - ok.len(),
        retries: samples.iter().filter(|s| s.retried).count(),
        skipped,
        rps: ok.len() as f64 / busy.as_secs_f64().max(1e-9),
        total: Summary::of_ns(&mut total),
        ttft: Summary::of_ns(&mut ttft),
        lag: Summary::of_ns(&mut lag),
        gap: Summary::of_ns(&mut gaps),
        error_kinds,
    }
}

/// `concurrency` workers send requests back to back until `length` has passed (or
/// `max` requests were started); each finishes the request it is in.
async fn closed_batch(target: &Arc<Target>, concurrency: usize, length: Duration, max: usize) -> Vec<Sample> {
    let deadline = Instant::now() + length;
    let started = Arc::new(AtomicUsize::new(0));
    let mut workers = JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (target, started) = (target.clone(), started.clone());
        workers.spawn(async move {
            let mut samples = Vec::new();
            while Instant::now() < deadline {
                if max > 0 && started.fetch_add(1, Ordering::Relaxed) >= max {
                    break;
                }
                samples.push(one(&target, 0).await);
            }
            samples
        });
    }
    let mut samples = Vec::new();
    while let Some(done) = workers.join_next().await {
        samples.extend(done.unwrap_or_default());
    }
    samples
}

/// Starts a request every `1/rate` s for `length` (or `max` requests) regardless of
/// answers, then waits for all of them. Returns the samples and the skipped starts.
async fn open_batch(
    target: &Arc<Target>,
    rate: f64,
    length: Duration,
    max: usize,
    max_inflight: usize,
) -> (Vec<Sample>, usize) {
    let start = Instant::now();
    let period = Duration::from_secs_f64(1.0 / rate.max(1e-3));
    let mut inflight = JoinSet::new();
    let mut samples = Vec::new();
    let mut skipped = 0;
    for i in 0u32.. {
        let at = start + period * i;
        if at >= start + length || (max > 0 && i as usize >= max) {
            break;
        }
        tokio::time::sleep_until(at).await;
        let lag = Instant::now().saturating_duration_since(at);
        while let Some(done) = inflight.try_join_next() {
            samples.extend(done.ok());
        }
        if inflight.len() >= max_inflight {
            skipped += 1;
            continue;
        }
        let target = target.clone();
        let lag_ns = u64::try_from(lag.as_nanos()).unwrap_or(u64::MAX);
        inflight.spawn(async move { one(&target, lag_ns).await });
    }
    while let Some(done) = inflight.join_next().await {
        samples.extend(done.ok());
    }
    (samples, skipped)
}

async fn one(target: &Target, lag_ns: u64) -> Sample {
    let start = Instant::now();
    let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    let (outcome, retried) = exchange(target, start).await;
    let total_ns = ns(start.elapsed());
    match outcome {
        Ok((ttft, gaps)) => Sample {
            ok: true,
            error: None,
            retried,
            ttft_ns: ns(ttft),
            total_ns,
            lag_ns,
            gaps_ns: gaps.into_iter().map(ns).collect(),
        },
        Err(error) => Sample {
            ok: false,
            error: Some(error),
            retried,
            ttft_ns: 0,
            total_ns,
            lag_ns,
            gaps_ns: Vec::new(),
        },
    }
}

/// Sends as ollabridge sends to its backends (`ollabridge::backend::send_with_tries`):
/// again, up to `retries` times, when a pooled keep-alive connection turned out closed
/// before any answer (llama-server closes connections after streams, and at high
/// concurrency the next pooled one may be closed too). Whether it was sent again is
/// reported.
async fn send(target: &Target) -> (Result<reqwest::Response, String>, bool) {
    let request = || {
        target
            .client
            .post(&target.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(target.body.clone())
    };
    let (response, retries) = ollabridge::backend::send_with_tries(request, &target.url, target.retries + 1).await;
    (response.map_err(|e| e.to_string()), retries > 0)
}

/// Reads the whole answer; returns the time to its first text and the gaps between reads
/// that brought text, or what was wrong.
async fn exchange(target: &Target, start: Instant) -> (Result<(Duration, Vec<Duration>), String>, bool) {
    let (response, retried) = send(target).await;
    let mut response = match response {
        Ok(r) => r,
        Err(e) => return (Err(format!("request failed: {e}")), retried),
    };
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        let body: String = body.chars().take(120).collect();
        return (Err(format!("HTTP {}: {body}", status.as_u16())), retried);
    }
    let mut scanner = ContentScanner::default();
    let mut first_text = None;
    let mut last_text: Option<Instant> = None;
    let mut gaps = Vec::new();
    let mut tail: Vec<u8> = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if first_text.is_none() && scanner.feed(&chunk) {
                    first_text = Some(start.elapsed());
                    last_text = Some(Instant::now());
                } else if target.stream && first_text.is_some() && has_text(&chunk) {
                    let now = Instant::now();
                    if let Some(last) = last_text.replace(now) {
                        gaps.push(now - last);
                    }
                }
                if target.ollama && (chunk.starts_with(b"{\"error\"") || contains(&chunk, b"\n{\"error\"")) {
                    let line = String::from_utf8_lossy(&chunk).chars().take(120).collect::<String>();
                    return (Err(format!("error line: {line}")), retried);
                }
                tail.extend_from_slice(&chunk);
                if tail.len() > 4096 {
                    tail.drain(..tail.len() - 1024);
                }
            }
            Ok(None) => break,
            Err(e) => return (Err(format!("body failed: {}", error_chain(&e))), retried),
        }
    }
    if let Err(e) = check_end(target, &tail) {
        return (Err(e), retried);
    }
    match first_text {
        Some(t) => (Ok((t, gaps)), retried),
        None => (Err("no answer text in the response".into()), retried),
    }
}

/// The answer ended as a complete one does.
fn check_end(target: &Target, tail: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(tail);
    let text = text.trim_end();
    let ok = match (target.ollama, target.stream) {
        (true, true) => text.rsplit('\n').next().is_some_and(|l| l.contains("\"done\":true")),
        (true, false) => text.contains("\"done\":true"),
        (false, true) => text.ends_with("data: [DONE]"),
        (false, false) => text.ends_with('}'),
    };
    if ok {
        Ok(())
    } else {
        let end: String = text
            .chars()
            .rev()
            .take(120)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        Err(format!("answer did not end properly: …{end}"))
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Whether this read holds answer text (`"content":"` and a character other than `"`;
/// text split across two reads counts for the second).
fn has_text(chunk: &[u8]) -> bool {
    chunk
        .windows(NEEDLE.len())
        .enumerate()
        .any(|(i, w)| w == NEEDLE && chunk.get(i + NEEDLE.len()).is_some_and(|&b| b != b'"'))
}

/// Finds the first `"content":"` followed by a character other than `"` (text, not an
/// empty string or null) across chunk boundaries.
#[derive(Default)]
struct ContentScanner {
    carry: Vec<u8>,
}

const NEEDLE: &[u8] = b"\"content\":\"";

impl ContentScanner {
    fn feed(&mut self, chunk: &[u8]) -> bool {
        self.carry.extend_from_slice(chunk);
        let buf = &self.carry;
        let found = buf
            .windows(NEEDLE.len())
            .enumerate()
            .any(|(i, w)| w == NEEDLE && buf.get(i + NEEDLE.len()).is_some_and(|&b| b != b'"'));
        let keep = self.carry.len().min(NEEDLE.len());
        self.carry.drain(..self.carry.len() - keep);
        found
    }
}
