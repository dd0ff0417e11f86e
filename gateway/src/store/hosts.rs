//! Registered hosts.

use prost::Message as _;
use sqlx::{AnyConnection, Row as _};
use weft_proto::gateway::v1 as pb;

use super::{GatewayStoreError, Result};
use crate::domain::host::{HostCapabilities, HostRecord};

/// The registration as the record column holds it: the API's `Host` message, without state and
/// heartbeat (those are columns, so that marking a host down is one conditional UPDATE).
fn registration(h: &HostRecord) -> pb::Host {
    pb::Host {
        name: h.name.clone(),
        agent_address: h.agent_address.clone(),
        dns_address: h.dns_address.clone(),
        addresses: h.addresses.clone(),
        capabilities: h.capabilities.as_ref().map(|c| pb::HostCapabilities {
            drivers: c.drivers.clone(),
            bridge: c.bridge,
            veth: c.veth,
            vxlan: c.vxlan,
            macvlan: c.macvlan,
            ipvlan: c.ipvlan,
            vlan: c.vlan,
            ipv6: c.ipv6,
            nftables: c.nftables,
            nftables_nat: c.nftables_nat,
            kernel_release: c.kernel_release.clone(),
            ipsec: c.ipsec,
            ipsec_missing: c.ipsec_missing.clone(),
        }),
        state: pb::HostState::Unspecified as i32,
        last_heartbeat: None,
        registered_at: (h.registered_at_ms > 0).then(|| prost_types::Timestamp {
            seconds: h.registered_at_ms.div_euclid(1000),
            nanos: i32::try_from(h.registered_at_ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
        }),
        agent_version: h.agent_version.clone(),
    }
}

fn record(host: pb::Host, up: bool, last_heartbeat_ms: i64) -> HostRecord {
    HostRecord {
        capabilities: host.capabilities.map(|c| HostCapabilities {
            drivers: c.drivers,
            bridge: c.bridge,
            veth: c.veth,
            vxlan: c.vxlan,
            macvlan: c.macvlan,
            ipvlan: c.ipvlan,
            vlan: c.vlan,
            ipv6: c.ipv6,
            nftables: c.nftables,
            nftables_nat: c.nftables_nat,
            kernel_release: c.kernel_release,
            ipsec: c.ipsec,
            ipsec_missing: c.ipsec_missing,
        }),
        registered_at_ms: host.registered_at.map_or(0, |t| {
            t.seconds.saturating_mul(1000) + i64::from(t.nanos / 1_000_000)
        }),
        name: host.name,
        agent_address: host.agent_address,
        dns_address: host.dns_address,
        addresses: host.addresses,
        agent_version: host.agent_version,
        up,
        last_heartbeat_ms,
    }
}

fn state(up: bool) -> &'static str {
    if up { "up" } else { "down" }
}

/// Inserts or replaces the host `h.name`.
pub async fn put(conn: &mut AnyConnection, h: &HostRecord) -> Result<()> {
    sqlx::query(
        "INSERT INTO gateway_hosts (name, record, state, last_heartbeat_ms) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (name) DO UPDATE SET record = excluded.record, state = excluded.state, \
         last_heartbeat_ms = excluded.last_heartbeat_ms",
    )
    .bind(&h.name)
    .bind(registration(h).encode_to_vec())
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

fn decode(row: &sqlx::any::AnyRow) -> Result<HostRecord> {
    let bytes: Vec<u8> = row.try_get("record")?;
    let host = pb::Host::decode(bytes.as_slice()).map_err(|e| GatewayStoreError::Corrupt {
        what: "host",
        reason: e.to_string(),
    })?;
    Ok(record(
        host,
        row.try_get::<String, _>("state")? == "up",
        row.try_get("last_heartbeat_ms")?,
    ))
}

pub async fn get(conn: &mut AnyConnection, name: &str) -> Result<Option<HostRecord>> {
    let row =
        sqlx::query("SELECT record, state, last_heartbeat_ms FROM gateway_hosts WHERE name = $1")
            .bind(name)
            .fetch_optional(conn)
            .await?;
    row.as_ref().map(decode).transpose()
}

/// Every host, by name.
pub async fn list(conn: &mut AnyConnection) -> Result<Vec<HostRecord>> {
    let rows =
        sqlx::query("SELECT record, state, last_heartbeat_ms FROM gateway_hosts ORDER BY name")
            .fetch_all(conn)
            .await?;
    rows.iter().map(decode).collect()
}

/// Moves `host`'s desired-state revision to `revision` (the per-host change feed).
pub async fn touch(conn: &mut AnyConnection, host: &str, revision: u64) -> Result<()> {
    sqlx::query(
        "INSERT INTO gateway_host_revisions (host, revision) VALUES ($1, $2) \
         ON CONFLICT (host) DO UPDATE SET revision = excluded.revision",
    )
    .bind(host)
    .bind(i64::try_from(revision).unwrap_or(i64::MAX))
    .execute(conn)
    .await?;
    Ok(())
}

/// The revision of the last change to `host`'s desired state (0: none since it was known).
pub async fn revision_of(conn: &mut AnyConnection, host: &str) -> Result<u64> {
    let r: Option<i64> =
        sqlx::query_scalar("SELECT revision FROM gateway_host_revisions WHERE host = $1")
            .bind(host)
            .fetch_optional(conn)
            .await?;
    Ok(r.and_then(|r| u64::try_from(r).ok()).unwrap_or(0))
}

/// Forgets the host `name` (its record and its desired-state revision); true if it was there.
pub async fn delete(conn: &mut AnyConnection, name: &str) -> Result<bool> {
    let done = sqlx::query("DELETE FROM gateway_hosts WHERE name = $1")
        .bind(name)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM gateway_host_revisions WHERE host = $1")
        .bind(name)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Records that `name` was removed at `at_ms` (replacing an earlier removal).
pub async fn put_removal(conn: &mut AnyConnection, name: &str, at_ms: i64) -> Result<()> {
    sqlx::query(
        "INSERT INTO gateway_host_removals (name, removed_at_ms) VALUES ($1, $2) \
         ON CONFLICT (name) DO UPDATE SET removed_at_ms = excluded.removed_at_ms",
    )
    .bind(name)
    .bind(at_ms)
    .execute(conn)
    .await?;
    Ok(())
}

/// When `name` was last removed, if ever.
pub async fn removed_at(conn: &mut AnyConnection, name: &str) -> Result<Option<i64>> {
    Ok(
        sqlx::query_scalar("SELECT removed_at_ms FROM gateway_host_removals WHERE name = $1")
            .bind(name)
            .fetch_optional(conn)
            .await?,
    )
}
