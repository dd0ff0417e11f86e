//! The driver-agents of the hosts: one client per host (the registered address, or the
//! configured agent for the configured host), cached briefly, and the gateway's steps on them
//! (attach, detach, the sandbox's namespace and files, a network's removal), plus the wait for
//! the host's dns-svc to see a change.

use std::time::{Duration, Instant};

use weft_proto::{
    agent::v1::{self as apb, agent_service_client::AgentServiceClient},
    dns::v1::dns_service_client::DnsServiceClient,
};
use weft_runtime::FieldViolation;
use weft_runtime::trace_context::{Traced, TracedChannel};

use crate::{
    desired::{agent_endpoint, agent_sandbox, role},
    domain::{
        endpoint::EndpointRecord,
        host::{HostRecord, agent_url},
        network::NetworkRecord,
        sandbox::SandboxRecord,
    },
    engine::{CachedAgent, Gateway},
    error::GatewayError,
    store,
    to_pb::duration,
};

/// How long the configured host's agent gets to answer a ListHosts probe.
const PROBE: Duration = Duration::from_secs(2);
/// How long Connect and Disconnect wait for the host's dns-svc to see the change.
const DNS_SYNC: Duration = Duration::from_secs(2);

/// How long what the store said about a host is reused (a host marked down is refused at most
/// this much later on another replica).
const HOST_CACHE: Duration = Duration::from_secs(1);

impl Gateway {
    /// The client of `host`'s driver-agent: the registered address, or the configured agent
    /// for the configured host. A host that is down is FAILED_PRECONDITION. What the store says
    /// about a host is reused for [`HOST_CACHE`], so a Connect costs no extra read.
    pub(crate) async fn agent_for(
        &self,
        host: &str,
    ) -> Result<AgentServiceClient<TracedChannel>, GatewayError> {
        let cached = self
            .agents
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(host)
            .filter(|c| c.fetched.elapsed() < HOST_CACHE)
            .cloned();
        let entry = match cached {
            Some(c) => c,
            None => {
                let stored = {
                    let mut conn = self.db.read().acquire().await?;
                    store::hosts::get(&mut conn, host).await?
                };
                self.cache_host(host, stored.as_ref())
            }
        };
        match entry.client {
            None => Err(GatewayError::HostNotFound(host.to_owned())),
            Some(_) if !entry.up => Err(GatewayError::Precondition(format!(
                "host {host:?} is down (no heartbeat from its agent)"
            ))),
            Some(client) => Ok(client),
        }
    }

    /// Waits (at most [`DNS_SYNC`]) until the host's dns-svc reflects `revision`, so that the
    /// very next query after Connect or Disconnect returns sees the change. Best effort: a
    /// host without dns-svc, or one that does not answer in time, only costs the wait.
    pub(crate) async fn sync_dns(&self, host: &str, revision: u64) {
        if self.agent_for(host).await.is_err() {
            return;
        }
        let dns = self
            .agents
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(host)
            .and_then(|c| c.dns.clone());
        let Some(mut dns) = dns else {
            return;
        };
        let mut req = tonic::Request::new(weft_proto::dns::v1::WaitForRevisionRequest {
            revision,
            timeout: Some(duration(DNS_SYNC)),
        });
        req.set_timeout(DNS_SYNC + Duration::from_millis(500));
        if let Err(st) = dns.wait_for_revision(req).await {
            tracing::warn!(host, revision, error = %st.message(), "dns-svc did not confirm the change in time");
        }
    }

    /// The agent client of a host whose state does not matter (undoing, removing).
    pub(crate) async fn agent_for_cleanup(&self, host: &str) -> AgentServiceClient<TracedChannel> {
        match self.agent_for(host).await {
            Ok(c) => c,
            Err(_) => self
                .agents
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(host)
                .and_then(|c| c.client.clone())
                .unwrap_or_else(|| self.agent.clone()),
        }
    }

