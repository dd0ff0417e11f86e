//! ListNetworks, ListSandboxes and ListHosts: what matches the filters, sorted by name (byte
//! order, the same on both backends), a page at a time, with the event revision the page
//! reflects.

use crate::{
    domain::{
        host::HostRecord,
        list::{HostFilter, NetworkFilter, Page, SandboxFilter},
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

    /// One page of the networks matching `filter`; the token of the next page (empty on the
    /// last).
    pub async fn list_networks_page(
        &self,
        filter: &NetworkFilter,
        page: &Page,
    ) -> Result<(Vec<NetworkRecord>, String, u64), GatewayError> {
        let (mut nets, revision) = self.list_networks(filter).await?;
        nets.sort_by(|a, b| a.name.cmp(&b.name));
        let (nets, next) = page.take("networks", nets, |n| n.name.as_str());
        Ok((nets, next, revision))
    }

    /// One page of the sandboxes matching `filter`, each with the endpoints it shows (read only
    /// for the sandboxes that pass the other filters).
    pub async fn list_sandbox_views(
        &self,
        filter: &SandboxFilter,
        page: &Page,
    ) -> Result<(Vec<SandboxView>, String, u64), GatewayError> {
        let revision = self.revision().await?;
        let mut sandboxes = self.list_sandboxes().await?;
        sandboxes.sort_by(|a, b| a.name.cmp(&b.name));
        let mut out = Vec::new();
        let mut next = String::new();
        for sandbox in sandboxes {
            if !page.starts_before(&sandbox.name) || !filter.matches_sandbox(&sandbox) {
                continue;
            }
            let endpoints = self.sandbox_endpoints(&sandbox).await?;
            if !filter.matches_endpoints(&endpoints) {
                continue;
            }
            if out.len() == page.size {
                next = out
                    .last()
                    .map(|v: &SandboxView| Page::token_after("sandboxes", &v.sandbox.name))
                    .unwrap_or_default();
                break;
            }
            out.push(SandboxView { sandbox, endpoints });
        }
        Ok((out, next, revision))
    }

    /// One page of the hosts matching `filter`: the registered ones, and the configured one
    /// (probed) while its agent has not registered.
    pub async fn list_hosts(
        &self,
        filter: &HostFilter,
        page: &Page,
    ) -> Result<(Vec<HostRecord>, String, u64), GatewayError> {
        let revision = {
            let mut conn = self.db.read().acquire().await?;
            store::current_revision(&mut conn).await?
        };
        let mut hosts = self.all_hosts().await?;
        hosts.retain(|h| filter.matches(h));
        let (hosts, next) = page.take("hosts", hosts, |h| h.name.as_str());
        Ok((hosts, next, revision))
    }
}
