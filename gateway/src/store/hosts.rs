//! Registered hosts.

use prost::Message as _;
use sqlx::{AnyConnection, Row as _};
use weft_proto::gateway::v1 as pb;

use super::{Result, StoreError};

/// A stored host: its registration, whether it is up, and its last heartbeat.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredHost {
    /// As registered; `state` and `last_heartbeat` are not set in it.
    pub host: pb::Host,
    pub up: bool,
    pub last_heartbeat_ms: i64,
}

fn state(up: bool) -> &'static str {
    if up { "up" } else { "down" }
}

/// Inserts or replaces the host `h.host.name`.
pub async fn put(conn: &mut AnyConnection, h: &StoredHost) -> Result<()> {
    sqlx::query(
        "INSERT INTO gateway_hosts (name, record, state, last_heartbeat_ms) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (name) DO UPDATE SET record = excluded.record, state = excluded.state, \
         last_heartbeat_ms = excluded.last_heartbeat_ms",
    )
    .bind(&h.host.name)
    .bind(h.host.encode_to_vec())
    .bind(state(h.up))
    .bind(h.last_heartbeat_ms)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records a heartbeat of an UP host; false when the host is unknown or down (the caller
/// then brings it up with an event).
pub async fn beat(conn: &mut AnyConnection, name: &str, now_ms: i64) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE gateway_hosts SET last_heartbeat_ms = $2 WHERE name = $1 AND state = 'up'",
    )
    .bind(name)
    .bind(now_ms)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Marks `name` down if it is up and its last heartbeat is older than `before_ms`; true if
/// this call did it (one replica wins).
pub async fn mark_down(conn: &mut AnyConnection, name: &str, before_ms: i64) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE gateway_hosts SET state = 'down' WHERE name = $1 AND state = 'up' AND last_heartbeat_ms < $2",
    )
    .bind(name)
    .bind(before_ms)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

fn decode(row: &sqlx::any::AnyRow) -> Result<StoredHost> {
    let bytes: Vec<u8> = row.try_get("record")?;
    let host = pb::Host::decode(bytes.as_slice()).map_err(|e| StoreError::Corrupt {
        what: "host",
        reason: e.to_string(),
    })?;
    Ok(StoredHost {
        host,
        up: row.try_get::<String, _>("state")? == "up",
        last_heartbeat_ms: row.try_get("last_heartbeat_ms")?,
    })
}

pub async fn get(conn: &mut AnyConnection, name: &str) -> Result<Option<StoredHost>> {
    let row =
        sqlx::query("SELECT record, state, last_heartbeat_ms FROM gateway_hosts WHERE name = $1")
            .bind(name)
            .fetch_optional(conn)
            .await?;
    row.as_ref().map(decode).transpose()
}

/// Every host, by name.
pub async fn list(conn: &mut AnyConnection) -> Result<Vec<StoredHost>> {
    let rows =
        sqlx::query("SELECT record, state, last_heartbeat_ms FROM gateway_hosts ORDER BY name")
            .fetch_all(conn)
            .await?;
    rows.iter().map(decode).collect()
}
