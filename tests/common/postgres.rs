//! A throwaway PostgreSQL cluster for the store tests: `initdb` into a temp dir, then
//! `postgres` on a free loopback port with its socket in the same dir, password
//! authentication over TCP. PostgreSQL refuses to run as root, so as root (CI) the
//! cluster belongs to and runs as `nobody`; otherwise as the current user.
//!
//! The binaries come from `$OLLABRIDGE_PG_BIN` (scripts/test.sh sets it), else the
//! newest `/usr/lib/postgresql/<version>/bin` (Debian's `postgresql` package).

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

pub const USER: &str = "ollabridge";
pub const PASSWORD: &str = "s3cret-pg-pass";

/// The directory holding `initdb`, `pg_ctl` and `postgres`.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("OLLABRIDGE_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!(
            "PostgreSQL is missing: apt-get install postgresql (or set OLLABRIDGE_PG_BIN to the directory \
             holding initdb and pg_ctl)"
        )
    })
}

/// The user the cluster runs as when we are root: `nobody`.
fn unprivileged() -> Option<(u32, u32)> {
    let me = std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(1);
    if me != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let nobody = passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.first() != Some(&"nobody") || fields.len() < 4 {
            return None;
        }
        Some((fields[2].parse().ok()?, fields[3].parse().ok()?))
    });
    Some(nobody.unwrap_or((65534, 65534)))
}

pub struct PgCluster {
    ctl: Ctl,
    running: bool,
    /// Removed last (after the drop stopped the server).
    _dir: tempfile::TempDir,
}

/// What running the cluster's programs needs; cheap to clone into a blocking task.
#[derive(Clone)]
struct Ctl {
    dir: PathBuf,
    bin: PathBuf,
    user: Option<(u32, u32)>,
    settings: Vec<(String, String)>,
    port: u16,
}

impl PgCluster {
    /// A new cluster with `fsync` off (tests: the machine does not crash under them).
    pub async fn start() -> PgCluster {
        PgCluster::start_with(&[("fsync", "off")]).await
    }

    /// A new cluster with these extra server settings (`-c name=value`).
    pub async fn start_with(settings: &[(&str, &str)]) -> PgCluster {
        let settings: Vec<(String, String)> = settings.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        tokio::task::spawn_blocking(move || PgCluster::init(settings))
            .await
            .unwrap()
    }

    fn init(settings: Vec<(String, String)>) -> PgCluster {
        let dir = tempfile::Builder::new().prefix("pg").tempdir().expect("tempdir");
        let user = unprivileged();
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, PASSWORD).unwrap();
        if let Some((uid, gid)) = user {
            for path in [dir.path(), pwfile.as_path()] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown");
            }
        }
        let mut ctl = Ctl {
            dir: dir.path().to_owned(),
            bin: bin_dir(),
            user,
            settings,
            port: 0,
        };
        let data = ctl.data_dir();
        let out = ctl.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                USER,
                "--pwfile",
                pwfile.to_str().unwrap(),
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
                "-N",
            ],
        );
        assert!(out.status.success(), "initdb failed: {}", show(&out));
        for attempt in 0.. {
            ctl.port = super::free_port();
            if ctl.start() {
                break;
            }
            assert!(attempt < 3, "postgres would not start: {}", ctl.server_log());
        }
        let cluster = PgCluster {
            ctl,
            running: true,
            _dir: dir,
        };
        run_sql(&cluster.url_for("postgres"), &format!("CREATE DATABASE \"{USER}\""));
        cluster
    }

    pub fn port(&self) -> u16 {
        self.ctl.port
    }

    /// The server's log so far.
    pub fn server_log(&self) -> String {
        self.ctl.server_log()
    }

    /// `postgres://ollabridge:…@127.0.0.1:port/ollabridge`.
    pub fn url(&self) -> String {
        self.url_for(USER)
    }

    pub fn url_for(&self, database: &str) -> String {
        format!("postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{database}", self.ctl.port)
    }

    /// Another empty database in the same cluster; returns its URL.
    pub async fn new_database(&self, name: &str) -> String {
        let admin = self.url_for("postgres");
        let sql = format!("CREATE DATABASE \"{name}\"");
        tokio::task::spawn_blocking(move || run_sql(&admin, &sql))
            .await
            .unwrap();
        self.url_for(name)
    }

    /// Stops the server (fast shutdown: sessions are ended, open transactions rolled
    /// back), as an administrator restarting it would.
    pub async fn stop(&mut self) {
        let ctl = self.ctl.clone();
        let out = tokio::task::spawn_blocking(move || ctl.stop("fast")).await.unwrap();
        assert!(out.status.success(), "pg_ctl stop failed: {}", show(&out));
        self.running = false;
    }

    /// Starts the stopped server again on the same port.
    pub async fn restart(&mut self) {
        let ctl = self.ctl.clone();
        let started = tokio::task::spawn_blocking(move || ctl.start()).await.unwrap();
        assert!(started, "postgres would not start again: {}", self.server_log());
        self.running = true;
    }
}

