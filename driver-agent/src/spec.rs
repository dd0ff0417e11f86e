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
    /// The network's subnets (IPv4 and IPv6).
    pub subnets: Vec<IpNet>,
    /// Nothing enters or leaves the network; no masquerading, no published ports.
    pub internal: bool,
    /// Bridge: traffic between the network's endpoints allowed (Docker's enable_icc).
    pub icc: bool,
    /// Bridge: masquerade traffic leaving the host from the network's subnets.
    pub masquerade: bool,
    /// Bridge: the IPv4 address published ports bind to when their host_ip is empty.
    pub host_binding_ipv4: Option<Ipv4Addr>,
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
    /// Ports published through this endpoint (the full set).
    pub ports: Vec<PortMapping>,
}

/// Transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// The protocol's name as nftables spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Sctp => "sctp",
        }
    }
}

/// Which host addresses a published port binds to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HostIp {
    /// Every host address of both families (host_ip empty).
    Any,
    /// Every IPv4 address ("0.0.0.0").
    AnyV4,
    /// Every IPv6 address ("::").
    AnyV6,
    /// One address.
    Addr(IpAddr),
}

impl HostIp {
    fn parse(raw: &str) -> Option<Self> {
        if raw.is_empty() {
            return Some(Self::Any);
        }
        match raw.parse::<IpAddr>().ok()? {
            IpAddr::V4(a) if a.is_unspecified() => Some(Self::AnyV4),
            IpAddr::V6(a) if a.is_unspecified() => Some(Self::AnyV6),
            a => Some(Self::Addr(a)),
        }
    }

    /// Whether a port bound here and one bound at `other` can receive the same packet.
    pub fn overlaps(self, other: Self) -> bool {
        use HostIp::*;
        match (self, other) {
            (Any, _) | (_, Any) => true,
            (AnyV4, AnyV4) | (AnyV6, AnyV6) => true,
            (AnyV4, AnyV6) | (AnyV6, AnyV4) => false,
            (AnyV4, Addr(a)) | (Addr(a), AnyV4) => a.is_ipv4(),
            (AnyV6, Addr(a)) | (Addr(a), AnyV6) => a.is_ipv6(),
            (Addr(a), Addr(b)) => a == b,
        }
    }
}

impl std::fmt::Display for HostIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Any => f.write_str("*"),
            Self::AnyV4 => f.write_str("0.0.0.0"),
            Self::AnyV6 => f.write_str("[::]"),
            Self::Addr(IpAddr::V4(a)) => write!(f, "{a}"),
            Self::Addr(IpAddr::V6(a)) => write!(f, "[{a}]"),
        }
    }
}

/// A published port range: `host_ip:host_port+i` forwards to the endpoint's address at
/// `container_port+i`, for i in [0, range).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortMapping {
    pub protocol: Protocol,
    pub host_ip: HostIp,
    pub host_port: u16,
    pub container_port: u16,
    /// At least 1.
    pub range: u16,
}

impl PortMapping {
    /// The last host port of the range.
    pub fn host_end(&self) -> u16 {
        self.host_port + (self.range - 1)
    }

    /// Whether this mapping and `other` claim a common host address, port and protocol.
    pub fn clashes_with(&self, other: &PortMapping) -> bool {
        self.protocol == other.protocol
            && self.host_ip.overlaps(other.host_ip)
            && self.host_port <= other.host_end()
            && other.host_port <= self.host_end()
    }

    /// Validates one `PortMapping`; `field` is its path in the request.
    fn from_pb(v: &mut Violations, field: &str, pm: &pb::PortMapping) -> Option<Self> {
        let protocol = match pb::Protocol::try_from(pm.protocol) {
            Ok(pb::Protocol::Tcp) => Some(Protocol::Tcp),
            Ok(pb::Protocol::Udp) => Some(Protocol::Udp),
            Ok(pb::Protocol::Sctp) => Some(Protocol::Sctp),
            _ => {
                v.add(
                    format!("{field}.protocol"),
                    pm.protocol.to_string(),
                    "must be TCP, UDP or SCTP",
                );
                None
            }
        };
        let host_ip = HostIp::parse(&pm.host_ip);
        if host_ip.is_none() {
            v.add(format!("{field}.host_ip"), &pm.host_ip, "not an IP address");
        }
        // Proto3 leaves an unset range at 0: one port.
        let range = pm.range.max(1);
        let mut ports_ok = true;
        for (name, port) in [
            ("host_port", pm.host_port),
            ("container_port", pm.container_port),
        ] {
            if port == 0 || u64::from(port) + u64::from(range) - 1 > 65535 {
                v.add(
                    format!("{field}.{name}"),
                    port.to_string(),
                    "the port range must lie within 1..65535",
                );
                ports_ok = false;
            }
        }
        if !ports_ok {
            return None;
        }
        Some(Self {
            protocol: protocol?,
            host_ip: host_ip?,
            host_port: u16::try_from(pm.host_port).ok()?,
            container_port: u16::try_from(pm.container_port).ok()?,
            range: u16::try_from(range).ok()?,
        })
    }
}

impl std::fmt::Display for PortMapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}:{}",
            self.protocol.name(),
            self.host_ip,
            self.host_port
        )?;
        if self.range > 1 {
            write!(f, "-{}", self.host_end())?;
        }
        write!(f, " -> {}", self.container_port)?;
        if self.range > 1 {
            write!(f, "-{}", self.container_port + (self.range - 1))?;
        }
        Ok(())
    }
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
        let mut subnets = Vec::new();
        for (i, s) in spec.subnets.iter().enumerate() {
            let field = format!("{prefix}.subnets[{i}]");
            let subnet: IpNet = match s.cidr.parse::<IpNet>() {
                Ok(n) => n.trunc(),
                Err(_) => {
                    v.add(format!("{field}.cidr"), &s.cidr, "not a CIDR");
                    continue;
                }
            };
            subnets.push(subnet);
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
        let host_binding_ipv4 = match spec.host_binding_ipv4.parse::<Ipv4Addr>() {
            _ if spec.host_binding_ipv4.is_empty() => None,
            Ok(a) if a.is_unspecified() => None,
            Ok(a) => Some(a),
            Err(_) => {
                v.add(
                    f("host_binding_ipv4"),
                    &spec.host_binding_ipv4,
                    "not an IPv4 address",
                );
                None
            }
        };
        v.finish(Self {
            id: spec.network_id,
            name: spec.name,
            driver,
            bridge,
            mtu: spec.mtu,
            gateways,
            parent: spec.parent,
            subnets,
            internal: spec.internal,
            icc: spec.enable_icc,
            masquerade: spec.enable_ip_masquerade,
            host_binding_ipv4,
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
        // (index in the request, mapping), so that overlaps name the fields as sent.
        let mut ports: Vec<(usize, PortMapping)> = Vec::new();
        for (i, pm) in spec.port_mappings.iter().enumerate() {
            let field = format!("{prefix}.port_mappings[{i}]");
            if let Some(p) = PortMapping::from_pb(&mut v, &field, pm) {
                if let Some((j, _)) = ports.iter().find(|(_, q)| q.clashes_with(&p)) {
                    v.add(
                        field,
                        p.to_string(),
                        &format!("overlaps port_mappings[{j}]"),
                    );
                }
                ports.push((i, p));
            }
        }
        let ports = ports.into_iter().map(|(_, p)| p).collect();
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
            ports,
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