    /// Remembers what the store says about `host` (None: not registered).
    pub(crate) fn cache_host(&self, host: &str, stored: Option<&HostRecord>) -> CachedAgent {
        let mut clients = self
            .agents
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (url, up) = match stored {
            Some(s) => (Some(agent_url(&s.agent_address)), s.up),
            None => (None, true),
        };
        let client = match &url {
            None if host == self.host => Some(self.agent.clone()),
            None => None,
            Some(url) => match clients.get(host) {
                Some(c) if c.url.as_ref() == Some(url) => c.client.clone(),
                _ => Some(
                    crate::peers::channel(
                        self.peers.as_ref().map(|p| &p.agent),
                        url,
                        Duration::from_secs(2),
                        Duration::from_secs(10),
                    )
                    .map(|c| AgentServiceClient::new(Traced::new(c)))
                    // Validated at registration.
                    .unwrap_or_else(|_| self.agent.clone()),
                ),
            },
        };
        let dns = stored
            .map(|s| s.dns_address.as_str())
            .filter(|a| !a.is_empty())
            .and_then(|a| match clients.get(host) {
                Some(c) if c.dns.is_some() && c.url == url => c.dns.clone(),
                _ => crate::peers::channel(
                    self.peers.as_ref().map(|p| &p.dns),
                    a,
                    Duration::from_secs(1),
                    DNS_SYNC + Duration::from_secs(1),
                )
                .ok()
                .map(|c| DnsServiceClient::new(Traced::new(c))),
            });
        let entry = CachedAgent {
            url,
            client,
            dns,
            up,
            fetched: Instant::now(),
        };
        clients.insert(host.to_owned(), entry.clone());
        entry
    }

    /// The host a new sandbox goes on: the one asked for, or the only one there is.
    pub(crate) async fn place(&self, asked: &str) -> Result<String, FieldViolation> {
        let known = self.known_hosts().await.unwrap_or_default();
        if !asked.is_empty() {
            return if known.iter().any(|h| h == asked) {
                Ok(asked.to_owned())
            } else {
                Err(FieldViolation::new(
                    "host",
                    asked,
                    format!("unknown host (known: {})", known.join(", ")),
                ))
            };
        }
        match known.as_slice() {
            [only] => Ok(only.clone()),
            _ => Err(FieldViolation::new(
                "host",
                "",
                format!("required with several hosts (known: {})", known.join(", ")),
            )),
        }
    }

    /// Asks every host's agent to remove a deleted network's objects (its bridge, its rules);
    /// best effort: an agent that cannot be reached drops them at its next reconciliation,
    /// since no desired state names the network any more.
    pub(crate) async fn remove_on_hosts(&self, network_id: &str) {
        for host in self.known_hosts().await.unwrap_or_default() {
            let mut agent = self.agent_for_cleanup(&host).await;
            let mut req = tonic::Request::new(apb::RemoveNetworkRequest {
                network_id: network_id.to_owned(),
                revision: 0,
            });
            req.set_timeout(PROBE);
            if let Err(st) = agent.remove_network(req).await {
                tracing::warn!(host, network = network_id, error = %st.message(), "the host's agent did not remove the network; its reconciliation will");
            }
        }
    }

    /// Asks `host`'s agent to remove every network's objects there (a host removed while up:
    /// its bridges and VXLAN devices would otherwise stay, since no desired state reaches it
    /// any more); best effort.
    pub(crate) async fn remove_networks_on(&self, host: &str) {
        let networks = {
            let Ok(mut conn) = self.db.read().acquire().await else {
                return;
            };
            store::networks::list(&mut conn).await.unwrap_or_default()
        };
        let mut agent = self.agent_for_cleanup(host).await;
        for net in networks {
            let mut req = tonic::Request::new(apb::RemoveNetworkRequest {
                network_id: net.id.clone(),
                revision: 0,
            });
            req.set_timeout(PROBE);
            if let Err(st) = agent.remove_network(req).await {
                tracing::warn!(host, network = %net.id, error = %st.message(), "the removed host's agent did not remove the network");
            }
        }
    }

