//! The network spec: which driver, its subnets and gateways, the bridge options, and the
//! parent and mode of a macvlan or ipvlan network.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use weft_proto::agent::v1 as pb;
use weft_runtime::FieldViolation;

use super::{OverlaySpec, Violations, check_id};
use crate::names;

/// The network drivers of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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

/// Macvlan: how the devices on one parent reach each other (the kernel's `MACVLAN_MODE_*`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum MacvlanMode {
    /// Docker's default: devices on the parent talk directly.
    #[default]
    Bridge,
    Private,
    Vepa,
    Passthru,
}

/// Ipvlan: the layer devices on one parent work at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum IpvlanMode {
    /// Docker's default.
    #[default]
    L2,
    L3,
    L3s,
}

/// Ipvlan: how the devices on one parent reach each other.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum IpvlanFlag {
    /// Docker's default.
    #[default]
    Bridge,
    Private,
    Vepa,
}

/// A network as this host needs it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
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
    /// Macvlan, ipvlan: the parent interface in the managed namespace; empty: the link of its
    /// default route (each host's own, found when an endpoint attaches).
    pub parent: String,
    pub macvlan_mode: MacvlanMode,
    pub ipvlan_mode: IpvlanMode,
    pub ipvlan_flag: IpvlanFlag,
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
    /// Overlay: the VXLAN id, device, port and peers (`None` for other drivers).
    pub overlay: Option<OverlaySpec>,
}

impl Network {
    /// The MTU the bridge driver uses.
    pub fn bridge_mtu(&self) -> u32 {
        if self.mtu == 0 { 1500 } else { self.mtu }
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

        let (subnets, gateways) = parse_subnets(&mut v, prefix, &spec.subnets);
        let bridge = if matches!(driver, Driver::Bridge | Driver::Overlay) {
            bridge_name(&mut v, prefix, &spec)
        } else {
            String::new()
        };
        if spec.mtu != 0 && !(68..=65535).contains(&spec.mtu) {
            v.add(
                f("mtu"),
                spec.mtu.to_string(),
                "must be 0 or within 68..65535",
            );
        }
        let host_binding_ipv4 =
            parse_host_binding(&mut v, &f("host_binding_ipv4"), &spec.host_binding_ipv4);
        let on_parent = matches!(driver, Driver::Macvlan | Driver::Ipvlan);
        if on_parent && !spec.parent.is_empty() {
            if let Err(reason) = names::valid_ifname(&spec.parent) {
                v.add(f("parent"), &spec.parent, reason);
            } else if let Err(reason) = weft_runtime::vlan::parse(&spec.parent) {
                v.add(f("parent"), &spec.parent, &reason);
            }
        }
        let macvlan_mode = parse_macvlan_mode(&mut v, &f("macvlan_mode"), spec.macvlan_mode);
        let (ipvlan_mode, ipvlan_flag) = parse_ipvlan(&mut v, prefix, &spec);
        let overlay = (driver == Driver::Overlay)
            .then(|| OverlaySpec::from_pb(&mut v, prefix, &spec, &subnets));
        v.finish(Self {
            id: spec.network_id,
            name: spec.name,
            driver,
            bridge,
            mtu: spec.mtu,
            gateways,
            parent: if on_parent {
                spec.parent
            } else {
                String::new()
            },
            macvlan_mode,
            ipvlan_mode,
            ipvlan_flag,
            subnets,
            internal: spec.internal,
            icc: spec.enable_icc,
            masquerade: spec.enable_ip_masquerade,
            host_binding_ipv4,
            overlay,
        })
    }
}

fn parse_macvlan_mode(v: &mut Violations, field: &str, raw: i32) -> MacvlanMode {
    match pb::MacvlanMode::try_from(raw) {
        Ok(pb::MacvlanMode::Unspecified | pb::MacvlanMode::Bridge) => MacvlanMode::Bridge,
        Ok(pb::MacvlanMode::Private) => MacvlanMode::Private,
        Ok(pb::MacvlanMode::Vepa) => MacvlanMode::Vepa,
        Ok(pb::MacvlanMode::Passthru) => MacvlanMode::Passthru,
        Err(_) => {
            v.add(field, raw.to_string(), "unknown macvlan mode");
            MacvlanMode::Bridge
        }
    }
}

fn parse_ipvlan(
    v: &mut Violations,
    prefix: &str,
    spec: &pb::NetworkSpec,
) -> (IpvlanMode, IpvlanFlag) {
    let mode = match pb::IpvlanMode::try_from(spec.ipvlan_mode) {
        Ok(pb::IpvlanMode::Unspecified | pb::IpvlanMode::L2) => IpvlanMode::L2,
        Ok(pb::IpvlanMode::L3) => IpvlanMode::L3,
        Ok(pb::IpvlanMode::L3s) => IpvlanMode::L3s,
        Err(_) => {
            let field = format!("{prefix}.ipvlan_mode");
            v.add(field, spec.ipvlan_mode.to_string(), "unknown ipvlan mode");
            IpvlanMode::L2
        }
    };
    let flag = match pb::IpvlanFlag::try_from(spec.ipvlan_flag) {
        Ok(pb::IpvlanFlag::Unspecified | pb::IpvlanFlag::Bridge) => IpvlanFlag::Bridge,
        Ok(pb::IpvlanFlag::Private) => IpvlanFlag::Private,
        Ok(pb::IpvlanFlag::Vepa) => IpvlanFlag::Vepa,
        Err(_) => {
            let field = format!("{prefix}.ipvlan_flag");
            v.add(field, spec.ipvlan_flag.to_string(), "unknown ipvlan flag");
            IpvlanFlag::Bridge
        }
    };
    (mode, flag)
}

/// The subnets (truncated to their network address) and the gateways with their subnet's
/// prefix length.
fn parse_subnets(
    v: &mut Violations,
    prefix: &str,
    subnets_pb: &[pb::Subnet],
) -> (Vec<IpNet>, Vec<IpNet>) {
    let mut gateways = Vec::new();
    let mut subnets = Vec::new();
    for (i, s) in subnets_pb.iter().enumerate() {
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
    (subnets, gateways)
}

/// The bridge's name: the field, else Docker's option, else derived from the network id.
fn bridge_name(v: &mut Violations, prefix: &str, spec: &pb::NetworkSpec) -> String {
    let f = |name: &str| format!("{prefix}.{name}");
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
    given
}

/// The IPv4 address published ports bind to by default; none when empty or unspecified.
fn parse_host_binding(v: &mut Violations, field: &str, raw: &str) -> Option<Ipv4Addr> {
    match raw.parse::<Ipv4Addr>() {
        _ if raw.is_empty() => None,
        Ok(a) if a.is_unspecified() => None,
        Ok(a) => Some(a),
        Err(_) => {
            v.add(field, raw, "not an IPv4 address");
            None
        }
    }
}
