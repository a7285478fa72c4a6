//! The summary tables: load runs (direct vs through ollabridge), writer throughput,
//! logging cost and memory, read back from a bench run directory's JSON files.

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::Value;

use crate::load::LoadResult;
use crate::logcost::{LogcostResult, WriterResult};
use crate::stats::median;

#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// Bench run directories (`target/bench/<run>`) or result files.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Several runs of the suite: also print each figure's median and range over them.
    #[arg(long)]
    spread: bool,
}

pub fn run(args: ReportArgs) -> crate::Result<ExitCode> {
    let mut all_loads = Vec::new();
    let mut all_writers = Vec::new();
    let mut all_logcosts = Vec::new();
    for path in &args.paths {
        let files = if path.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| format!("{}: {e}", path.display()))?
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect();
            files.sort();
            files
        } else {
            vec![path.clone()]
        };
        let mut loads = Vec::new();
        let mut writers = Vec::new();
        let mut logcosts = Vec::new();
        let mut rss = Vec::new();
        for file in &files {
            let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
            let value: Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))?;
            let parse_err = |e: serde_json::Error| format!("{}: {e}", file.display());
            match value["kind"].as_str() {
                Some("load") => loads.push(serde_json::from_value::<LoadResult>(value).map_err(parse_err)?),
                Some("writer") => writers.push(serde_json::from_value::<WriterResult>(value).map_err(parse_err)?),
                Some("logcost") => logcosts.push(serde_json::from_value::<LogcostResult>(value).map_err(parse_err)?),
                Some("rss") => rss.push(value),
                _ => {}
            }
        }
        // Workloads in the order they ran (the files are numbered).
        println!("== {}", path.display());
        print_load_table(&loads);
        print_quiet_difference(&loads);
        print_chunk_cost(&loads);
        print_above_floor(&loads);
        for value in &rss {
            println!(
                "{} RSS ({}): idle {} KiB, after the load {} KiB, peak {} KiB",
                value["process"].as_str().unwrap_or("ollabridge"),
                value["label"].as_str().unwrap_or("?"),
                value["idle_kb"],
                value["after_kb"],
                value["peak_kb"]
            );
            if let (Some(ticks), Some(secs), Some(hz)) = (
                value["idle_cpu_ticks"].as_f64(),
                value["idle_s"].as_f64(),
                value["ticks_per_s"].as_f64(),
            ) {
                println!(
                    "ollabridge idle CPU: {:.1} ms per s ({ticks} ticks of 1/{hz} s in {secs} s)",
                    ticks / hz * 1000.0 / secs
                );
            }
        }
        for l in loads.iter().filter(|l| l.name.contains("slow")) {
            if let Some(peak) = l.bridge_peak_rss_kb {
                println!(
                    "{} peak RSS, a 1 s upstream at {} req/s ({}): {peak} KiB",
                    if l.name.starts_with(FLOOR) {
                        "floor proxy"
                    } else {
                        "ollabridge"
                    },
                    l.rate.unwrap_or(0.0),
                    l.name
                );
            }
        }
        for w in &writers {
            print_writer_result(w);
        }
        for l in &logcosts {
            print_logcost_result(l);
        }
        all_loads.push(loads);
        all_writers.extend(writers);
        all_logcosts.extend(logcosts);
    }
    if args.spread {
        print_spread(&all_loads, &all_writers, &all_logcosts);
    }
    Ok(ExitCode::SUCCESS)
}

fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

