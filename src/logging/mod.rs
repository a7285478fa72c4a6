//! The process's own log output (not the request log): tracing's lines, to stdout in
//! batches, colored only on a terminal.

pub mod batched;

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt;

/// The subscriber the server logs through, writing to `out`: `filter` in env-filter
/// syntax (one that does not parse means `info`, not silence), one JSON object per line
/// with `json`, ANSI colors with `ansi`.
pub fn subscriber<W>(filter: &str, out: W, json: bool, ansi: bool) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(out)
        .with_ansi(ansi);
    if json {
        Box::new(builder.json().finish())
    } else {
        Box::new(builder.finish())
    }
}

/// Installs the server's logging: `OLLABRIDGE_LOG` filters (default `info`),
/// `OLLABRIDGE_LOG_FORMAT=json` writes JSON lines for log shippers. Colors only when
/// stdout is a terminal: escape codes in a file or the journal are noise. Dropping the
/// returned flusher writes out what is still buffered.
pub fn init() -> batched::Flusher<std::io::Stdout> {
    let filter = std::env::var("OLLABRIDGE_LOG").unwrap_or_else(|_| "info".into());
    let json = std::env::var("OLLABRIDGE_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let ansi = std::io::stdout().is_terminal();
    let (stdout, flusher) = batched::batched(std::io::stdout(), batched::GATHER);
    subscriber(&filter, stdout, json, ansi).init();
    flusher
}
