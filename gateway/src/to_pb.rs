//! The gateway's records as `weft.gateway.v1` messages: the answers of the gRPC edge and the
//! objects of events. (Requests come in through `from_pb`.)

use std::time::Duration;

use weft_proto::gateway::v1 as pb;

use crate::domain::{
    endpoint::{EndpointRecord, default_route},
    host::{HostCapabilities, HostRecord},
    network::NetworkRecord,
    sandbox::SandboxRecord,
};

pub(crate) fn timestamp(ms: i64) -> Option<prost_types::Timestamp> {
    (ms > 0).then(|| prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    })
}

pub(crate) fn network_to_pb(n: &NetworkRecord) -> pb::Network {
    pb::Network {
        id: n.id.clone(),
        name: n.name.clone(),
        driver: n.driver.clone(),
        scope: n.scope.clone(),
        ipam: Some(pb::Ipam {
            driver: "default".into(),
            configs: n
                .subnets
                .iter()
                .map(|s| pb::IpamConfig {
                    subnet: s.subnet.clone(),
                    ip_range: s.ip_range.clone(),
                    gateway: s.gateway.clone(),
                    aux_addresses: s.aux_addresses.clone().into_iter().collect(),
                })
                .collect(),
            options: Default::default(),
        }),
        enable_ipv4: n.enable_ipv4,
        enable_ipv6: n.enable_ipv6,
        internal: n.internal,
        attachable: n.attachable,
        labels: n.labels.clone().into_iter().collect(),
        options: n.options.clone().into_iter().collect(),
        created_at: timestamp(n.created_at_ms),
        // Filled in by GetNetwork; events carry endpoints as events of their own.
        endpoints: Vec::new(),
        dns_servers: n.dns_servers.clone(),
        updated_at: timestamp(n.updated_at_ms),
        predefined: n.predefined,
    }
}

pub(crate) fn event(
    revision: u64,
    time_ms: i64,
    kind: pb::EventKind,
    object: pb::event::Object,
) -> pb::Event {
    // The caller of the request this task serves, if any (see `caller::as_caller`).
    let caller = crate::caller::current_caller();
    pb::Event {
        revision,
        time: timestamp(time_ms),
        kind: kind as i32,
        object: Some(object),
        request_id: caller.request_id,
        actor: caller.identity,
    }
}

/// An endpoint; `routes` says which endpoints of its sandbox provide the default routes.
pub(crate) fn endpoint_to_pb(e: &EndpointRecord, routes: Option<(&str, &str)>) -> pb::Endpoint {
    let (v4, v6) = routes.unwrap_or_default();
    // The names the endpoint answers to on its network: the sandbox's name and its aliases.
    let mut dns_names = vec![e.sandbox_name.clone()];
    dns_names.extend(e.aliases.iter().cloned());
    pb::Endpoint {
        id: e.id.clone(),
        network_id: e.network_id.clone(),
        network_name: e.network_name.clone(),
        sandbox_id: e.sandbox_id.clone(),
        sandbox_name: e.sandbox_name.clone(),
        interface_name: e.interface_name.clone(),
        mac_address: e.mac_address.clone(),
        ipv4_address: e.ipv4_address.clone(),
        ipv6_address: e.ipv6_address.clone(),
        gateway: e.gateway.clone(),
        ipv6_gateway: e.ipv6_gateway.clone(),
        aliases: e.aliases.clone(),
        dns_names,
        gw_priority: e.gw_priority,
        default_route_v4: v4 == e.id,
        default_route_v6: v6 == e.id,
        driver_options: e.driver_options.clone().into_iter().collect(),
        link_local_ips: e.link_local_ips.clone(),
        host: e.host.clone(),
        created_at: timestamp(e.created_at_ms),
        host_down: e.host_down,
        host_interface_name: e.host_interface.clone(),
    }
}