    /// Registered hosts, plus the configured one when it has not registered.
    pub(crate) async fn known_hosts(&self) -> Result<Vec<String>, GatewayError> {
        let mut conn = self.db.read().acquire().await?;
        let mut names: Vec<String> = store::hosts::list(&mut conn)
            .await?
            .into_iter()
            .map(|h| h.name)
            .collect();
        if !names.contains(&self.host) {
            names.push(self.host.clone());
            names.sort();
        }
        Ok(names)
    }

    /// Every host: the registered ones, and the configured one as its agent answers now when
    /// it has not registered; by name.
    pub(crate) async fn all_hosts(&self) -> Result<Vec<HostRecord>, GatewayError> {
        let mut hosts = {
            let mut conn = self.db.read().acquire().await?;
            store::hosts::list(&mut conn).await?
        };
        if !hosts.iter().any(|h| h.name == self.host) {
            hosts.push(self.probe_configured_host().await);
        }
        hosts.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(hosts)
    }

    /// The configured host before its agent registers: what its agent answers right now.
    pub(crate) async fn probe_configured_host(&self) -> HostRecord {
        let mut probe = tonic::Request::new(apb::GetCapabilitiesRequest {});
        probe.set_timeout(PROBE);
        let mut host = HostRecord {
            name: self.host.clone(),
            agent_address: self.agent_url.clone(),
            dns_address: String::new(),
            addresses: Vec::new(),
            capabilities: None,
            agent_version: String::new(),
            registered_at_ms: 0,
            up: false,
            last_heartbeat_ms: 0,
        };
        match self.agent.clone().get_capabilities(probe).await {
            Ok(c) => {
                let mut c = c.into_inner();
                host.addresses = std::mem::take(&mut c.addresses);
                host.agent_version = std::mem::take(&mut c.agent_version);
                // (The agent's report as RegisterHost carries it.)
                host.capabilities = Some(crate::from_pb::capabilities(c.into()));
                host.up = true;
                host.last_heartbeat_ms = self.clock.now_ms();
            }
            Err(st) => {
                tracing::warn!(host = %self.host, error = %st.message(), "the host's agent does not answer");
            }
        }
        host
    }

    /// Creates the sandbox's namespace (or adopts the given one), attaches its initial
    /// `endpoints` (on `networks`, in order) and writes its files, in one call to its host's
    /// agent; returns the sandbox with what the agent made (namespace path, files). Each
    /// endpoint is attached knowing all the others (which one takes the default route and the
    /// ports is decided once). All or nothing on the agent's side.
    pub(crate) async fn create_on_agent(
        &self,
        sandbox: SandboxRecord,
        endpoints: &[EndpointRecord],
        networks: &[&NetworkRecord],
    ) -> Result<SandboxRecord, GatewayError> {
        let mut agent = self.agent_for(&sandbox.host).await?;
        let mut attachments: Vec<apb::AttachRequest> = Vec::with_capacity(endpoints.len());
        for (ep, net) in endpoints.iter().zip(networks) {
            attachments.push(apb::AttachRequest {
                endpoint: Some(agent_endpoint(&sandbox, endpoints, ep)),
                network: Some(self.network_spec(net, &sandbox.host).await?),
                revision: 0,
            });
        }
        let created = agent
            .create_sandbox(apb::CreateSandboxRequest {
                sandbox: Some(agent_sandbox(&sandbox, endpoints)),
                revision: 0,
                attachments,
            })
            .await
            .map_err(GatewayError::agent(&sandbox.host))?
            .into_inner();
        let attached_here = created.attached.len() == endpoints.len();
        let sandbox = SandboxRecord {
            netns_path: if created.netns_path.is_empty() {
                sandbox.netns_path
            } else {
                created.netns_path
            },
            netns_managed: created.netns_managed,
            resolv_conf_path: created.resolv_conf_path,
            hosts_path: created.hosts_path,
            ..sandbox
        };
        if !attached_here {
            // An agent that attaches nothing with CreateSandbox (an older one): one by one.
            for (ep, net) in endpoints.iter().zip(networks) {
                self.attach_agent(&sandbox, endpoints, ep, net).await?;
            }
        }
        Ok(sandbox)
    }

