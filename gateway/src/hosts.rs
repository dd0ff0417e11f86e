//! Hosts: driver-agents register their host, send heartbeats, and fetch the desired state of
//! their host (`AgentRegistryService`); `HostService.ListHosts` shows them.
//!
//! The host this gateway is configured with (`--host-name`, `--agent`) is known before its
//! agent registers, so that a single-host setup works from the first start; once an agent
//! registers under that name, the registration is what counts. A registered host whose
//! heartbeats stop for three intervals is marked down (HOST_DOWN, by exactly one replica); the
//! next heartbeat or registration brings it back up (HOST_UP).

use std::{collections::HashMap, time::Duration};

use tonic::transport::Channel;
use weft_proto::{
    agent::v1::{self as apb, agent_service_client::AgentServiceClient},
    dns::v1::dns_service_client::DnsServiceClient,
    gateway::v1 as pb,
};
use weft_runtime::FieldViolation;

use crate::{
    error::GatewayError,
    networks::{Change, Gateway, now_ms},
    store::{self, hosts::StoredHost},
    to_pb::timestamp,
};

/// How long the configured host's agent gets to answer a ListHosts probe.
const PROBE: Duration = Duration::from_secs(2);
/// Heartbeats missed before a host is marked down.
const MISSED: u32 = 3;
/// How long Connect and Disconnect wait for the host's dns-svc to see the change.
const DNS_SYNC: Duration = Duration::from_secs(2);

/// How long what the store said about a host is reused (a host marked down is refused at most
/// this much later on another replica).
const HOST_CACHE: Duration = Duration::from_secs(1);

/// What this replica last read about a host.
#[derive(Debug, Clone)]
pub(crate) struct CachedAgent {
    /// The registered agent URL; None when the host is not registered.
    url: Option<String>,
    /// None: an unknown host.
    client: Option<AgentServiceClient<Channel>>,
    /// The host's dns-svc, when it registered one.
    dns: Option<DnsServiceClient<Channel>>,
    up: bool,
    fetched: std::time::Instant,
}

/// Agent clients by host name.
pub(crate) type AgentClients = std::sync::Arc<std::sync::Mutex<HashMap<String, CachedAgent>>>;

/// The `Host` message for a stored host.
pub(crate) fn host_to_pb(h: &StoredHost) -> pb::Host {
    pb::Host {
        state: if h.up {
            pb::HostState::Up
        } else {
            pb::HostState::Down
        } as i32,
        last_heartbeat: timestamp(h.last_heartbeat_ms),
        ..h.host.clone()
    }
}

/// `host:port` or a URL → a URL tonic can dial.
fn agent_url(address: &str) -> String {
    if address.contains("://") {
        address.to_owned()
    } else {
        format!("http://{address}")
    }
}

impl Gateway {
    /// Registers (or re-registers) a host and publishes HOST_UP.
    pub async fn register_host(
        &self,
        req: pb::RegisterHostRequest,
    ) -> Result<pb::RegisterHostResponse, GatewayError> {
        let mut errs = Vec::new();
        if let Err(v) = crate::network::check_name("name", &req.name) {
            errs.push(v);
        }
        if req.agent_address.is_empty() {
            errs.push(FieldViolation::new(
                "agent_address",
                "",
                "required: where the gateway reaches the host's driver-agent (HOST:PORT)",
            ));
        } else if tonic::transport::Endpoint::from_shared(agent_url(&req.agent_address)).is_err() {
            errs.push(FieldViolation::new(
                "agent_address",
                &req.agent_address,
                "expected HOST:PORT or http://HOST:PORT",
            ));
        }
        for (i, a) in req.addresses.iter().enumerate() {
            if a.parse::<std::net::IpAddr>().is_err() {
                errs.push(FieldViolation::new(
                    format!("addresses[{i}]"),
                    a,
                    "not an IP address",
                ));
            }
        }
        if !errs.is_empty() {
            return Err(GatewayError::Invalid(errs));
        }
        let now = now_ms();
        let registered_at = {
            let mut conn = self.db.read().acquire().await?;
            store::hosts::get(&mut conn, &req.name)
                .await?
                .and_then(|h| h.host.registered_at)
                .or_else(|| timestamp(now))
        };
        let stored = StoredHost {
            host: pb::Host {
                name: req.name.clone(),
                agent_address: req.agent_address,
                dns_address: req.dns_address,
                addresses: req.addresses,
                capabilities: req.capabilities,
                state: pb::HostState::Unspecified as i32,
                last_heartbeat: None,
                registered_at,
                agent_version: req.agent_version,
            },
            up: true,
            last_heartbeat_ms: now,
        };
        let revision = self
            .commit(&[(Change::PutHost(&stored), pb::EventKind::HostUp)], None)
            .await?;
        self.cache_host(&req.name, Some(&stored));
        tracing::info!(host = %req.name, agent = %stored.host.agent_address, "host registered");
        Ok(pb::RegisterHostResponse {
            host: Some(host_to_pb(&stored)),
            heartbeat_interval: Some(duration(self.heartbeat_interval)),
            desired_revision: revision,
        })
    }

