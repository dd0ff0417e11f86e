//! The group-commit batcher: the writer task drains waiting requests, applies them in one
//! transaction (retrying from stored state after a conflict) and only then answers callers.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use sqlx::{Any, AnyConnection, pool::PoolConnection};
use tokio::sync::mpsc;
use weft_store::{Backend, Db};

use super::{Allocation, Cmd, now_ms, sqlite::SqliteWriter};
use crate::{
    domain::{AddressSpaces, PoolState},
    error::IpamError,
    store::{self, AllocRow, PoolRow},
};

/// Requests the writer takes at most in one transaction.
const MAX_BATCH: usize = 512;
/// Scheduler turns the writer waits at most for more requests before it writes a batch.
const MAX_GATHER_TURNS: usize = 8;

/// A pool's state as this process knows it, and the stored generation it reflects.
pub(super) struct Cached {
    pub(super) state: PoolState,
    pub(super) generation: i64,
}

/// What a batch changed in one pool.
#[derive(Default)]
pub(super) struct Touched {
    pub(super) inserts: Vec<AllocRow>,
    pub(super) deletes: Vec<u128>,
}

impl Touched {
    /// What this batch changes in the pool's counters, when it changes anything: what the
    /// per-row triggers of migration 0001 did, at once.
    pub(super) fn counters(&self) -> Option<store::CounterDelta> {
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        let changes = self.inserts.len() + self.deletes.len();
        (changes > 0).then(|| store::CounterDelta {
            allocated: count(self.inserts.len()) - count(self.deletes.len()),
            generation: count(changes),
            cursor: self
                .inserts
                .iter()
                .rev()
                .find(|r| r.dynamic)
                .map(|r| r.addr),
        })
    }
}

/// The one task that writes allocations; owns the cache of pool states.
pub(super) struct Writer {
    pub(super) db: Db,
    pub(super) spaces: Arc<AddressSpaces>,
    pub(super) cache: HashMap<String, Cached>,
    /// The writer's connection, kept between batches; dropped (and closed) after any error so
    /// that no half-done transaction survives.
    pub(super) conn: Option<PoolConnection<Any>>,
    /// On SQLite, the connection the allocation batches write through (see `sqlite`); opened
    /// at the first batch, dropped (which rolls back) after any error.
    sqlite: Option<SqliteWriter>,
}

impl Writer {
    pub(super) fn new(db: Db, spaces: Arc<AddressSpaces>) -> Self {
        Self {
            db,
            spaces,
            cache: HashMap::new(),
            conn: None,
            sqlite: None,
        }
    }

    pub(super) async fn run(mut self, mut rx: mpsc::Receiver<Cmd>) {
        let mut pending: Option<Cmd> = None;
        loop {
            let first = match pending.take() {
                Some(c) => c,
                None => match rx.recv().await {
                    Some(c) => c,
                    None => break,
                },
            };
            match first {
                Cmd::CreatePool { req, reply } => {
                    let res = self.create_pool(req).await;
                    let _ = reply.send(res);
                }
                Cmd::DeletePool { id, force, reply } => {
                    let res = self.delete_pool(&id, force).await;
                    self.cache.remove(&id);
                    let _ = reply.send(res);
                }
                first => {
                    // Let the tasks that are ready to send (other connections' requests) run,
                    // so that concurrent requests share a commit: one turn, and another as long
                    // as the last one brought more (a request takes a few tasks' turns from
                    // its socket to this channel). Without concurrent callers this is one
                    // yield, as before.
                    let mut batch = vec![first];
                    for _ in 0..MAX_GATHER_TURNS {
                        tokio::task::yield_now().await;
                        let before = batch.len();
                        while batch.len() < MAX_BATCH {
                            match rx.try_recv() {
                                Ok(c @ (Cmd::Alloc { .. } | Cmd::Release { .. })) => batch.push(c),
                                Ok(other) => {
                                    pending = Some(other);
                                    break;
                                }
                                Err(_) => break,
                            }
                        }
                        if batch.len() == before || batch.len() >= MAX_BATCH || pending.is_some() {
                            break;
                        }
                    }
                    self.run_batch(batch).await;
                }
            }
        }
    }

    pub(super) async fn take_conn(&mut self) -> Result<PoolConnection<Any>, IpamError> {
        match self.conn.take() {
            Some(c) => Ok(c),
            None => {
                let mut c = self.db.write().acquire().await?;
                c.close_on_drop();
                Ok(c)
            }
        }
    }

