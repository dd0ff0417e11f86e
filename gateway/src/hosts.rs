//! Hosts: driver-agents register their host and send heartbeats (`AgentRegistryService`);
//! `HostService.ListHosts` shows them (see `lists`).
//!
//! The host this gateway is configured with (`--host-name`, `--agent`) is known before its
//! agent registers, so that a single-host setup works from the first start; once an agent
//! registers under that name, the registration is what counts. A registered host whose
//! heartbeats stop for three intervals is marked down (HOST_DOWN, by exactly one replica); the
//! next heartbeat or registration brings it back up (HOST_UP). Down for longer than
//! `--host-down-grace`, its endpoints are marked `host_down` (their names stop resolving; their
//! addresses stay reserved); they come back with the host. `weftctl host rm` removes a host
//! and all of it.

use crate::{
    domain::{
        endpoint::EndpointRecord,
        host::{HostRecord, HostSpec},
    },
    engine::{Change, Gateway},
    error::GatewayError,
    store,
};

/// Heartbeats missed before a host is marked down.
const MISSED: u32 = 3;

impl Gateway {
    /// Registers (or re-registers) a host and publishes HOST_UP; returns the host and the
    /// revision of its event.
    pub async fn register_host(&self, spec: HostSpec) -> Result<(HostRecord, u64), GatewayError> {
        let raw = spec.0;
        let now = self.clock.now_ms();
        let registered_at_ms = {
            let mut conn = self.db.read().acquire().await?;
            store::hosts::get(&mut conn, &raw.name)
                .await?
                .map(|h| h.registered_at_ms)
                .filter(|&ms| ms > 0)
                .unwrap_or(now)
        };
        let host = HostRecord {
            name: raw.name,
            agent_address: raw.agent_address,
            dns_address: raw.dns_address,
            addresses: raw.addresses,
            capabilities: raw.capabilities,
            agent_version: raw.agent_version,
            registered_at_ms,
            up: true,
            last_heartbeat_ms: now,
        };
        let revision = self.commit(&[Change::PutHost(&host)], None).await?;
        self.cache_host(&host.name, Some(&host));
        // Back from a long absence: its endpoints resolve again.
        if self.set_host_down(&host.name, false).await? > 0 {
            tracing::info!(host = %host.name, "the host's endpoints are up again");
        }
        tracing::info!(host = %host.name, agent = %host.agent_address, "host registered");
        Ok((host, revision))
    }

    /// Keeps a registered host up (a down one comes back up, with HOST_UP); returns the
    /// revision of the host's own desired state (the per-host change feed: changes elsewhere
    /// in the cluster do not move it).
    pub async fn heartbeat(&self, host: &str, unrepaired_drift: u64) -> Result<u64, GatewayError> {
        let now = self.clock.now_ms();
        let beat = {
            let mut conn = self.db.write().acquire().await?;
            store::hosts::beat(&mut conn, host, now).await?
        };
        if !beat {
            let stored = {
                let mut conn = self.db.read().acquire().await?;
                store::hosts::get(&mut conn, host).await?
            };
            let Some(stored) = stored else {
                return Err(GatewayError::HostNotFound(host.to_owned()));
            };
            let revived = HostRecord {
                up: true,
                last_heartbeat_ms: now,
                ..stored
            };
            self.commit(&[Change::PutHost(&revived)], None).await?;
            self.cache_host(host, Some(&revived));
            tracing::info!(host, "host is up again");
            self.set_host_down(host, false).await?;
        }
        if unrepaired_drift > 0 {
            tracing::warn!(
                host,
                drift = unrepaired_drift,
                "the host's agent reports drift it cannot repair"
            );
        }
        self.host_revision(host).await
    }

    /// Marks down every up host whose last heartbeat is older than three intervals; returns
    /// the names this replica marked.
    pub async fn mark_stale_hosts_down(&self) -> Result<Vec<String>, GatewayError> {
        let cutoff = self.clock.now_ms()
            - i64::try_from((self.heartbeat_interval * MISSED).as_millis()).unwrap_or(i64::MAX);
        let stale: Vec<HostRecord> = {
            let mut conn = self.db.read().acquire().await?;
            store::hosts::list(&mut conn)
                .await?
                .into_iter()
                .filter(|h| h.up && h.last_heartbeat_ms < cutoff)
                .collect()
        };
        let mut marked = Vec::new();
        for h in stale {
            let down = HostRecord { up: false, ..h };
            if self.commit_host_down(&down, cutoff).await? {
                self.cache_host(&down.name, Some(&down));
                tracing::warn!(host = %down.name, "no heartbeat: host marked down");
                marked.push(down.name.clone());
            }
        }
        Ok(marked)
    }

