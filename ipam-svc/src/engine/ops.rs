//! The address operations a batch applies to the in-memory pool states: allocate and release.
//! They decide in memory and record the rows to write; the batcher writes and commits.

use std::{collections::BTreeMap, net::IpAddr};

use sqlx::AnyConnection;
use weft_store::Backend;

use super::{
    Allocation, ReleaseTarget,
    writer::{Touched, Writer},
};
use crate::{
    domain::{
        AllocError, Family, Outcome, PoolDef,
        addr::{from_u128, to_u128},
    },
    error::IpamError,
    store::{self, AllocRow},
};

impl Writer {
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn alloc_one(
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
                // `lock_pool` entered the pool in `touched`; no new key to allocate per call.
                let t = match touched.get_mut(pool) {
                    Some(t) => t,
                    None => touched.entry(pool.to_owned()).or_default(),
                };
                t.inserts.push(AllocRow {
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
            Err(e) => Err(alloc_error(&def, pool, owner, e)),
        };
        Ok(res)
    }

    pub(super) async fn release_one(
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

/// The caller's error for an allocation the pool state refused.
fn alloc_error(def: &PoolDef, pool: &str, owner: &str, e: AllocError) -> IpamError {
    match e {
        AllocError::Exhausted => IpamError::Exhausted {
            pool: pool.to_owned(),
            subnet: def.subnet.to_string(),
        },
        AllocError::Unusable(a) => {
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
            IpamError::invalid("address", ip.to_string(), reason)
        }
        AllocError::Taken { addr, holder } => IpamError::AddressTaken {
            pool: pool.to_owned(),
            addr: from_u128(def.family(), addr),
            holder,
        },
        AllocError::OwnerHoldsOther { addr } => IpamError::OwnerHoldsOther {
            pool: pool.to_owned(),
            owner: owner.to_owned(),
            addr: from_u128(def.family(), addr),
        },
    }
}
