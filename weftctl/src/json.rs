//! API objects as JSON, with the protobuf JSON mapping's names (lowerCamelCase fields, enum
//! value names, RFC 3339 timestamps) so that weftctl's output matches grpcurl's. Every field is
//! present, defaults included, as `docker network inspect` shows them.

use std::collections::HashMap;

use serde_json::{Map, Value, json};
use weft_ipam::{CheckResponse, problem};
use weft_proto::gateway::v1 as pb;
use weft_proto::ipam::v1 as weft_ipam;

/// RFC 3339 text of a timestamp; `null` when unset.
pub fn time(t: Option<&prost_types::Timestamp>) -> Value {
    t.map_or(Value::Null, |t| Value::String(t.to_string()))
}

fn map(m: &HashMap<String, String>) -> Value {
    // Sorted, so that output is stable.
    let sorted: std::collections::BTreeMap<&String, &String> = m.iter().collect();
    json!(sorted)
}

pub fn ipam(i: Option<&pb::Ipam>) -> Value {
    let Some(i) = i else {
        return Value::Null;
    };
    json!({
        "driver": i.driver,
        "configs": i.configs.iter().map(|c| json!({
            "subnet": c.subnet,
            "ipRange": c.ip_range,
            "gateway": c.gateway,
            "auxAddresses": map(&c.aux_addresses),
        })).collect::<Vec<_>>(),
        "options": map(&i.options),
    })
}

pub fn network(n: &pb::Network) -> Value {
    json!({
        "id": n.id,
        "name": n.name,
        "driver": n.driver,
        "scope": n.scope,
        "ipam": ipam(n.ipam.as_ref()),
        "enableIpv4": n.enable_ipv4,
        "enableIpv6": n.enable_ipv6,
        "internal": n.internal,
        "attachable": n.attachable,
        "labels": map(&n.labels),
        "options": map(&n.options),
        "createdAt": time(n.created_at.as_ref()),
        "updatedAt": time(n.updated_at.as_ref()),
        "endpoints": n.endpoints.iter().map(|e| json!({
            "endpointId": e.endpoint_id,
            "sandboxId": e.sandbox_id,
            "sandboxName": e.sandbox_name,
            "macAddress": e.mac_address,
            "ipv4Address": e.ipv4_address,
            "ipv6Address": e.ipv6_address,
            "host": e.host,
            "interfaceName": e.interface_name,
        })).collect::<Vec<_>>(),
        "dnsServers": n.dns_servers,
        "predefined": n.predefined,
    })
}

pub fn endpoint(e: &pb::Endpoint) -> Value {
    json!({
        "id": e.id,
        "networkId": e.network_id,
        "networkName": e.network_name,
        "sandboxId": e.sandbox_id,
        "sandboxName": e.sandbox_name,
        "interfaceName": e.interface_name,
        "macAddress": e.mac_address,
        "ipv4Address": e.ipv4_address,
        "ipv6Address": e.ipv6_address,
        "gateway": e.gateway,
        "ipv6Gateway": e.ipv6_gateway,
        "aliases": e.aliases,
        "dnsNames": e.dns_names,
        "gwPriority": e.gw_priority.to_string(),
        "defaultRouteV4": e.default_route_v4,
        "defaultRouteV6": e.default_route_v6,
        "driverOptions": map(&e.driver_options),
        "linkLocalIps": e.link_local_ips,
        "host": e.host,
        "hostDown": e.host_down,
        "hostInterfaceName": e.host_interface_name,
        "createdAt": time(e.created_at.as_ref()),
    })
}

fn protocol_name(p: i32) -> &'static str {
    pb::Protocol::try_from(p).map_or("PROTOCOL_UNSPECIFIED", |p| p.as_str_name())
}

pub fn port_mapping(p: &pb::PortMapping) -> Value {
    json!({
        "hostIp": p.host_ip,
        "hostPort": p.host_port,
        "containerPort": p.container_port,
        "protocol": protocol_name(p.protocol),
        "range": p.range,
    })
}

pub fn sandbox(s: &pb::Sandbox) -> Value {
    let dns = s.dns.clone().unwrap_or_default();
    json!({
        "id": s.id,
        "name": s.name,
        "containerId": s.container_id,
        "host": s.host,
        "netnsPath": s.netns_path,
        "hostname": s.hostname,
        "dns": {"servers": dns.servers, "search": dns.search, "options": dns.options},
        "extraHosts": s.extra_hosts.iter().map(|h| json!({"hostname": h.hostname, "address": h.address})).collect::<Vec<_>>(),
        "portMappings": s.port_mappings.iter().map(port_mapping).collect::<Vec<_>>(),
        "endpoints": s.endpoints.iter().map(endpoint).collect::<Vec<_>>(),
        "resolvConfPath": s.resolv_conf_path,
        "hostsPath": s.hosts_path,
        "networkMode": s.network_mode,
        "createdAt": time(s.created_at.as_ref()),
        "labels": map(&s.labels),
        "netnsManaged": s.netns_managed,
    })
}

pub fn host(h: &pb::Host) -> Value {
    let c = h.capabilities.clone().unwrap_or_default();
    json!({
        "name": h.name,
        "agentAddress": h.agent_address,
        "dnsAddress": h.dns_address,
        "addresses": h.addresses,
        "capabilities": {
            "drivers": c.drivers,
            "bridge": c.bridge,
            "veth": c.veth,
            "vxlan": c.vxlan,
            "macvlan": c.macvlan,
            "ipvlan": c.ipvlan,
            "vlan": c.vlan,
            "ipv6": c.ipv6,
            "nftables": c.nftables,
            "nftablesNat": c.nftables_nat,
            "kernelRelease": c.kernel_release,
            "ipsec": c.ipsec,
            "ipsecMissing": c.ipsec_missing,
        },
        "state": pb::HostState::try_from(h.state).map_or("HOST_STATE_UNSPECIFIED", |s| s.as_str_name()),
        "lastHeartbeat": time(h.last_heartbeat.as_ref()),
        "registeredAt": time(h.registered_at.as_ref()),
        "agentVersion": h.agent_version,
    })
}