    /// Removes a host (`HostService.RemoveHost`): deletes its sandboxes (the sharers of a
    /// namespace first), then forgets it. The host must not be this gateway's own, nor up
    /// unless `force` (its agent is then asked to remove what it can). Returns the host as it
    /// was and the names of the sandboxes deleted.
    pub async fn remove_host(
        &self,
        name: &str,
        force: bool,
    ) -> Result<(HostRecord, Vec<String>), GatewayError> {
        if name == self.host {
            return Err(GatewayError::Precondition(format!(
                "host {name:?} is this gateway's own host (--host-name): it cannot be removed"
            )));
        }
        let stored = {
            let mut conn = self.db.read().acquire().await?;
            store::hosts::get(&mut conn, name).await?
        };
        let host = stored.ok_or_else(|| GatewayError::HostNotFound(name.to_owned()))?;
        if host.up && !force {
            return Err(GatewayError::Precondition(format!(
                "host {name:?} is up (its agent sends heartbeats): stop it first, or force the removal"
            )));
        }
        let mut sandboxes: Vec<_> = self
            .list_sandboxes()
            .await?
            .into_iter()
            .filter(|s| s.host == name)
            .collect();
        // A sandbox that shares another's namespace goes before it.
        sandboxes.sort_by_key(|s| !s.network_mode.starts_with("container:"));
        let mut removed = Vec::with_capacity(sandboxes.len());
        for sandbox in sandboxes {
            let sandbox_name = sandbox.name.clone();
            self.delete_found_sandbox(sandbox, host.up, None).await?;
            removed.push(sandbox_name);
        }
        if host.up {
            self.remove_networks_on(name).await;
        }
        let at_ms = self.clock.now_ms();
        self.commit(&[Change::RemoveHost(&host, at_ms)], None)
            .await?;
        self.removals.record(name, at_ms);
        self.tokens.forget_all();
        self.cache_host(name, None);
        tracing::warn!(host = %name, sandboxes = removed.len(), "host removed");
        Ok((host, removed))
    }

    /// Marks `host_down` the endpoints of every host down for longer than the grace period
    /// (`--host-down-grace`, counted from its last heartbeat plus the three missed ones), with
    /// an ENDPOINT_UPDATED each; returns how many it marked.
    pub async fn mark_endpoints_of_long_down_hosts(&self) -> Result<usize, GatewayError> {
        let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4);
        let cutoff =
            self.clock.now_ms() - ms(self.heartbeat_interval * MISSED) - ms(self.host_down_grace);
        let long_down: Vec<String> = {
            let mut conn = self.db.read().acquire().await?;
            store::hosts::list(&mut conn)
                .await?
                .into_iter()
                .filter(|h| !h.up && h.last_heartbeat_ms < cutoff)
                .map(|h| h.name)
                .collect()
        };
        let mut marked = 0;
        for host in long_down {
            let n = self.set_host_down(&host, true).await?;
            if n > 0 {
                tracing::warn!(
                    host,
                    endpoints = n,
                    "host down past its grace: its endpoints are marked down"
                );
            }
            marked += n;
        }
        Ok(marked)
    }

    /// Sets `host_down` on every endpoint of `host` that does not have it yet (ENDPOINT_UPDATED
    /// each, in commits of at most 500); returns how many changed.
    pub(crate) async fn set_host_down(
        &self,
        host: &str,
        down: bool,
    ) -> Result<usize, GatewayError> {
        let changed: Vec<EndpointRecord> = {
            let mut conn = self.db.read().acquire().await?;
            store::sandboxes::endpoints_on_host(&mut conn, host).await?
        }
        .into_iter()
        .filter(|e| e.host_down != down)
        .map(|e| EndpointRecord {
            host_down: down,
            ..e
        })
        .collect();
        for chunk in changed.chunks(500) {
            let changes: Vec<Change<'_>> = chunk.iter().map(Change::UpdateEndpoint).collect();
            self.commit(&changes, None).await?;
        }
        Ok(changed.len())
    }
}
