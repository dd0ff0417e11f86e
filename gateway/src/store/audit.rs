//! The audit log: one row per mutation accepted or refused.

use sqlx::{AnyConnection, Row as _};

use super::Result;

/// One audit record.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuditRow {
    /// Assigned by the store (0 before).
    pub id: i64,
    pub time_ms: i64,
    /// `role:name` of the caller; `-` when it could not be identified.
    pub identity: String,
    pub role: String,
    /// The method's full name, `weft.gateway.v1.NetworkService/CreateNetwork`.
    pub rpc: String,
    /// The object's name or id as the request gave it (`-` when unknown).
    pub object: String,
    pub request_id: String,
    /// `OK` or the gRPC code's name.
    pub outcome: String,
    pub message: String,
}

pub async fn insert(conn: &mut AnyConnection, rows: &[AuditRow]) -> Result<()> {
    for r in rows {
        sqlx::query(
            "INSERT INTO gateway_audit (time_ms, identity, role, rpc, object, request_id, outcome, message) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(r.time_ms)
        .bind(&r.identity)
        .bind(&r.role)
        .bind(&r.rpc)
        .bind(&r.object)
        .bind(&r.request_id)
        .bind(&r.outcome)
        .bind(&r.message)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Keeps the newest `keep` rows.
pub async fn trim(conn: &mut AnyConnection, keep: u64) -> Result<()> {
    sqlx::query("DELETE FROM gateway_audit WHERE id <= (SELECT MAX(id) FROM gateway_audit) - $1")
        .bind(i64::try_from(keep).unwrap_or(i64::MAX))
        .execute(conn)
        .await?;
    Ok(())
}

/// Rows with an id below `before` (0: from the newest), newest first, at most `limit`;
/// only those of `identity` when it is not empty.
pub async fn page(
    conn: &mut AnyConnection,
    before: i64,
    limit: u32,
    identity: &str,
) -> Result<Vec<AuditRow>> {
    let rows = sqlx::query(
        "SELECT id, time_ms, identity, role, rpc, object, request_id, outcome, message \
         FROM gateway_audit WHERE ($1 = 0 OR id < $1) AND ($2 = '' OR identity = $2) \
         ORDER BY id DESC LIMIT $3",
    )
    .bind(before)
    .bind(identity)
    .bind(i64::from(limit))
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(AuditRow {
                id: r.try_get("id")?,
                time_ms: r.try_get("time_ms")?,
                identity: r.try_get("identity")?,
                role: r.try_get("role")?,
                rpc: r.try_get("rpc")?,
                object: r.try_get("object")?,
                request_id: r.try_get("request_id")?,
                outcome: r.try_get("outcome")?,
                message: r.try_get("message")?,
            })
        })
        .collect()
}
