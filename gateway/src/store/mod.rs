//! The gateway's store: one set of SQL statements for SQLite and Postgres. Records are kept as
//! JSON of the domain's record types (hosts and events as the API's protobuf, their published
//! form); the revision counter and the event log live here, the tables of each kind of object
//! in the modules below.

use prost::Message as _;
use sqlx::{Any, AnyConnection, Row as _, Transaction};
use weft_proto::gateway::v1 as pb;
use weft_store::{Backend, Db};

pub mod audit;
pub mod hosts;
pub mod join_tokens;
pub mod leases;
pub mod networks;
pub mod operations;
pub mod ports;
pub mod requests;
pub mod sandboxes;
pub mod tokens;

pub static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
pub static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Debug, thiserror::Error)]
pub enum GatewayStoreError {
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    #[error("stored {what} cannot be read: {reason}")]
    Corrupt { what: &'static str, reason: String },
    #[error("{what} cannot be stored: {reason}")]
    Unwritable { what: &'static str, reason: String },
}

pub type Result<T> = std::result::Result<T, GatewayStoreError>;

/// A read transaction whose reads all see one snapshot (REPEATABLE READ on Postgres; a SQLite
/// read transaction is one already), so that a revision and the state it reflects agree.
pub async fn read_snapshot(db: &Db) -> Result<Transaction<'static, Any>> {
    let begin = match db.backend() {
        Backend::Postgres => "BEGIN ISOLATION LEVEL REPEATABLE READ",
        Backend::Sqlite => "BEGIN",
    };
    Ok(db.read().begin_with(begin).await?)
}

/// A write transaction (on SQLite it takes the write lock up front).
pub async fn write_transaction(db: &Db) -> Result<Transaction<'static, Any>> {
    Ok(db.write().begin_with(db.begin_write_sql()).await?)
}

/// Takes the next revision; the row stays locked until the transaction ends.
pub async fn next_revision(conn: &mut AnyConnection) -> Result<u64> {
    next_revisions(conn, 1).await
}

/// Takes `n` (at least 1) revisions at once; returns the first (the others follow it).
pub async fn next_revisions(conn: &mut AnyConnection, n: u64) -> Result<u64> {
    let n = n.max(1);
    let r: i64 = sqlx::query_scalar(
        "UPDATE gateway_revision SET revision = revision + $1 WHERE id = 1 RETURNING revision",
    )
    .bind(i64::try_from(n).unwrap_or(i64::MAX))
    .fetch_one(conn)
    .await?;
    Ok(u64::try_from(r).unwrap_or(0).saturating_sub(n - 1))
}

pub async fn current_revision(conn: &mut AnyConnection) -> Result<u64> {
    let r: i64 = sqlx::query_scalar("SELECT revision FROM gateway_revision WHERE id = 1")
        .fetch_one(conn)
        .await?;
    Ok(u64::try_from(r).unwrap_or(0))
}

pub async fn insert_event(conn: &mut AnyConnection, event: &pb::Event) -> Result<()> {
    insert_events(conn, std::slice::from_ref(event)).await
}

/// The most events one INSERT carries (two parameters each: far under SQLite's and
/// Postgres's limits on parameters per statement).
const EVENTS_PER_INSERT: usize = 256;

