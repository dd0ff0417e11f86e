//! The agent's domain types, converted from `weft.agent.v1` messages at the edge: anything
//! malformed becomes a field violation naming the field and the value.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use weft_proto::agent::v1 as pb;
use weft_runtime::FieldViolation;

use crate::names;

/// The network drivers of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    Bridge,
    Host,
    None,
    Overlay,
    Macvlan,
    Ipvlan,
}

impl Driver {
    pub fn name(self) -> &'static str {
        match self {
            Self::Bridge => "bridge",
            Self::Host => "host",
            Self::None => "none",
            Self::Overlay => "overlay",
            Self::Macvlan => "macvlan",
            Self::Ipvlan => "ipvlan",
        }
    }
}

/// A network as this host needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    pub id: String,
    pub name: String,
    pub driver: Driver,
    /// Bridge and overlay: the bridge's name.
    pub bridge: String,
    /// 0: the driver's default.
    pub mtu: u32,
    /// Gateway addresses with their subnet's prefix length (bridge, overlay).
    pub gateways: Vec<IpNet>,
    /// Macvlan, ipvlan: the parent interface.
    pub parent: String,
}

impl Network {
    /// The MTU the bridge driver uses.
    pub fn bridge_mtu(&self) -> u32 {
        if self.mtu == 0 { 1500 } else { self.mtu }
    }
}

/// One endpoint (attachment of a sandbox to a network).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub id: String,
    pub network_id: String,
    pub sandbox_id: String,
    pub netns: PathBuf,
    pub ifname: String,
    pub mac: [u8; 6],
    pub ipv4: Option<Ipv4Net>,
    pub ipv6: Option<Ipv6Net>,
    pub ipv4_gateway: Option<Ipv4Addr>,
    pub ipv6_gateway: Option<Ipv6Addr>,
    pub link_local: Vec<IpNet>,
    pub default_route_v4: bool,
    pub default_route_v6: bool,
}

impl Endpoint {
    /// Every address to put on the interface.
    pub fn addresses(&self) -> Vec<IpNet> {
        self.ipv4
            .map(IpNet::V4)
            .into_iter()
            .chain(self.ipv6.map(IpNet::V6))
            .chain(self.link_local.iter().copied())
            .collect()
    }
}

