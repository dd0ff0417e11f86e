//! SQL for networks, the event log and applied request ids; one set of statements for SQLite and
//! Postgres.

use prost::Message as _;
use sqlx::{AnyConnection, Row as _};
use weft_proto::gateway::v1 as pb;

use crate::network::NetworkRecord;

pub static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
pub static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    #[error("stored {what} cannot be read: {reason}")]
    Corrupt { what: &'static str, reason: String },
}

pub type Result<T> = std::result::Result<T, StoreError>;

fn decode_record(json: &str) -> Result<NetworkRecord> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt {
        what: "network",
        reason: e.to_string(),
    })
}

/// Takes the next revision; the row stays locked until the transaction ends.
pub async fn next_revision(conn: &mut AnyConnection) -> Result<u64> {
    let r: i64 = sqlx::query_scalar(
        "UPDATE gateway_revision SET revision = revision + 1 WHERE id = 1 RETURNING revision",
    )
    .fetch_one(conn)
    .await?;
    Ok(u64::try_from(r).unwrap_or(0))
}

pub async fn current_revision(conn: &mut AnyConnection) -> Result<u64> {
    let r: i64 = sqlx::query_scalar("SELECT revision FROM gateway_revision WHERE id = 1")
        .fetch_one(conn)
        .await?;
    Ok(u64::try_from(r).unwrap_or(0))
}

