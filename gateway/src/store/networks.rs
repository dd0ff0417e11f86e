//! Networks.

use sqlx::{AnyConnection, Row as _};

use super::{Result, decode, encode};
use crate::domain::network::NetworkRecord;

pub async fn insert(conn: &mut AnyConnection, rec: &NetworkRecord) -> Result<()> {
    sqlx::query(
        "INSERT INTO gateway_networks (id, name, driver, predefined, record, created_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&rec.id)
    .bind(&rec.name)
    .bind(&rec.driver)
    .bind(i64::from(rec.predefined))
    .bind(encode("network", rec)?)
    .bind(rec.created_at_ms)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn update(conn: &mut AnyConnection, rec: &NetworkRecord) -> Result<()> {
    sqlx::query("UPDATE gateway_networks SET record = $2 WHERE id = $1")
        .bind(&rec.id)
        .bind(encode("network", rec)?)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn delete(conn: &mut AnyConnection, id: &str) -> Result<()> {
    sqlx::query("DELETE FROM gateway_networks WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Networks named by `key` (see [`find_by_key`]).
pub async fn find(conn: &mut AnyConnection, key: &str) -> Result<Vec<NetworkRecord>> {
    super::find_by_key(conn, super::Table::Networks, key)
        .await?
        .iter()
        .map(|j| decode("network", j))
        .collect()
}

/// The network with id `id`, if there is one.
pub async fn by_id(conn: &mut AnyConnection, id: &str) -> Result<Option<NetworkRecord>> {
    let row = sqlx::query("SELECT record FROM gateway_networks WHERE id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await?;
    row.map(|r| decode("network", &r.try_get::<String, _>("record")?))
        .transpose()
}

pub async fn list(conn: &mut AnyConnection) -> Result<Vec<NetworkRecord>> {
    let rows = sqlx::query("SELECT record FROM gateway_networks ORDER BY name")
        .fetch_all(conn)
        .await?;
    rows.iter()
        .map(|r| decode("network", &r.try_get::<String, _>("record")?))
        .collect()
}

/// The VXLAN ids in use from `start` to `end` (inclusive), ascending.
pub async fn vnis_in(conn: &mut AnyConnection, start: u32, end: u32) -> Result<Vec<u32>> {
    let rows: Vec<i64> = sqlx::query_scalar(
        "SELECT vni FROM gateway_vnis WHERE vni >= $1 AND vni <= $2 ORDER BY vni",
    )
    .bind(i64::from(start))
    .bind(i64::from(end))
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|v| u32::try_from(v).ok())
        .collect())
}

/// Records `network_id`'s VXLAN id (a unique violation when another network has it).
pub async fn put_vni(conn: &mut AnyConnection, vni: u32, network_id: &str) -> Result<()> {
    sqlx::query("INSERT INTO gateway_vnis (vni, network_id) VALUES ($1, $2)")
        .bind(i64::from(vni))
        .bind(network_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Frees `network_id`'s VXLAN id, if it has one.
pub async fn delete_vni(conn: &mut AnyConnection, network_id: &str) -> Result<()> {
    sqlx::query("DELETE FROM gateway_vnis WHERE network_id = $1")
        .bind(network_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// The networks of `driver`.
pub async fn by_driver(conn: &mut AnyConnection, driver: &str) -> Result<Vec<NetworkRecord>> {
    let rows = sqlx::query("SELECT record FROM gateway_networks WHERE driver = $1")
        .bind(driver)
        .fetch_all(conn)
        .await?;
    rows.iter()
        .map(|r| decode("network", &r.try_get::<String, _>("record")?))
        .collect()
}
