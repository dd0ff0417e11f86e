//! SQL for pools and allocations. One set of statements serves SQLite and Postgres (through
//! sqlx's `Any` driver); where they differ (row locks) the backend decides.

use std::{collections::BTreeMap, net::IpAddr};

use sqlx::{AnyConnection, Row as _, any::AnyRow};
use weft_store::Backend;

use crate::domain::{
    AddrRange, Family, PoolDef,
    addr::{from_bytes, from_u128, net_bounds, to_bytes},
};

pub static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
pub static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// A stored pool that cannot be read back: the database was changed behind our back.
#[derive(Debug, thiserror::Error)]
#[error("pool {id} has a corrupt {column} column: {reason}")]
pub struct CorruptRow {
    pub id: String,
    pub column: &'static str,
    pub reason: String,
}

/// Errors of this module: the database's, or a row we cannot understand.
#[derive(Debug, thiserror::Error)]
pub enum IpamStoreError {
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    #[error(transparent)]
    Corrupt(#[from] CorruptRow),
    /// From the SQLite allocation writer's own connection.
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
}

pub type Result<T> = std::result::Result<T, IpamStoreError>;

/// A pool row: its definition and allocation bookkeeping.
#[derive(Debug, Clone)]
pub struct PoolRow {
    pub def: PoolDef,
    pub cursor: Option<u128>,
    pub generation: i64,
    pub allocated: i64,
}

const POOL_COLUMNS: &str = "id, address_space, subnet, ip_range, gateway, reserved, labels, \
     created_at_ms, cursor, generation, allocated";

fn corrupt(id: &str, column: &'static str, reason: impl ToString) -> CorruptRow {
    CorruptRow {
        id: id.to_owned(),
        column,
        reason: reason.to_string(),
    }
}

fn pool_from_row(row: &AnyRow) -> Result<PoolRow> {
    let id: String = row.try_get("id")?;
    let subnet: String = row.try_get("subnet")?;
    let subnet: ipnet::IpNet = subnet.parse().map_err(|e| corrupt(&id, "subnet", e))?;
    let ip_range: String = row.try_get("ip_range")?;
    let range = if ip_range.is_empty() {
        None
    } else {
        Some(AddrRange::parse(&ip_range, &subnet).map_err(|e| corrupt(&id, "ip_range", e))?)
    };
    let gateway: String = row.try_get("gateway")?;
    let gateway: IpAddr = gateway.parse().map_err(|e| corrupt(&id, "gateway", e))?;
    let reserved: String = row.try_get("reserved")?;
    let reserved: BTreeMap<String, IpAddr> =
        serde_json::from_str(&reserved).map_err(|e| corrupt(&id, "reserved", e))?;
    let labels: String = row.try_get("labels")?;
    let labels: BTreeMap<String, String> =
        serde_json::from_str(&labels).map_err(|e| corrupt(&id, "labels", e))?;
    let cursor: Option<Vec<u8>> = row.try_get("cursor")?;
    let cursor = match cursor {
        Some(b) => Some(from_bytes(&b).ok_or_else(|| corrupt(&id, "cursor", "not 16 bytes"))?),
        None => None,
    };
    Ok(PoolRow {
        def: PoolDef {
            space: row.try_get("address_space")?,
            subnet,
            range,
            gateway,
            reserved,
            labels,
            created_at_ms: row.try_get("created_at_ms")?,
            id,
        },
        cursor,
        generation: row.try_get("generation")?,
        allocated: row.try_get("allocated")?,
    })
}

/// Reads one pool; with `lock`, holds its row lock until the transaction ends (Postgres; on
/// SQLite the write transaction already excludes every other writer).
pub async fn load_pool(
    conn: &mut AnyConnection,
    backend: Backend,
    id: &str,
    lock: bool,
) -> Result<Option<PoolRow>> {
    let sql = match (lock, backend) {
        (true, Backend::Postgres) => {
            "SELECT id, address_space, subnet, ip_range, gateway, reserved, labels, created_at_ms, \
             cursor, generation, allocated FROM ipam_pools WHERE id = $1 FOR UPDATE"
        }
        _ => {
            "SELECT id, address_space, subnet, ip_range, gateway, reserved, labels, created_at_ms, \
             cursor, generation, allocated FROM ipam_pools WHERE id = $1"
        }
    };
    let row = sqlx::query(sql).bind(id).fetch_optional(conn).await?;
    row.as_ref().map(pool_from_row).transpose()
}

/// A page of pools, optionally of one address space, in id order, after the pool `after`.
pub async fn list_pools(
    conn: &mut AnyConnection,
    space: Option<&str>,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<PoolRow>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {POOL_COLUMNS} FROM ipam_pools \
         WHERE ($1 = '' OR address_space = $1) AND ($2 = '' OR id > $2) \
         ORDER BY id LIMIT $3"
    )))
    .bind(space.unwrap_or_default())
    .bind(after.unwrap_or_default())
    .bind(i64::from(limit))
    .fetch_all(conn)
    .await?;
    rows.iter().map(pool_from_row).collect()
}

