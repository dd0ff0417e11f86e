//! The IPAM engine: pool and address operations over the store.
//!
//! Writes go through one writer task per process. It drains whatever requests are waiting
//! (group commit) and applies them in one transaction: per pool, it locks the pool row (`FOR
//! UPDATE` on Postgres; SQLite's write transaction excludes every other writer), checks that its
//! in-memory [`PoolState`] is of the stored generation (reloading the pool's allocations when
//! another replica changed it), decides in memory, writes the rows, bumps the generation and
//! commits. Only then are callers answered, so an acknowledged allocation is durable.
//!
//! The in-memory state is a cache; the database is the authority: the primary key
//! `(pool_id, address)` makes a duplicate impossible whatever any process believes, and a batch
//! that hits a constraint is retried from freshly loaded state.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use sqlx::{Any, AnyConnection, Connection as _, pool::PoolConnection};
use tokio::sync::{mpsc, oneshot};
use weft_store::{Backend, Db};

use crate::{
    domain::{
        AddressSpaces, AllocError, Family, Outcome, PoolDef, PoolRequest, PoolState, SubnetRequest,
        addr::{from_u128, to_u128},
        space::PickError,
    },
    error::IpamError,
    store::{self, AllocRow, PoolRow},
};

/// Requests the writer takes at most in one transaction.
const MAX_BATCH: usize = 512;
/// Postgres advisory lock key that serialises pool creation across replicas.
const POOL_CREATE_LOCK: i64 = 0x7765_6674_7000;

/// An allocation as returned to callers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    pub pool_id: String,
    pub address: IpAddr,
    pub prefix_len: u8,
    pub owner: String,
    pub created_at_ms: i64,
    pub gateway: IpAddr,
}

impl Allocation {
    fn new(def: &PoolDef, addr: u128, owner: String, created_at_ms: i64) -> Self {
        Self {
            pool_id: def.id.clone(),
            address: from_u128(def.family(), addr),
            prefix_len: def.subnet.prefix_len(),
            owner,
            created_at_ms,
            gateway: def.gateway,
        }
    }
}

/// A pool with its usage.
#[derive(Debug, Clone)]
pub struct PoolInfo {
    pub def: PoolDef,
    pub size: u128,
    pub allocated: u64,
    pub free: u128,
}

/// What to release.
#[derive(Debug, Clone)]
pub enum ReleaseTarget {
    Address(IpAddr),
    Owner(String),
}

type Reply<T> = oneshot::Sender<Result<T, IpamError>>;

enum Cmd {
    Alloc {
        pool: String,
        owner: String,
        specific: Option<IpAddr>,
        reply: Reply<Allocation>,
    },
    Release {
        pool: Option<String>,
        target: ReleaseTarget,
        reply: Reply<Vec<Allocation>>,
    },
    CreatePool {
        req: PoolRequest,
        reply: Reply<PoolDef>,
    },
    DeletePool {
        id: String,
        force: bool,
        reply: Reply<u64>,
    },
}

/// Handle to the engine; cheap to clone.
#[derive(Debug, Clone)]
pub struct Ipam {
    db: Db,
    spaces: Arc<AddressSpaces>,
    writer: mpsc::Sender<Cmd>,
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cmd")
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Ipam {
    /// Starts the writer task on `db` (already migrated).
    pub fn start(db: Db, spaces: AddressSpaces) -> Self {
        let (tx, rx) = mpsc::channel(4096);
        let spaces = Arc::new(spaces);
        let writer = Writer {
            db: db.clone(),
            spaces: spaces.clone(),
            cache: HashMap::new(),
            conn: None,
        };
        tokio::spawn(writer.run(rx));
        Self {
            db,
            spaces,
            writer: tx,
        }
    }

    pub fn spaces(&self) -> &AddressSpaces {
        &self.spaces
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Cmd) -> Result<T, IpamError> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(make(tx))
            .await
            .map_err(|_| IpamError::WriterGone)?;
        rx.await.map_err(|_| IpamError::WriterGone)?
    }

