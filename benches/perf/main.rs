//! ollabridge's benchmark tool (a `harness = false` bench target): a mock OpenAI backend, an
//! interleaved load driver (through ollabridge vs straight to the backend), a bare
//! forwarding proxy on the same crates as ollabridge (the floor of its overhead), the log writer's
//! throughput, and the CPU cost of the per-request logging path. `scripts/bench.sh` runs it
//! all; each subcommand also runs alone:
//!
//! ```sh
//! cargo bench --bench perf -- mock --port 8081
//! cargo bench --bench perf -- floor --port 8082 --backend http://127.0.0.1:8081
//! cargo bench --bench perf -- load --through http://127.0.0.1:11434 --direct http://127.0.0.1:8081 --stream
//! cargo bench --bench perf -- writer --db /tmp/w.db
//! cargo bench --bench perf -- logcost --db /tmp/l.db
//! cargo bench --bench perf -- report target/bench/<run>
//! ```
//!
//! Without a subcommand it prints its usage and exits 0, so `cargo test --all-targets` (which
//! runs bench targets once, with no arguments) only checks that it builds and starts.

mod floor;
mod load;
mod logcost;
mod mock;
mod procfs;
mod report;
mod stats;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "perf",
    about = "ollabridge benchmarks: mock backend, load driver, log writer, logging cost"
)]
struct Cli {
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true, global = true)]
    bench: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// A mock OpenAI-compatible backend (`/v1/chat/completions`, `/v1/models`).
    Mock(mock::MockArgs),
    /// The least proxy on ollabridge's crates: forwards requests to a backend unchanged.
    Floor(floor::FloorArgs),
    /// Ollama `/api/chat` load through ollabridge, interleaved with the same load sent
    /// straight to the backend's `/v1/chat/completions`.
    Load(load::LoadArgs),
    /// Rows per second the SQLite log writer sustains.
    Writer(logcost::WriterArgs),
    /// CPU per request of the recorder/metrics/logger path, in process.
    Logcost(logcost::LogcostArgs),
    /// Prints the summary table of a bench run directory (its `*.json` results).
    Report(report::ReportArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Some(command) = cli.command else {
        println!("{}", Cli::command().render_help());
        return ExitCode::SUCCESS;
    };
    let result = match command {
        Command::Mock(args) => mock::run(args),
        Command::Floor(args) => floor::run(args),
        Command::Load(args) => load::run(args),
        Command::Writer(args) => logcost::run_writer(args),
        Command::Logcost(args) => logcost::run_logcost(args),
        Command::Report(args) => report::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("perf: {e}");
            ExitCode::from(2)
        }
    }
}

/// Errors are reported as text and end the run with exit code 2.
pub type Result<T> = std::result::Result<T, String>;

/// A tokio runtime with `threads` workers (1: current-thread, the leanest).
pub fn runtime(threads: usize) -> Result<tokio::runtime::Runtime> {
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    builder
        .enable_all()
        .build()
        .map_err(|e| format!("cannot build runtime: {e}"))
}

/// Writes `value` as pretty JSON to `path`, creating parent directories.
pub fn write_json<T: serde::Serialize>(path: &std::path::Path, value: &T) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
    std::fs::write(path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))
}
