//! An overlay network's VXLAN side: its id, device, UDP port and the endpoints of the network
//! on other hosts (the peers), each checked here once so that the driver programs only
//! well-formed entries.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use ipnet::IpNet;
use weft_proto::agent::v1 as pb;

use super::{Violations, check_id};
use crate::names;

/// The largest VXLAN network identifier (24 bits).
pub const VNI_MAX: u32 = (1 << 24) - 1;
/// VXLAN's IANA port (RFC 7348), Docker's default.
pub const DEFAULT_PORT: u16 = 4789;
/// The network option that sets another UDP port (every host of the network gets the same
/// spec, so they agree on it).
pub const PORT_OPTION: &str = "weft.overlay.vxlan_port";
/// The most peers one network may list: each costs an FDB and a neighbour entry per family on
/// every host of the network (permanent entries are exempt from the neighbour table's
/// garbage-collection thresholds, so the kernel holds them all).
pub const MAX_PEERS: usize = 65_536;

/// The VXLAN side of an overlay network. Its hash leaves the peers out: what an endpoint on
/// this host is digested with (see `applied.rs`) does not change when endpoints elsewhere come
/// and go; the network's own digest adds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlaySpec {
    pub vni: u32,
    /// The VXLAN device's name in the managed namespace.
    pub vxlan: String,
    /// The UDP destination port of the tunnel.
    pub port: u16,
    /// Every endpoint of the network on other hosts: the full set.
    pub peers: Vec<Peer>,
}

impl std::hash::Hash for OverlaySpec {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        let Self {
            vni,
            vxlan,
            port,
            peers: _,
        } = self;
        (vni, vxlan, port).hash(h);
    }
}

/// An endpoint of the network on another host.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Peer {
    pub endpoint_id: String,
    pub mac: [u8; 6],
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    /// The underlay address of the peer's host (its VXLAN tunnel endpoint).
    pub vtep: IpAddr,
}

impl Peer {
    /// The peer's overlay addresses.
    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.ipv4
            .map(IpAddr::V4)
            .into_iter()
            .chain(self.ipv6.map(IpAddr::V6))
    }
}

impl OverlaySpec {
    /// Whether the tunnel runs over IPv6: the peers' VTEPs say (they share one family); with no
    /// peers, `None` (the agent then takes IPv4 when the host has it).
    pub fn underlay_is_ipv6(&self) -> Option<bool> {
        self.peers.first().map(|p| p.vtep.is_ipv6())
    }

    /// Converts the overlay fields of `spec` (field paths under `prefix`); `subnets` are the
    /// network's, which every peer address must be inside.
    pub(super) fn from_pb(
        v: &mut Violations,
        prefix: &str,
        spec: &pb::NetworkSpec,
        subnets: &[IpNet],
    ) -> Self {
        let f = |name: &str| format!("{prefix}.{name}");
        if spec.vni == 0 || spec.vni > VNI_MAX {
            v.add(
                f("vni"),
                spec.vni.to_string(),
                "must be within 1..16777215 for an overlay network",
            );
        }
        let vxlan = if spec.vxlan_name.is_empty() {
            names::vxlan_name(&spec.network_id)
        } else {
            if let Err(reason) = names::valid_ifname(&spec.vxlan_name) {
                v.add(f("vxlan_name"), &spec.vxlan_name, reason);
            }
            spec.vxlan_name.clone()
        };
        let port = match spec.options.get(PORT_OPTION) {
            None => DEFAULT_PORT,
            Some(raw) => match raw.parse::<u16>() {
                Ok(p) if p != 0 => p,
                _ => {
                    v.add(
                        format!("{prefix}.options[{PORT_OPTION}]"),
                        raw,
                        "not a UDP port (1..65535)",
                    );
                    DEFAULT_PORT
                }
            },
        };
        Self {
            vni: spec.vni,
            vxlan,
            port,
            peers: parse_peers(v, prefix, &spec.peers, subnets),
        }
    }
}