pub fn print_load_table(rows: &[LoadResult]) {
    if rows.is_empty() {
        return;
    }
    println!(
        "{:<22} {:>5} | {:>7} {:>7} {:>7} | {:>7} {:>7} {:>7} | {:>6} {:>6} {:>5} {:>5} | {:>6} {:>6} {:>6} {:>5} | {:>4} {:>6}",
        "workload",
        "load",
        "dir p50",
        "dir p99",
        "dir r/s",
        "brg p50",
        "brg p99",
        "brg r/s",
        "+p50",
        "+p99",
        "x p50",
        "x r/s",
        "cpu us",
        "sched",
        "sqlite",
        "wr/r",
        "err",
        "lost"
    );
    println!("{}", "-".repeat(159));
    for r in rows {
        let load = match (r.concurrency, r.rate) {
            (Some(c), _) => format!("c{c}"),
            (None, Some(rate)) => format!("{rate:.0}/s"),
            _ => "?".into(),
        };
        let side = |s: &Option<crate::load::SideResult>| match s {
            Some(s) => (ms(s.total.p50), ms(s.total.p99), format!("{:.0}", s.rps)),
            None => ("-".into(), "-".into(), "-".into()),
        };
        let (d50, d99, drps) = side(&r.direct);
        let (b50, b99, brps) = side(&r.through);
        let (add50, add99, x50, xrps) = match (&r.direct, &r.through) {
            (Some(d), Some(b)) => (
                format!("{:+.2}", b.total.p50 - d.total.p50),
                format!("{:+.2}", b.total.p99 - d.total.p99),
                format!("{:.2}", b.total.p50 / d.total.p50.max(1e-9)),
                format!("{:.2}", b.rps / d.rps.max(1e-9)),
            ),
            _ => ("-".into(), "-".into(), "-".into(), "-".into()),
        };
        let (cpu, sched, sqlite, syscalls) = match &r.bridge_cpu {
            Some(c) => (
                format!("{:.0}", c.us_per_req),
                format!("{:.0}", c.threads_us_per_req),
                format!("{:.1}", c.by_thread_us_per_req.get("sqlite").copied().unwrap_or(0.0)),
                format!("{:.1}", c.write_syscalls_per_req),
            ),
            None => ("-".into(), "-".into(), "-".into(), "-".into()),
        };
        let errors: usize = [&r.direct, &r.through].into_iter().flatten().map(|s| s.errors).sum();
        println!(
            "{:<22} {:>5} | {:>7} {:>7} {:>7} | {:>7} {:>7} {:>7} | {:>6} {:>6} {:>5} {:>5} | {:>6} {:>6} {:>6} {:>5} | {:>4} {:>6}",
            r.name,
            load,
            d50,
            d99,
            drps,
            b50,
            b99,
            brps,
            add50,
            add99,
            x50,
            xrps,
            cpu,
            sched,
            sqlite,
            syscalls,
            errors,
            r.log_dropped.map_or("-".into(), |n| n.to_string())
        );
        if r.rate.is_some() {
            for (label, s) in [("direct", &r.direct), ("bridge", &r.through)] {
                if let Some(s) = s {
                    println!(
                        "    {label} scheduling lag p50/p99/max {}/{}/{} ms, skipped {}",
                        ms(s.lag.p50),
                        ms(s.lag.p99),
                        ms(s.lag.max),
                        s.skipped
                    );
                }
            }
        }
        if let (true, Some(d), Some(b)) = (r.stream, &r.direct, &r.through) {
            let mut line = format!(
                "    first text p50/p99: dir {}/{} brg {}/{} (added {:+.2}/{:+.2})",
                ms(d.ttft.p50),
                ms(d.ttft.p99),
                ms(b.ttft.p50),
                ms(b.ttft.p99),
                b.ttft.p50 - d.ttft.p50,
                b.ttft.p99 - d.ttft.p99
            );
            if d.gap.n > 0 && b.gap.n > 0 {
                line.push_str(&format!(
                    "; gap between chunks p50/p99: dir {}/{} brg {}/{} (added {:+.2}/{:+.2})",
                    ms(d.gap.p50),
                    ms(d.gap.p99),
                    ms(b.gap.p50),
                    ms(b.gap.p99),
                    b.gap.p50 - d.gap.p50,
                    b.gap.p99 - d.gap.p99
                ));
            }
            println!("{line}");
        }
        for (label, s) in [("direct", &r.direct), ("bridge", &r.through)] {
            if let Some(s) = s {
                for (kind, n) in &s.error_kinds {
                    println!("    {label} error x{n}: {kind}");
                }
            }
        }
    }
    println!(
        "(ms; dir = straight to the backend, brg = through ollabridge, +p50/+p99 = brg - dir, x = brg/dir; \
         cpu us = ollabridge CPU per request from /proc/<pid>/stat utime+stime (10 ms ticks), \
         sched = the same from its threads' schedstat (ns), sqlite = of which its SQLite threads, \
         wr/r = its write/writev/pwrite calls per request, lost = log records it dropped, queue full)"
    );
}