    /// Keeps a registered host up (a down one comes back up, with HOST_UP).
    pub async fn heartbeat(
        &self,
        req: pb::HeartbeatRequest,
    ) -> Result<pb::HeartbeatResponse, GatewayError> {
        let now = now_ms();
        let beat = {
            let mut conn = self.db.write().acquire().await?;
            store::hosts::beat(&mut conn, &req.host, now).await?
        };
        if !beat {
            let stored = {
                let mut conn = self.db.read().acquire().await?;
                store::hosts::get(&mut conn, &req.host).await?
            };
            let Some(stored) = stored else {
                return Err(GatewayError::HostNotFound(req.host));
            };
            let revived = StoredHost {
                up: true,
                last_heartbeat_ms: now,
                ..stored
            };
            self.commit(&[(Change::PutHost(&revived), pb::EventKind::HostUp)], None)
                .await?;
            self.cache_host(&req.host, Some(&revived));
            tracing::info!(host = %req.host, "host is up again");
        }
        if req.unrepaired_drift > 0 {
            tracing::warn!(host = %req.host, drift = req.unrepaired_drift, "the host's agent reports drift it cannot repair");
        }
        let mut conn = self.db.read().acquire().await?;
        Ok(pb::HeartbeatResponse {
            desired_revision: store::current_revision(&mut conn).await?,
            heartbeat_interval: Some(duration(self.heartbeat_interval)),
        })
    }

    /// Marks down every up host whose last heartbeat is older than three intervals; returns
    /// the names this replica marked.
    pub async fn mark_stale_hosts_down(&self) -> Result<Vec<String>, GatewayError> {
        let cutoff = now_ms()
            - i64::try_from((self.heartbeat_interval * MISSED).as_millis()).unwrap_or(i64::MAX);
        let stale: Vec<StoredHost> = {
            let mut conn = self.db.read().acquire().await?;
            store::hosts::list(&mut conn)
                .await?
                .into_iter()
                .filter(|h| h.up && h.last_heartbeat_ms < cutoff)
                .collect()
        };
        let mut marked = Vec::new();
        for h in stale {
            let down = StoredHost { up: false, ..h };
            if self.commit_host_down(&down, cutoff).await? {
                self.cache_host(&down.host.name, Some(&down));
                tracing::warn!(host = %down.host.name, "no heartbeat: host marked down");
                marked.push(down.host.name.clone());
            }
        }
        Ok(marked)
    }

    /// The conditional update and its HOST_DOWN event in one transaction; false when another
    /// replica (or a heartbeat) got there first.
    async fn commit_host_down(&self, h: &StoredHost, cutoff: i64) -> Result<bool, GatewayError> {
        let mut conn = self.db.write().acquire().await?;
        let mut tx = sqlx::Connection::begin_with(&mut *conn, self.db.begin_write_sql()).await?;
        if !store::hosts::mark_down(&mut tx, &h.host.name, cutoff).await? {
            return Ok(false);
        }
        let revision = store::next_revision(&mut tx).await?;
        store::insert_event(
            &mut tx,
            &crate::to_pb::event(
                revision,
                pb::EventKind::HostDown,
                pb::event::Object::Host(host_to_pb(h)),
            ),
        )
        .await?;
        store::trim_events(&mut tx, revision, self.event_history).await?;
        tx.commit().await?;
        self.notify.send_replace(revision);
        Ok(true)
    }

    /// Marks stale hosts down every heartbeat interval, forever.
    pub async fn watch_heartbeats_forever(&self) {
        loop {
            tokio::time::sleep(self.heartbeat_interval).await;
            if let Err(e) = self.mark_stale_hosts_down().await {
                tracing::warn!(error = %e, "checking heartbeats failed");
            }
        }
    }