/// Every pool, in id order (the consistency check reads them all).
pub async fn all_pools(conn: &mut AnyConnection) -> Result<Vec<PoolRow>> {
    list_pools(conn, None, None, u32::MAX).await
}

/// The bounds of the pools of one space and family: `(id, subnet, first, last)`.
pub async fn space_bounds(
    conn: &mut AnyConnection,
    space: &str,
    family: Family,
) -> Result<Vec<(String, String, u128, u128)>> {
    let rows = sqlx::query(
        "SELECT id, subnet, subnet_start, subnet_end FROM ipam_pools \
         WHERE address_space = $1 AND family = $2",
    )
    .bind(space)
    .bind(family.to_i64())
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            let id: String = r.try_get("id")?;
            let s: Vec<u8> = r.try_get("subnet_start")?;
            let e: Vec<u8> = r.try_get("subnet_end")?;
            let s = from_bytes(&s).ok_or_else(|| corrupt(&id, "subnet_start", "not 16 bytes"))?;
            let e = from_bytes(&e).ok_or_else(|| corrupt(&id, "subnet_end", "not 16 bytes"))?;
            Ok((id, r.try_get("subnet")?, s, e))
        })
        .collect()
}

pub async fn insert_pool(conn: &mut AnyConnection, def: &PoolDef) -> Result<()> {
    let (s, e) = net_bounds(&def.subnet);
    let reserved = serde_json::to_string(&def.reserved).unwrap_or_else(|_| "{}".into());
    let labels = serde_json::to_string(&def.labels).unwrap_or_else(|_| "{}".into());
    sqlx::query(
        "INSERT INTO ipam_pools (id, address_space, family, subnet, subnet_start, subnet_end, \
         ip_range, gateway, reserved, labels, created_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&def.id)
    .bind(&def.space)
    .bind(def.family().to_i64())
    .bind(def.subnet.to_string())
    .bind(to_bytes(s))
    .bind(to_bytes(e))
    .bind(
        def.range
            .as_ref()
            .map(|r| r.text.clone())
            .unwrap_or_default(),
    )
    .bind(def.gateway.to_string())
    .bind(reserved)
    .bind(labels)
    .bind(def.created_at_ms)
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes a pool and its allocations; returns how many allocations went with it.
pub async fn delete_pool(conn: &mut AnyConnection, id: &str) -> Result<u64> {
    let n = sqlx::query("DELETE FROM ipam_allocations WHERE pool_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    sqlx::query("DELETE FROM ipam_pools WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(n)
}

/// One stored allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocRow {
    pub pool_id: String,
    pub addr: u128,
    pub owner: String,
    /// Handed out by next-free (moves the pool's cursor) rather than asked for.
    pub dynamic: bool,
    pub created_at_ms: i64,
}

fn alloc_from_row(row: &AnyRow) -> Result<AllocRow> {
    let pool_id: String = row.try_get("pool_id")?;
    let addr: Vec<u8> = row.try_get("address")?;
    Ok(AllocRow {
        addr: from_bytes(&addr).ok_or_else(|| corrupt(&pool_id, "address", "not 16 bytes"))?,
        owner: row.try_get("owner")?,
        dynamic: row.try_get::<i64, _>("dynamic")? != 0,
        created_at_ms: row.try_get("created_at_ms")?,
        pool_id,
    })
}

/// Every allocation of one pool, in address order.
pub async fn pool_allocations(conn: &mut AnyConnection, pool_id: &str) -> Result<Vec<AllocRow>> {
    let rows = sqlx::query(
        "SELECT pool_id, address, owner, dynamic, created_at_ms FROM ipam_allocations \
         WHERE pool_id = $1 ORDER BY address",
    )
    .bind(pool_id)
    .fetch_all(conn)
    .await?;
    rows.iter().map(alloc_from_row).collect()
}

/// The pools in which `owner` holds an address.
pub async fn owner_pools(conn: &mut AnyConnection, owner: &str) -> Result<Vec<String>> {
    let rows = sqlx::query("SELECT pool_id FROM ipam_allocations WHERE owner = $1")
        .bind(owner)
        .fetch_all(conn)
        .await?;
    Ok(rows
        .iter()
        .map(|r| r.try_get("pool_id"))
        .collect::<std::result::Result<_, _>>()?)
}

/// A page of allocations in (pool, address) order, after `after` when given.
pub async fn list_allocations(
    conn: &mut AnyConnection,
    pool_id: Option<&str>,
    owner: Option<&str>,
    after: Option<(&str, u128)>,
    limit: u32,
) -> Result<Vec<AllocRow>> {
    let (ap, aa) = after.map_or((String::new(), Vec::new()), |(p, a)| {
        (p.to_owned(), to_bytes(a))
    });
    let rows = sqlx::query(
        "SELECT pool_id, address, owner, dynamic, created_at_ms FROM ipam_allocations \
         WHERE ($1 = '' OR pool_id = $1) AND ($2 = '' OR owner = $2) \
           AND ($3 = '' OR pool_id > $3 OR (pool_id = $3 AND address > $4)) \
         ORDER BY pool_id, address LIMIT $5",
    )
    .bind(pool_id.unwrap_or_default())
    .bind(owner.unwrap_or_default())
    .bind(ap)
    .bind(aa)
    .bind(i64::from(limit))
    .fetch_all(conn)
    .await?;
    rows.iter().map(alloc_from_row).collect()
}

/// How many allocations of a pool lie in `lo..=hi`.
pub async fn count_in_range(
    conn: &mut AnyConnection,
    pool_id: &str,
    lo: u128,
    hi: u128,
) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT COUNT(*) FROM ipam_allocations WHERE pool_id = $1 AND address >= $2 AND address <= $3",
    )
    .bind(pool_id)
    .bind(to_bytes(lo))
    .bind(to_bytes(hi))
    .fetch_one(conn)
    .await?)
}

