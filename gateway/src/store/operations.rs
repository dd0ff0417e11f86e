//! Sagas in flight.

use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, Row as _};

use super::{Result, decode, encode};
use crate::domain::{endpoint::EndpointRecord, sandbox::SandboxRecord};

/// A saga in flight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Operation {
    Connect {
        sandbox: SandboxRecord,
        endpoint: EndpointRecord,
    },
    Disconnect {
        sandbox: SandboxRecord,
        endpoint: EndpointRecord,
    },
    /// A sandbox and its initial endpoints (ids, networks and interfaces chosen; addresses
    /// not yet): one record for the whole creation. (Written before the endpoints were part
    /// of it, a record has none: each initial endpoint then had a `Connect` of its own.)
    CreateSandbox {
        sandbox: SandboxRecord,
        #[serde(default)]
        endpoints: Vec<EndpointRecord>,
    },
    DeleteSandbox {
        sandbox: SandboxRecord,
    },
}

impl Operation {
    pub fn id(&self) -> String {
        match self {
            Self::Connect { endpoint, .. } | Self::Disconnect { endpoint, .. } => {
                format!("ep:{}", endpoint.id)
            }
            Self::CreateSandbox { sandbox, .. } | Self::DeleteSandbox { sandbox } => {
                format!("sb:{}", sandbox.id)
            }
        }
    }

    /// Whether the sweep completes this operation when its gateway is gone (a removal the
    /// caller asked for), rather than undoing it.
    pub fn completed_when_interrupted(&self) -> bool {
        matches!(self, Self::Disconnect { .. } | Self::DeleteSandbox { .. })
    }

    /// The endpoints whose addresses this operation may hold in IPAM (the sweep must not
    /// take them for orphans while it runs).
    pub fn endpoint_ids(&self) -> Vec<&str> {
        match self {
            Self::Connect { endpoint, .. } | Self::Disconnect { endpoint, .. } => {
                vec![endpoint.id.as_str()]
            }
            Self::CreateSandbox { endpoints, .. } => {
                endpoints.iter().map(|e| e.id.as_str()).collect()
            }
            Self::DeleteSandbox { .. } => Vec::new(),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Connect { .. } => "connect",
            Self::Disconnect { .. } => "disconnect",
            Self::CreateSandbox { .. } => "create_sandbox",
            Self::DeleteSandbox { .. } => "delete_sandbox",
        }
    }
}

pub async fn insert(conn: &mut AnyConnection, op: &Operation, now_ms: i64) -> Result<()> {
    sqlx::query(
        "INSERT INTO gateway_operations (id, kind, record, started_at_ms) VALUES ($1, $2, $3, $4)",
    )
    .bind(op.id())
    .bind(op.kind())
    .bind(encode("operation", op)?)
    .bind(now_ms)
    .execute(conn)
    .await?;
    Ok(())
}

/// Takes over the record of an operation begun before (by a gateway that is gone): its
/// record and start time become `op`'s and `now_ms` (the sweep leaves it alone again for the
/// operation timeout). Written anew if it was finished meanwhile.
pub async fn restart(conn: &mut AnyConnection, op: &Operation, now_ms: i64) -> Result<()> {
    let updated = sqlx::query(
        "UPDATE gateway_operations SET record = $2, started_at_ms = $3 WHERE id = $1 AND kind = $4",
    )
    .bind(op.id())
    .bind(encode("operation", op)?)
    .bind(now_ms)
    .bind(op.kind())
    .execute(&mut *conn)
    .await?;
    if updated.rows_affected() == 0 {
        insert(conn, op, now_ms).await?;
    }
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
    let rows = sqlx::query(
        "SELECT record FROM gateway_operations WHERE started_at_ms <= $1 ORDER BY started_at_ms",
    )
    .bind(before_ms)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| decode("operation", &r.try_get::<String, _>("record")?))
        .collect()
}

/// Every operation in flight.
pub async fn all(conn: &mut AnyConnection) -> Result<Vec<Operation>> {
    let rows = sqlx::query("SELECT record FROM gateway_operations")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_create_sandbox_record_written_before_it_listed_endpoints_still_reads() {
        // As an older gateway wrote it: no `endpoints`.
        let old = r#"{"kind":"create_sandbox","sandbox":{"id":"s1","name":"web",
            "container_id":"","host":"local","netns_path":"","hostname":"web",
            "dns":{"servers":[],"search":[],"options":[]},"extra_hosts":[],
            "port_mappings":[],"network_mode":"","labels":{},"created_at_ms":0}}"#;
        let op: Operation = crate::store::decode("operation", old).unwrap();
        assert_eq!(op.id(), "sb:s1");
        assert!(op.endpoint_ids().is_empty());
        let Operation::CreateSandbox { endpoints, .. } = &op else {
            panic!("{op:?}");
        };
        assert!(endpoints.is_empty());
    }
}