    /// Attaches `ep` (one of `all`, the sandbox's endpoints) on the sandbox's host.
    pub(crate) async fn attach_agent(
        &self,
        sandbox: &SandboxRecord,
        all: &[EndpointRecord],
        ep: &EndpointRecord,
        net: &NetworkRecord,
    ) -> Result<(), GatewayError> {
        let network = self.network_spec(net, &sandbox.host).await?;
        self.agent_for(&sandbox.host)
            .await?
            .attach(apb::AttachRequest {
                endpoint: Some(agent_endpoint(sandbox, all, ep)),
                network: Some(network),
                revision: 0,
            })
            .await
            .map(drop)
            .map_err(GatewayError::agent(&sandbox.host))
    }

    /// Tells the agent again about the endpoints of `after` whose default route or published
    /// ports differ from what they had in `before` (the default route moved).
    pub(crate) async fn reprogram(
        &self,
        sandbox: &SandboxRecord,
        before: &[EndpointRecord],
        after: &[EndpointRecord],
    ) {
        for (i, ep) in after.iter().enumerate() {
            // An endpoint not in `before` was attached knowing the endpoints before it.
            let was = if before.iter().any(|b| b.id == ep.id) {
                role(sandbox, before, ep)
            } else if before.is_empty() {
                role(sandbox, &after[..=i], ep)
            } else {
                role(sandbox, after, ep)
            };
            if was == role(sandbox, after, ep) {
                continue;
            }
            let net = match self.find("network", &ep.network_id).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(endpoint = %ep.id, error = %e, "cannot move the default route");
                    continue;
                }
            };
            let network = match self.network_spec(&net, &sandbox.host).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(endpoint = %ep.id, error = %e, "cannot move the default route");
                    continue;
                }
            };
            let mut agent = self.agent_for_cleanup(&sandbox.host).await;
            if let Err(st) = agent
                .attach(apb::AttachRequest {
                    endpoint: Some(agent_endpoint(sandbox, after, ep)),
                    network: Some(network),
                    revision: 0,
                })
                .await
            {
                tracing::warn!(endpoint = %ep.id, error = %st.message(), "moving the default route failed; the agent's reconciliation repairs it");
            }
        }
    }

    /// Rewrites the sandbox's resolv.conf and hosts files (its addresses changed).
    pub(crate) async fn write_files(&self, sandbox: &SandboxRecord, endpoints: &[EndpointRecord]) {
        let mut agent = self.agent_for_cleanup(&sandbox.host).await;
        if let Err(st) = agent
            .create_sandbox(apb::CreateSandboxRequest {
                sandbox: Some(agent_sandbox(sandbox, endpoints)),
                revision: 0,
                attachments: Vec::new(),
            })
            .await
        {
            tracing::warn!(sandbox = %sandbox.id, error = %st.message(), "rewriting the sandbox's files failed");
        }
    }

    /// Detaches `ep` on the sandbox's host; the agent's error, if any, is logged and returned.
    pub(crate) async fn detach_agent(
        &self,
        sandbox: &SandboxRecord,
        ep: &EndpointRecord,
    ) -> Option<tonic::Status> {
        self.detach_request(sandbox, ep, None).await.err()
    }

    /// Detaches `ep` and rewrites the sandbox's files for the endpoints that stay (`after`) in
    /// the same call; true when the agent wrote them (an older one does not).
    pub(crate) async fn detach_with_files(
        &self,
        sandbox: &SandboxRecord,
        ep: &EndpointRecord,
        after: &[EndpointRecord],
    ) -> Result<bool, tonic::Status> {
        self.detach_request(sandbox, ep, Some(agent_sandbox(sandbox, after)))
            .await
            .map(|r| r.files_written)
    }

    async fn detach_request(
        &self,
        sandbox: &SandboxRecord,
        ep: &EndpointRecord,
        files: Option<apb::SandboxSpec>,
    ) -> Result<apb::DetachResponse, tonic::Status> {
        self.agent_for_cleanup(&sandbox.host)
            .await
            .detach(apb::DetachRequest {
                endpoint_id: ep.id.clone(),
                network_id: ep.network_id.clone(),
                sandbox_id: sandbox.id.clone(),
                netns_path: sandbox.netns_path.clone(),
                revision: 0,
                files,
            })
            .await
            .map(tonic::Response::into_inner)
            .inspect_err(
                |st| tracing::warn!(endpoint = %ep.id, error = %st.message(), "detach failed"),
            )
    }

    /// Removes the sandbox's interfaces, files and (when Weft made it) namespace on its host;
    /// best effort, logged.
    pub(crate) async fn remove_agent_sandbox(&self, sandbox: &SandboxRecord) {
        if let Err(st) = self
            .agent_for_cleanup(&sandbox.host)
            .await
            .remove_sandbox(apb::RemoveSandboxRequest {
                sandbox_id: sandbox.id.clone(),
                // Only the sandbox's own namespace: a managed one is found by id, and one
                // shared with another sandbox (`container:`) keeps that sandbox's interfaces.
                netns_path: if sandbox.netns_managed
                    || sandbox.network_mode.starts_with("container:")
                {
                    String::new()
                } else {
                    sandbox.netns_path.clone()
                },
                revision: 0,
            })
            .await
        {
            tracing::warn!(sandbox = %sandbox.id, error = %st.message(), "removing the sandbox on the agent failed");
        }
    }
}

