//! The request log's cost, in process, through ollabridge's public API.
//!
//! `writer`: rows per second the SQLite writer (`store::open` + `Writer::spawn`) stores.
//! All rows are queued at once (the queue holds them all, so none is dropped) and the
//! clock runs until `Writer::close` returns, i.e. until the queue has drained and the
//! last batch is committed. CPU per row is the whole process's `utime + stime` over that
//! time (it includes the SQLite worker threads, which exit when the pool closes).
//!
//! `logcost`: CPU per request of what ollabridge does to log a request. The calling
//! thread plays the request path: it drives ollabridge's own recorder
//! (`ollabridge::api::ollama::bench::Recorder`) through one streamed chat as the chat handler
//! and `respond.rs` do (start, request, resolved, a chunk at a time, finish). Its own CPU
//! time (its `schedstat`) is the request-path cost; the writer stores the rows once the
//! round's requests are queued, and the process's CPU beyond the calling thread's, until
//! the writer has drained, is the writer's cost per row. Each piece is also timed alone.
//!
//! These are lower bounds: one thread, no contention. The request line goes through the
//! server's own subscriber and batched writer (`ollabridge::logging`), so its `write(2)`
//! lands on the flush thread and counts with the writer's share; `scripts/bench.sh`
//! also measures it end to end (an ollabridge without the line, same load, CPU per
//! request compared).

use std::hint::black_box;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ollabridge::api::ollama::bench::{Recorder, RequestContext, now_rfc3339, render, request_line};
use ollabridge::api::ollama::types::Message;
use ollabridge::backend::{Chunk, Completion, Delta};
use ollabridge::metrics::{Metrics, RequestEvent};
use ollabridge::models::Resolved;
use ollabridge::store::{self, LogRecord, Writer, timestamp_now};
use ollabridge::{Telemetry, logging};
use serde::{Deserialize, Serialize};

use crate::procfs;
use crate::stats::median;

