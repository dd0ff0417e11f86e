//! Sandboxes and endpoints.

use sqlx::{AnyConnection, Row as _};

use super::{Result, decode, encode};
use crate::domain::{endpoint::EndpointRecord, sandbox::SandboxRecord};

pub async fn insert(conn: &mut AnyConnection, s: &SandboxRecord) -> Result<()> {
    let shares = s.network_mode.strip_prefix("container:").unwrap_or("");
    sqlx::query("INSERT INTO gateway_sandboxes (id, name, host, record, created_at_ms, shares) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(&s.id)
        .bind(&s.name)
        .bind(&s.host)
        .bind(encode("sandbox", s)?)
        .bind(s.created_at_ms)
        .bind(shares)
        .execute(conn)
        .await?;
    Ok(())
}

/// The names of the sandboxes that share sandbox `id`'s namespace (`container:<id>`).
pub async fn sharing(conn: &mut AnyConnection, id: &str) -> Result<Vec<String>> {
    let rows = sqlx::query("SELECT name FROM gateway_sandboxes WHERE shares = $1 ORDER BY name")
        .bind(id)
        .fetch_all(conn)
        .await?;
    rows.iter()
        .map(|r| Ok(r.try_get::<String, _>("name")?))
        .collect()
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

/// The sandbox with id `id`, if there is one.
pub async fn by_id(conn: &mut AnyConnection, id: &str) -> Result<Option<SandboxRecord>> {
    let row = sqlx::query("SELECT record FROM gateway_sandboxes WHERE id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await?;
    row.map(|r| decode("sandbox", &r.try_get::<String, _>("record")?))
        .transpose()
}

/// The sandboxes of one host (by index, without reading the others).
pub async fn list_on_host(conn: &mut AnyConnection, host: &str) -> Result<Vec<SandboxRecord>> {
    let rows = sqlx::query("SELECT record FROM gateway_sandboxes WHERE host = $1 ORDER BY name")
        .bind(host)
        .fetch_all(conn)
        .await?;
    rows.iter()
        .map(|r| decode("sandbox", &r.try_get::<String, _>("record")?))
        .collect()
}

/// The endpoints of one host's sandboxes, by sandbox then attach order: one query.
pub async fn endpoints_on_host(
    conn: &mut AnyConnection,
    host: &str,
) -> Result<Vec<EndpointRecord>> {
    let rows = sqlx::query(
        "SELECT e.record FROM gateway_endpoints e JOIN gateway_sandboxes s ON s.id = e.sandbox_id \
         WHERE s.host = $1 ORDER BY e.sandbox_id, e.created_at_ms, e.id",
    )
    .bind(host)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| decode("endpoint", &r.try_get::<String, _>("record")?))
        .collect()
}

/// The hosts with an endpoint on `network_id`.
pub async fn hosts_on_network(conn: &mut AnyConnection, network_id: &str) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT DISTINCT s.host FROM gateway_endpoints e JOIN gateway_sandboxes s ON s.id = e.sandbox_id \
         WHERE e.network_id = $1",
    )
    .bind(network_id)
    .fetch_all(conn)
    .await?)
}

pub async fn insert_endpoint(conn: &mut AnyConnection, e: &EndpointRecord) -> Result<()> {
    sqlx::query(
        "INSERT INTO gateway_endpoints (id, sandbox_id, network_id, record, created_at_ms) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&e.id)
    .bind(&e.sandbox_id)
    .bind(&e.network_id)
    .bind(encode("endpoint", e)?)
    .bind(e.created_at_ms)
    .execute(conn)
    .await?;
    Ok(())
}

/// Replaces an endpoint's record (same id, sandbox and network).
pub async fn update_endpoint(conn: &mut AnyConnection, e: &EndpointRecord) -> Result<()> {
    sqlx::query("UPDATE gateway_endpoints SET record = $2 WHERE id = $1")
        .bind(&e.id)
        .bind(encode("endpoint", e)?)
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

/// The sandboxes with an endpoint on `network_id`, by id.
pub async fn on_network(conn: &mut AnyConnection, network_id: &str) -> Result<Vec<SandboxRecord>> {
    let rows = sqlx::query(
        "SELECT record FROM gateway_sandboxes WHERE id IN \
         (SELECT sandbox_id FROM gateway_endpoints WHERE network_id = $1) ORDER BY id",
    )
    .bind(network_id)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| decode("sandbox", &r.try_get::<String, _>("record")?))
        .collect()
}

/// Every endpoint of the sandboxes with an endpoint on `network_id` (so that each one's
/// default-route flags can be told), by sandbox then attach order: one query.
pub async fn endpoints_sharing(
    conn: &mut AnyConnection,
    network_id: &str,
) -> Result<Vec<EndpointRecord>> {
    let rows = sqlx::query(
        "SELECT record FROM gateway_endpoints WHERE sandbox_id IN \
         (SELECT sandbox_id FROM gateway_endpoints WHERE network_id = $1) \
         ORDER BY sandbox_id, created_at_ms, id",
    )
    .bind(network_id)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| decode("endpoint", &r.try_get::<String, _>("record")?))
        .collect()
}

/// Every endpoint, by sandbox then attach order.
pub async fn all_endpoints(conn: &mut AnyConnection) -> Result<Vec<EndpointRecord>> {
    let rows =
        sqlx::query("SELECT record FROM gateway_endpoints ORDER BY sandbox_id, created_at_ms, id")
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