/// How long a push of an overlay's peers to one agent may take.
const PUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Overlay networks (see `overlay`): the other hosts of a network are told of its changes at
/// once.
impl Gateway {
    /// Tells the other hosts of each overlay network whose endpoints a commit changed (see
    /// `Gateway::overlay_changes`), each change in a task of its own, until every other clone
    /// of this gateway is gone (the task's own holds no sender, so it does not keep itself, or
    /// the store, alive). Started once, when the gateway is served.
    pub fn start_overlay_pushes(&self) {
        let Some(mut rx) = self
            .overlay_queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        else {
            return;
        };
        let mut gw = self.clone();
        (gw.overlay_changes, _) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            while let Some((network_id, from)) = rx.recv().await {
                let gw = gw.clone();
                tokio::spawn(async move {
                    if let Err(e) = gw.push_peers(&network_id, &from).await {
                        tracing::warn!(network = %network_id, error = %e, "telling the overlay's hosts failed; their reconciliation will");
                    }
                });
            }
        });
    }

    /// Sends every host of overlay network `network_id` but `from` its peer list now.
    async fn push_peers(&self, network_id: &str, from: &str) -> Result<(), GatewayError> {
        let (net, hosts) = {
            let mut conn = self.db.read().acquire().await?;
            let net = store::networks::find(&mut conn, network_id)
                .await?
                .into_iter()
                .find(|n| n.id == network_id);
            let hosts = store::sandboxes::hosts_on_network(&mut conn, network_id).await?;
            (net, hosts)
        };
        let Some(net) = net else {
            return Ok(());
        };
        let pushes = hosts.into_iter().filter(|h| h != from).map(|host| {
            let net = &net;
            async move {
                let spec = self.network_spec(net, &host).await?;
                let mut agent = self.agent_for(&host).await?;
                let mut req = tonic::Request::new(apb::EnsureNetworkRequest {
                    network: Some(spec),
                    revision: 0,
                });
                req.set_timeout(PUSH_TIMEOUT);
                agent
                    .ensure_network(req)
                    .await
                    .map_err(GatewayError::agent(&host))?;
                Ok::<_, GatewayError>(())
            }
        });
        for r in futures::future::join_all(pushes).await {
            r?;
        }
        Ok(())
    }
}