pub(crate) fn sandbox_to_pb(s: &SandboxRecord, endpoints: &[EndpointRecord]) -> pb::Sandbox {
    let id = |e: Option<&EndpointRecord>| e.map(|e| e.id.clone()).unwrap_or_default();
    let v4 = id(default_route(endpoints, false));
    let v6 = id(default_route(endpoints, true));
    pb::Sandbox {
        id: s.id.clone(),
        name: s.name.clone(),
        container_id: s.container_id.clone(),
        host: s.host.clone(),
        netns_path: s.netns_path.clone(),
        hostname: s.hostname.clone(),
        dns: Some(pb::DnsConfig {
            servers: s.dns.servers.clone(),
            search: s.dns.search.clone(),
            options: s.dns.options.clone(),
        }),
        extra_hosts: s
            .extra_hosts
            .iter()
            .map(|(h, a)| pb::ExtraHost {
                hostname: h.clone(),
                address: a.clone(),
            })
            .collect(),
        port_mappings: s
            .port_mappings
            .iter()
            .map(|p| pb::PortMapping {
                host_ip: p.host_ip.clone(),
                host_port: p.host_port,
                container_port: p.container_port,
                protocol: i32::from(p.protocol),
                range: p.range,
            })
            .collect(),
        endpoints: endpoints
            .iter()
            .map(|e| endpoint_to_pb(e, Some((&v4, &v6))))
            .collect(),
        resolv_conf_path: s.resolv_conf_path.clone(),
        hosts_path: s.hosts_path.clone(),
        network_mode: s.network_mode.clone(),
        created_at: timestamp(s.created_at_ms),
        labels: s.labels.clone().into_iter().collect(),
        netns_managed: s.netns_managed,
    }
}

/// `docker network inspect`'s view of a network's endpoints.
pub(crate) fn network_endpoints(endpoints: &[EndpointRecord]) -> Vec<pb::NetworkEndpoint> {
    endpoints
        .iter()
        .map(|e| pb::NetworkEndpoint {
            endpoint_id: e.id.clone(),
            sandbox_id: e.sandbox_id.clone(),
            sandbox_name: e.sandbox_name.clone(),
            mac_address: e.mac_address.clone(),
            ipv4_address: e.ipv4_address.clone(),
            ipv6_address: e.ipv6_address.clone(),
            host: e.host.clone(),
            interface_name: e.interface_name.clone(),
        })
        .collect()
}

/// An endpoint as the API shows it, among all of its sandbox's endpoints (which decide its
/// default-route flags).
pub(crate) fn endpoint_view(ep: &EndpointRecord, all: &[EndpointRecord]) -> pb::Endpoint {
    let id = |e: Option<&EndpointRecord>| e.map(|e| e.id.clone()).unwrap_or_default();
    let v4 = id(default_route(all, false));
    let v6 = id(default_route(all, true));
    let mut view = endpoint_to_pb(ep, Some((&v4, &v6)));
    if ep.id.is_empty() {
        // A validate_only answer: the endpoint would provide the route if nothing else does.
        let carries = |v6: bool| {
            default_route(all, v6).is_some_and(|d| d.id == ep.id && d.network_id == ep.network_id)
        };
        view.default_route_v4 = carries(false);
        view.default_route_v6 = carries(true);
        view.created_at = None;
    }
    view
}

/// A host as ListHosts and events show it.
pub(crate) fn host_to_pb(h: &HostRecord) -> pb::Host {
    pb::Host {
        name: h.name.clone(),
        agent_address: h.agent_address.clone(),
        dns_address: h.dns_address.clone(),
        addresses: h.addresses.clone(),
        capabilities: h.capabilities.as_ref().map(capabilities_to_pb),
        state: if h.up {
            pb::HostState::Up
        } else {
            pb::HostState::Down
        } as i32,
        last_heartbeat: timestamp(h.last_heartbeat_ms),
        registered_at: timestamp(h.registered_at_ms),
        agent_version: h.agent_version.clone(),
    }
}

fn capabilities_to_pb(c: &HostCapabilities) -> pb::HostCapabilities {
    pb::HostCapabilities {
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
    }
}

pub(crate) fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}