/// The peers, each checked, none repeating another's endpoint id, MAC or address, all VTEPs of
/// one family.
fn parse_peers(
    v: &mut Violations,
    prefix: &str,
    raw: &[pb::OverlayPeer],
    subnets: &[IpNet],
) -> Vec<Peer> {
    if raw.len() > MAX_PEERS {
        v.add(
            format!("{prefix}.peers"),
            raw.len().to_string(),
            "more peers than the 65536 an overlay network may have",
        );
        return Vec::new();
    }
    let mut peers = Vec::with_capacity(raw.len());
    // What each peer claims, with the index of the first that claimed it.
    let mut ids: HashMap<&str, usize> = HashMap::new();
    let mut macs: HashMap<[u8; 6], usize> = HashMap::new();
    let mut ips: HashMap<IpAddr, usize> = HashMap::new();
    let mut family: Option<(bool, usize)> = None;
    for (i, p) in raw.iter().enumerate() {
        let f = |name: &str| format!("{prefix}.peers[{i}].{name}");
        let before = v.count();
        check_id(v, &f("endpoint_id"), &p.endpoint_id);
        if let Some(j) = ids.insert(&p.endpoint_id, i) {
            v.add(f("endpoint_id"), &p.endpoint_id, &repeats(prefix, j));
        }
        let mac = peer_mac(v, &f("mac_address"), p);
        if let Some(mac) = mac
            && let Some(j) = macs.insert(mac, i)
        {
            v.add(f("mac_address"), &p.mac_address, &repeats(prefix, j));
        }
        let ipv4 = peer_ip::<Ipv4Addr>(v, &f("ipv4_address"), &p.ipv4_address, subnets);
        let ipv6 = peer_ip::<Ipv6Addr>(v, &f("ipv6_address"), &p.ipv6_address, subnets);
        for (ip, field, raw) in [
            (ipv4.map(IpAddr::V4), "ipv4_address", &p.ipv4_address),
            (ipv6.map(IpAddr::V6), "ipv6_address", &p.ipv6_address),
        ] {
            if let Some(ip) = ip
                && let Some(j) = ips.insert(ip, i)
            {
                v.add(f(field), raw, &repeats(prefix, j));
            }
        }
        let vtep = match p.vtep_address.parse::<IpAddr>() {
            Ok(a) if a.is_unspecified() || a.is_multicast() || a.is_loopback() => {
                v.add(f("vtep_address"), &p.vtep_address, "not a unicast address");
                None
            }
            Ok(a) => Some(a),
            Err(_) => {
                v.add(f("vtep_address"), &p.vtep_address, "not an IP address");
                None
            }
        };
        if let Some(a) = vtep {
            match family {
                None => family = Some((a.is_ipv6(), i)),
                Some((v6, j)) if v6 != a.is_ipv6() => v.add(
                    f("vtep_address"),
                    &p.vtep_address,
                    &format!("not of the family of {prefix}.peers[{j}].vtep_address"),
                ),
                Some(_) => {}
            }
        }
        if let (Some(mac), Some(vtep), true) = (mac, vtep, v.count() == before) {
            peers.push(Peer {
                endpoint_id: p.endpoint_id.clone(),
                mac,
                ipv4,
                ipv6,
                vtep,
            });
        }
    }
    peers
}

fn repeats(prefix: &str, j: usize) -> String {
    format!("repeats {prefix}.peers[{j}]")
}

/// The peer's MAC: derived from its endpoint id when empty (the rule the gateway uses for
/// endpoints), else a unicast address.
fn peer_mac(v: &mut Violations, field: &str, p: &pb::OverlayPeer) -> Option<[u8; 6]> {
    if p.mac_address.is_empty() {
        return Some(names::derived_mac(&p.endpoint_id));
    }
    match names::parse_mac(&p.mac_address) {
        Some(m) if m[0] & 1 == 0 && m != [0; 6] => Some(m),
        Some(_) => {
            v.add(field, &p.mac_address, "must be a unicast address");
            None
        }
        None => {
            v.add(field, &p.mac_address, "not a MAC address");
            None
        }
    }
}

