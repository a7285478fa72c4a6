//! Opening the log database: the two databases behind one [`Store`], SQLite (a file,
//! the default) or PostgreSQL (`database.url`, which any number of replicas can share),
//! and the rows that stopped processes left in flight, closed when a store opens.
//!
//! Queries are written once. Builders generic over the database (sqlx's
//! `QueryBuilder<DB>` writes each one's placeholders) make the SQL, and [`on_pool!`]
//! runs the code that executes it once per database. What really differs is kept in
//! `schema` ([`Dialect`]), here ([`close_abandoned_rows`]) and in `retention` (sizes).

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Encode, Postgres, QueryBuilder, SqlitePool, Type};

use super::schema::{Dialect, POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS, escape_like, stored};
use crate::config::{DatabaseConfig, DatabaseUrl};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open database {path}: {source}")]
    Open { path: String, source: sqlx::Error },
    #[error("cannot migrate database {path}: {source}")]
    Migrate {
        path: String,
        source: sqlx::migrate::MigrateError,
    },
}

/// A connection pool on the log database.
#[derive(Debug, Clone)]
pub enum Store {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl From<SqlitePool> for Store {
    fn from(pool: SqlitePool) -> Store {
        Store::Sqlite(pool)
    }
}

impl From<&SqlitePool> for Store {
    fn from(pool: &SqlitePool) -> Store {
        Store::Sqlite(pool.clone())
    }
}

impl From<PgPool> for Store {
    fn from(pool: PgPool) -> Store {
        Store::Postgres(pool)
    }
}

impl From<&PgPool> for Store {
    fn from(pool: &PgPool) -> Store {
        Store::Postgres(pool.clone())
    }
}

impl From<&Store> for Store {
    fn from(store: &Store) -> Store {
        store.clone()
    }
}

/// Runs `$body` with `$pool` bound to the store's pool: the body is compiled once for
/// each database, so generic query builders get their concrete types there.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store {
            $crate::store::Store::Sqlite($pool) => $body,
            $crate::store::Store::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

impl Store {
    /// Opens the writer's store: creates (SQLite) and migrates it, and closes the rows
    /// earlier processes left in flight ([`close_abandoned_rows`]).
    pub async fn connect(config: &DatabaseConfig, instance: &Instance) -> Result<Store, StoreError> {
        match &config.url {
            None => Ok(Store::Sqlite(open(&config.path).await?)),
            Some(url) => {
                let pool = postgres_pool(url, WRITER_CONNECTIONS, false).await?;
                POSTGRES_MIGRATIONS
                    .run(&pool)
                    .await
                    .map_err(|source| StoreError::Migrate {
                        path: url.to_string(),
                        source,
                    })?;
                let store = Store::Postgres(pool);
                let closed = close_abandoned_rows(&store, instance)
                    .await
                    .map_err(|source| StoreError::Open {
                        path: url.to_string(),
                        source,
                    })?;
                if closed > 0 {
                    tracing::warn!(
                        rows = closed,
                        "requests left in flight by stopped ollabridge processes marked as stopped"
                    );
                }
                Ok(store)
            }
        }
    }

    /// Opens an existing log database for reading only: never creates, migrates or
    /// writes (PostgreSQL sessions are read-only).
    pub async fn reader(config: &DatabaseConfig, max_connections: u32) -> Result<Store, StoreError> {
        match &config.url {
            None => Ok(Store::Sqlite(open_reader(&config.path, max_connections).await?)),
            Some(url) => Store::postgres_reader(url, max_connections).await,
        }
    }

    /// A read-only pool on a PostgreSQL log database.
    pub async fn postgres_reader(url: &DatabaseUrl, max_connections: u32) -> Result<Store, StoreError> {
        Ok(Store::Postgres(postgres_pool(url, max_connections, true).await?))
    }

    /// `sqlite` or `postgres`.
    pub fn kind(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    pub async fn close(&self) {
        on_pool!(self, pool => pool.close().await);
    }
}

/// Connections of the writer's pool: the writer, and stars from the admin API.
const WRITER_CONNECTIONS: u32 = 2;

/// How long taking a connection may wait; while the server is down every try fails
/// this fast, and the writer backs off between them.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

async fn postgres_pool(url: &DatabaseUrl, max_connections: u32, read_only: bool) -> Result<PgPool, StoreError> {
    let open_error = |source| StoreError::Open {
        path: url.to_string(),
        source,
    };
    let mut options = PgConnectOptions::from_str(url.expose())
        .map_err(open_error)?
        .application_name("ollabridge");
    if read_only {
        options = options.options([("default_transaction_read_only", "on")]);
    }
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await
        .map_err(open_error)
}

/// Opens (creating if needed) and migrates the SQLite database, and closes the rows
/// the previous run left in flight.
pub async fn open(path: &Path) -> Result<SqlitePool, StoreError> {
    let shown = path.display().to_string();
    let options = SqliteConnectOptions::from_str("sqlite://")
        .map_err(|source| StoreError::Open {
            path: shown.clone(),
            source,
        })?
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(5))
        // New databases give deleted pages back to the file system (retention).
        .auto_vacuum(sqlx::sqlite::SqliteAutoVacuum::Incremental);
    let pool = SqlitePoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await
        .map_err(|source| StoreError::Open {
            path: shown.clone(),
            source,
        })?;
    SQLITE_MIGRATIONS
        .run(&pool)
        .await
        .map_err(|source| StoreError::Migrate {
            path: shown.clone(),
            source,
        })?;
    let abandoned = close_all_in_flight(&pool)
        .await
        .map_err(|source| StoreError::Open { path: shown, source })?;
    if abandoned > 0 {
        tracing::warn!(
            rows = abandoned,
            "requests left in flight by the previous run marked as stopped"
        );
    }
    Ok(pool)
}

/// Opens an existing SQLite log database for reading only: never creates, migrates or
/// writes.
pub async fn open_reader(path: &Path, max_connections: u32) -> Result<SqlitePool, StoreError> {
    let shown = path.display().to_string();
    let options = SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .create_if_missing(false)
        .busy_timeout(Duration::from_secs(5));
    SqlitePoolOptions::new()
        .max_connections(max_connections)
        .connect_with(options)
        .await
        .map_err(|source| StoreError::Open { path: shown, source })
}

/// Which ollabridge process wrote an in-flight row: `host/address/random`, where
/// `address` is the address the process's Ollama port is bound to. Two live processes
/// cannot hold the same address on one host, so a row with this process's
/// `host/address/` but another random part was left by an earlier process on the same
/// host and address: one that has stopped. (Replicas need distinct host names, which
/// Docker and Kubernetes give them.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    id: String,
    /// Length of the `host/address/` part.
    prefix: usize,
}