    async fn run_batch(&mut self, batch: Vec<Cmd>) {
        let started = std::time::Instant::now();
        let mut attempt = 0;
        let outcome = loop {
            attempt += 1;
            let mut touched = BTreeMap::new();
            match self.try_batch(&batch, &mut touched).await {
                Ok(results) => {
                    // The generation moved once per row written (the trigger on Postgres, the
                    // batch's counter update on SQLite).
                    for (id, t) in touched {
                        if let Some(c) = self.cache.get_mut(&id) {
                            c.generation += i64::try_from(t.inserts.len() + t.deletes.len())
                                .unwrap_or(i64::MAX);
                        }
                    }
                    break Ok(results);
                }
                Err(e) => {
                    // What we decided in memory may not match the database now: reload.
                    for id in touched.keys() {
                        self.cache.remove(id);
                    }
                    let retry = match &e {
                        IpamError::Store(crate::store::IpamStoreError::Sql(s)) => {
                            weft_store::is_unique_violation(s) || is_serialization_failure(s)
                        }
                        IpamError::Store(crate::store::IpamStoreError::Sqlite(s)) => {
                            super::sqlite::is_unique_violation(s)
                        }
                        _ => false,
                    };
                    if retry && attempt < 5 {
                        tracing::debug!(error = %e, attempt, "batch conflicted, retrying from stored state");
                        continue;
                    }
                    break Err(e);
                }
            }
        };
        tracing::trace!(
            size = batch.len(),
            attempt,
            elapsed_us = started.elapsed().as_micros(),
            "batch done"
        );
        match outcome {
            Ok(results) => {
                for (cmd, res) in batch.into_iter().zip(results) {
                    match (cmd, res) {
                        (Cmd::Alloc { reply, .. }, Ok(Ok(a))) => {
                            let _ = reply.send(Ok(a));
                        }
                        (Cmd::Alloc { reply, .. }, Err(e)) => {
                            let _ = reply.send(Err(e));
                        }
                        (Cmd::Release { reply, .. }, Ok(Err(r))) => {
                            let _ = reply.send(Ok(r));
                        }
                        (Cmd::Release { reply, .. }, Err(e)) => {
                            let _ = reply.send(Err(e));
                        }
                        _ => {}
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, size = batch.len(), "allocation batch failed");
                for cmd in batch {
                    match cmd {
                        Cmd::Alloc { reply, .. } => {
                            let _ = reply.send(Err(batch_error(&e)));
                        }
                        Cmd::Release { reply, .. } => {
                            let _ = reply.send(Err(batch_error(&e)));
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    /// Applies a batch atomically: decides every command in memory, then writes the rows and
    /// commits. Per command: `Ok(Ok(allocation))` for an allocation, `Ok(Err(released))` for a
    /// release, or the command's own error. An `Err` of the whole call means nothing was
    /// committed.
    ///
    /// Statements: on SQLite this process is the only writer (the lock file), so a warm cache
    /// needs no read, and a batch that is one statement (the usual multi-row INSERT) runs
    /// without an explicit transaction: a statement is atomic by itself. On Postgres the batch
    /// runs in a transaction that locks each pool row first.
    #[allow(clippy::type_complexity)]
    async fn try_batch(
        &mut self,
        batch: &[Cmd],
        touched: &mut BTreeMap<String, Touched>,
    ) -> Result<Vec<Result<Result<Allocation, Vec<Allocation>>, IpamError>>, IpamError> {
        let mut conn = self.take_conn().await?;
        let backend = self.db.backend();
        let res = self.try_batch_on(&mut conn, backend, batch, touched).await;
        // After an error the connection is dropped, which closes it and so rolls back whatever
        // transaction was open.
        if res.is_ok() {
            self.conn = Some(conn);
        }
        res
    }

    #[allow(clippy::type_complexity)]
    async fn try_batch_on(
        &mut self,
        conn: &mut AnyConnection,
        backend: Backend,
        batch: &[Cmd],
        touched: &mut BTreeMap<String, Touched>,
    ) -> Result<Vec<Result<Result<Allocation, Vec<Allocation>>, IpamError>>, IpamError> {
        let mut in_tx = backend == Backend::Postgres;
        if in_tx {
            sqlx::query("BEGIN").execute(&mut *conn).await?;
        }
        let now = now_ms();
        let mut results = Vec::with_capacity(batch.len());
        for cmd in batch {
            let res = match cmd {
                Cmd::Alloc {
                    pool,
                    owner,
                    specific,
                    ..
                } => self
                    .alloc_one(conn, backend, touched, pool, owner, *specific, now)
                    .await?
                    .map(Ok),
                Cmd::Release { pool, target, .. } => self
                    .release_one(conn, backend, touched, pool.as_deref(), target)
                    .await?
                    .map(Err),
                _ => continue,
            };
            results.push(res);
        }
        if backend == Backend::Sqlite
            && let Some(file) = self.db.sqlite_file()
        {
            let w = match &mut self.sqlite {
                Some(w) => w,
                None => self
                    .sqlite
                    .insert(SqliteWriter::open(file).map_err(crate::store::IpamStoreError::from)?),
            };
            let deletes: Vec<(&str, u128)> = touched
                .iter()
                .flat_map(|(id, t)| t.deletes.iter().map(move |a| (id.as_str(), *a)))
                .collect();
            let inserts: Vec<&AllocRow> = touched.values().flat_map(|t| t.inserts.iter()).collect();
            let counters: Vec<(&str, store::CounterDelta)> = touched
                .iter()
                .filter_map(|(id, t)| t.counters().map(|d| (id.as_str(), d)))
                .collect();
            if let Err(e) = w.write(&deletes, &inserts, &counters) {
                // Closing the connection rolls back whatever the failed batch left open.
                self.sqlite = None;
                return Err(crate::store::IpamStoreError::from(e).into());
            }
            return Ok(results);
        }
        // On SQLite (here only in memory) the counters are the engine's to write, one statement
        // per changed pool; on Postgres the trigger keeps them.
        let counters = backend == Backend::Sqlite;
        let statements: usize = touched
            .values()
            .map(|t| {
                store::statement_count(t.inserts.len(), t.deletes.len())
                    + usize::from(counters && t.counters().is_some())
            })
            .sum();
        if !in_tx && statements > 1 {
            sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
            in_tx = true;
        }
        // Deletes first: an address released and taken again in one batch is a new row.
        for (id, t) in touched.iter() {
            store::delete_allocations(conn, id, &t.deletes).await?;
        }
        let inserts: Vec<AllocRow> = touched
            .values_mut()
            .flat_map(|t| t.inserts.clone())
            .collect();
        store::insert_allocations(conn, &inserts).await?;
        if counters {
            for (id, t) in touched.iter() {
                if let Some(d) = t.counters() {
                    store::update_counters(conn, id, d).await?;
                }
            }
        }
        if in_tx {
            sqlx::query("COMMIT").execute(&mut *conn).await?;
        }
        Ok(results)
    }

    /// Makes sure the cached state of `id` is current for this batch; on Postgres also locks its
    /// row until the transaction ends.
    pub(super) async fn lock_pool<'a>(
        &'a mut self,
        conn: &mut AnyConnection,
        backend: Backend,
        touched: &mut BTreeMap<String, Touched>,
        id: &str,
    ) -> Result<Option<&'a mut PoolState>, IpamError> {
        if !touched.contains_key(id) {
            let trusted = backend == Backend::Sqlite && self.cache.contains_key(id);
            if !trusted {
                let Some(row) = store::load_pool(conn, backend, id, true).await? else {
                    return Ok(None);
                };
                let fresh = self
                    .cache
                    .get(id)
                    .is_some_and(|c| c.generation == row.generation);
                if !fresh {
                    let generation = row.generation;
                    let state = load_state(conn, row).await?;
                    self.cache
                        .insert(id.to_owned(), Cached { state, generation });
                }
            }
            touched.insert(id.to_owned(), Touched::default());
        }
        Ok(self.cache.get_mut(id).map(|c| &mut c.state))
    }
}

async fn load_state(conn: &mut AnyConnection, row: PoolRow) -> Result<PoolState, IpamError> {
    let allocs = store::pool_allocations(conn, &row.def.id).await?;
    let map = allocs.into_iter().map(|a| (a.addr, a.owner)).collect();
    Ok(PoolState::new(Arc::new(row.def), map, row.cursor))
}

fn is_serialization_failure(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().is_some_and(|c| c == "40001" || c == "40P01"))
}

/// The error each caller of a failed batch gets: store errors are not `Clone`, so by kind.
fn batch_error(e: &IpamError) -> IpamError {
    match e {
        IpamError::Store(crate::store::IpamStoreError::Sql(s)) if weft_store::is_unavailable(s) => {
            IpamError::Store(crate::store::IpamStoreError::Sql(sqlx::Error::PoolTimedOut))
        }
        IpamError::Store(crate::store::IpamStoreError::Sqlite(s))
            if crate::store::sqlite_is_unavailable(s) =>
        {
            IpamError::Store(crate::store::IpamStoreError::Sql(sqlx::Error::PoolTimedOut))
        }
        IpamError::WriterGone => IpamError::WriterGone,
        other => IpamError::Store(crate::store::IpamStoreError::Sql(sqlx::Error::Protocol(
            format!("allocation batch failed: {other}"),
        ))),
    }
}
