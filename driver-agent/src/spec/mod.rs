//! The agent's domain types, converted from `weft.agent.v1` messages at the edge: anything
//! malformed becomes a field violation naming the field and the value.
//!
//! One file per spec: [`network`] (with an [`overlay`] network's VXLAN side and peers),
//! [`endpoint`] and the [`port`] mappings an endpoint publishes.

mod endpoint;
mod network;
mod overlay;
mod port;

pub use endpoint::Endpoint;
pub use network::{Driver, IpvlanFlag, IpvlanMode, MacvlanMode, Network};
pub use overlay::{OverlaySpec, Peer};
pub use port::{HostIp, PortMapping, Protocol};
use weft_runtime::FieldViolation;

/// Collects violations so that one reply names every bad field at once.
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    pub fn add(&mut self, field: impl Into<String>, value: impl Into<String>, reason: &str) {
        self.0.push(FieldViolation::new(field, value, reason));
    }

    /// How many violations so far.
    pub fn count(&self) -> usize {
        self.0.len()
    }

    pub fn finish<T>(self, value: T) -> Result<T, Vec<FieldViolation>> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self.0)
        }
    }
}

/// Ids are used in link aliases and names: printable, no whitespace, bounded.
pub fn check_id(v: &mut Violations, field: &str, id: &str) {
    if id.is_empty() {
        v.add(field, id, "must not be empty");
    } else if id.len() > 128 || id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        v.add(
            field,
            id,
            "must be at most 128 characters without whitespace",
        );
    }
}

#[cfg(test)]
mod tests {
    use ipnet::IpNet;
    use weft_proto::agent::v1 as pb;

    use super::*;
    use crate::names;