/// ollabridge's CPU per streamed chunk: the difference between unpaced streams of 256 and
/// of 16 chunks at the same concurrency, per extra chunk (the per-request part cancels).
fn print_chunk_cost(loads: &[LoadResult]) {
    let cpu = |name: &str, c: Option<usize>| {
        loads
            .iter()
            .find(|l| l.name == name && l.concurrency == c && l.rate.is_none())
            .and_then(|l| Some((l.bridge_cpu.as_ref()?.threads_us_per_req, l.chunks)))
    };
    let mut shown = Vec::new();
    for l in loads.iter().filter(|l| l.name == "mock-stream256" && l.rate.is_none()) {
        if let (Some((long, n_long)), Some((short, n_short))) = (
            cpu("mock-stream256", l.concurrency),
            cpu("mock-stream16", l.concurrency),
        ) {
            if n_long > n_short {
                let per_chunk = (long - short) / (n_long - n_short) as f64;
                shown.push(format!("c{}: {per_chunk:.1}", l.concurrency.unwrap_or(0)));
            }
        }
    }
    if !shown.is_empty() {
        println!(
            "CPU per streamed chunk (stream256 minus stream16, per extra chunk), us: {}",
            shown.join(", ")
        );
    }
}

/// Workloads named `floor-X` ran through `perf floor` (the bare proxy), `mock-X` (against
/// the mock) or `X` (e.g. `llama-nonstream`) through ollabridge, against the same backend.
const FLOOR: &str = "floor-";

/// For each workload that also ran through the bare proxy: what the floor adds, what
/// ollabridge adds, and ollabridge's own part (the difference).
fn print_above_floor(loads: &[LoadResult]) {
    let mut lines = Vec::new();
    for floor in loads.iter().filter(|l| l.name.starts_with(FLOOR)) {
        let rest = &floor.name[FLOOR.len()..];
        let names = [format!("mock-{rest}"), rest.to_owned()];
        let Some(bridge) = loads
            .iter()
            .find(|l| names.contains(&l.name) && l.concurrency == floor.concurrency && l.rate == floor.rate)
        else {
            continue;
        };
        let added = |l: &LoadResult| -> Option<(f64, f64, Option<f64>)> {
            let (d, b) = (l.direct.as_ref()?, l.through.as_ref()?);
            let cpu = l.bridge_cpu.as_ref().map(|c| c.threads_us_per_req);
            Some((b.total.p50 - d.total.p50, b.total.p99 - d.total.p99, cpu))
        };
        let (Some((f50, f99, fcpu)), Some((b50, b99, bcpu))) = (added(floor), added(bridge)) else {
            continue;
        };
        let load = match (floor.concurrency, floor.rate) {
            (Some(c), _) => format!("c{c}"),
            (None, Some(rate)) => format!("{rate:.0}/s"),
            _ => "?".into(),
        };
        let cpu = |c: Option<f64>| c.map_or("-".into(), |c| format!("{c:.0}"));
        let own_cpu = match (fcpu, bcpu) {
            (Some(f), Some(b)) => format!("{:+.0}", b - f),
            _ => "-".into(),
        };
        lines.push(format!(
            "{:<22} {:>6} | {:+6.2} {:+6.2} {:>5} | {:+6.2} {:+6.2} {:>5} | {:+6.2} {:+6.2} {:>5}",
            &floor.name[FLOOR.len()..],
            load,
            f50,
            f99,
            cpu(fcpu),
            b50,
            b99,
            cpu(bcpu),
            b50 - f50,
            b99 - f99,
            own_cpu
        ));
    }
    if lines.is_empty() {
        return;
    }
    println!(
        "{:<22} {:>6} | {:<19} | {:<19} | {:<19}",
        "above the floor", "load", "floor +p50 +p99 cpu", "brg +p50 +p99 cpu", "own +p50 +p99 cpu"
    );
    for line in lines {
        println!("{line}");
    }
    println!(
        "(floor = `perf floor`, a bare proxy on ollabridge's crates: hyper's server, reqwest's \
         client; ms added to the direct time, us CPU per request; own = ollabridge minus the floor)"
    );
}