pub async fn insert_event(conn: &mut AnyConnection, event: &pb::Event) -> Result<()> {
    sqlx::query("INSERT INTO gateway_events (revision, payload) VALUES ($1, $2)")
        .bind(i64::try_from(event.revision).unwrap_or(i64::MAX))
        .bind(event.encode_to_vec())
        .execute(conn)
        .await?;
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
            pb::Event::decode(b.as_slice()).map_err(|e| StoreError::Corrupt {
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

pub async fn insert_network(conn: &mut AnyConnection, rec: &NetworkRecord) -> Result<()> {
    sqlx::query(
        "INSERT INTO gateway_networks (id, name, driver, predefined, record, created_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&rec.id)
    .bind(&rec.name)
    .bind(&rec.driver)
    .bind(i64::from(rec.predefined))
    .bind(serde_json::to_string(rec).unwrap_or_default())
    .bind(rec.created_at_ms)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn update_network(conn: &mut AnyConnection, rec: &NetworkRecord) -> Result<()> {
    sqlx::query("UPDATE gateway_networks SET record = $2 WHERE id = $1")
        .bind(&rec.id)
        .bind(serde_json::to_string(rec).unwrap_or_default())
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn delete_network(conn: &mut AnyConnection, id: &str) -> Result<()> {
    sqlx::query("DELETE FROM gateway_networks WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Records of `table` (`gateway_networks` or `gateway_sandboxes`) whose name is `key`, whose id
/// is `key`, or whose id starts with `key`, in that order of preference: the first kind that
/// matches wins (an exact name beats an id prefix). At most two prefix matches are read; the
/// caller decides what an ambiguous prefix means.
async fn find_by_key(conn: &mut AnyConnection, table: Table, key: &str) -> Result<Vec<String>> {
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
enum Table {
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

/// Networks named by `key` (see [`find_by_key`]).
pub async fn find_networks(conn: &mut AnyConnection, key: &str) -> Result<Vec<NetworkRecord>> {
    find_by_key(conn, Table::Networks, key)
        .await?
        .iter()
        .map(|j| decode_record(j))
        .collect()
}

pub async fn list_networks(conn: &mut AnyConnection) -> Result<Vec<NetworkRecord>> {
    let rows = sqlx::query("SELECT record FROM gateway_networks ORDER BY name")
        .fetch_all(conn)
        .await?;
    rows.iter()
        .map(|r| decode_record(&r.try_get::<String, _>("record")?))
        .collect()
}

/// A request id seen before: its method, request and response.
pub async fn applied_request(
    conn: &mut AnyConnection,
    request_id: &str,
) -> Result<Option<(String, Vec<u8>, Vec<u8>)>> {
    let row =
        sqlx::query("SELECT method, request, response FROM gateway_requests WHERE request_id = $1")
            .bind(request_id)
            .fetch_optional(conn)
            .await?;
    Ok(match row {
        Some(r) => Some((
            r.try_get("method")?,
            r.try_get("request")?,
            r.try_get("response")?,
        )),
        None => None,
    })
}

pub async fn record_request(
    conn: &mut AnyConnection,
    request_id: &str,
    method: &str,
    request: &[u8],
    response: &[u8],
    now_ms: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO gateway_requests (request_id, method, request, response, created_at_ms) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(request_id)
    .bind(method)
    .bind(request.to_vec())
    .bind(response.to_vec())
    .bind(now_ms)
    .execute(conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn both_backends_have_the_same_migrations() {
        let v = |m: &sqlx::migrate::Migrator| m.iter().map(|m| m.version).collect::<Vec<_>>();
        assert_eq!(v(&super::SQLITE_MIGRATIONS), v(&super::POSTGRES_MIGRATIONS));
    }
}

fn decode<T: serde::de::DeserializeOwned>(what: &'static str, json: &str) -> Result<T> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt {
        what,
        reason: e.to_string(),
    })
}

pub mod sandboxes {
    //! Sandboxes and endpoints.

    use sqlx::{AnyConnection, Row as _};

    use super::{Result, decode};
    use crate::sandbox::{EndpointRecord, SandboxRecord};

    pub async fn insert(conn: &mut AnyConnection, s: &SandboxRecord) -> Result<()> {
        sqlx::query("INSERT INTO gateway_sandboxes (id, name, host, record, created_at_ms) VALUES ($1, $2, $3, $4, $5)")
            .bind(&s.id)
            .bind(&s.name)
            .bind(&s.host)
            .bind(serde_json::to_string(s).unwrap_or_default())
            .bind(s.created_at_ms)
            .execute(conn)
            .await?;
        Ok(())
    }

    pub async fn delete(conn: &mut AnyConnection, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM gateway_sandboxes WHERE id = $1")
            .bind(id)
            .execute(conn)
            .await?;
        Ok(())
    }

    /// Sandboxes named by `key` (see [`super::find_by_key`]).
    pub async fn find(conn: &mut AnyConnection, key: &str) -> Result<Vec<SandboxRecord>> {
        super::find_by_key(conn, super::Table::Sandboxes, key)
            .await?
            .iter()
            .map(|j| decode("sandbox", j))
            .collect()
    }

    pub async fn list(conn: &mut AnyConnection) -> Result<Vec<SandboxRecord>> {
        let rows = sqlx::query("SELECT record FROM gateway_sandboxes ORDER BY name")
            .fetch_all(conn)
            .await?;
        rows.iter()
            .map(|r| decode("sandbox", &r.try_get::<String, _>("record")?))
            .collect()
    }

    pub async fn insert_endpoint(conn: &mut AnyConnection, e: &EndpointRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO gateway_endpoints (id, sandbox_id, network_id, record, created_at_ms) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&e.id)
        .bind(&e.sandbox_id)
        .bind(&e.network_id)
        .bind(serde_json::to_string(e).unwrap_or_default())
        .bind(e.created_at_ms)
        .execute(conn)
        .await?;
        Ok(())
    }

    pub async fn delete_endpoint(conn: &mut AnyConnection, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM gateway_endpoints WHERE id = $1")
            .bind(id)
            .execute(conn)
            .await?;
        Ok(())
    }

    /// The endpoints of a sandbox, or of a network, in attach order.
    pub async fn endpoints_of(
        conn: &mut AnyConnection,
        column: Owner,
        id: &str,
    ) -> Result<Vec<EndpointRecord>> {
        let sql = match column {
            Owner::Sandbox => {
                "SELECT record FROM gateway_endpoints WHERE sandbox_id = $1 ORDER BY created_at_ms, id"
            }
            Owner::Network => {
                "SELECT record FROM gateway_endpoints WHERE network_id = $1 ORDER BY created_at_ms, id"
            }
        };
        let rows = sqlx::query(sql).bind(id).fetch_all(conn).await?;
        rows.iter()
            .map(|r| decode("endpoint", &r.try_get::<String, _>("record")?))
            .collect()
    }

    /// Every endpoint, by sandbox then attach order.
    pub async fn all_endpoints(conn: &mut AnyConnection) -> Result<Vec<EndpointRecord>> {
        let rows = sqlx::query(
            "SELECT record FROM gateway_endpoints ORDER BY sandbox_id, created_at_ms, id",
        )
        .fetch_all(conn)
        .await?;
        rows.iter()
            .map(|r| decode("endpoint", &r.try_get::<String, _>("record")?))
            .collect()
    }

    /// Whose endpoints to list.
    #[derive(Debug, Clone, Copy)]
    pub enum Owner {
        Sandbox,
        Network,
    }
}

pub mod operations {
    //! Sagas in flight.

    use sqlx::{AnyConnection, Row as _};

    use super::{Result, decode};
    use crate::recovery::Operation;

    pub async fn insert(conn: &mut AnyConnection, op: &Operation, now_ms: i64) -> Result<()> {
        sqlx::query("INSERT INTO gateway_operations (id, kind, record, started_at_ms) VALUES ($1, $2, $3, $4)")
            .bind(op.id())
            .bind(op.kind())
            .bind(serde_json::to_string(op).unwrap_or_default())
            .bind(now_ms)
            .execute(conn)
            .await?;
        Ok(())
    }

    pub async fn delete(conn: &mut AnyConnection, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM gateway_operations WHERE id = $1")
            .bind(id)
            .execute(conn)
            .await?;
        Ok(())
    }

    /// Operations started before `before_ms`, oldest first.
    pub async fn older_than(conn: &mut AnyConnection, before_ms: i64) -> Result<Vec<Operation>> {
        let rows = sqlx::query("SELECT record FROM gateway_operations WHERE started_at_ms <= $1 ORDER BY started_at_ms")
            .bind(before_ms)
            .fetch_all(conn)
            .await?;
        rows.iter()
            .map(|r| decode("operation", &r.try_get::<String, _>("record")?))
            .collect()
    }

    /// The ids of every operation in flight.
    pub async fn all_ids(conn: &mut AnyConnection) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT id FROM gateway_operations")
            .fetch_all(conn)
            .await?;
        Ok(rows
            .iter()
            .map(|r| r.try_get("id"))
            .collect::<std::result::Result<_, _>>()?)
    }

    pub async fn endpoint_ids(conn: &mut AnyConnection) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT id FROM gateway_endpoints")
            .fetch_all(conn)
            .await?;
        Ok(rows
            .iter()
            .map(|r| r.try_get("id"))
            .collect::<std::result::Result<_, _>>()?)
    }
}

pub mod hosts {
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
        let row = sqlx::query(
            "SELECT record, state, last_heartbeat_ms FROM gateway_hosts WHERE name = $1",
        )
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
}