    pub async fn request_pool(&self, req: PoolRequest) -> Result<PoolInfo, IpamError> {
        let def = self.call(|reply| Cmd::CreatePool { req, reply }).await?;
        self.info_of(def, None).await
    }

    pub async fn release_pool(&self, id: String, force: bool) -> Result<u64, IpamError> {
        self.call(|reply| Cmd::DeletePool { id, force, reply })
            .await
    }

    pub async fn request_address(
        &self,
        pool: String,
        owner: String,
        specific: Option<IpAddr>,
    ) -> Result<Allocation, IpamError> {
        self.call(|reply| Cmd::Alloc {
            pool,
            owner,
            specific,
            reply,
        })
        .await
    }

    pub async fn release(
        &self,
        pool: Option<String>,
        target: ReleaseTarget,
    ) -> Result<Vec<Allocation>, IpamError> {
        self.call(|reply| Cmd::Release {
            pool,
            target,
            reply,
        })
        .await
    }

    async fn info_of(&self, def: PoolDef, allocated: Option<i64>) -> Result<PoolInfo, IpamError> {
        let mut conn = self.db.read().acquire().await?;
        let size = def.capacity();
        let in_range = match def.dynamic_bounds() {
            Some((lo, hi)) => store::count_in_range(&mut conn, &def.id, lo, hi).await?,
            None => 0,
        };
        let allocated = match allocated {
            Some(a) => a,
            None => store::load_pool(&mut conn, self.db.backend(), &def.id, false)
                .await?
                .map_or(0, |r| r.allocated),
        };
        Ok(PoolInfo {
            size,
            allocated: u64::try_from(allocated).unwrap_or(0),
            free: size.saturating_sub(u128::try_from(in_range).unwrap_or(0)),
            def,
        })
    }

    pub async fn get_pool(&self, id: &str) -> Result<PoolInfo, IpamError> {
        let row = {
            let mut conn = self.db.read().acquire().await?;
            store::load_pool(&mut conn, self.db.backend(), id, false).await?
        };
        let row = row.ok_or_else(|| IpamError::PoolNotFound(id.to_owned()))?;
        self.info_of(row.def, Some(row.allocated)).await
    }

    /// A page of pools in id order, with the id of the last one when there may be more.
    pub async fn list_pools(
        &self,
        space: Option<&str>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<PoolInfo>, Option<String>), IpamError> {
        let rows = {
            let mut conn = self.db.read().acquire().await?;
            store::list_pools(&mut conn, space, after, limit).await?
        };
        let next = (rows.len() == limit as usize)
            .then(|| rows.last().map(|r| r.def.id.clone()))
            .flatten();
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            out.push(self.info_of(r.def, Some(r.allocated)).await?);
        }
        Ok((out, next))
    }

    /// A page of allocations, with the token of the next page.
    pub async fn list_allocations(
        &self,
        pool: Option<&str>,
        owner: Option<&str>,
        after: Option<(&str, u128)>,
        limit: u32,
    ) -> Result<(Vec<Allocation>, Option<(String, u128)>), IpamError> {
        let mut conn = self.db.read().acquire().await?;
        let rows = store::list_allocations(&mut conn, pool, owner, after, limit).await?;
        let mut defs: HashMap<String, PoolDef> = HashMap::new();
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            if !defs.contains_key(&r.pool_id) {
                let Some(p) =
                    store::load_pool(&mut conn, self.db.backend(), &r.pool_id, false).await?
                else {
                    continue;
                };
                defs.insert(r.pool_id.clone(), p.def);
            }
            if let Some(def) = defs.get(&r.pool_id) {
                out.push(Allocation::new(
                    def,
                    r.addr,
                    r.owner.clone(),
                    r.created_at_ms,
                ));
            }
        }
        let next = (rows.len() == limit as usize)
            .then(|| rows.last().map(|r| (r.pool_id.clone(), r.addr)))
            .flatten();
        Ok((out, next))
    }
}

/// A pool's state as this process knows it, and the stored generation it reflects.
struct Cached {
    state: PoolState,
    generation: i64,
}