#[derive(Debug, Clone, clap::Args)]
pub struct WriterArgs {
    /// The database file (created; removed first, with its -wal and -shm).
    #[arg(long)]
    db: PathBuf,
    #[arg(long, default_value_t = 20_000)]
    rows: usize,
    /// Approximate bytes of text per row (prompt and response).
    #[arg(long, default_value_t = 2048)]
    row_bytes: usize,
    /// Runs, each on a fresh database.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Runtime worker threads (ollabridge uses one per core).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// A name for the database's location in reports (e.g. disk, tmpfs).
    #[arg(long, default_value = "disk")]
    label: String,
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WriterRun {
    pub seconds: f64,
    pub rows_per_s: f64,
    pub cpu_us_per_row: f64,
    /// Time to queue all rows (`Logger::log` calls), per row.
    pub enqueue_us_per_row: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WriterResult {
    pub kind: String,
    pub label: String,
    pub rows: usize,
    pub row_bytes: usize,
    pub runs: Vec<WriterRun>,
    pub median_rows_per_s: f64,
    pub median_cpu_us_per_row: f64,
    pub dropped: u64,
}

#[derive(Debug, Clone, clap::Args)]
pub struct LogcostArgs {
    /// The database file (created; removed first, with its -wal and -shm).
    #[arg(long)]
    db: PathBuf,
    /// Requests logged with tracing on (and as many off), over the full-path rounds.
    #[arg(long, default_value_t = 20_000)]
    iters: usize,
    /// Streamed chunks per request (the load's 16-chunk workload).
    #[arg(long, default_value_t = 16)]
    chunks: usize,
    /// Length of the one user message (as the load driver sends).
    #[arg(long, default_value_t = 200)]
    prompt_bytes: usize,
    /// Milliseconds each single piece is timed for.
    #[arg(long, default_value_t = 300)]
    piece_ms: u64,
    /// Where the request lines go when tracing is on (ollabridge prints them on stdout).
    #[arg(long, default_value = "/dev/null")]
    tracing_log: PathBuf,
    #[arg(long, default_value_t = 2)]
    threads: usize,
    #[arg(long, default_value = "disk")]
    label: String,
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Component {
    pub name: String,
    /// CPU microseconds per call.
    pub us: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LogcostResult {
    pub kind: String,
    pub label: String,
    pub iters: usize,
    pub chunks: usize,
    pub prompt_bytes: usize,
    pub components: Vec<Component>,
    /// The calling thread's CPU per request, tracing on (as ollabridge runs by default).
    pub request_path_us: f64,
    pub request_path_no_tracing_us: f64,
    /// The rest of the process (writer task, SQLite threads) per row.
    pub writer_us_per_row: f64,
    pub total_us: f64,
}

fn remove_db(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::create_dir_all(dir);
    }
}

/// A row like a chat's: the messages as JSON and the answer, `text_bytes` together.
fn sample_row(text_bytes: usize) -> LogRecord {
    let filler = |n: usize| -> String { "lorem ipsum dolor sit amet ".chars().cycle().take(n).collect() };
    let prompt_len = text_bytes * 55 / 100;
    let prompt = serde_json::json!([{"role": "user", "content": filler(prompt_len.saturating_sub(30))}]).to_string();
    LogRecord {
        timestamp: timestamp_now(),
        endpoint: "/api/chat".into(),
        method: "POST".into(),
        model: Some("mock".into()),
        backend_model: Some("mock".into()),
        prompt: Some(prompt),
        response: Some(filler(text_bytes - prompt_len)),
        status_code: 200,
        latency_ms: 12,
        stream: true,
        backend_type: "openai".into(),
        done_reason: Some("stop".into()),
        prompt_tokens: Some(120),
        completion_tokens: Some(200),
        request_id: format!("{:032x}", 0x1234_5678_9abc_def0_u128),
        ttft_ms: Some(3.5),
        prompt_eval_ms: Some(1.0),
        eval_ms: Some(20.0),
        tokens_per_second: Some(10_000.0),
        request_bytes: 1200,
        response_bytes: 9000,
        client_addr: Some("127.0.0.1:54321".into()),
        ..Default::default()
    }
}

fn row_text_bytes(r: &LogRecord) -> usize {
    [&r.prompt, &r.response, &r.thinking, &r.tool_calls]
        .into_iter()
        .flatten()
        .map(String::len)
        .sum()
}

pub fn run_writer(args: WriterArgs) -> crate::Result<ExitCode> {
    let rt = runtime(args.threads)?;
    let template = sample_row(args.row_bytes);
    let mut result = WriterResult {
        kind: "writer".into(),
        label: args.label.clone(),
        rows: args.rows,
        row_bytes: row_text_bytes(&template),
        ..Default::default()
    };
    for _ in 0..args.repeat.max(1) {
        remove_db(&args.db);
        let records: Vec<LogRecord> = (0..args.rows).map(|_| template.clone()).collect();
        let pool = rt
            .block_on(store::open(&args.db))
            .map_err(|e| format!("cannot open the database: {e}"))?;
        let _guard = rt.enter();
        let pid = std::process::id();
        let cpu_before = procfs::process_cpu_us(pid).unwrap_or(0);
        let started = Instant::now();
        let (logger, writer) = Writer::spawn(pool, args.rows.max(1), 1 << 20);
        for record in records {
            logger.log(record);
        }
        let enqueued = started.elapsed();
        result.dropped += logger.dropped();
        drop(logger);
        rt.block_on(writer.close());
        let seconds = started.elapsed().as_secs_f64();
        let cpu = procfs::process_cpu_us(pid).unwrap_or(0).saturating_sub(cpu_before);
        let stored = rt.block_on(count_rows(&args.db))?;
        if stored != args.rows as i64 {
            return Err(format!("writer stored {stored} rows of {}", args.rows));
        }
        result.runs.push(WriterRun {
            seconds,
            rows_per_s: args.rows as f64 / seconds,
            cpu_us_per_row: cpu as f64 / args.rows as f64,
            enqueue_us_per_row: enqueued.as_secs_f64() * 1e6 / args.rows as f64,
        });
    }
    let rates: Vec<f64> = result.runs.iter().map(|r| r.rows_per_s).collect();
    let cpus: Vec<f64> = result.runs.iter().map(|r| r.cpu_us_per_row).collect();
    result.median_rows_per_s = median(&rates);
    result.median_cpu_us_per_row = median(&cpus);
    crate::report::print_writer_result(&result);
    if let Some(path) = &args.json {
        crate::write_json(path, &result)?;
    }
    Ok(if result.dropped > 0 {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}

fn runtime(threads: usize) -> crate::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .map_err(|e| format!("cannot build runtime: {e}"))
}

async fn count_rows(db: &Path) -> crate::Result<i64> {
    let url = format!("sqlite://{}", db.display());
    let pool = sqlx::SqlitePool::connect(&url)
        .await
        .map_err(|e| format!("cannot reopen {}: {e}", db.display()))?;
    let n: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM logs")
        .fetch_one(&pool)
        .await
        .map_err(|e| format!("cannot count rows: {e}"))?;
    pool.close().await;
    Ok(n.0)
}

/// What one request brings to the log path.
struct Input {
    id: String,
    addr: SocketAddr,
    model: String,
    resolved: Resolved,
    messages: Vec<Message>,
    body_len: usize,
    /// The chunks the backend sent (the last one ends the answer, with usage and
    /// timings as llama.cpp and the mock report them) and the length of the NDJSON line
    /// each became.
    chunks: Vec<(Chunk, usize)>,
}

impl Input {
    fn new(args: &LogcostArgs) -> Input {
        let content: String = "Tell me about the weather in Paris today. "
            .chars()
            .cycle()
            .take(args.prompt_bytes.max(1))
            .collect();
        let messages = vec![Message {
            role: "user".into(),
            content,
            ..Default::default()
        }];
        let text = |s: &str| Chunk {
            delta: Delta {
                content: s.into(),
                ..Default::default()
            },
            ..Default::default()
        };
        let n = args.chunks as u64;
        let done = Chunk {
            done: Some(Completion {
                done_reason: "stop".into(),
                prompt_tokens: Some(32),
                completion_tokens: Some(n),
                prompt_eval_ns: Some(1_000_000),
                eval_ns: Some(n * 100_000),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut chunks: Vec<(Chunk, usize)> = (0..args.chunks).map(|_| (text("abcd"), 130)).collect();
        chunks.push((done, 330));
        Input {
            id: format!("{:032x}", 0xfeed_beef_u128),
            addr: SocketAddr::from(([127, 0, 0, 1], 40_000)),
            model: "mock".into(),
            resolved: Resolved {
                client: "mock".into(),
                backend: "mock".into(),
                strip_think: false,
                targets: Vec::new(),
            },
            body_len: serde_json::to_string(&messages).map_or(0, |s| s.len() + 60),
            messages,
            chunks,
        }
    }
}

/// One streamed chat's log path through ollabridge's recorder, as `api/ollama/handlers.rs` and
/// `respond.rs` drive it (the prompt for the row is the handler's
/// `serde_json::to_string(messages)`).
fn request_path(t: &Arc<Telemetry>, input: &Input) {
    // The request-id middleware.
    let context = RequestContext::new(Some(&input.id), Some(input.addr));
    // chat_handler: Recorder::start, request, resolved
    let mut recorder = Recorder::new(t, &context, "/api/chat", "POST", "openai", render);
    recorder.request_bytes(input.body_len);
    let prompt = serde_json::to_string(&input.messages).ok();
    recorder.request(Some(&input.model), prompt, true);
    recorder.resolved(&input.resolved);
    recorder.backend_model(&input.resolved.backend);
    // respond.rs, per chunk: observe, sent_bytes; the final line's metrics; finish
    for (chunk, line_len) in &input.chunks {
        recorder.observe(chunk);
        if chunk.done.is_some() {
            black_box(recorder.final_metrics());
        }
        recorder.sent_bytes(*line_len);
    }
    recorder.finish();
}

fn new_telemetry(rt: &tokio::runtime::Runtime, db: &Path, capacity: usize) -> crate::Result<(Arc<Telemetry>, Writer)> {
    remove_db(db);
    let pool = rt
        .block_on(store::open(db))
        .map_err(|e| format!("cannot open the database: {e}"))?;
    let _guard = rt.enter();
    let (logger, writer) = Writer::spawn(pool, capacity, 1 << 20);
    let telemetry = Arc::new(Telemetry {
        logger,
        metrics: Metrics::new(),
        pricing: Vec::new(),
        events: tokio::sync::broadcast::channel(1024).0,
        cut_off: tokio_util::sync::CancellationToken::new(),
        health: Default::default(),
        keep_alive: Default::default(),
        cache: ollabridge::cache::ResponseCache::new(1, 1),
    });
    Ok((telemetry, writer))
}

/// Rounds of the whole request path with tracing on, and as many with it off.
const FULL_PATH_ROUNDS: usize = 5;

/// Calls `f` for at least `length` of wall time; CPU microseconds per call of this thread.
fn time_piece(length: Duration, mut f: impl FnMut()) -> f64 {
    for _ in 0..64 {
        f();
    }
    let deadline = Instant::now() + length;
    let cpu_before = procfs::this_thread_ns();
    let mut calls = 0u64;
    while Instant::now() < deadline {
        for _ in 0..64 {
            f();
        }
        calls += 64;
    }
    (procfs::this_thread_ns() - cpu_before) as f64 / 1000.0 / calls as f64
}

/// The full path `iters` times with a fresh writer: (request-path us, writer us) per request.
fn full_path(
    rt: &tokio::runtime::Runtime,
    args: &LogcostArgs,
    input: &Input,
    iters: usize,
) -> crate::Result<(f64, f64)> {
    // A start and an end each, and room to spare: past half full, starts are skipped.
    let (telemetry, writer) = new_telemetry(rt, &args.db, 4 * iters + 16)?;
    let pid = std::process::id();
    let process_before = procfs::process_cpu_us(pid).unwrap_or(0);
    let thread_before = procfs::this_thread_ns();
    for _ in 0..iters {
        request_path(&telemetry, input);
    }
    let thread_us = (procfs::this_thread_ns() - thread_before) as f64 / 1000.0;
    let dropped = telemetry.logger.dropped();
    drop(telemetry);
    rt.block_on(writer.close());
    let process_us = procfs::process_cpu_us(pid).unwrap_or(0).saturating_sub(process_before) as f64;
    if dropped > 0 {
        return Err(format!("{dropped} records dropped"));
    }
    let stored = rt.block_on(count_rows(&args.db))?;
    if stored != iters as i64 {
        return Err(format!("writer stored {stored} rows of {iters}"));
    }
    let n = iters.max(1) as f64;
    Ok((thread_us / n, (process_us - thread_us).max(0.0) / n))
}

fn line_count(path: &Path) -> usize {
    std::fs::read(path).map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count())
}

pub fn run_logcost(args: LogcostArgs) -> crate::Result<ExitCode> {
    let rt = runtime(args.threads)?;
    let input = Input::new(&args);
    let piece = Duration::from_millis(args.piece_ms);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.tracing_log)
        .map_err(|e| format!("{}: {e}", args.tracing_log.display()))?;
    // As the server sets it up (`logging::init`: stdout there, this file here, written in
    // batches by a thread, no colors off a terminal): `info` by default, `warn` for
    // OLLABRIDGE_LOG=warn. Both exist before any event, so every callsite's cached
    // interest covers both (with only one, tracing caches "never" for a callsite first
    // hit outside it, and the request line would silently never be written).
    let (out, flusher) = logging::batched::batched(file, logging::batched::GATHER);
    let subscriber = |filter: &str| tracing::Dispatch::new(logging::subscriber(filter, out.clone(), false, false));
    let dispatch = subscriber("info");
    let dispatch_off = subscriber("warn");

    let mut components = Vec::new();
    let mut piece_of = |name: &str, us: f64| {
        components.push(Component { name: name.into(), us });
    };
    piece_of(
        "timestamp_now() (2 per request)",
        time_piece(piece, || {
            black_box(timestamp_now());
        }),
    );
    piece_of(
        "now_rfc3339() (1 per NDJSON line; not logging)",
        time_piece(piece, || {
            black_box(now_rfc3339());
        }),
    );
    piece_of(
        "prompt for the row: serde_json::to_string(messages)",
        time_piece(piece, || {
            black_box(serde_json::to_string(&input.messages).ok());
        }),
    );
    let (telemetry, writer) = new_telemetry(&rt, &args.db, 1024)?;
    piece_of(
        "cut_off token: clone + cancelled() polled + dropped (per chunk; not logging)",
        time_piece(piece, || {
            let token = telemetry.cut_off.clone();
            black_box(futures::FutureExt::now_or_never(token.cancelled()));
        }),
    );
    piece_of(
        "Started event (broadcast; built only while a live view listens) + timestamp",
        time_piece(piece, || {
            let _ = telemetry.events.send(RequestEvent::Started {
                request_id: input.id.clone(),
                endpoint: "/api/chat".to_owned(),
                timestamp: timestamp_now(),
                model: None,
            });
        }),
    );
    let row = {
        let mut r = sample_row(args.prompt_bytes + args.chunks * 4);
        r.model = Some(input.model.clone());
        r
    };
    piece_of(
        "metrics.observe(row)",
        time_piece(piece, || telemetry.metrics.observe(&row, true)),
    );
    piece_of(
        "request line, recorder::request_line (batched to a file as the server does)",
        tracing::dispatcher::with_default(&dispatch, || time_piece(piece, || request_line(&row))),
    );
    drop(telemetry);
    rt.block_on(writer.close());
    {
        // Logger::log alone: prebuilt rows, the writer draining meanwhile.
        let n = args.iters;
        let (telemetry, writer) = new_telemetry(&rt, &args.db, n + 16)?;
        let rows: Vec<LogRecord> = (0..n).map(|_| row.clone()).collect();
        let before = procfs::this_thread_ns();
        for r in rows {
            telemetry.logger.log(r);
        }
        let us = (procfs::this_thread_ns() - before) as f64 / 1000.0 / n.max(1) as f64;
        piece_of("Logger::log(row) (cap + try_send)", us);
        drop(telemetry);
        rt.block_on(writer.close());
    }
    // The lines of the pieces above are written once they have gathered.
    std::thread::sleep(3 * logging::batched::GATHER);
    let lines_before = line_count(&args.tracing_log);
    // The whole path's writer runs on a runtime nobody drives until the rounds' requests
    // are queued: draining meanwhile on the other vCPU (on this VM, a hyperthread sibling)
    // made one run swing by ±50 %. Rounds alternate tracing on and off; medians reported.
    let quiet = crate::runtime(1)?;
    let per_round = args.iters.div_ceil(FULL_PATH_ROUNDS);
    let (mut on, mut off, mut writer) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..FULL_PATH_ROUNDS {
        let (on_us, writer_us) =
            tracing::dispatcher::with_default(&dispatch, || full_path(&quiet, &args, &input, per_round))?;
        on.push(on_us);
        writer.push(writer_us);
        let (off_us, _) =
            tracing::dispatcher::with_default(&dispatch_off, || full_path(&quiet, &args, &input, per_round))?;
        off.push(off_us);
    }
    let (on_us, off_us, writer_us) = (median(&on), median(&off), median(&writer));
    piece_of("whole request path, tracing on (default; median of rounds)", on_us);
    piece_of("whole request path, OLLABRIDGE_LOG=warn (filter check only)", off_us);
    drop(flusher); // writes out what is still gathering
    let lines = line_count(&args.tracing_log).saturating_sub(lines_before);
    let expected = per_round * FULL_PATH_ROUNDS;
    if args.tracing_log != Path::new("/dev/null") && lines != expected {
        return Err(format!(
            "expected {expected} request lines in the tracing log, got {lines}"
        ));
    }
    piece_of("writer: process CPU beyond the request thread, per row", writer_us);

    let result = LogcostResult {
        kind: "logcost".into(),
        label: args.label.clone(),
        iters: args.iters,
        chunks: args.chunks,
        prompt_bytes: args.prompt_bytes,
        components,
        request_path_us: on_us,
        request_path_no_tracing_us: off_us,
        writer_us_per_row: writer_us,
        total_us: on_us + writer_us,
    };
    crate::report::print_logcost_result(&result);
    if let Some(path) = &args.json {
        crate::write_json(path, &result)?;
    }
    Ok(ExitCode::SUCCESS)
}