impl Ctl {
    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// Runs one of the cluster's programs as the cluster's user.
    fn run(&self, program: &str, args: &[&str]) -> Output {
        let mut command = Command::new(self.bin.join(program));
        command.args(args).stdin(Stdio::null()).current_dir(&self.dir);
        if let Some((uid, gid)) = self.user {
            command.uid(uid).gid(gid);
        }
        command
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.bin.join(program).display()))
    }

    /// `pg_ctl start`, waiting until the server takes connections.
    fn start(&self) -> bool {
        let mut options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.display()
        );
        for (name, value) in &self.settings {
            options.push_str(&format!(" -c {name}={value}"));
        }
        let data = self.data_dir();
        let log = self.dir.join("server.log");
        let out = self.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        out.status.success()
    }

    fn stop(&self, mode: &str) -> Output {
        let data = self.data_dir();
        self.run("pg_ctl", &["-D", data.to_str().unwrap(), "-m", mode, "-w", "stop"])
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.running {
            let _ = self.ctl.stop("immediate");
        }
    }
}

fn show(out: &Output) -> String {
    format!(
        "{}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs one statement on its own runtime and connection (usable from sync code).
pub fn run_sql(url: &str, sql: &str) {
    let (url, sql) = (url.to_owned(), sql.to_owned());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let pool = connect(&url).await;
            sqlx::query(&sql)
                .execute(&pool)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            pool.close().await;
        })
    })
    .join()
    .expect("sql thread");
}

async fn connect(url: &str) -> sqlx::PgPool {
    for attempt in 0.. {
        match sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(url)
            .await
        {
            Ok(pool) => return pool,
            Err(e) if attempt < 50 => {
                eprintln!("connecting to {url}: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("cannot connect to {url}: {e}"),
        }
    }
    unreachable!()
}

/// Rows as JSON objects, the way [`super::query_rows`] reads SQLite: booleans become
/// 0 and 1 as SQLite stores them, so rows from both stores compare equal.
pub async fn pg_rows(url: &str, sql: &str) -> Vec<Value> {
    use sqlx::{Column, Row, TypeInfo};
    let pool = connect(url).await;
    let rows = sqlx::query(sql)
        .fetch_all(&pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    pool.close().await;
    rows.iter()
        .map(|row| {
            let mut obj = serde_json::Map::new();
            for (i, col) in row.columns().iter().enumerate() {
                let v = match col.type_info().name() {
                    "BOOL" => row
                        .try_get::<Option<bool>, _>(i)
                        .unwrap()
                        .map_or(Value::Null, |b| Value::from(i64::from(b))),
                    "INT8" => row
                        .try_get::<Option<i64>, _>(i)
                        .unwrap()
                        .map_or(Value::Null, Value::from),
                    "INT4" => row
                        .try_get::<Option<i32>, _>(i)
                        .unwrap()
                        .map_or(Value::Null, Value::from),
                    "FLOAT8" => row
                        .try_get::<Option<f64>, _>(i)
                        .unwrap()
                        .map_or(Value::Null, Value::from),
                    "TEXT" | "VARCHAR" | "NAME" => row
                        .try_get::<Option<String>, _>(i)
                        .unwrap()
                        .map_or(Value::Null, Value::from),
                    other => panic!("column {} has type {other}", col.name()),
                };
                obj.insert(col.name().to_owned(), v);
            }
            Value::Object(obj)
        })
        .collect()
}
