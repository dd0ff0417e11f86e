//! `HostService`: the hosts the gateway places sandboxes on.
//!
//! For now there is one host, the one this gateway is configured with (`--host-name`,
//! `--agent`); its state and capabilities are what its agent answers right now. Agents
//! registering and heartbeating (several hosts, "down" after missed heartbeats) come with the
//! agent registry.

use std::time::Duration;

use weft_proto::{agent::v1 as apb, gateway::v1 as pb};

use crate::{error::GatewayError, networks::Gateway, store, to_pb::timestamp};

/// How long a host's agent gets to answer before the host is reported down.
const PROBE: Duration = Duration::from_secs(2);

impl Gateway {
    pub async fn list_hosts(
        &self,
        req: &pb::ListHostsRequest,
    ) -> Result<pb::ListHostsResponse, GatewayError> {
        let mut probe = tonic::Request::new(apb::GetCapabilitiesRequest {});
        probe.set_timeout(PROBE);
        let answer = self.agent.clone().get_capabilities(probe).await;
        let host = match answer {
            Ok(c) => {
                let c = c.into_inner();
                let f = c.features.unwrap_or_default();
                pb::Host {
                    name: self.host.clone(),
                    agent_address: self.agent_url.clone(),
                    addresses: c.addresses,
                    capabilities: Some(pb::HostCapabilities {
                        drivers: c.drivers,
                        bridge: f.bridge,
                        veth: f.veth,
                        vxlan: f.vxlan,
                        macvlan: f.macvlan,
                        ipvlan: f.ipvlan,
                        vlan: f.vlan,
                        ipv6: f.ipv6,
                        nftables: f.nftables,
                        nftables_nat: f.nftables_nat,
                        kernel_release: c.kernel_release,
                    }),
                    state: pb::HostState::Up as i32,
                    last_heartbeat: timestamp(crate::networks::now_ms()),
                    agent_version: c.agent_version,
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
        };
        let keep = (req.name.is_empty() || req.name.contains(&host.name))
            && (req.state == pb::HostState::Unspecified as i32 || req.state == host.state);
        let mut conn = self.db.read().acquire().await?;
        let revision = store::current_revision(&mut conn).await?;
        Ok(pb::ListHostsResponse {
            hosts: if keep { vec![host] } else { Vec::new() },
            revision,
        })
    }
}