/// Collects violations so that one reply names every bad field at once.
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    pub fn add(&mut self, field: impl Into<String>, value: impl Into<String>, reason: &str) {
        self.0.push(FieldViolation::new(field, value, reason));
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

fn parse_driver(v: &mut Violations, field: &str, raw: i32) -> Driver {
    match pb::Driver::try_from(raw) {
        Ok(pb::Driver::Bridge) => Driver::Bridge,
        Ok(pb::Driver::Host) => Driver::Host,
        Ok(pb::Driver::None) => Driver::None,
        Ok(pb::Driver::Overlay) => Driver::Overlay,
        Ok(pb::Driver::Macvlan) => Driver::Macvlan,
        Ok(pb::Driver::Ipvlan) => Driver::Ipvlan,
        Ok(pb::Driver::Unspecified) => {
            v.add(field, raw.to_string(), "driver must be set");
            Driver::None
        }
        Err(_) => {
            v.add(field, raw.to_string(), "unknown driver");
            Driver::None
        }
    }
}

impl Network {
    /// Validates a `NetworkSpec`; `prefix` is the field path of the spec in its request.
    pub fn from_pb(spec: pb::NetworkSpec, prefix: &str) -> Result<Self, Vec<FieldViolation>> {
        let mut v = Violations::default();
        let f = |name: &str| format!("{prefix}.{name}");
        check_id(&mut v, &f("network_id"), &spec.network_id);
        let driver = parse_driver(&mut v, &f("driver"), spec.driver);

        let mut gateways = Vec::new();
        for (i, s) in spec.subnets.iter().enumerate() {
            let field = format!("{prefix}.subnets[{i}]");
            let subnet: IpNet = match s.cidr.parse() {
                Ok(n) => n,
                Err(_) => {
                    v.add(format!("{field}.cidr"), &s.cidr, "not a CIDR");
                    continue;
                }
            };
            if s.gateway.is_empty() {
                continue;
            }
            match s.gateway.parse::<IpAddr>() {
                Ok(gw) if subnet.contains(&gw) => {
                    if let Ok(n) = IpNet::new(gw, subnet.prefix_len()) {
                        gateways.push(n);
                    }
                }
                Ok(_) => v.add(
                    format!("{field}.gateway"),
                    &s.gateway,
                    "not inside the subnet",
                ),
                Err(_) => v.add(format!("{field}.gateway"), &s.gateway, "not an IP address"),
            }
        }

        let mut bridge = String::new();
        if matches!(driver, Driver::Bridge | Driver::Overlay) {
            let (field, given) = if !spec.bridge_name.is_empty() {
                (f("bridge_name"), spec.bridge_name.clone())
            } else if let Some(o) = spec.options.get(names::BRIDGE_NAME_OPTION) {
                (
                    format!("{prefix}.options[{}]", names::BRIDGE_NAME_OPTION),
                    o.clone(),
                )
            } else {
                (String::new(), names::bridge_name(&spec.network_id))
            };
            if let Err(reason) = names::valid_ifname(&given) {
                v.add(field, &given, reason);
            }
            bridge = given;
        }
        if spec.mtu != 0 && !(68..=65535).contains(&spec.mtu) {
            v.add(
                f("mtu"),
                spec.mtu.to_string(),
                "must be 0 or within 68..65535",
            );
        }
        v.finish(Self {
            id: spec.network_id,
            name: spec.name,
            driver,
            bridge,
            mtu: spec.mtu,
            gateways,
            parent: spec.parent,
        })
    }
}

fn parse_opt<T: std::str::FromStr>(
    v: &mut Violations,
    field: &str,
    raw: &str,
    what: &str,
) -> Option<T> {
    if raw.is_empty() {
        return None;
    }
    match raw.parse() {
        Ok(x) => Some(x),
        Err(_) => {
            v.add(field, raw, what);
            None
        }
    }
}

impl Endpoint {
    /// Validates an `EndpointSpec`; `prefix` is the field path of the spec in its request.
    pub fn from_pb(spec: pb::EndpointSpec, prefix: &str) -> Result<Self, Vec<FieldViolation>> {
        let mut v = Violations::default();
        let f = |name: &str| format!("{prefix}.{name}");
        check_id(&mut v, &f("endpoint_id"), &spec.endpoint_id);
        check_id(&mut v, &f("network_id"), &spec.network_id);
        if spec.netns_path.is_empty() || !spec.netns_path.starts_with('/') {
            v.add(
                f("netns_path"),
                &spec.netns_path,
                "must be an absolute path",
            );
        }
        let ifname = if spec.interface_name.is_empty() {
            "eth0".to_owned()
        } else {
            spec.interface_name.clone()
        };
        if let Err(reason) = names::valid_ifname(&ifname) {
            v.add(f("interface_name"), &spec.interface_name, reason);
        }
        let mac = if spec.mac_address.is_empty() {
            names::derived_mac(&spec.endpoint_id)
        } else {
            match names::parse_mac(&spec.mac_address) {
                Some(m) if m[0] & 1 == 0 && m != [0; 6] => m,
                Some(_) => {
                    v.add(
                        f("mac_address"),
                        &spec.mac_address,
                        "must be a unicast address",
                    );
                    [0; 6]
                }
                None => {
                    v.add(f("mac_address"), &spec.mac_address, "not a MAC address");
                    [0; 6]
                }
            }
        };
        let ipv4 = parse_opt(
            &mut v,
            &f("ipv4_address"),
            &spec.ipv4_address,
            "not an IPv4 CIDR",
        );
        let ipv6 = parse_opt(
            &mut v,
            &f("ipv6_address"),
            &spec.ipv6_address,
            "not an IPv6 CIDR",
        );
        let ipv4_gateway = parse_opt(
            &mut v,
            &f("ipv4_gateway"),
            &spec.ipv4_gateway,
            "not an IPv4 address",
        );
        let ipv6_gateway = parse_opt(
            &mut v,
            &f("ipv6_gateway"),
            &spec.ipv6_gateway,
            "not an IPv6 address",
        );
        let mut link_local = Vec::new();
        for (i, s) in spec.link_local_ips.iter().enumerate() {
            match s.parse::<IpNet>() {
                Ok(n) => link_local.push(n),
                Err(_) => v.add(format!("{prefix}.link_local_ips[{i}]"), s, "not a CIDR"),
            }
        }
        if spec.default_route_v4 && ipv4_gateway.is_none() {
            v.add(
                f("ipv4_gateway"),
                &spec.ipv4_gateway,
                "required when default_route_v4 is set",
            );
        }
        if spec.default_route_v6 && ipv6_gateway.is_none() {
            v.add(
                f("ipv6_gateway"),
                &spec.ipv6_gateway,
                "required when default_route_v6 is set",
            );
        }
        v.finish(Self {
            id: spec.endpoint_id,
            network_id: spec.network_id,
            sandbox_id: spec.sandbox_id,
            netns: PathBuf::from(spec.netns_path),
            ifname,
            mac,
            ipv4,
            ipv6,
            ipv4_gateway,
            ipv6_gateway,
            link_local,
            default_route_v4: spec.default_route_v4,
            default_route_v6: spec.default_route_v6,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
