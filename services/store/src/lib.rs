//! Store plumbing shared by Weft's services: one SQL database, SQLite or Postgres, chosen once
//! from the URL scheme.
//!
//! - SQLite runs in WAL mode with a busy timeout and `synchronous = NORMAL` (a committed
//!   transaction survives the process being killed; `--sqlite-synchronous full` also survives
//!   power loss). All writes go through one connection, so writers never fight over the lock,
//!   and an exclusive lock file keeps a second process off the same database: SQLite means one
//!   replica.
//! - Postgres is for replicas; correctness across them comes from constraints and row locks in
//!   the database, never from process-local locks.
//!
//! Services keep their migrations per backend (`migrations/sqlite`, `migrations/postgres`, same
//! versions) and run them with [`Db::migrate`].

use std::{fmt, fs::File, path::PathBuf, str::FromStr, sync::Arc, time::Duration};

use sqlx::{AnyPool, Executor as _, any::AnyPoolOptions, migrate::Migrator};

/// Which SQL database is behind a [`Db`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A problem opening or migrating a store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    #[error("unsupported database url {url}: use sqlite://PATH or postgres://…")]
    UnsupportedUrl { url: String },
    #[error("cannot create the directory of {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the SQLite database {path} is in use by another process (SQLite supports one replica; use Postgres for more)"
    )]
    SqliteInUse { path: PathBuf },
    #[error("cannot lock {path}: {source}")]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot connect to {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error("migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Options of [`Db::open`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Connections for reads (and, on Postgres, writes).
    pub max_connections: u32,
    /// How long to wait for a connection, and on SQLite for the lock.
    pub acquire_timeout: Duration,
    /// SQLite only: `synchronous = FULL` instead of `NORMAL`.
    pub sqlite_synchronous_full: bool,
    /// Postgres only: the server ends a session left idle inside a transaction this long
    /// (`idle_in_transaction_session_timeout`), so a process paused or hung mid-transaction
    /// cannot hold its row locks, and with them every other replica, for ever.
    pub postgres_idle_in_transaction: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_connections: 8,
            acquire_timeout: Duration::from_secs(5),
            sqlite_synchronous_full: false,
            postgres_idle_in_transaction: Duration::from_secs(30),
        }
    }
}

/// What another connection of this process to a SQLite store needs: the file, and the settings
/// every connection of the store runs first (busy timeout, foreign keys, `synchronous`).
#[derive(Debug, Clone)]
pub struct SqliteFile {
    pub path: PathBuf,
    pub pragmas: Arc<str>,
}

/// An open database: a pool for reads and a pool for writes (the same pool on Postgres; a single
/// connection on SQLite).
#[derive(Clone)]
pub struct Db {
    read: AnyPool,
    write: AnyPool,
    backend: Backend,
    url: Arc<str>,
    sqlite: Option<SqliteFile>,
    lock: Option<Arc<File>>,
}

impl fmt::Debug for Db {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Db")
            .field("backend", &self.backend)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// The statement that sets a Postgres session's idle-in-transaction limit: whole milliseconds,
/// at least 1 (0 would turn the limit off).
fn idle_in_transaction_sql(limit: Duration) -> String {
    let ms = limit.as_millis().clamp(1, i32::MAX as u128);
    format!("SET idle_in_transaction_session_timeout = {ms}")
}

/// The URL with any password replaced, for logs and errors.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

impl Db {
    /// Opens `url` (`sqlite://PATH`, `sqlite:PATH` or `postgres://…`), creating a SQLite file and
    /// its directory when missing.
    pub async fn open(url: &str, opts: &StoreOptions) -> Result<Self, OpenError> {
        sqlx::any::install_default_drivers();
        let shown = redact_url(url);
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(OpenError::UnsupportedUrl { url: shown });
        };
        match backend {
            Backend::Postgres => Self::open_postgres(url, shown, opts).await,
            Backend::Sqlite => Self::open_sqlite(url, shown, opts).await,
        }
    }

    /// One pool for reads and writes: Postgres orders concurrent writers itself.
    async fn open_postgres(
        url: &str,
        shown: String,
        opts: &StoreOptions,
    ) -> Result<Self, OpenError> {
        let connect_err = |source| OpenError::Connect {
            url: shown.clone(),
            source,
        };
        let set = idle_in_transaction_sql(opts.postgres_idle_in_transaction);
        let pool = AnyPoolOptions::new()
            .max_connections(opts.max_connections)
            .acquire_timeout(opts.acquire_timeout)
            .after_connect(move |conn, _meta| {
                let set = set.clone();
                Box::pin(async move {
                    conn.execute(sqlx::AssertSqlSafe(set)).await?;
                    Ok(())
                })
            })
            .connect(url)
            .await
            .map_err(connect_err)?;
        Ok(Self {
            read: pool.clone(),
            write: pool,
            backend: Backend::Postgres,
            url: shown.into(),
            sqlite: None,
            lock: None,
        })
    }