impl Instance {
    pub fn new(listening: std::net::SocketAddr) -> Instance {
        let prefix = format!("{}/{listening}/", hostname());
        let id = format!("{prefix}{:08x}", rand::random::<u32>());
        Instance {
            prefix: prefix.len(),
            id,
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// `host/address/`: this process and earlier ones on the same host and address.
    pub fn prefix(&self) -> &str {
        &self.id[..self.prefix]
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// The error a row left in flight gets when it is closed.
pub const ABANDONED: &str = "ollabridge stopped before the request finished";

/// How old an in-flight row of another process must be before it counts as abandoned
/// (PostgreSQL): longer than any request should run. A row closed too early is not
/// lost: its request's final row still replaces it.
pub const ABANDONED_AFTER: Duration = Duration::from_secs(3600);

/// Closes rows that stopped processes left in flight; returns how many.
///
/// SQLite: one server owns the file, so every row in flight at start is a leftover.
///
/// PostgreSQL: replicas share the table, and another replica's in-flight rows belong to
/// requests it is still answering. So only rows this process can know to be abandoned
/// are closed: those of earlier processes on this host and address ([`Instance`]; the
/// same replica restarted), and any older than [`ABANDONED_AFTER`] (a replica that
/// crashed and never came back; the writer sweeps for those every few minutes).
pub async fn close_abandoned_rows(store: &Store, instance: &Instance) -> Result<u64, sqlx::Error> {
    let result = match store {
        Store::Sqlite(pool) => close_all_in_flight(pool).await?,
        Store::Postgres(pool) => {
            let cutoff = chrono::Utc::now() - chrono::Duration::from_std(ABANDONED_AFTER).unwrap_or_default();
            let abandoned = Abandoned::EarlierOrOlder {
                prefix: instance.prefix(),
                current: instance.id(),
                before: stored(&cutoff),
            };
            close_rows::<Postgres>(Some(abandoned))
                .build()
                .execute(pool)
                .await?
                .rows_affected()
        }
    };
    Ok(result)
}

/// Rows left in flight by a previous run that stopped without finishing them: on
/// SQLite, every row in flight at start (one server owns the file).
async fn close_all_in_flight(pool: &SqlitePool) -> Result<u64, sqlx::Error> {
    let result = close_rows::<sqlx::Sqlite>(None).build().execute(pool).await?;
    Ok(result.rows_affected())
}

/// Closes this process's own rows still in flight when it stops (their final records
/// were lost), so no replica has to wait for [`ABANDONED_AFTER`].
pub async fn close_own_rows(store: &Store, instance: &Instance) -> Result<u64, sqlx::Error> {
    let own = Some(Abandoned::Own(instance.id()));
    Ok(on_pool!(store, pool => close_rows(own).build().execute(pool).await?.rows_affected()))
}

/// Which in-flight rows [`close_rows`] closes; `None`: all of them.
enum Abandoned<'a> {
    Own(&'a str),
    EarlierOrOlder {
        prefix: &'a str,
        current: &'a str,
        before: String,
    },
}

/// `UPDATE` that closes rows still in flight, with `why` as their error unless they have
/// one; the caller adds which rows (`AND ...`).
pub(super) fn closing_in_flight<'a, DB: Dialect>(why: &'a str) -> QueryBuilder<'a, DB>
where
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
{
    let mut qb = QueryBuilder::new("UPDATE logs SET in_flight = ");
    qb.push(DB::FALSE)
        .push(", error = COALESCE(error, ")
        .push_bind(why)
        .push(") WHERE in_flight = ")
        .push(DB::TRUE);
    qb
}

fn close_rows<'a, DB: Dialect>(which: Option<Abandoned<'a>>) -> QueryBuilder<'a, DB>
where
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
{
    let mut qb = closing_in_flight(ABANDONED);
    match which {
        None => {}
        Some(Abandoned::Own(id)) => {
            qb.push(" AND instance = ").push_bind(id);
        }
        Some(Abandoned::EarlierOrOlder {
            prefix,
            current,
            before,
        }) => {
            qb.push(" AND ((instance LIKE ")
                .push_bind(format!("{}%", escape_like(prefix)))
                .push(" ESCAPE '\\' AND instance <> ")
                .push_bind(current)
                .push(") OR timestamp < ")
                .push_bind(before)
                .push(")");
        }
    }
    qb
}
