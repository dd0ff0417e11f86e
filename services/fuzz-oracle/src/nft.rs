//! The agent's nftables table for some networks and endpoints, read back: every interface
//! name in a rule of the skeleton is exactly a network's bridge name, and every endpoint's
//! published ports come out of the port maps' elements as exactly the DNATs asked for, port by
//! port (the key's bytes and the values decoded as the kernel reads them). One function, so
//! that it follows the firewall when its rendering changes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use driver_agent::{
    firewall::{
        nfnl::{Data, Key},
        rules,
        state::FirewallState,
    },
    spec::{self as agent, HostIp},
};
use serde_json::Value;

/// One translated port: (protocol, IPv6, bound host address, host port, container port, target).
type Dnat = (String, bool, Option<IpAddr>, u32, u32, IpAddr);

pub fn check(networks: &[agent::Network], endpoints: &[agent::Endpoint]) {
    let state = FirewallState::from_specs(networks, endpoints);
    let json = serde_json::to_value(rules::skeleton(&state, false)).expect("a skeleton serialises");
    let rules: Vec<&Value> = json["nftables"]
        .as_array()
        .expect("a batch")
        .iter()
        .filter_map(|c| c.get("add")?.get("rule"))
        .collect();
    let bridges: Vec<&str> = state.networks.values().map(|n| n.bridge.as_str()).collect();
    for r in &rules {
        let expr = r["expr"].as_array().expect("statements");
        for m in expr.iter().filter_map(|s| s.get("match")) {
            let key = m["left"]["meta"]["key"].as_str().unwrap_or_default();
            if key == "iifname" || key == "oifname" {
                let names: Vec<&Value> = match &m["right"] {
                    Value::Object(o) => o["set"].as_array().expect("a set").iter().collect(),
                    v => vec![v],
                };
                for n in names {
                    let n = n.as_str().expect("a name");
                    assert!(bridges.contains(&n), "interface {n:?} in a rule: {r}");
                }
            }
        }
    }
    for n in state.networks.values() {
        let comment = rules::network_comment(&n.id);
        assert!(
            rules
                .iter()
                .any(|r| r["comment"] == comment.as_str() && r.to_string().contains(&n.bridge)),
            "no rule for bridge {:?}",
            n.bridge
        );
    }
    let got = dnats(&state);
    let mut want = Vec::new();
    for ep in state.endpoints().values() {
        let Some(net) = state.networks.get(&ep.network_id).filter(|n| !n.internal) else {
            continue;
        };
        let comment = rules::endpoint_comment(&ep.id);
        for pm in &ep.ports {
            let targets = [
                (false, ep.ipv4.map(IpAddr::V4)),
                (true, ep.ipv6.map(IpAddr::V6)),
            ];
            for (v6, target) in targets {
                // Docker's rules: an empty host address binds both families, or only the
                // network's binding address when it has one; a wildcard or an address, its own.
                let bind = match pm.host_ip {
                    HostIp::Any if !v6 => Some(net.host_binding_ipv4.map(IpAddr::V4)),
                    HostIp::Any => net.host_binding_ipv4.is_none().then_some(None),
                    HostIp::AnyV4 => (!v6).then_some(None),
                    HostIp::AnyV6 => v6.then_some(None),
                    HostIp::Addr(a) => (a.is_ipv6() == v6).then_some(Some(a)),
                };
                let (Some(target), Some(bind)) = (target, bind) else {
                    continue;
                };
                for i in 0..u32::from(pm.range) {
                    let d = (
                        pm.protocol.name().to_owned(),
                        v6,
                        bind,
                        u32::from(pm.host_port) + i,
                        u32::from(pm.container_port) + i,
                        target,
                    );
                    want.push((comment.clone(), d));
                }
            }
        }
    }
    want.sort();
    assert!(got == want, "published ports: got {got:?}, want {want:?}");
}

/// Fields of a key as the kernel reads it: each field padded to 4 bytes.
fn fields<'a>(mut bytes: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    for &n in sizes {
        assert!(bytes.len() >= n, "a key shorter than its fields");
        out.push(&bytes[..n]);
        bytes = &bytes[n.div_ceil(4) * 4..];
    }
    assert!(bytes.is_empty(), "a key longer than its fields");
    out
}

fn addr(b: &[u8]) -> IpAddr {
    match b.len() {
        4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(b).expect("4 bytes"))),
        16 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(b).expect("16 bytes"))),
        n => panic!("an address of {n} bytes"),
    }
}

fn value(d: &Option<Data>) -> &Key {
    match d {
        Some(Data::Value(k)) => k,
        other => panic!("a port map element without a value: {other:?}"),
    }
}

/// Every DNAT the port maps express, with the comment of its elements, sorted.
fn dnats(state: &FirewallState) -> Vec<(String, Dnat)> {
    let maps = rules::elements(state);
    let mut out = Vec::new();
    for (name, bound, v6, is_addr) in rules::DNAT_MAPS {
        if !is_addr {
            continue;
        }
        let ports = &maps[rules::dnat_map(bound, v6, false)];
        let alen = if v6 { 16 } else { 4 };
        for e in &maps[name] {
            let sizes: &[usize] = if bound { &[alen, 1, 2] } else { &[1, 2] };
            let f = fields(&e.key.0, sizes);
            let (bind, proto, port) = if bound {
                (Some(addr(f[0])), f[1][0], f[2])
            } else {
                (None, f[0][0], f[1])
            };
            let proto = match proto {
                6 => "tcp",
                17 => "udp",
                132 => "sctp",
                p => panic!("protocol {p} in a port map"),
            };
            let host_port = u32::from(u16::from_be_bytes([port[0], port[1]]));
            let target = addr(&value(&e.data).0);
            let twin = ports
                .iter()
                .find(|p| p.key == e.key)
                .expect("an address element has its port twin");
            assert_eq!(twin.comment, e.comment, "twins carry one comment");
            let to = value(&twin.data).0.as_slice();
            let to = u32::from(u16::from_be_bytes(
                <[u8; 2]>::try_from(to).expect("a 2-byte port"),
            ));
            let comment = e.comment.clone().expect("an element comment");
            out.push((comment, (proto.to_owned(), v6, bind, host_port, to, target)));
        }
    }
    for (name, _, _, is_addr) in rules::DNAT_MAPS {
        if !is_addr {
            let addr_map = name.replace("_port", "_addr");
            assert_eq!(
                maps[name].len(),
                maps[addr_map.as_str()].len(),
                "every port element has its address twin"
            );
        }
    }
    out.sort();
    out
}
