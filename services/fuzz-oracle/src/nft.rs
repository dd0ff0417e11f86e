//! The agent's nftables ruleset for some networks and endpoints, read back from its JSON form:
//! every interface name in a rule is exactly a network's bridge name, and every endpoint's
//! published ports come out as exactly the DNATs asked for, port by port. One function, so that
//! it follows the firewall when its rendering changes (sets and maps instead of rules).

use std::net::IpAddr;

use driver_agent::{
    firewall::{rules, state::FirewallState},
    spec::{self as agent, HostIp},
};
use serde_json::Value;

/// One translated port: (protocol, IPv6, bound host address, host port, container port, target).
type Dnat = (String, bool, Option<IpAddr>, u32, u32, IpAddr);

pub fn check(networks: &[agent::Network], endpoints: &[agent::Endpoint]) {
    let state = FirewallState::from_specs(networks, endpoints);
    let json = serde_json::to_value(rules::ruleset(&state)).expect("a ruleset serialises");
    let rules: Vec<&Value> = json["nftables"]
        .as_array()
        .expect("a batch")
        .iter()
        .filter_map(|c| c.get("add")?.get("rule"))
        .collect();
    let bridges: Vec<&str> = state.networks.values().map(|n| n.bridge.as_str()).collect();
    let mut got: Vec<(String, Dnat)> = Vec::new();
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
        if r["chain"] == rules::PORTS {
            let comment = r["comment"].as_str().expect("a comment").to_owned();
            got.extend(dnats(expr).into_iter().map(|d| (comment.clone(), d)));
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
    let mut want = Vec::new();
    for ep in state.endpoints.values() {
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
    got.sort();
    want.sort();
    assert!(got == want, "published ports: got {got:?}, want {want:?}");
}

/// The DNATs of one `ports` rule, port by port.
fn dnats(expr: &[Value]) -> Vec<Dnat> {
    let (mut v6, mut daddr, mut proto, mut ports) = (None, None, None, None);
    let mut out = Vec::new();
    for s in expr {
        if let Some(m) = s.get("match") {
            let (left, right) = (&m["left"], &m["right"]);
            assert_eq!(m["op"], "==", "{s}");
            if left["meta"]["key"] == "nfproto" {
                v6 = Some(right == "ipv6");
            } else if left["payload"]["field"] == "daddr" {
                daddr = Some(
                    right
                        .as_str()
                        .and_then(|a| a.parse::<IpAddr>().ok())
                        .expect("an address"),
                );
            } else if left["payload"]["field"] == "dport" {
                proto = left["payload"]["protocol"].as_str().map(str::to_owned);
                ports = Some(match right {
                    Value::Number(n) => {
                        let n = n.as_u64().expect("a port") as u32;
                        (n, n)
                    }
                    r => {
                        let lo = r["range"][0].as_u64().expect("a range") as u32;
                        let hi = r["range"][1].as_u64().expect("a range") as u32;
                        (lo, hi)
                    }
                });
            } else {
                panic!("unexpected match in a ports rule: {s}");
            }
        } else if let Some(d) = s.get("dnat") {
            let target: IpAddr = d["addr"]
                .as_str()
                .and_then(|a| a.parse().ok())
                .expect("a target");
            let (lo, hi) = ports.expect("a dport match first");
            for p in lo..=hi {
                let to = match &d["port"] {
                    Value::Null => p,
                    Value::Number(n) => n.as_u64().expect("a port") as u32,
                    m => m["map"]["data"]["set"]
                        .as_array()
                        .expect("a map")
                        .iter()
                        .find(|kv| kv[0].as_u64() == Some(u64::from(p)))
                        .and_then(|kv| kv[1].as_u64())
                        .expect("every host port mapped") as u32,
                };
                out.push((
                    proto.clone().expect("a protocol"),
                    v6.expect("a family"),
                    daddr,
                    p,
                    to,
                    target,
                ));
            }
        }
    }
    out
}