/// Workloads `X-line` and `X-quiet` ran in turn through two ollabridges alike but for the
/// per-request log line: the CPU per request the line costs, pair by pair.
fn print_quiet_difference(loads: &[LoadResult]) {
    let with_line: Vec<&LoadResult> = loads.iter().filter(|l| l.name.ends_with("-line")).collect();
    let quiet: Vec<&LoadResult> = loads.iter().filter(|l| l.name.ends_with("-quiet")).collect();
    let diffs: Vec<f64> = with_line
        .iter()
        .zip(&quiet)
        .filter_map(|(a, b)| {
            Some(a.bridge_cpu.as_ref()?.threads_us_per_req - b.bridge_cpu.as_ref()?.threads_us_per_req)
        })
        .collect();
    if diffs.is_empty() {
        return;
    }
    let shown: Vec<String> = diffs.iter().map(|d| format!("{d:.0}")).collect();
    println!(
        "per-request log line (api/exchange/mod.rs tracing::info!, stdout to a file), end to end, {} c{}: \
         {:.0} us CPU per request (line minus quiet, pair by pair: {})",
        with_line[0].name.trim_end_matches("-line"),
        with_line[0].concurrency.unwrap_or(0),
        diffs.iter().sum::<f64>() / diffs.len() as f64,
        shown.join(", ")
    );
}

pub fn print_writer_result(w: &WriterResult) {
    let runs: Vec<String> = w.runs.iter().map(|r| format!("{:.0}", r.rows_per_s)).collect();
    println!(
        "log writer ({}): {} rows of {} B: {:.0} rows/s median (runs: {}), {:.1} us CPU per row, dropped {}",
        w.label,
        w.rows,
        w.row_bytes,
        w.median_rows_per_s,
        runs.join(", "),
        w.median_cpu_us_per_row,
        w.dropped
    );
}

pub fn print_logcost_result(l: &LogcostResult) {
    println!(
        "logging cost ({} requests, {} chunks, prompt {} B, db {}):",
        l.iters, l.chunks, l.prompt_bytes, l.label
    );
    for c in &l.components {
        println!("    {:<58} {:>8.2} us", c.name, c.us);
    }
    println!(
        "    => per request: {:.1} us on the request path (tracing on; {:.1} off) + {:.1} us in the writer = {:.1} us CPU",
        l.request_path_us, l.request_path_no_tracing_us, l.writer_us_per_row, l.total_us
    );
}

/// `median (min..max)` of a few numbers.
fn spread_of(v: &[f64], digits: usize) -> String {
    if v.is_empty() {
        return "-".into();
    }
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{:.*} ({:.*}..{:.*})", digits, median(v), digits, lo, digits, hi)
}