/// What a batch changed in one pool.
#[derive(Default)]
struct Touched {
    inserts: Vec<AllocRow>,
    deletes: Vec<u128>,
}

struct Writer {
    db: Db,
    spaces: Arc<AddressSpaces>,
    cache: HashMap<String, Cached>,
    /// The writer's connection, kept between batches; dropped (and closed) after any error so
    /// that no half-done transaction survives.
    conn: Option<PoolConnection<Any>>,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Cmd>) {
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
                    // Let the tasks that are ready to send (other connections' requests) run
                    // once, so that concurrent requests share a commit.
                    tokio::task::yield_now().await;
                    let mut batch = vec![first];
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
                    self.run_batch(batch).await;
                }
            }
        }
    }

    async fn take_conn(&mut self) -> Result<PoolConnection<Any>, IpamError> {
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
                    // The triggers bumped the generation once per row written.
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
                    let retry = matches!(&e, IpamError::Store(crate::store::IpamStoreError::Sql(s))
                        if weft_store::is_unique_violation(s) || is_serialization_failure(s));
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
        let statements: usize = touched
            .values()
            .map(|t| store::statement_count(t.inserts.len(), t.deletes.len()))
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
        if in_tx {
            sqlx::query("COMMIT").execute(&mut *conn).await?;
        }
        Ok(results)
    }

    /// Makes sure the cached state of `id` is current for this batch; on Postgres also locks its
    /// row until the transaction ends.
    async fn lock_pool<'a>(
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

    #[allow(clippy::too_many_arguments)]
    async fn alloc_one(
        &mut self,
        conn: &mut AnyConnection,
        backend: Backend,
        touched: &mut BTreeMap<String, Touched>,
        pool: &str,
        owner: &str,
        specific: Option<IpAddr>,
        now: i64,
    ) -> Result<Result<Allocation, IpamError>, IpamError> {
        let Some(state) = self.lock_pool(conn, backend, touched, pool).await? else {
            return Ok(Err(IpamError::PoolNotFound(pool.to_owned())));
        };
        let def = state.def().clone();
        if let Some(ip) = specific
            && Family::of(ip) != def.family()
        {
            return Ok(Err(IpamError::invalid(
                "address",
                ip.to_string(),
                format!(
                    "not an {} address (pool {} is {})",
                    def.family().name(),
                    def.id,
                    def.subnet
                ),
            )));
        }
        let res = match state.allocate(owner, specific.map(to_u128)) {
            Ok(Outcome::New(a)) => {
                touched
                    .entry(pool.to_owned())
                    .or_default()
                    .inserts
                    .push(AllocRow {
                        pool_id: pool.to_owned(),
                        addr: a,
                        owner: owner.to_owned(),
                        dynamic: specific.is_none(),
                        created_at_ms: now,
                    });
                Ok(Allocation::new(&def, a, owner.to_owned(), now))
            }
            Ok(Outcome::Existing(a)) => {
                let created = touched.get(pool).and_then(|t| {
                    t.inserts
                        .iter()
                        .find(|r| r.addr == a)
                        .map(|r| r.created_at_ms)
                });
                let created = match created {
                    Some(c) => c,
                    None => existing_created_at(conn, pool, a).await?,
                };
                Ok(Allocation::new(&def, a, owner.to_owned(), created))
            }
            Err(AllocError::Exhausted) => Err(IpamError::Exhausted {
                pool: pool.to_owned(),
                subnet: def.subnet.to_string(),
            }),
            Err(AllocError::Unusable(a)) => {
                let ip = from_u128(def.family(), a);
                let reason = if def.subnet.contains(&ip) {
                    if to_u128(def.subnet.network()) == a {
                        "is the network address".to_owned()
                    } else {
                        "is the broadcast address".to_owned()
                    }
                } else {
                    format!("not inside subnet {}", def.subnet)
                };
                Err(IpamError::invalid("address", ip.to_string(), reason))
            }
            Err(AllocError::Taken { addr, holder }) => Err(IpamError::AddressTaken {
                pool: pool.to_owned(),
                addr: from_u128(def.family(), addr),
                holder,
            }),
            Err(AllocError::OwnerHoldsOther { addr }) => Err(IpamError::OwnerHoldsOther {
                pool: pool.to_owned(),
                owner: owner.to_owned(),
                addr: from_u128(def.family(), addr),
            }),
        };
        Ok(res)
    }

    async fn release_one(
        &mut self,
        conn: &mut AnyConnection,
        backend: Backend,
        touched: &mut BTreeMap<String, Touched>,
        pool: Option<&str>,
        target: &ReleaseTarget,
    ) -> Result<Result<Vec<Allocation>, IpamError>, IpamError> {
        let pools: Vec<String> = match (pool, target) {
            (Some(p), _) => vec![p.to_owned()],
            (None, ReleaseTarget::Owner(owner)) => {
                let mut ps = store::owner_pools(conn, owner).await?;
                // Allocations made earlier in this batch are not in the table yet.
                for (id, t) in touched.iter() {
                    if t.inserts.iter().any(|r| &r.owner == owner) && !ps.contains(id) {
                        ps.push(id.clone());
                    }
                }
                ps
            }
            (None, ReleaseTarget::Address(_)) => {
                return Ok(Err(IpamError::invalid(
                    "pool_id",
                    "",
                    "required when releasing by address",
                )));
            }
        };
        let mut released = Vec::new();
        for id in pools {
            let Some(state) = self.lock_pool(conn, backend, touched, &id).await? else {
                if pool.is_some() {
                    return Ok(Err(IpamError::PoolNotFound(id)));
                }
                continue;
            };
            let def = state.def().clone();
            let addr = match target {
                ReleaseTarget::Address(ip) => {
                    if Family::of(*ip) != def.family() {
                        return Ok(Err(IpamError::invalid(
                            "address",
                            ip.to_string(),
                            format!("not an {} address", def.family().name()),
                        )));
                    }
                    let a = to_u128(*ip);
                    match state.release_addr(a) {
                        Some(owner) => Some((a, owner)),
                        None => {
                            return Ok(Err(IpamError::NotAllocated {
                                pool: id,
                                addr: *ip,
                            }));
                        }
                    }
                }
                ReleaseTarget::Owner(owner) => {
                    state.release_owner(owner).map(|a| (a, owner.clone()))
                }
            };
            if let Some((a, owner)) = addr {
                let t = touched.entry(id.clone()).or_default();
                if let Some(i) = t.inserts.iter().position(|r| r.addr == a) {
                    // Allocated earlier in this batch: never written, so nothing to delete.
                    t.inserts.remove(i);
                } else {
                    t.deletes.push(a);
                }
                released.push(Allocation::new(&def, a, owner, 0));
            }
        }
        Ok(Ok(released))
    }

    async fn create_pool(&mut self, req: PoolRequest) -> Result<PoolDef, IpamError> {
        let mut conn = self.take_conn().await?;
        let res = self.create_pool_on(&mut conn, req).await;
        // The transaction is over (committed, or rolled back when it was dropped).
        self.conn = Some(conn);
        res
    }

    async fn create_pool_on(
        &mut self,
        conn: &mut AnyConnection,
        req: PoolRequest,
    ) -> Result<PoolDef, IpamError> {
        let backend = self.db.backend();
        let mut tx = conn.begin_with(self.db.begin_write_sql()).await?;
        if backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(POOL_CREATE_LOCK)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(id) = &req.id
            && let Some(existing) = store::load_pool(&mut tx, backend, id, false).await?
        {
            return if existing.def.matches_request(&req) {
                Ok(existing.def)
            } else {
                Err(IpamError::PoolExists {
                    id: id.clone(),
                    subnet: existing.def.subnet.to_string(),
                })
            };
        }
        let family = match &req.subnet {
            SubnetRequest::Explicit(net) => Family::of(net.addr()),
            SubnetRequest::Any { family, .. } => *family,
        };
        let taken = store::space_bounds(&mut tx, &req.space, family).await?;
        let subnet = match &req.subnet {
            SubnetRequest::Explicit(net) => {
                let (lo, hi) = crate::domain::addr::net_bounds(net);
                if let Some((other, other_subnet, _, _)) =
                    taken.iter().find(|(_, _, s, e)| *s <= hi && lo <= *e)
                {
                    return Err(IpamError::Overlap {
                        subnet: net.to_string(),
                        other: other.clone(),
                        other_subnet: other_subnet.clone(),
                        space: req.space.clone(),
                    });
                }
                *net
            }
            SubnetRequest::Any { family, prefix_len } => {
                let bounds: Vec<(u128, u128)> = taken.iter().map(|(_, _, s, e)| (*s, *e)).collect();
                self.spaces
                    .pick(&req.space, *family, *prefix_len, &bounds)
                    .map_err(|e| match e {
                        PickError::NoPoolFits { family, prefix_len } => IpamError::invalid(
                            "subnet",
                            format!("{}/{}", if family == Family::V4 { "0.0.0.0" } else { "::" }, prefix_len.unwrap_or(0)),
                            format!("no default pool of address space {:?} can hold a subnet of this size", req.space),
                        ),
                        PickError::Exhausted { family, prefix_len } => IpamError::NoFreeSubnet {
                            space: req.space.clone(),
                            family,
                            prefix_len,
                        },
                    })?
            }
        };
        let id = req
            .id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        let def = PoolDef::new(id, subnet, &req, now_ms()).map_err(|reason| {
            IpamError::invalid("ip_range", req.ip_range.clone().unwrap_or_default(), reason)
        })?;
        if req.validate_only {
            tx.rollback().await?;
            return Ok(def);
        }
        store::insert_pool(&mut tx, &def).await?;
        tx.commit().await?;
        tracing::info!(pool = %def.id, subnet = %def.subnet, space = %def.space, "pool created");
        Ok(def)
    }

    async fn delete_pool(&mut self, id: &str, force: bool) -> Result<u64, IpamError> {
        let mut conn = self.take_conn().await?;
        let res = self.delete_pool_on(&mut conn, id, force).await;
        self.conn = Some(conn);
        res
    }

    async fn delete_pool_on(
        &mut self,
        conn: &mut AnyConnection,
        id: &str,
        force: bool,
    ) -> Result<u64, IpamError> {
        let backend = self.db.backend();
        let mut tx = conn.begin_with(self.db.begin_write_sql()).await?;
        let Some(row) = store::load_pool(&mut tx, backend, id, true).await? else {
            return Err(IpamError::PoolNotFound(id.to_owned()));
        };
        let count: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM ipam_allocations WHERE pool_id = $1")
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
        if count > 0 && !force {
            return Err(IpamError::PoolInUse {
                pool: id.to_owned(),
                count: u64::try_from(count).unwrap_or(0),
            });
        }
        let n = store::delete_pool(&mut tx, id).await?;
        tx.commit().await?;
        tracing::info!(pool = %id, subnet = %row.def.subnet, released = n, "pool released");
        Ok(n)
    }
}

async fn load_state(conn: &mut AnyConnection, row: PoolRow) -> Result<PoolState, IpamError> {
    let allocs = store::pool_allocations(conn, &row.def.id).await?;
    let map = allocs.into_iter().map(|a| (a.addr, a.owner)).collect();
    Ok(PoolState::new(Arc::new(row.def), map, row.cursor))
}

async fn existing_created_at(
    conn: &mut AnyConnection,
    pool: &str,
    a: u128,
) -> Result<i64, IpamError> {
    let c: Option<i64> = sqlx::query_scalar(
        "SELECT created_at_ms FROM ipam_allocations WHERE pool_id = $1 AND address = $2",
    )
    .bind(pool)
    .bind(crate::domain::addr::to_bytes(a))
    .fetch_optional(&mut *conn)
    .await?;
    Ok(c.unwrap_or(0))
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
        IpamError::WriterGone => IpamError::WriterGone,
        other => IpamError::Store(crate::store::IpamStoreError::Sql(sqlx::Error::Protocol(
            format!("allocation batch failed: {other}"),
        ))),
    }
}
