//! `weft.gateway.v1` requests as the domain's raw requests: field by field, nothing checked
//! here (the domain's `validate` functions do that), nothing kept of the protobuf types.

use weft_proto::gateway::v1 as pb;

use crate::domain::{
    endpoint::RawSettings,
    host::{HostCapabilities, RawHost},
    list::{HostFilter, NetworkFilter, SandboxFilter},
    network::{PruneSpec, RawNetwork, RawNetworkUpdate, SubnetSpec},
    ports::RawPort,
    sandbox::{DnsRecord, RawAttachment, RawSandbox},
};

pub fn network(r: pb::CreateNetworkRequest) -> RawNetwork {
    let ipam = r.ipam.unwrap_or_default();
    RawNetwork {
        name: r.name,
        driver: r.driver,
        ipam_driver: ipam.driver,
        ipam_options: ipam.options.into_iter().collect(),
        subnets: ipam
            .configs
            .into_iter()
            .map(|c| SubnetSpec {
                subnet: c.subnet,
                ip_range: c.ip_range,
                gateway: c.gateway,
                aux_addresses: c.aux_addresses.into_iter().collect(),
            })
            .collect(),
        enable_ipv4: r.enable_ipv4,
        enable_ipv6: r.enable_ipv6,
        internal: r.internal,
        attachable: r.attachable,
        labels: r.labels.into_iter().collect(),
        options: r.options.into_iter().collect(),
        dns_servers: r.dns_servers,
    }
}

pub(crate) fn network_update(r: pb::UpdateNetworkRequest) -> RawNetworkUpdate {
    RawNetworkUpdate {
        network: r.network,
        labels: r.labels.into_iter().collect(),
        dns_servers: r.dns_servers,
        paths: r.update_mask.map(|m| m.paths).unwrap_or_default(),
    }
}

pub(crate) fn network_filter(r: pb::ListNetworksRequest) -> NetworkFilter {
    NetworkFilter {
        name: r.name,
        id: r.id,
        driver: r.driver,
        label: r.label,
        scope: r.scope,
    }
}

pub(crate) fn prune(r: pb::PruneNetworksRequest) -> PruneSpec {
    PruneSpec {
        label: r.label,
        label_not: r.label_not,
        until_ms: r.until.map(|t| t.seconds.saturating_mul(1000)),
        validate_only: r.validate_only,
    }
}

pub fn settings(s: Option<pb::EndpointSettings>) -> RawSettings {
    let s = s.unwrap_or_default();
    RawSettings {
        ipv4_address: s.ipv4_address,
        ipv6_address: s.ipv6_address,
        mac_address: s.mac_address,
        aliases: s.aliases,
        gw_priority: s.gw_priority,
        driver_options: s.driver_options.into_iter().collect(),
        link_local_ips: s.link_local_ips,
        interface_name: s.interface_name,
    }
}

pub fn sandbox(r: pb::CreateSandboxRequest) -> RawSandbox {
    let dns = r.dns.unwrap_or_default();
    RawSandbox {
        name: r.name,
        container_id: r.container_id,
        host: r.host,
        netns_path: r.netns_path,
        hostname: r.hostname,
        dns: DnsRecord {
            servers: dns.servers,
            search: dns.search,
            options: dns.options,
        },
        extra_hosts: r
            .extra_hosts
            .into_iter()
            .map(|h| (h.hostname, h.address))
            .collect(),
        port_mappings: r
            .port_mappings
            .into_iter()
            .map(|p| RawPort {
                host_ip: p.host_ip,
                host_port: p.host_port,
                container_port: p.container_port,
                protocol: p.protocol,
                range: p.range,
            })
            .collect(),
        networks: r
            .networks
            .into_iter()
            .map(|a| RawAttachment {
                network: a.network,
                settings: settings(a.settings),
            })
            .collect(),
        network_mode: r.network_mode,
        labels: r.labels.into_iter().collect(),
    }
}

pub(crate) fn sandbox_filter(r: pb::ListSandboxesRequest) -> SandboxFilter {
    SandboxFilter {
        name: r.name,
        host: r.host,
        network: r.network,
        container_id: r.container_id,
        label: r.label,
    }
}

/// ListHosts' filters; an unknown state is refused (returned as `Err` with its number).
pub(crate) fn host_filter(r: pb::ListHostsRequest) -> Result<HostFilter, i32> {
    let up = match pb::HostState::try_from(r.state) {
        Ok(pb::HostState::Unspecified) => None,
        Ok(pb::HostState::Up) => Some(true),
        Ok(pb::HostState::Down) => Some(false),
        Err(_) => return Err(r.state),
    };
    Ok(HostFilter { name: r.name, up })
}

pub(crate) fn host(r: pb::RegisterHostRequest) -> RawHost {
    RawHost {
        name: r.name,
        agent_address: r.agent_address,
        dns_address: r.dns_address,
        addresses: r.addresses,
        capabilities: r.capabilities.map(capabilities),
        agent_version: r.agent_version,
    }
}

pub(crate) fn capabilities(c: pb::HostCapabilities) -> HostCapabilities {
    HostCapabilities {
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
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_handoff_option_is_the_one_the_agent_reads() {
        assert_eq!(
            crate::domain::endpoint::HANDOFF_OPTION,
            weft_proto::HANDOFF_OPTION
        );
    }
}
