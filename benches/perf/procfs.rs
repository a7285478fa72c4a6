//! CPU time and memory of processes and threads, read from `/proc` (Linux only).
//!
//! Two clocks: `utime + stime` from `/proc/<pid>/stat` (clock ticks, 10 ms each, but it
//! includes threads that have exited), and each live thread's `schedstat` run time
//! (nanoseconds, per thread, so it can be split by thread name).

use std::collections::BTreeMap;
use std::fs;

/// `USER_HZ`: what `/proc/<pid>/stat` counts CPU time in. 100 on every Linux target
/// Rust supports (it is not `CONFIG_HZ`); `getconf CLK_TCK` shows it.
pub const CLK_TCK: u64 = 100;

/// `utime + stime` of a whole process, in microseconds (10 ms resolution).
pub fn process_cpu_us(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (utime, stime) = stat_times(&stat)?;
    Some((utime + stime) * 1_000_000 / CLK_TCK)
}

/// The `utime` and `stime` fields (14 and 15) of a `stat` line; the command name may
/// contain spaces and parentheses, so fields are counted from the last `)`.
fn stat_times(stat: &str) -> Option<(u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some((fields.get(11)?.parse().ok()?, fields.get(12)?.parse().ok()?))
}

/// Run time in nanoseconds of each live thread of `pid`, summed per thread group
/// (`tokio` for runtime workers, `sqlite` for sqlx's SQLite threads, else the name
/// without trailing digits).
pub fn threads_ns(pid: u32) -> BTreeMap<String, u64> {
    let mut groups = BTreeMap::new();
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return groups;
    };
    for task in tasks.flatten() {
        let path = task.path();
        let comm = fs::read_to_string(path.join("comm")).unwrap_or_default();
        let ns = fs::read_to_string(path.join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok());
        if let Some(ns) = ns {
            *groups.entry(thread_group(comm.trim())).or_insert(0) += ns;
        }
    }
    groups
}

fn thread_group(comm: &str) -> String {
    let trimmed = comm.trim_end_matches(|c: char| c.is_ascii_digit() || c == '-');
    match trimmed {
        t if t.starts_with("tokio") => "tokio".into(),
        t if t.starts_with("sqlx-sqlite") => "sqlite".into(),
        "" => "other".into(),
        t => t.to_owned(),
    }
}

/// Nanoseconds the calling thread has run (its `schedstat`). The kernel refreshes a
/// running thread's figure only at ticks and switches; `sched_yield` refreshes it now.
pub fn this_thread_ns() -> u64 {
    std::thread::yield_now();
    fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Nanoseconds all live threads of this process have run.
pub fn this_process_ns() -> u64 {
    threads_ns(std::process::id()).values().sum()
}

/// `VmRSS` and `VmHWM` (peak) of a process, in KiB.
pub fn rss_kb(pid: u32) -> Option<(u64, u64)> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Read and write system calls a process has made (`syscr`, `syscw` of `/proc/<pid>/io`,
/// exited threads included). Only the file-style calls count (`read`, `write`, `writev`,
/// `pwrite`…), not `recv`/`send`: std reads sockets with `recv`, hyper writes them with
/// `writev`, SQLite uses `pwrite`; so `syscw` is hyper's socket writes plus SQLite's.
pub fn syscalls(pid: u32) -> Option<(u64, u64)> {
    let io = fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    let field = |name: &str| {
        io.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
    };
    Some((field("syscr:")?, field("syscw:")?))
}

/// A CPU reading of a process: the coarse total and the per-thread-group split.
#[derive(Debug, Clone, Default)]
pub struct CpuReading {
    pub total_us: u64,
    pub threads_ns: BTreeMap<String, u64>,
    pub syscalls: (u64, u64),
}

impl CpuReading {
    pub fn of(pid: u32) -> Option<CpuReading> {
        Some(CpuReading {
            total_us: process_cpu_us(pid)?,
            threads_ns: threads_ns(pid),
            syscalls: syscalls(pid).unwrap_or_default(),
        })
    }

    /// What was spent between `self` (earlier) and `later`, per request.
    pub fn per_request(&self, later: &CpuReading, requests: u64) -> CpuPerRequest {
        let n = requests.max(1) as f64;
        let mut by_thread = BTreeMap::new();
        for (group, ns) in &later.threads_ns {
            let before = self.threads_ns.get(group).copied().unwrap_or(0);
            by_thread.insert(group.clone(), ns.saturating_sub(before) as f64 / 1000.0 / n);
        }
        CpuPerRequest {
            us_per_req: later.total_us.saturating_sub(self.total_us) as f64 / n,
            threads_us_per_req: by_thread.values().sum(),
            by_thread_us_per_req: by_thread,
            read_syscalls_per_req: later.syscalls.0.saturating_sub(self.syscalls.0) as f64 / n,
            write_syscalls_per_req: later.syscalls.1.saturating_sub(self.syscalls.1) as f64 / n,
            requests,
        }
    }
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct CpuPerRequest {
    /// From `utime + stime` (10 ms ticks; exact over exited threads too).
    pub us_per_req: f64,
    /// Sum over live threads' `schedstat` (ns resolution).
    pub threads_us_per_req: f64,
    pub by_thread_us_per_req: BTreeMap<String, f64>,
    /// `syscr` / `syscw` per request (see [`syscalls`]).
    #[serde(default)]
    pub read_syscalls_per_req: f64,
    #[serde(default)]
    pub write_syscalls_per_req: f64,
    pub requests: u64,
}
