//! Pool creation and deletion, each in its own transaction outside the allocation batches.

use sqlx::{AnyConnection, Connection as _};
use weft_store::Backend;

use super::{now_ms, writer::Writer};
use crate::{
    domain::{Family, PoolDef, PoolRequest, SubnetRequest, space::PickError},
    error::IpamError,
    store,
};

/// Postgres advisory lock key that serialises pool creation across replicas.
const POOL_CREATE_LOCK: i64 = 0x7765_6674_7000;

impl Writer {
    pub(super) async fn create_pool(&mut self, req: PoolRequest) -> Result<PoolDef, IpamError> {
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

    pub(super) async fn delete_pool(&mut self, id: &str, force: bool) -> Result<u64, IpamError> {
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