    /// The client of `host`'s driver-agent: the registered address, or the configured agent
    /// for the configured host. A host that is down is FAILED_PRECONDITION. What the store says
    /// about a host is reused for [`HOST_CACHE`], so a Connect costs no extra read.
    pub(crate) async fn agent_for(
        &self,
        host: &str,
    ) -> Result<AgentServiceClient<Channel>, GatewayError> {
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
    pub(crate) async fn agent_for_cleanup(&self, host: &str) -> AgentServiceClient<Channel> {
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
    fn cache_host(&self, host: &str, stored: Option<&StoredHost>) -> CachedAgent {
        let mut clients = self
            .agents
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (url, up) = match stored {
            Some(s) => (Some(agent_url(&s.host.agent_address)), s.up),
            None => (None, true),
        };
        let client = match &url {
            None if host == self.host => Some(self.agent.clone()),
            None => None,
            Some(url) => match clients.get(host) {
                Some(c) if c.url.as_ref() == Some(url) => c.client.clone(),
                _ => Some(
                    tonic::transport::Endpoint::from_shared(url.clone())
                        .map(|e| {
                            AgentServiceClient::new(
                                e.connect_timeout(Duration::from_secs(2))
                                    .timeout(Duration::from_secs(10))
                                    .connect_lazy(),
                            )
                        })
                        // Validated at registration.
                        .unwrap_or_else(|_| self.agent.clone()),
                ),
            },
        };
        let dns = stored
            .map(|s| s.host.dns_address.as_str())
            .filter(|a| !a.is_empty())
            .and_then(|a| match clients.get(host) {
                Some(c) if c.dns.is_some() && c.url == url => c.dns.clone(),
                _ => tonic::transport::Endpoint::from_shared(agent_url(a))
                    .ok()
                    .map(|e| {
                        DnsServiceClient::new(
                            e.connect_timeout(Duration::from_secs(1))
                                .timeout(DNS_SYNC + Duration::from_secs(1))
                                .connect_lazy(),
                        )
                    }),
            });
        let entry = CachedAgent {
            url,
            client,
            dns,
            up,
            fetched: std::time::Instant::now(),
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

    /// Registered hosts, plus the configured one when it has not registered.
    async fn known_hosts(&self) -> Result<Vec<String>, GatewayError> {
        let mut conn = self.db.read().acquire().await?;
        let mut names: Vec<String> = store::hosts::list(&mut conn)
            .await?
            .into_iter()
            .map(|h| h.host.name)
            .collect();
        if !names.contains(&self.host) {
            names.push(self.host.clone());
            names.sort();
        }
        Ok(names)
    }

    pub async fn list_hosts(
        &self,
        req: &pb::ListHostsRequest,
    ) -> Result<pb::ListHostsResponse, GatewayError> {
        let (stored, revision) = {
            let mut conn = self.db.read().acquire().await?;
            let revision = store::current_revision(&mut conn).await?;
            (store::hosts::list(&mut conn).await?, revision)
        };
        let mut hosts: Vec<pb::Host> = stored.iter().map(host_to_pb).collect();
        if !stored.iter().any(|h| h.host.name == self.host) {
            hosts.push(self.probe_configured_host().await);
            hosts.sort_by(|a, b| a.name.cmp(&b.name));
        }
        hosts.retain(|h| {
            (req.name.is_empty() || req.name.contains(&h.name))
                && (req.state == pb::HostState::Unspecified as i32 || req.state == h.state)
        });
        Ok(pb::ListHostsResponse { hosts, revision })
    }

    /// The configured host before its agent registers: what its agent answers right now.
    async fn probe_configured_host(&self) -> pb::Host {
        let mut probe = tonic::Request::new(apb::GetCapabilitiesRequest {});
        probe.set_timeout(PROBE);
        match self.agent.clone().get_capabilities(probe).await {
            Ok(c) => {
                let c = c.into_inner();
                pb::Host {
                    name: self.host.clone(),
                    agent_address: self.agent_url.clone(),
                    addresses: c.addresses.clone(),
                    agent_version: c.agent_version.clone(),
                    capabilities: Some(c.into()),
                    state: pb::HostState::Up as i32,
                    last_heartbeat: timestamp(now_ms()),
                    ..Default::default()
                }
            }
            Err(st) => {
                tracing::warn!(host = %self.host, error = %st.message(), "the host's agent does not answer");
                pb::Host {
                    name: self.host.clone(),
                    agent_address: self.agent_url.clone(),
                    state: pb::HostState::Down as i32,
                    ..Default::default()
                }
            }
        }
    }

    /// Hosts for a Watch snapshot, as HOST_UP / HOST_DOWN objects.
    pub(crate) async fn snapshot_hosts(
        conn: &mut sqlx::AnyConnection,
    ) -> Result<Vec<(pb::EventKind, pb::Host)>, GatewayError> {
        Ok(store::hosts::list(conn)
            .await?
            .iter()
            .map(|h| {
                (
                    if h.up {
                        pb::EventKind::HostUp
                    } else {
                        pb::EventKind::HostDown
                    },
                    host_to_pb(h),
                )
            })
            .collect())
    }
}

fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}
