//! ListNetworks, ListSandboxes and ListHosts: what matches the filters, by name, with the
//! event revision the list reflects.

use crate::{
    domain::{
        host::HostRecord,
        list::{HostFilter, NetworkFilter, SandboxFilter},
        network::NetworkRecord,
    },
    engine::Gateway,
    error::GatewayError,
    sagas::sandbox::SandboxView,
    store,
};

impl Gateway {
    /// Networks matching `filter`, by name, with the revision they reflect (read in one
    /// snapshot, so that a watcher starting from this revision neither misses nor repeats a
    /// change).
    pub async fn list_networks(
        &self,
        filter: &NetworkFilter,
    ) -> Result<(Vec<NetworkRecord>, u64), GatewayError> {
        let mut tx = store::read_snapshot(&self.db).await?;
        let revision = store::current_revision(&mut tx).await?;
        let all = store::networks::list(&mut tx).await?;
        tx.commit().await?;
        let nets = all.into_iter().filter(|n| filter.matches(n)).collect();
        Ok((nets, revision))
    }

    /// Sandboxes matching `filter`, by name, each with the endpoints it shows.
    pub async fn list_sandbox_views(
        &self,
        filter: &SandboxFilter,
    ) -> Result<(Vec<SandboxView>, u64), GatewayError> {
        let revision = self.revision().await?;
        let mut out = Vec::new();
        for sandbox in self.list_sandboxes().await? {
            if !filter.matches_sandbox(&sandbox) {
                continue;
            }
            let endpoints = self.sandbox_endpoints(&sandbox).await?;
            if filter.matches_endpoints(&endpoints) {
                out.push(SandboxView { sandbox, endpoints });
            }
        }
        Ok((out, revision))
    }

    /// Hosts matching `filter`, by name: the registered ones, and the configured one (probed)
    /// while its agent has not registered.
    pub async fn list_hosts(
        &self,
        filter: &HostFilter,
    ) -> Result<(Vec<HostRecord>, u64), GatewayError> {
        let (mut hosts, revision) = {
            let mut conn = self.db.read().acquire().await?;
            let revision = store::current_revision(&mut conn).await?;
            (store::hosts::list(&mut conn).await?, revision)
        };
        if !hosts.iter().any(|h| h.name == self.host) {
            hosts.push(self.probe_configured_host().await);
            hosts.sort_by(|a, b| a.name.cmp(&b.name));
        }
        hosts.retain(|h| filter.matches(h));
        Ok((hosts, revision))
    }
}