pub fn event(e: &pb::Event) -> Value {
    let mut m = Map::new();
    m.insert("revision".into(), json!(e.revision.to_string()));
    m.insert("time".into(), time(e.time.as_ref()));
    m.insert(
        "kind".into(),
        json!(
            pb::EventKind::try_from(e.kind).map_or("EVENT_KIND_UNSPECIFIED", |k| k.as_str_name())
        ),
    );
    match &e.object {
        Some(pb::event::Object::Network(n)) => m.insert("network".into(), network(n)),
        Some(pb::event::Object::Sandbox(s)) => m.insert("sandbox".into(), sandbox(s)),
        Some(pb::event::Object::Endpoint(x)) => m.insert("endpoint".into(), endpoint(x)),
        Some(pb::event::Object::Host(h)) => m.insert("host".into(), host(h)),
        None => None,
    };
    if !e.request_id.is_empty() {
        m.insert("requestId".into(), json!(e.request_id));
    }
    Value::Object(m)
}

pub fn ipam_check(c: &CheckResponse) -> Value {
    json!({
        "poolsChecked": c.pools_checked.to_string(),
        "allocationsChecked": c.allocations_checked.to_string(),
        "problemsCount": c.problems_count.to_string(),
        "problems": c.problems.iter().map(|p| json!({
            "kind": problem::Kind::try_from(p.kind).map_or("KIND_UNSPECIFIED", |k| k.as_str_name()),
            "poolId": p.pool_id,
            "address": p.address,
            "owners": p.owners,
            "detail": p.detail,
        })).collect::<Vec<_>>(),
    })
}

/// The gateway's consistency check, with proto JSON names (64-bit counts as strings).
pub fn consistency(c: &pb::CheckConsistencyResponse) -> Value {
    json!({
        "leakedPools": c.leaked_pools,
        "leakedPoolsTotal": c.leaked_pools_total.to_string(),
        "leakedAddresses": c.leaked_addresses,
        "leakedAddressesTotal": c.leaked_addresses_total.to_string(),
        "endpointsWithoutAddress": c.endpoints_without_address,
        "endpointsWithoutAddressTotal": c.endpoints_without_address_total.to_string(),
        "operationsPending": c.operations_pending.to_string(),
        "drift": c.drift.iter().map(|d| json!({
            "host": d.host,
            "changes": d.changes,
            "changesTotal": d.changes_total.to_string(),
            "error": d.error,
        })).collect::<Vec<_>>(),
        "hostsChecked": c.hosts_checked,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_json_shows_what_the_kernel_lacks_for_ipsec() {
        let h = pb::Host {
            name: "h1".into(),
            capabilities: Some(pb::HostCapabilities {
                ipsec: false,
                ipsec_missing: vec!["esp4".into(), "rfc4106(gcm(aes))".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        let v = host(&h);
        assert_eq!(v["capabilities"]["ipsec"], false);
        assert_eq!(
            v["capabilities"]["ipsecMissing"],
            json!(["esp4", "rfc4106(gcm(aes))"])
        );
    }

    #[test]
    fn network_json_uses_proto_json_names_and_rfc3339_times() {
        let n = pb::Network {
            id: "ab".repeat(32),
            name: "front".into(),
            driver: "bridge".into(),
            scope: "local".into(),
            ipam: Some(pb::Ipam {
                driver: "default".into(),
                configs: vec![pb::IpamConfig {
                    subnet: "10.1.0.0/24".into(),
                    gateway: "10.1.0.1".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            enable_ipv4: true,
            labels: [
                ("b".to_owned(), "2".to_owned()),
                ("a".to_owned(), "1".to_owned()),
            ]
            .into(),
            created_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            ..Default::default()
        };
        let v = network(&n);
        assert_eq!(v["name"], "front");
        assert_eq!(v["enableIpv4"], true);
        assert_eq!(v["ipam"]["configs"][0]["subnet"], "10.1.0.0/24");
        assert_eq!(v["ipam"]["configs"][0]["gateway"], "10.1.0.1");
        assert_eq!(v["createdAt"], "2023-11-14T22:13:20Z");
        assert_eq!(v["updatedAt"], Value::Null);
        assert_eq!(
            serde_json::to_string(&v["labels"]).unwrap(),
            r#"{"a":"1","b":"2"}"#
        );
    }

    #[test]
    fn event_json_names_its_kind_and_object() {
        let e = pb::Event {
            revision: 7,
            kind: pb::EventKind::SandboxCreated.into(),
            object: Some(pb::event::Object::Sandbox(pb::Sandbox {
                name: "web".into(),
                port_mappings: vec![pb::PortMapping {
                    host_port: 8080,
                    container_port: 80,
                    protocol: pb::Protocol::Udp.into(),
                    range: 1,
                    ..Default::default()
                }],
                ..Default::default()
            })),
            ..Default::default()
        };
        let v = event(&e);
        assert_eq!(v["revision"], "7");
        assert_eq!(v["kind"], "EVENT_KIND_SANDBOX_CREATED");
        assert_eq!(v["sandbox"]["name"], "web");
        assert_eq!(v["sandbox"]["portMappings"][0]["protocol"], "PROTOCOL_UDP");
        assert!(v.get("requestId").is_none());
    }
}