    fn bridge_spec() -> pb::NetworkSpec {
        pb::NetworkSpec {
            network_id: "3f2a9c1e-7b4d-4e2a-9f00-123456789abc".into(),
            driver: pb::Driver::Bridge as i32,
            subnets: vec![pb::Subnet {
                cidr: "10.0.0.0/24".into(),
                gateway: "10.0.0.1".into(),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn bridge_name_comes_from_field_then_docker_option_then_id() {
        let n = Network::from_pb(bridge_spec(), "network").unwrap();
        assert_eq!(n.bridge, "wft-3f2a9c1e7b4");
        assert_eq!(n.gateways, vec!["10.0.0.1/24".parse::<IpNet>().unwrap()]);

        let mut s = bridge_spec();
        s.options
            .insert(names::BRIDGE_NAME_OPTION.into(), "br-docker".into());
        assert_eq!(
            Network::from_pb(s.clone(), "network").unwrap().bridge,
            "br-docker"
        );
        s.bridge_name = "br-field".into();
        assert_eq!(Network::from_pb(s, "network").unwrap().bridge, "br-field");
    }

    #[test]
    fn bad_network_fields_are_all_named() {
        let mut s = bridge_spec();
        s.bridge_name = "much-too-long-bridge".into();
        s.subnets[0].gateway = "10.9.9.9".into();
        s.driver = 0;
        let v = Network::from_pb(s, "network").unwrap_err();
        let fields: Vec<&str> = v.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            ["network.driver", "network.subnets[0].gateway"],
            "{v:?}"
        );
    }

    #[test]
    fn parent_and_modes_reach_the_domain_and_bad_ones_are_named() {
        let mut s = bridge_spec();
        s.driver = pb::Driver::Macvlan as i32;
        s.parent = "eth1".into();
        let n = Network::from_pb(s.clone(), "network").unwrap();
        assert_eq!(n.parent, "eth1");
        assert_eq!(n.bridge, "", "no bridge for macvlan");
        // Unspecified: Docker's defaults.
        assert_eq!(
            (n.macvlan_mode, n.ipvlan_mode, n.ipvlan_flag),
            (MacvlanMode::Bridge, IpvlanMode::L2, IpvlanFlag::Bridge)
        );
        s.macvlan_mode = pb::MacvlanMode::Passthru as i32;
        s.ipvlan_mode = pb::IpvlanMode::L3s as i32;
        s.ipvlan_flag = pb::IpvlanFlag::Vepa as i32;
        let n = Network::from_pb(s.clone(), "network").unwrap();
        assert_eq!(
            (n.macvlan_mode, n.ipvlan_mode, n.ipvlan_flag),
            (MacvlanMode::Passthru, IpvlanMode::L3s, IpvlanFlag::Vepa)
        );

        s.parent = "eth0 ; reboot".into();
        s.macvlan_mode = 9;
        s.ipvlan_mode = 9;
        s.ipvlan_flag = 9;
        let v = Network::from_pb(s, "network").unwrap_err();
        let fields: Vec<(&str, &str)> = v
            .iter()
            .map(|v| (v.field.as_str(), v.value.as_str()))
            .collect();
        assert_eq!(
            fields,
            [
                ("network.parent", "eth0 ; reboot"),
                ("network.macvlan_mode", "9"),
                ("network.ipvlan_mode", "9"),
                ("network.ipvlan_flag", "9"),
            ],
            "{v:?}"
        );
        // A dotted parent is BASE.VID with a VLAN id from 1 to 4094 (the gateway's rule).
        let mut s = bridge_spec();
        s.driver = pb::Driver::Ipvlan as i32;
        s.parent = "eth0.4094".into();
        assert_eq!(
            Network::from_pb(s.clone(), "n").unwrap().parent,
            "eth0.4094"
        );
        for bad in [
            "eth0.4095",
            "eth0.0",
            "eth0.07",
            "eth0.1.2",
            ".5",
            "abcdefghijk.4094",
        ] {
            s.parent = bad.into();
            let v = Network::from_pb(s.clone(), "n").unwrap_err();
            assert_eq!(
                (v[0].field.as_str(), v[0].value.as_str()),
                ("n.parent", bad)
            );
        }
        // A bridge network has no parent (whatever the field says).
        let mut b = bridge_spec();
        b.parent = "eth1".into();
        assert_eq!(Network::from_pb(b, "network").unwrap().parent, "");
    }

    #[test]
    fn endpoint_defaults_to_eth0_and_a_derived_mac() {
        let e = Endpoint::from_pb(
            pb::EndpointSpec {
                endpoint_id: "ep-1".into(),
                network_id: "net-1".into(),
                netns_path: "/run/netns/x".into(),
                ipv4_address: "10.0.0.2/24".into(),
                ..Default::default()
            },
            "endpoint",
        )
        .unwrap();
        assert_eq!(e.ifname, "eth0");
        assert_eq!(e.mac, names::derived_mac("ep-1"));
        assert_eq!(e.addresses(), vec!["10.0.0.2/24".parse::<IpNet>().unwrap()]);
    }

    #[test]
    fn endpoint_rejects_bad_addresses_and_a_default_route_without_gateway() {
        let v = Endpoint::from_pb(
            pb::EndpointSpec {
                endpoint_id: "ep-1".into(),
                network_id: "net-1".into(),
                netns_path: "relative".into(),
                ipv4_address: "10.0.0.300/24".into(),
                mac_address: "03:00:00:00:00:01".into(),
                default_route_v4: true,
                ..Default::default()
            },
            "endpoint",
        )
        .unwrap_err();
        let fields: Vec<&str> = v.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "endpoint.netns_path",
                "endpoint.mac_address",
                "endpoint.ipv4_address",
                "endpoint.ipv4_gateway"
            ]
        );
    }

    #[test]
    fn port_mappings_are_validated_and_overlaps_within_one_endpoint_refused() {
        let pm =
            |protocol: pb::Protocol, host_ip: &str, host_port: u32, range: u32| pb::PortMapping {
                protocol: protocol as i32,
                host_ip: host_ip.into(),
                host_port,
                container_port: 80,
                range,
            };
        let spec = |ports: Vec<pb::PortMapping>| pb::EndpointSpec {
            endpoint_id: "ep-1".into(),
            network_id: "net-1".into(),
            netns_path: "/run/netns/x".into(),
            port_mappings: ports,
            ..Default::default()
        };
        let e = Endpoint::from_pb(
            spec(vec![
                pm(pb::Protocol::Tcp, "", 8080, 0),
                pm(pb::Protocol::Udp, "::", 8080, 2),
            ]),
            "endpoint",
        )
        .unwrap();
        assert_eq!(e.ports[0].range, 1, "an unset range is one port");
        assert_eq!(e.ports[1].host_ip, HostIp::AnyV6);
        assert_eq!(e.ports[1].to_string(), "udp [::]:8080-8081 -> 80-81");

        let v = Endpoint::from_pb(
            spec(vec![
                pm(pb::Protocol::Unspecified, "", 1, 1),
                pm(pb::Protocol::Tcp, "nope", 1, 1),
                pm(pb::Protocol::Tcp, "", 65535, 2),
                pm(pb::Protocol::Tcp, "0.0.0.0", 9000, 10),
                pm(pb::Protocol::Tcp, "10.0.0.1", 9005, 1),
            ]),
            "endpoint",
        )
        .unwrap_err();
        let fields: Vec<&str> = v.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "endpoint.port_mappings[0].protocol",
                "endpoint.port_mappings[1].host_ip",
                "endpoint.port_mappings[2].host_port",
                "endpoint.port_mappings[4]",
            ]
        );
    }
}