/// Several runs of the suite: per workload (matched by position, name and load), the
/// median and range of the main figures; then the writer's and the logging path's.
fn print_spread(runs: &[Vec<LoadResult>], writers: &[WriterResult], logcosts: &[LogcostResult]) {
    let Some(first) = runs.first() else { return };
    println!("== spread over {} runs: median (min..max)", runs.len());
    println!(
        "{:<22} {:>6} | {:<19} | {:<19} | {:<19} | {:<19} | {:<17} | {:<16} | {:<17} | {:<10}",
        "workload",
        "load",
        "dir p50 ms",
        "brg p50 ms",
        "+p50 ms",
        "+p99 ms",
        "x r/s",
        "cpu us/req",
        "sqlite us/req",
        "lost, err"
    );
    for (i, row) in first.iter().enumerate() {
        let same: Vec<&LoadResult> = runs
            .iter()
            .filter_map(|loads| loads.get(i))
            .filter(|r| r.name == row.name && r.concurrency == row.concurrency && r.rate == row.rate)
            .collect();
        let pick = |f: &dyn Fn(&LoadResult) -> Option<f64>| -> Vec<f64> { same.iter().filter_map(|r| f(r)).collect() };
        let digits = |v: &[f64]| if median(v) >= 10.0 { 0 } else { 2 };
        let d50 = pick(&|r| Some(r.direct.as_ref()?.total.p50));
        let b50 = pick(&|r| Some(r.through.as_ref()?.total.p50));
        let load = match (row.concurrency, row.rate) {
            (Some(c), _) => format!("c{c}"),
            (None, Some(rate)) => format!("{rate:.0}/s"),
            _ => "?".into(),
        };
        let lost: u64 = same.iter().filter_map(|r| r.log_dropped).sum();
        let errors: usize = same
            .iter()
            .flat_map(|r| [&r.direct, &r.through])
            .flatten()
            .map(|s| s.errors)
            .sum();
        println!(
            "{:<22} {:>6} | {:<19} | {:<19} | {:<19} | {:<19} | {:<17} | {:<16} | {:<17} | {:<10}",
            row.name,
            load,
            spread_of(&d50, digits(&d50)),
            spread_of(&b50, digits(&b50)),
            spread_of(
                &pick(&|r| Some(r.through.as_ref()?.total.p50 - r.direct.as_ref()?.total.p50)),
                2
            ),
            spread_of(
                &pick(&|r| Some(r.through.as_ref()?.total.p99 - r.direct.as_ref()?.total.p99)),
                2
            ),
            spread_of(
                &pick(&|r| Some(r.through.as_ref()?.rps / r.direct.as_ref()?.rps.max(1e-9))),
                2
            ),
            spread_of(&pick(&|r| Some(r.bridge_cpu.as_ref()?.threads_us_per_req)), 0),
            spread_of(
                &pick(&|r| r.bridge_cpu.as_ref()?.by_thread_us_per_req.get("sqlite").copied()),
                0
            ),
            format!("{lost}, {errors}"),
        );
    }
    println!("(lost, err: totals over the runs)");
    let mut labels: Vec<&str> = Vec::new();
    for w in writers {
        if !labels.contains(&w.label.as_str()) {
            labels.push(&w.label);
        }
    }
    for label in labels {
        let of: Vec<&WriterResult> = writers.iter().filter(|w| w.label == label).collect();
        let rates: Vec<f64> = of.iter().flat_map(|w| w.runs.iter().map(|r| r.rows_per_s)).collect();
        let cpu: Vec<f64> = of
            .iter()
            .flat_map(|w| w.runs.iter().map(|r| r.cpu_us_per_row))
            .collect();
        println!(
            "log writer ({label}): rows/s {}, us CPU per row {}",
            spread_of(&rates, 0),
            spread_of(&cpu, 1)
        );
    }
    if !logcosts.is_empty() {
        let field = |f: &dyn Fn(&LogcostResult) -> f64| -> Vec<f64> { logcosts.iter().map(f).collect() };
        println!(
            "logging path in process, us CPU per request: request path {} (log line off: {}), writer {}",
            spread_of(&field(&|l| l.request_path_us), 1),
            spread_of(&field(&|l| l.request_path_no_tracing_us), 1),
            spread_of(&field(&|l| l.writer_us_per_row), 1)
        );
    }
}