/// Inserts allocations with as few statements as the parameter limits allow. On Postgres the
/// trigger keeps each pool's counter, generation and cursor in step, in the same statement; on
/// SQLite the caller writes them ([`update_counters`]) in the same transaction.
pub async fn insert_allocations(conn: &mut AnyConnection, rows: &[AllocRow]) -> Result<()> {
    // 5 parameters a row; SQLite allows 32766 parameters a statement, Postgres 65535.
    for chunk in rows.chunks(500) {
        let mut sql = String::from(
            "INSERT INTO ipam_allocations (pool_id, address, owner, dynamic, created_at_ms) VALUES ",
        );
        for i in 0..chunk.len() {
            let b = i * 5;
            if i > 0 {
                sql.push(',');
            }
            sql.push_str(&format!(
                "(${}, ${}, ${}, ${}, ${})",
                b + 1,
                b + 2,
                b + 3,
                b + 4,
                b + 5
            ));
        }
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for r in chunk {
            q = q
                .bind(r.pool_id.clone())
                .bind(to_bytes(r.addr))
                .bind(r.owner.clone())
                .bind(i64::from(r.dynamic))
                .bind(r.created_at_ms);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Deletes allocations of one pool by address.
pub async fn delete_allocations(
    conn: &mut AnyConnection,
    pool_id: &str,
    addrs: &[u128],
) -> Result<()> {
    for chunk in addrs.chunks(500) {
        let list = (0..chunk.len())
            .map(|i| format!("${}", i + 2))
            .collect::<Vec<_>>()
            .join(", ");
        let sql =
            format!("DELETE FROM ipam_allocations WHERE pool_id = $1 AND address IN ({list})");
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(pool_id);
        for a in chunk {
            q = q.bind(to_bytes(*a));
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// What one batch changes in one pool's counters. On SQLite the engine writes it, once per pool
/// per batch, in the batch's transaction (migration 0002 dropped the per-row triggers); on
/// Postgres the trigger still keeps the counters and this is not written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterDelta {
    /// Rows inserted minus rows deleted.
    pub allocated: i64,
    /// Rows inserted plus rows deleted: the generation moves once per row, as with the triggers.
    pub generation: i64,
    /// The address of the last row inserted by next-free, which becomes the pool's cursor.
    pub cursor: Option<u128>,
}

/// Applies a batch's [`CounterDelta`] to a pool row (the SQLite store without a file of its own,
/// i.e. in memory; the file-backed one writes through the engine's own connection).
pub async fn update_counters(
    conn: &mut AnyConnection,
    pool_id: &str,
    d: CounterDelta,
) -> Result<()> {
    sqlx::query(
        "UPDATE ipam_pools SET allocated = allocated + $2, generation = generation + $3, \
         cursor = coalesce($4, cursor) WHERE id = $1",
    )
    .bind(pool_id)
    .bind(d.allocated)
    .bind(d.generation)
    .bind(d.cursor.map(to_bytes))
    .execute(conn)
    .await?;
    Ok(())
}

/// Statements `insert_allocations` and `delete_allocations` will run for these rows.
pub fn statement_count(inserts: usize, deletes: usize) -> usize {
    inserts.div_ceil(500) + deletes.div_ceil(500)
}

/// The address of an allocation row, in its pool's family.
pub fn row_ip(def: &PoolDef, addr: u128) -> IpAddr {
    from_u128(def.family(), addr)
}

/// Pairs of (pool, address) held more than once. The primary key forbids them; this asks
/// anyway, for the consistency check.
pub async fn duplicate_addresses(
    conn: &mut AnyConnection,
) -> Result<Vec<(String, u128, Vec<String>)>> {
    let rows = sqlx::query(
        "SELECT a.pool_id, a.address, a.owner FROM ipam_allocations a JOIN \
         (SELECT pool_id, address FROM ipam_allocations GROUP BY pool_id, address HAVING COUNT(*) > 1) d \
         ON a.pool_id = d.pool_id AND a.address = d.address ORDER BY a.pool_id, a.address",
    )
    .fetch_all(conn)
    .await?;
    let mut out: Vec<(String, u128, Vec<String>)> = Vec::new();
    for r in &rows {
        let a = alloc_from_row_partial(r)?;
        match out.last_mut() {
            Some((p, addr, owners)) if *p == a.0 && *addr == a.1 => owners.push(a.2),
            _ => out.push((a.0, a.1, vec![a.2])),
        }
    }
    Ok(out)
}

fn alloc_from_row_partial(row: &AnyRow) -> Result<(String, u128, String)> {
    let pool_id: String = row.try_get("pool_id")?;
    let addr: Vec<u8> = row.try_get("address")?;
    let addr = from_bytes(&addr).ok_or_else(|| corrupt(&pool_id, "address", "not 16 bytes"))?;
    Ok((pool_id, addr, row.try_get("owner")?))
}

/// The database is locked or cannot be opened (callers get `UNAVAILABLE`, as for sqlx).
pub(crate) fn sqlite_is_unavailable(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode;
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if matches!(f.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked | ErrorCode::CannotOpen | ErrorCode::SystemIoFailure))
}

#[cfg(test)]
mod tests {
    #[test]
    fn both_backends_have_the_same_migrations() {
        let versions = |m: &sqlx::migrate::Migrator| {
            m.iter()
                .map(|m| (m.version, m.description.to_string()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            versions(&super::SQLITE_MIGRATIONS),
            versions(&super::POSTGRES_MIGRATIONS)
        );
        assert!(!versions(&super::SQLITE_MIGRATIONS).is_empty());
    }
}