/// Inserts `events`, a statement per [`EVENTS_PER_INSERT`] of them (a commit's changes in
/// one round trip to the database, where they fit).
pub async fn insert_events(conn: &mut AnyConnection, events: &[pb::Event]) -> Result<()> {
    for chunk in events.chunks(EVENTS_PER_INSERT) {
        let mut sql = String::from("INSERT INTO gateway_events (revision, payload) VALUES ");
        for i in 0..chunk.len() {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("(${}, ${})", 2 * i + 1, 2 * i + 2));
        }
        // (Only numbered placeholders are added to the text: the values are bound.)
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for event in chunk {
            q = q
                .bind(i64::try_from(event.revision).unwrap_or(i64::MAX))
                .bind(event.encode_to_vec());
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Forgets events older than the newest `keep`.
pub async fn trim_events(conn: &mut AnyConnection, newest: u64, keep: u64) -> Result<()> {
    if newest > keep {
        sqlx::query("DELETE FROM gateway_events WHERE revision <= $1")
            .bind(i64::try_from(newest - keep).unwrap_or(0))
            .execute(conn)
            .await?;
    }
    Ok(())
}

/// Events after `after`, in revision order, at most `limit`.
pub async fn events_after(
    conn: &mut AnyConnection,
    after: u64,
    limit: u32,
) -> Result<Vec<pb::Event>> {
    let rows = sqlx::query(
        "SELECT payload FROM gateway_events WHERE revision > $1 ORDER BY revision LIMIT $2",
    )
    .bind(i64::try_from(after).unwrap_or(i64::MAX))
    .bind(i64::from(limit))
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            let b: Vec<u8> = r.try_get("payload")?;
            pb::Event::decode(b.as_slice()).map_err(|e| GatewayStoreError::Corrupt {
                what: "event",
                reason: e.to_string(),
            })
        })
        .collect()
}

/// The oldest revision still in the log, if any.
pub async fn oldest_event(conn: &mut AnyConnection) -> Result<Option<u64>> {
    let r: Option<i64> = sqlx::query_scalar("SELECT MIN(revision) FROM gateway_events")
        .fetch_one(conn)
        .await?;
    Ok(r.and_then(|r| u64::try_from(r).ok()))
}

/// Records of `table` (`gateway_networks` or `gateway_sandboxes`) whose name is `key`, whose id
/// is `key`, or whose id starts with `key`, in that order of preference: the first kind that
/// matches wins (an exact name beats an id prefix). At most two prefix matches are read; the
/// caller decides what an ambiguous prefix means.
pub(crate) async fn find_by_key(
    conn: &mut AnyConnection,
    table: Table,
    key: &str,
) -> Result<Vec<String>> {
    let t = table.name();
    for column in ["name", "id"] {
        let sql = format!("SELECT record FROM {t} WHERE {column} = $1");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(key)
            .fetch_all(&mut *conn)
            .await?;
        if !rows.is_empty() {
            return Ok(rows
                .iter()
                .map(|r| r.try_get("record"))
                .collect::<std::result::Result<_, _>>()?);
        }
    }
    // Only hex can be an id prefix; anything else would be a LIKE pattern.
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(Vec::new());
    }
    let sql = format!("SELECT record FROM {t} WHERE id LIKE $1 ORDER BY id LIMIT 2");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(format!("{key}%"))
        .fetch_all(&mut *conn)
        .await?;
    Ok(rows
        .iter()
        .map(|r| r.try_get("record"))
        .collect::<std::result::Result<_, _>>()?)
}

/// The tables whose rows are named and looked up by name, id or id prefix.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Table {
    Networks,
    Sandboxes,
}

impl Table {
    fn name(self) -> &'static str {
        match self {
            Self::Networks => "gateway_networks",
            Self::Sandboxes => "gateway_sandboxes",
        }
    }
}

/// A record as its JSON column holds it.
pub(crate) fn encode<T: serde::Serialize>(what: &'static str, record: &T) -> Result<String> {
    serde_json::to_string(record).map_err(|e| GatewayStoreError::Unwritable {
        what,
        reason: e.to_string(),
    })
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(what: &'static str, json: &str) -> Result<T> {
    serde_json::from_str(json).map_err(|e| GatewayStoreError::Corrupt {
        what,
        reason: e.to_string(),
    })
}

#[cfg(test)]
#[cfg(test)]
mod tests {
    #[test]
    fn both_backends_have_the_same_migrations() {
        let v = |m: &sqlx::migrate::Migrator| m.iter().map(|m| m.version).collect::<Vec<_>>();
        assert_eq!(v(&super::SQLITE_MIGRATIONS), v(&super::POSTGRES_MIGRATIONS));
    }
}
