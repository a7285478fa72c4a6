//! The `ollabridge` binary: CLI, config, tracing, then the library does the rest.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "The Ollama API over OpenAI-compatible backends or a real Ollama, logged to SQLite"
)]
struct Cli {
    /// Path of the JSON config file.
    #[arg(long, short, default_value = "config.json", env = "OLLABRIDGE_CONFIG")]
    config: PathBuf,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("OLLABRIDGE_LOG").unwrap_or_else(|_| EnvFilter::new("info")))
        .init();
    let config = match ollabridge::config::Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ollabridge: {e}");
            return ExitCode::from(2);
        }
    };
    let server = match ollabridge::start(config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ollabridge: {e}");
            return ExitCode::FAILURE;
        }
    };
    shutdown_signal().await;
    tracing::info!("shutting down: finishing requests in flight and writing the log");
    server.shutdown().await;
    ExitCode::SUCCESS
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
