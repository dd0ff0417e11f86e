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
    CreateSandbox {
        sandbox: SandboxRecord,
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
            Self::CreateSandbox { sandbox } | Self::DeleteSandbox { sandbox } => {
                format!("sb:{}", sandbox.id)
            }
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