/// A peer's address of one family: empty (the network lacks the family), or an address
/// without prefix inside one of the network's subnets.
fn peer_ip<A>(v: &mut Violations, field: &str, raw: &str, subnets: &[IpNet]) -> Option<A>
where
    A: std::str::FromStr + Copy + Into<IpAddr>,
{
    if raw.is_empty() {
        return None;
    }
    match raw.parse::<A>() {
        Ok(a) if subnets.iter().any(|s| s.contains(&a.into())) => Some(a),
        Ok(_) => {
            v.add(field, raw, "not inside the network's subnets");
            None
        }
        Err(_) => {
            v.add(field, raw, "not an address of the family (without prefix)");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: &str, ip: &str, vtep: &str) -> pb::OverlayPeer {
        pb::OverlayPeer {
            endpoint_id: id.into(),
            mac_address: String::new(),
            ipv4_address: ip.into(),
            ipv6_address: String::new(),
            vtep_address: vtep.into(),
        }
    }

    fn spec(peers: Vec<pb::OverlayPeer>) -> pb::NetworkSpec {
        pb::NetworkSpec {
            network_id: "net-1".into(),
            driver: pb::Driver::Overlay as i32,
            vni: 4242,
            peers,
            ..Default::default()
        }
    }

    fn convert(s: &pb::NetworkSpec) -> Result<OverlaySpec, Vec<String>> {
        let mut v = Violations::default();
        let subnets = ["10.0.0.0/24".parse().unwrap(), "fd00::/64".parse().unwrap()];
        let o = OverlaySpec::from_pb(&mut v, "network", s, &subnets);
        v.finish(o)
            .map_err(|v| v.iter().map(|v| v.field.clone()).collect())
    }

    #[test]
    fn defaults_derive_the_device_name_the_port_and_the_peers_macs() {
        let mut s = spec(vec![peer("ep-2", "10.0.0.3", "198.51.100.2")]);
        s.peers[0].ipv6_address = "fd00::3".into();
        let o = convert(&s).unwrap();
        assert_eq!(o.vxlan, names::vxlan_name("net-1"));
        assert_eq!(o.port, DEFAULT_PORT);
        assert_eq!(o.underlay_is_ipv6(), Some(false));
        let p = &o.peers[0];
        assert_eq!(p.mac, names::derived_mac("ep-2"));
        assert_eq!(
            p.addresses().collect::<Vec<_>>(),
            [
                "10.0.0.3".parse::<IpAddr>().unwrap(),
                "fd00::3".parse().unwrap()
            ]
        );
        s.vxlan_name = "vx-given".into();
        s.options.insert(PORT_OPTION.into(), "8472".into());
        let o = convert(&s).unwrap();
        assert_eq!((o.vxlan.as_str(), o.port), ("vx-given", 8472));
        assert_eq!(convert(&spec(Vec::new())).unwrap().underlay_is_ipv6(), None);
    }

    #[test]
    fn every_bad_overlay_field_is_named() {
        let mut s = spec(vec![
            peer("ep-1", "10.0.0.2", "198.51.100.2"),
            peer("ep-1", "10.0.0.2", "2001:db8::2"),
            peer("ep-3", "10.9.9.9/24", "nope"),
            peer("ep-4", "10.0.0.4", "224.0.0.1"),
        ]);
        s.peers[2].mac_address = "01:00:5e:00:00:01".into();
        s.peers[3].ipv6_address = "10.0.0.5".into();
        s.vni = VNI_MAX + 1;
        s.vxlan_name = "a/b".into();
        s.options.insert(PORT_OPTION.into(), "0".into());
        assert_eq!(
            convert(&s).unwrap_err(),
            [
                "network.vni",
                "network.vxlan_name",
                "network.options[weft.overlay.vxlan_port]",
                "network.peers[1].endpoint_id",
                "network.peers[1].mac_address",
                "network.peers[1].ipv4_address",
                "network.peers[1].vtep_address",
                "network.peers[2].mac_address",
                "network.peers[2].ipv4_address",
                "network.peers[2].vtep_address",
                "network.peers[3].ipv6_address",
                "network.peers[3].vtep_address",
            ]
        );
    }

    #[test]
    fn more_peers_than_the_limit_are_refused_at_once() {
        let many = vec![peer("e", "", "198.51.100.2"); MAX_PEERS + 1];
        assert_eq!(convert(&spec(many)).unwrap_err(), ["network.peers"]);
        let no_vni = pb::NetworkSpec {
            vni: 0,
            ..spec(Vec::new())
        };
        assert_eq!(convert(&no_vni).unwrap_err(), ["network.vni"]);
    }
}