    /// A single-connection writer pool and a reader pool on one file, held by its lock file.
    async fn open_sqlite(url: &str, shown: String, opts: &StoreOptions) -> Result<Self, OpenError> {
        let connect_err = |source| OpenError::Connect {
            url: shown.clone(),
            source,
        };
        let path = sqlite_path(url);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| OpenError::CreateDir {
                path: path.clone(),
                source,
            })?;
        }
        let lock = lock_sqlite(&path)?;
        let full_url = if url.contains('?') {
            url.to_owned()
        } else {
            format!("sqlite://{}?mode=rwc", path.display())
        };
        let sync = if opts.sqlite_synchronous_full {
            "FULL"
        } else {
            "NORMAL"
        };
        let busy_ms = opts.acquire_timeout.as_millis();
        let pragmas: Arc<str> = format!(
            "PRAGMA busy_timeout = {busy_ms}; PRAGMA foreign_keys = ON; PRAGMA synchronous = {sync}; \
             PRAGMA cache_size = -65536;"
        )
        .into();
        let make = |max: u32| {
            let pragmas = pragmas.clone();
            AnyPoolOptions::new()
                .max_connections(max)
                .acquire_timeout(opts.acquire_timeout)
                .after_connect(move |conn, _meta| {
                    let pragmas = pragmas.clone();
                    Box::pin(async move {
                        conn.execute(sqlx::AssertSqlSafe(pragmas.to_string()))
                            .await?;
                        Ok(())
                    })
                })
        };
        let write = make(1).connect(&full_url).await.map_err(connect_err)?;
        // WAL is a property of the file: set it once, before any reader connects.
        write
            .execute("PRAGMA journal_mode = WAL")
            .await
            .map_err(connect_err)?;
        let read = make(opts.max_connections)
            .connect(&full_url)
            .await
            .map_err(connect_err)?;
        Ok(Self {
            read,
            write,
            backend: Backend::Sqlite,
            url: shown.into(),
            // An in-memory database is private to its connection: nobody else may open it.
            sqlite: (!full_url.contains("mode=memory") && !path.starts_with(":memory:"))
                .then_some(SqliteFile { path, pragmas }),
            lock: Some(Arc::new(lock)),
        })
    }

    /// Runs the migrations of this backend.
    pub async fn migrate(&self, sqlite: &Migrator, postgres: &Migrator) -> Result<(), OpenError> {
        let migrator = match self.backend {
            Backend::Sqlite => sqlite,
            Backend::Postgres => postgres,
        };
        migrator.run(&self.write).await?;
        Ok(())
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The file and settings of a SQLite store, for a service that keeps a connection of its own
    /// for its hottest writes; `None` on Postgres and for an in-memory database.
    pub fn sqlite_file(&self) -> Option<&SqliteFile> {
        self.sqlite.as_ref()
    }

    /// The pool for reads.
    pub fn read(&self) -> &AnyPool {
        &self.read
    }

    /// The pool for writes: on SQLite a single connection, so writers queue in-process instead
    /// of failing on the database lock.
    pub fn write(&self) -> &AnyPool {
        &self.write
    }

    /// The statement that opens a write transaction: `BEGIN IMMEDIATE` on SQLite takes the write
    /// lock up front, so a transaction never fails half-way on a lock upgrade.
    pub fn begin_write_sql(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "BEGIN IMMEDIATE",
            Backend::Postgres => "BEGIN",
        }
    }

    /// Closes both pools, then (SQLite) releases the lock file at once: another process may
    /// open the database as soon as this returns, even while clones of this handle (a
    /// background task's) are still being dropped. Nothing can use the database through them.
    pub async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
        if let Some(lock) = &self.lock {
            let _ = lock.unlock();
        }
    }
}

fn sqlite_path(url: &str) -> PathBuf {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    let rest = rest.split('?').next().unwrap_or(rest);
    PathBuf::from_str(rest).unwrap_or_default()
}

fn lock_sqlite(path: &std::path::Path) -> Result<File, OpenError> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|source| OpenError::Lock {
            path: lock_path.clone(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(OpenError::SqliteInUse {
            path: path.to_owned(),
        }),
        Err(std::fs::TryLockError::Error(source)) => Err(OpenError::Lock {
            path: lock_path,
            source,
        }),
    }
}

/// True when `err` is a unique-constraint violation (SQLite or Postgres).
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// True when `err` means the database could not be reached (callers map it to `UNAVAILABLE`).
pub fn is_unavailable(err: &sqlx::Error) -> bool {
    matches!(
        err,
        sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
    ) || matches!(err, sqlx::Error::Database(db) if db.code().is_some_and(|c| c == "5" || c.starts_with("08") || c == "57P01"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_paths_are_read_from_urls() {
        assert_eq!(
            sqlite_path("sqlite:///tmp/a.db"),
            PathBuf::from("/tmp/a.db")
        );
        assert_eq!(
            sqlite_path("sqlite://data/a.db?mode=rwc"),
            PathBuf::from("data/a.db")
        );
        assert_eq!(sqlite_path("sqlite:a.db"), PathBuf::from("a.db"));
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:hunter2@127.0.0.1:5432/db"),
            "postgres://u:***@127.0.0.1:5432/db"
        );
        assert_eq!(redact_url("sqlite:///x.db"), "sqlite:///x.db");
    }

    #[tokio::test]
    async fn sqlite_is_wal_and_refuses_a_second_process() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/sub/s.db", dir.path().display());
        let db = Db::open(&url, &StoreOptions::default()).await.unwrap();
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(db.read())
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        let busy: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
            .fetch_one(db.read())
            .await
            .unwrap();
        assert_eq!(busy, 5000);
        // A second open of the same file, as another replica would, is refused.
        let err = Db::open(&url, &StoreOptions::default()).await.unwrap_err();
        assert!(matches!(err, OpenError::SqliteInUse { .. }), "{err}");
        drop(db);
    }

    #[tokio::test]
    async fn unknown_schemes_are_refused() {
        let err = Db::open("mysql://x", &StoreOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(err, OpenError::UnsupportedUrl { .. }));
    }
}
