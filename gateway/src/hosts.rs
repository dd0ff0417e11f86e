//! Hosts: driver-agents register their host, send heartbeats, and fetch the desired state of
//! their host (`AgentRegistryService`); `HostService.ListHosts` shows them.
//!
//! The host this gateway is configured with (`--host-name`, `--agent`) is known before its
//! agent registers, so that a single-host setup works from the first start; once an agent
//! registers under that name, the registration is what counts. A registered host whose
//! heartbeats stop for three intervals is marked down (HOST_DOWN, by exactly one replica); the
//! next heartbeat or registration brings it back up (HOST_UP).

use weft_proto::gateway::v1 as pb;
use weft_runtime::FieldViolation;

use crate::{
    agents::{agent_url, duration},
    engine::{Change, Gateway, now_ms},
    error::GatewayError,
    store::{self, hosts::StoredHost},
    to_pb::timestamp,
};

/// Heartbeats missed before a host is marked down.
const MISSED: u32 = 3;

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

impl Gateway {
    /// Registers (or re-registers) a host and publishes HOST_UP.
    pub async fn register_host(
        &self,
        req: pb::RegisterHostRequest,
    ) -> Result<pb::RegisterHostResponse, GatewayError> {
        let mut errs = Vec::new();
        if let Err(v) = crate::domain::network::check_name("name", &req.name) {
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
                now_ms(),
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
