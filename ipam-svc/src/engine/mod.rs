//! The IPAM engine: pool and address operations over the store.
//!
//! Writes go through one writer task per process. It drains whatever requests are waiting
//! (group commit) and applies them in one transaction: per pool, it locks the pool row (`FOR
//! UPDATE` on Postgres; SQLite's write transaction excludes every other writer), checks that its
//! in-memory [`PoolState`](crate::domain::PoolState) is of the stored generation (reloading the pool's allocations when
//! another replica changed it), decides in memory, writes the rows, bumps the generation and
//! commits. Only then are callers answered, so an acknowledged allocation is durable.
//!
//! The in-memory state is a cache; the database is the authority: the primary key
//! `(pool_id, address)` makes a duplicate impossible whatever any process believes, and a batch
//! that hits a constraint is retried from freshly loaded state.
//!
//! This module holds the handle callers use; `writer` is the group-commit batcher, `ops` the
//! address operations it applies in a batch and `pools` pool creation and deletion.

mod ops;
mod pools;
mod sqlite;
mod writer;

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use tokio::sync::{mpsc, oneshot};
use weft_store::Db;
use writer::Writer;

use crate::{
    domain::{AddressSpaces, PoolDef, PoolRequest, addr::from_u128},
    error::IpamError,
    store,
};

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
        tokio::spawn(Writer::new(db.clone(), spaces.clone()).run(rx));
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
