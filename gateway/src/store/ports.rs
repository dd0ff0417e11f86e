//! Published ports: one row per mapping of a sandbox, indexed by host and first port, written
//! and removed with the sandbox (see `changes.rs`).

use sqlx::{AnyConnection, Row as _};

use super::{Result, decode, encode};
use crate::domain::{ports::PortRecord, sandbox::SandboxRecord};

/// The host port range a mapping holds.
fn span(p: &PortRecord) -> (i64, i64) {
    let first = i64::from(p.host_port);
    (first, first + i64::from(p.range.max(1)) - 1)
}

pub async fn insert_of(conn: &mut AnyConnection, s: &SandboxRecord) -> Result<()> {
    for p in &s.port_mappings {
        let (first, last) = span(p);
        sqlx::query(
            "INSERT INTO gateway_ports (sandbox_id, host, first_port, last_port, record) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&s.id)
        .bind(&s.host)
        .bind(first)
        .bind(last)
        .bind(encode("port mapping", p)?)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

pub async fn delete_of(conn: &mut AnyConnection, sandbox_id: &str) -> Result<()> {
    sqlx::query("DELETE FROM gateway_ports WHERE sandbox_id = $1")
        .bind(sandbox_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// The mappings on `host` whose host ports meet `first..=last`, with the name of the sandbox
/// that holds each.
pub async fn overlapping(
    conn: &mut AnyConnection,
    host: &str,
    first: u32,
    last: u32,
) -> Result<Vec<(String, PortRecord)>> {
    let rows = sqlx::query(
        // A mapping that overlaps [first, last] starts at most `last` and at least `first`
        // minus the host's longest span: both bounds on the (host, first_port) index.
        "SELECT s.name, p.record FROM gateway_ports p \
         JOIN gateway_sandboxes s ON s.id = p.sandbox_id \
         WHERE p.host = $1 AND p.first_port <= $2 AND p.last_port >= $3 \
           AND p.first_port >= $3 - (SELECT COALESCE(MAX(q.last_port - q.first_port), 0) \
                                       FROM gateway_ports q WHERE q.host = $1)",
    )
    .bind(host)
    .bind(i64::from(last))
    .bind(i64::from(first))
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            let name: String = r.try_get("name")?;
            let record: String = r.try_get("record")?;
            Ok((name, decode("port mapping", &record)?))
        })
        .collect()
}
