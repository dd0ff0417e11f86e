//! The agent's nftables table (`inet weft`) as two pure functions of [`FirewallState`]:
//!
//! - [`skeleton`]: the table, its chains, its rules and its (empty) maps. It depends only on
//!   the networks (their bridges, subnets and options), so it is written (with `nft`, in one
//!   transaction) when the agent starts, when a network comes or goes, and when reconciliation
//!   finds it drifted; never on an endpoint's attach or detach.
//! - [`elements`]: the maps' elements, one pair per published host port and family. An attach
//!   or detach changes only these, in one netlink transaction from the agent itself
//!   ([`super::nfnl`]); no process, nothing rewritten that did not change.
//!
//! netavark's nftables driver (containers/netavark, `src/firewall/nft.rs`) was the model for
//! the layout: one table of the tool's own, base chains at fixed places that the per-network
//! rules hang off, rules marked by who owns them. It keeps a rule per published port and finds
//! it again by listing the whole ruleset through `nft`; Weft keeps the published ports as map
//! elements instead, so that the per-container path is an element change (as Kubernetes'
//! nftables kube-proxy does with its service maps).
//!
//! Chains (Docker's bridge-driver semantics):
//! - `loopback` (filter, prerouting hook at raw priority): nothing from outside reaches the
//!   host's loopback (`loopback_rules`).
//! - `forward` (filter, forward hook): internal networks are sealed; ICC on or off between the
//!   endpoints of one bridge (bridged traffic reaches this hook through br_netfilter, which the
//!   agent turns on for ICC-off networks); replies and published (DNATed) traffic may enter a
//!   bridge; traffic between two Weft bridges is dropped; nothing else enters a bridge.
//! - `prerouting` / `output` (NAT): traffic to a local address goes through `ports`.
//! - `ports`: four DNAT rules (IPv4 and IPv6, bound to a host address or not) looking the
//!   address and the port up in the `dnat*` maps ([`DNAT_MAPS`]) by `[daddr .] l4proto . dport`.
//! - `postrouting` (NAT): masquerade of traffic leaving a network's subnets; of published
//!   traffic that goes back out the bridge it came from (hairpin); and of traffic from
//!   127.0.0.0/8 going out a bridge (published ports reached through 127.0.0.1).
//!
//! The file stays whole: it is one ruleset, whose chains only make sense read together (a
//! packet's whole path through the table is here), and its tests compare exact output.

use std::{
    borrow::Cow,
    collections::{BTreeMap, BTreeSet, HashSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use ipnet::{IpNet, Ipv4Net};
use nftables::{
    batch::Batch,
    expr::{
        CT, Expression, Fib, FibFlag, FibResult, Map as ExprMap, Meta, MetaKey, NamedExpression,
        Payload, PayloadField, Prefix, SetItem,
    },
    schema::{
        Chain, FlushObject, Map, NfCmd, NfListObject, Nftables, Rule, SetType, SetTypeValue, Table,
    },
    stmt::{Counter, JumpTarget, Match, NAT, NATFamily, Operator, Statement},
    types::{NfChainPolicy, NfChainType, NfFamily, NfHook},
};

use super::{
    nfnl::{Data, Element, Key},
    state::{EndpointPorts, FirewallState, NetworkRules},
};
use crate::spec::{HostIp, Protocol};

/// The agent's table (family inet).
pub const TABLE: &str = "weft";
pub const FORWARD: &str = "forward";
pub const PREROUTING: &str = "prerouting";
pub const OUTPUT: &str = "output";
pub const POSTROUTING: &str = "postrouting";
pub const PORTS: &str = "ports";
pub const LOOPBACK: &str = "loopback";

/// The `loopback` chain's priority: nftables' "raw" (-300), before conntrack (-200) and
/// destination NAT (-100), so a packet is judged by the address it was sent to.
pub const LOOPBACK_PRIORITY: i32 = -300;
/// The comment on the loopback guard's rules.
pub const LOOPBACK_COMMENT: &str = "weft:loopback";

/// 127.0.0.0/8.
const LOOPBACK_NET: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(127, 0, 0, 0), 8);

/// nftables limits comments to 128 bytes.
const COMMENT_MAX: usize = 128;

/// The comment marking a network's rules.
pub fn network_comment(network_id: &str) -> String {
    comment(&format!("weft:network:{network_id}"))
}

/// The comment marking an endpoint's published ports.
pub fn endpoint_comment(endpoint_id: &str) -> String {
    comment(&format!("weft:endpoint:{endpoint_id}"))
}

fn comment(s: &str) -> String {
    let mut end = s.len().min(COMMENT_MAX);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// The maps of published ports: (name, whether keys start with the bound host address,
/// IPv6, whether it holds the address (else the port)). Keys are `[daddr .] l4proto . dport`;
/// values the endpoint's address or its port. (Two maps per lookup rather than one with
/// `addr . port` values: nft 1.0.6 cannot declare concatenated values in JSON.)
pub const DNAT_MAPS: [(&str, bool, bool, bool); 8] = [
    ("dnat4_addr", false, false, true),
    ("dnat4_port", false, false, false),
    ("dnat4_bound_addr", true, false, true),
    ("dnat4_bound_port", true, false, false),
    ("dnat6_addr", false, true, true),
    ("dnat6_port", false, true, false),
    ("dnat6_bound_addr", true, true, true),
    ("dnat6_bound_port", true, true, false),
];

/// The elements of every map, by map name (every map of [`DNAT_MAPS`] is there, maybe empty).
pub type Elements = BTreeMap<&'static str, BTreeSet<Element>>;

/// The chains of the table, in the order they are made.
const CHAINS: [&str; 6] = [LOOPBACK, FORWARD, PREROUTING, OUTPUT, POSTROUTING, PORTS];

/// The transaction writing the skeleton for `state` (see the module's doc): when the state is
/// empty the table is deleted (and nothing of the agent's remains). Otherwise the table, its
/// chains and maps are added where missing and every chain's rules replaced; the maps and their
/// elements stay as they are. With `replace` the table is deleted first (its maps empty
/// afterwards): for a table that drifted in a way adding cannot repair.
pub fn skeleton(state: &FirewallState, replace: bool) -> Nftables<'static> {
    let mut b = Batch::new();
    if state.is_empty() || replace {
        // "add" first so that "delete" never fails on a missing table.
        b.add(NfListObject::Table(table()));
        b.delete(NfListObject::Table(table()));
        if state.is_empty() {
            return b.to_nftables();
        }
    }
    b.add(NfListObject::Table(table()));
    add_chains(&mut b);
    for (name, bound, v6, addr) in DNAT_MAPS {
        b.add(NfListObject::Map(Box::new(map_decl(name, bound, v6, addr))));
    }
    for chain in CHAINS {
        b.add_cmd(NfCmd::Flush(FlushObject::Chain(plain_chain(chain))));
    }
    for r in loopback_rules()
        .into_iter()
        .chain(forward_rules(state))
        .chain(jump_rules())
        .chain(port_rules())
        .chain(postrouting_rules(state))
    {
        b.add(NfListObject::Rule(r));
    }
    b.to_nftables()
}

/// The table's base chains at their hooks and priorities, and the chain of published ports.
fn add_chains(b: &mut Batch<'_>) {
    b.add(NfListObject::Chain(base_chain(
        LOOPBACK,
        NfChainType::Filter,
        NfHook::Prerouting,
        LOOPBACK_PRIORITY,
    )));
    b.add(NfListObject::Chain(base_chain(
        FORWARD,
        NfChainType::Filter,
        NfHook::Forward,
        0,
    )));
    b.add(NfListObject::Chain(base_chain(
        PREROUTING,
        NfChainType::NAT,
        NfHook::Prerouting,
        -100,
    )));
    b.add(NfListObject::Chain(base_chain(
        OUTPUT,
        NfChainType::NAT,
        NfHook::Output,
        -100,
    )));
    b.add(NfListObject::Chain(base_chain(
        POSTROUTING,
        NfChainType::NAT,
        NfHook::Postrouting,
        100,
    )));
    b.add(NfListObject::Chain(plain_chain(PORTS)));
}

/// One DNAT map (see [`DNAT_MAPS`]): keyed by protocol and port, and the host address when
/// `bound`; mapping to an address of the family (`addr`) or to a port.
fn map_decl(name: &'static str, bound: bool, v6: bool, addr: bool) -> Map<'static> {
    let host = if v6 {
        SetType::Ipv6Addr
    } else {
        SetType::Ipv4Addr
    };
    let mut key = Vec::new();
    if bound {
        key.push(host);
    }
    key.extend([SetType::InetProto, SetType::InetService]);
    Map {
        family: NfFamily::INet,
        table: TABLE.into(),
        name: name.into(),
        handle: None,
        set_type: SetTypeValue::Concatenated(Cow::Owned(key)),
        map: SetTypeValue::Single(if addr { host } else { SetType::InetService }),
        policy: None,
        flags: None,
        elem: None,
        timeout: None,
        gc_interval: None,
        size: None,
        comment: None,
    }
}

fn plain_chain(name: &'static str) -> Chain<'static> {
    Chain {
        family: NfFamily::INet,
        table: TABLE.into(),
        name: name.into(),
        ..Chain::default()
    }
}

fn table() -> Table<'static> {
    Table {
        family: NfFamily::INet,
        name: TABLE.into(),
        ..Table::default()
    }
}

fn base_chain(name: &'static str, kind: NfChainType, hook: NfHook, prio: i32) -> Chain<'static> {
    Chain {
        family: NfFamily::INet,
        table: TABLE.into(),
        name: name.into(),
        _type: Some(kind),
        hook: Some(hook),
        prio: Some(prio),
        policy: Some(NfChainPolicy::Accept),
        ..Chain::default()
    }
}

fn rule(chain: &'static str, comment: String, expr: Vec<Statement<'static>>) -> Rule<'static> {
    Rule {
        family: NfFamily::INet,
        table: TABLE.into(),
        chain: chain.into(),
        expr: Cow::Owned(expr),
        comment: Some(comment.into()),
        ..Rule::default()
    }
}

// Expression helpers.

fn s(v: impl ToString) -> Expression<'static> {
    Expression::String(Cow::Owned(v.to_string()))
}

fn meta(key: MetaKey) -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(Meta { key }))
}

fn payload(protocol: &'static str, field: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: protocol.into(),
            field: field.into(),
        },
    )))
}

fn ct(key: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::CT(CT {
        key: key.into(),
        ..CT::default()
    }))
}

fn prefix(net: IpNet) -> Expression<'static> {
    Expression::Named(NamedExpression::Prefix(Prefix {
        addr: Box::new(s(net.network())),
        len: u32::from(net.prefix_len()),
    }))
}

fn set(items: impl IntoIterator<Item = Expression<'static>>) -> Expression<'static> {
    Expression::Named(NamedExpression::Set(
        items.into_iter().map(SetItem::Element).collect(),
    ))
}

fn cmp(left: Expression<'static>, op: Operator, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(Match { left, right, op })
}

fn eq(left: Expression<'static>, right: Expression<'static>) -> Statement<'static> {
    cmp(left, Operator::EQ, right)
}

fn ne(left: Expression<'static>, right: Expression<'static>) -> Statement<'static> {
    cmp(left, Operator::NEQ, right)
}

fn iif(name: &str) -> Statement<'static> {
    eq(meta(MetaKey::Iifname), s(name))
}

fn oif(name: &str) -> Statement<'static> {
    eq(meta(MetaKey::Oifname), s(name))
}

fn ct_status_dnat() -> Statement<'static> {
    cmp(ct("status"), Operator::IN, s("dnat"))
}

fn saddr(net: IpNet) -> Statement<'static> {
    let proto = if net.addr().is_ipv4() { "ip" } else { "ip6" };
    eq(payload(proto, "saddr"), prefix(net))
}

fn accept() -> Statement<'static> {
    Statement::Accept(None)
}

fn drop_() -> Statement<'static> {
    Statement::Drop(None)
}

fn masquerade() -> Statement<'static> {
    Statement::Masquerade(None)
}

fn counter() -> Statement<'static> {
    Statement::Counter(Counter::Anonymous(None))
}

/// The loopback guard (CVE-2020-8558): a packet from or to the host's loopback addresses
/// (127.0.0.0/8, ::1) that arrives on any interface but `lo` is dropped.
///
/// Bridges have `route_localnet` on (published ports reached through 127.0.0.1, see
/// [`super::sysctls_for`]), which also stops the kernel from treating 127.0.0.0/8 as martian on
/// them: without this, a container that routes 127.0.0.1 via its gateway talks to every
/// loopback service of the host (the agent, the gateway, ipam-svc, the operator DNS).
///
/// What others did, and what this does beyond it:
/// - Kubernetes (kube-proxy, the CVE-2020-8558 fix): `! -s 127.0.0.0/8 -d 127.0.0.0/8 -m
///   conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP` in filter INPUT. It runs after NAT,
///   hence the conntrack exceptions for translated replies.
/// - Docker 28 (moby's nftables/iptables bridge driver): `iifname != "lo" ip daddr 127.0.0.1
///   <proto> dport <port> drop` in a prerouting chain at raw priority, one rule per port
///   published on a loopback address ("DROP REMOTE LOOPBACK").
///
/// Weft takes Docker's place (prerouting, raw priority: before conntrack and DNAT, so the
/// published ports' own DNAT cannot be reached from outside either, and a dropped packet leaves
/// no conntrack entry) with Kubernetes' breadth (all of 127.0.0.0/8, every port). The
/// exception both make for translated traffic is kept by the place itself: replies to
/// published-port traffic that Weft translated arrive addressed to the bridge's address that
/// masquerade gave them, and are turned back into 127.0.0.1 only later, by conntrack. Spoofed
/// sources are dropped too (route_localnet lifts the kernel's martian-source check as well).
/// IPv6: the kernel already drops ::1 arriving on a non-loopback device before netfilter sees
/// it (RFC 4291 2.5.3); the explicit rules cost nothing and keep the guard whole if that ever
/// changes. A drop is final whatever other tables accept, so no other table's rule at an
/// earlier priority can let such a packet through. Each rule counts what it drops.
fn loopback_rules() -> Vec<Rule<'static>> {
    let not_lo = || ne(meta(MetaKey::Iif), s("lo"));
    let guard = |proto: &'static str, field: &'static str, addr: Expression<'static>| {
        rule(
            LOOPBACK,
            comment(LOOPBACK_COMMENT),
            vec![
                not_lo(),
                eq(payload(proto, field), addr),
                counter(),
                drop_(),
            ],
        )
    };
    let v4 = || prefix(IpNet::V4(LOOPBACK_NET));
    vec![
        guard("ip", "daddr", v4()),
        guard("ip", "saddr", v4()),
        guard("ip6", "daddr", s(Ipv6Addr::LOCALHOST)),
        guard("ip6", "saddr", s(Ipv6Addr::LOCALHOST)),
    ]
}

/// The forward chain. Order matters: sealing internal networks first, then ICC, then what may
/// enter a bridge, then isolation between bridges, then dropping everything else entering one.
fn forward_rules(state: &FirewallState) -> Vec<Rule<'static>> {
    let mut out = Vec::new();
    let nets = || state.networks.values();
    for n in nets().filter(|n| n.internal) {
        let c = network_comment(&n.id);
        out.push(rule(
            FORWARD,
            c.clone(),
            vec![
                iif(&n.bridge),
                ne(meta(MetaKey::Oifname), s(&n.bridge)),
                drop_(),
            ],
        ));
        out.push(rule(
            FORWARD,
            c,
            vec![
                oif(&n.bridge),
                ne(meta(MetaKey::Iifname), s(&n.bridge)),
                drop_(),
            ],
        ));
    }
    for n in nets() {
        let verdict = if n.icc { accept() } else { drop_() };
        out.push(rule(
            FORWARD,
            network_comment(&n.id),
            vec![iif(&n.bridge), oif(&n.bridge), verdict],
        ));
    }
    for n in nets().filter(|n| !n.internal) {
        let c = network_comment(&n.id);
        out.push(rule(
            FORWARD,
            c.clone(),
            vec![
                oif(&n.bridge),
                cmp(
                    ct("state"),
                    Operator::IN,
                    set([s("established"), s("related")]),
                ),
                accept(),
            ],
        ));
        out.push(rule(
            FORWARD,
            c,
            vec![oif(&n.bridge), ct_status_dnat(), accept()],
        ));
    }
    let bridges: Vec<&str> = nets().map(|n| n.bridge.as_str()).collect();
    if bridges.len() > 1 {
        let all = || set(bridges.iter().map(s));
        out.push(rule(
            FORWARD,
            comment("weft:isolation"),
            vec![
                eq(meta(MetaKey::Iifname), all()),
                eq(meta(MetaKey::Oifname), all()),
                drop_(),
            ],
        ));
    }
    for n in nets().filter(|n| !n.internal) {
        out.push(rule(
            FORWARD,
            network_comment(&n.id),
            vec![oif(&n.bridge), drop_()],
        ));
    }
    out
}

/// Traffic to a local address (any host address, 127.0.0.1 from the host itself) goes through
/// the published ports. IPv6 loopback is left out: a packet from ::1 cannot leave the host.
fn jump_rules() -> Vec<Rule<'static>> {
    let local = || {
        eq(
            Expression::Named(NamedExpression::Fib(Fib {
                result: FibResult::Type,
                flags: HashSet::from([FibFlag::Daddr]),
            })),
            s("local"),
        )
    };
    let jump = || {
        Statement::Jump(JumpTarget {
            target: PORTS.into(),
        })
    };
    let c = || comment("weft:ports");
    vec![
        rule(PREROUTING, c(), vec![local(), jump()]),
        rule(
            OUTPUT,
            c(),
            vec![ne(payload("ip6", "daddr"), s("::1")), local(), jump()],
        ),
        rule(
            OUTPUT,
            c(),
            vec![eq(meta(MetaKey::Nfproto), s("ipv4")), local(), jump()],
        ),
    ]
}

/// Which host address a mapping binds to in one family: `None` when it does not bind in that
/// family, `Some(None)` for every address of it.
pub fn binding(host_ip: HostIp, default_v4: Option<Ipv4Addr>, v6: bool) -> Option<Option<IpAddr>> {
    match (host_ip, v6) {
        (HostIp::Any, false) => Some(default_v4.map(IpAddr::V4)),
        // A network-wide IPv4 binding address narrows "every address" to that one.
        (HostIp::Any, true) => default_v4.is_none().then_some(None),
        (HostIp::AnyV4, false) | (HostIp::AnyV6, true) => Some(None),
        (HostIp::AnyV4, true) | (HostIp::AnyV6, false) => None,
        (HostIp::Addr(a), v6) => (a.is_ipv6() == v6).then_some(Some(a)),
    }
}

/// The `ports` chain: per family, one DNAT rule for ports bound to a host address, then one for
/// ports on every address; each looks the endpoint's address and port up in its two maps.
fn port_rules() -> Vec<Rule<'static>> {
    let mut out = Vec::new();
    for (v6, l3, nfproto, family) in [
        (false, "ip", "ipv4", NATFamily::IP),
        (true, "ip6", "ipv6", NATFamily::IP6),
    ] {
        for bound in [true, false] {
            let key = || {
                let mut k = Vec::new();
                if bound {
                    k.push(payload(l3, "daddr"));
                }
                k.push(meta(MetaKey::L4proto));
                k.push(payload("th", "dport"));
                Expression::Named(NamedExpression::Concat(k))
            };
            let lookup = |addr: bool| {
                let name = dnat_map(bound, v6, addr);
                Expression::Named(NamedExpression::Map(Box::new(ExprMap {
                    key: key(),
                    data: s(format!("@{name}")),
                })))
            };
            out.push(rule(
                PORTS,
                comment("weft:ports"),
                vec![
                    eq(meta(MetaKey::Nfproto), s(nfproto)),
                    Statement::DNAT(Some(NAT {
                        addr: Some(lookup(true)),
                        family: Some(family),
                        port: Some(lookup(false)),
                        flags: None,
                    })),
                ],
            ));
        }
    }
    out
}

/// The name of the map of [`DNAT_MAPS`] with these properties.
pub fn dnat_map(bound: bool, v6: bool, addr: bool) -> &'static str {
    DNAT_MAPS
        .iter()
        .find(|(_, b, six, a)| *b == bound && *six == v6 && *a == addr)
        .map_or("", |m| m.0)
}

/// The protocol number of a mapping's protocol (`meta l4proto`).
fn proto_number(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
        Protocol::Sctp => 132,
    }
}

/// Every map's elements for `state`: for each published host port (each port of a range) and
/// family the endpoint has an address in, the key `[host address .] protocol . host port` maps
/// to the endpoint's address in one map and to its port in the other. Both elements carry the
/// endpoint's comment. Internal networks publish nothing; ports of a network not (yet) known
/// wait for it. Should two endpoints claim one key (the agent refuses that, a desired state
/// might not), the first by id keeps it.
pub fn elements(state: &FirewallState) -> Elements {
    let mut maps: BTreeMap<&'static str, BTreeMap<Key, Element>> =
        DNAT_MAPS.iter().map(|m| (m.0, BTreeMap::new())).collect();
    for ep in state.endpoints().values() {
        for (map, element) in endpoint_elements(&state.networks, ep) {
            if let Some(m) = maps.get_mut(map) {
                m.entry(element.key.clone()).or_insert(element);
            }
        }
    }
    maps.into_iter()
        .map(|(name, m)| (name, m.into_values().collect()))
        .collect()
}

/// The elements one endpoint's ports make, by map (see [`elements`]): none when its network is
/// internal or not known.
pub fn endpoint_elements(
    networks: &BTreeMap<String, NetworkRules>,
    ep: &EndpointPorts,
) -> BTreeSet<(&'static str, Element)> {
    let mut out = BTreeSet::new();
    let mut seen = BTreeSet::new();
    {
        let Some(net) = networks.get(&ep.network_id).filter(|n| !n.internal) else {
            return out;
        };
        let c = endpoint_comment(&ep.id);
        for pm in &ep.ports {
            let targets = [
                (false, ep.ipv4.map(IpAddr::V4)),
                (true, ep.ipv6.map(IpAddr::V6)),
            ];
            for (v6, target) in targets {
                let (Some(target), Some(bind)) =
                    (target, binding(pm.host_ip, net.host_binding_ipv4, v6))
                else {
                    continue;
                };
                for i in 0..pm.range {
                    let mut key = Key::new();
                    match bind {
                        Some(IpAddr::V4(a)) => key = key.ipv4(a),
                        Some(IpAddr::V6(a)) => key = key.ipv6(a),
                        None => {}
                    }
                    let key = key.proto(proto_number(pm.protocol)).port(pm.host_port + i);
                    let addr = match target {
                        IpAddr::V4(a) => Key::new().ipv4(a),
                        IpAddr::V6(a) => Key::new().ipv6(a),
                    };
                    let port = Key::port_value(pm.container_port + i);
                    for (is_addr, value) in [(true, addr), (false, port)] {
                        let map = dnat_map(bind.is_some(), v6, is_addr);
                        let element = Element::map(key.clone(), Data::Value(value));
                        // (A key once per map: the first mapping that makes it keeps it.)
                        if seen.insert((map, element.key.clone())) {
                            out.insert((map, element.with_comment(&c)));
                        }
                    }
                }
            }
        }
    }
    out
}

fn postrouting_rules(state: &FirewallState) -> Vec<Rule<'static>> {
    let mut out = Vec::new();
    for n in state.networks.values().filter(|n| !n.internal) {
        let c = || network_comment(&n.id);
        if n.masquerade {
            for subnet in &n.subnets {
                out.push(rule(
                    POSTROUTING,
                    c(),
                    vec![
                        saddr(*subnet),
                        ne(meta(MetaKey::Oifname), s(&n.bridge)),
                        masquerade(),
                    ],
                ));
            }
        }
        // Hairpin: a container reaching a published port through the host's address, DNATed
        // back out the bridge it came from, must see the answer come from the host.
        out.push(rule(
            POSTROUTING,
            c(),
            vec![
                iif(&n.bridge),
                oif(&n.bridge),
                ct_status_dnat(),
                masquerade(),
            ],
        ));
        // Published ports reached through 127.0.0.1 (route_localnet lets such packets out).
        out.push(rule(
            POSTROUTING,
            c(),
            vec![oif(&n.bridge), saddr(IpNet::V4(LOOPBACK_NET)), masquerade()],
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        firewall::state::{EndpointPorts, NetworkRules},
        spec::PortMapping,
    };
    use serde_json::{Value, json};

    fn net(id: &str, bridge: &str, subnets: &[&str]) -> NetworkRules {
        NetworkRules {
            id: id.into(),
            bridge: bridge.into(),
            subnets: subnets.iter().map(|s| s.parse().unwrap()).collect(),
            internal: false,
            icc: true,
            masquerade: true,
            host_binding_ipv4: None,
        }
    }

    fn ports(id: &str, network: &str, pm: Vec<PortMapping>) -> EndpointPorts {
        EndpointPorts {
            id: id.into(),
            network_id: network.into(),
            sandbox_id: "sb".into(),
            ipv4: Some("10.0.0.2".parse().unwrap()),
            ipv6: Some("fd00::2".parse().unwrap()),
            ports: pm,
        }
    }

    fn tcp(host_ip: HostIp, host_port: u16, container_port: u16, range: u16) -> PortMapping {
        PortMapping {
            protocol: Protocol::Tcp,
            host_ip,
            host_port,
            container_port,
            range,
        }
    }

    fn json_of(state: &FirewallState) -> Value {
        serde_json::to_value(skeleton(state, false)).unwrap()
    }

    /// The rules of one chain as (comment, expr) pairs.
    fn rules_of(v: &Value, chain: &str) -> Vec<(String, Value)> {
        v["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|o| o["add"]["rule"].as_object())
            .filter(|r| r["chain"] == chain)
            .map(|r| (r["comment"].as_str().unwrap().to_owned(), r["expr"].clone()))
            .collect()
    }

    #[test]
    fn an_empty_state_only_deletes_the_table() {
        let v = json_of(&FirewallState::default());
        assert_eq!(
            v,
            json!({"nftables": [
                {"add": {"table": {"family": "inet", "name": "weft"}}},
                {"delete": {"table": {"family": "inet", "name": "weft"}}},
            ]})
        );
    }

    #[test]
    fn a_network_gets_masquerade_hairpin_and_localhost_rules_and_the_table_is_replaced() {
        let mut st = FirewallState::default();
        st.set_network(net("n1", "br1", &["10.0.0.0/24", "fd00::/64"]));
        let v = json_of(&st);
        let objs = v["nftables"].as_array().unwrap();
        // Amended: the table added (if missing), never deleted, each chain flushed.
        assert!(objs[0]["add"]["table"].is_object());
        assert!(objs.iter().all(|o| o.get("delete").is_none()));
        let flushed = objs
            .iter()
            .filter(|o| o["flush"]["chain"].is_object())
            .count();
        assert_eq!(flushed, CHAINS.len());
        // Replaced: add, delete, add table, then chains.
        let r = serde_json::to_value(skeleton(&st, true)).unwrap();
        let objs = r["nftables"].as_array().unwrap();
        assert!(objs[1]["delete"]["table"].is_object());
        assert!(objs[2]["add"]["table"].is_object());
        let post = rules_of(&v, POSTROUTING);
        assert_eq!(post.len(), 4, "{post:?}");
        assert!(post.iter().all(|(c, _)| c == "weft:network:n1"));
        assert_eq!(
            post[0].1,
            json!([
                {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                           "right": {"prefix": {"addr": "10.0.0.0", "len": 24}}}},
                {"match": {"op": "!=", "left": {"meta": {"key": "oifname"}}, "right": "br1"}},
                {"masquerade": null}
            ])
        );
        assert_eq!(
            post[1].1[0]["match"]["left"]["payload"]["protocol"], "ip6",
            "IPv6 is masqueraded too"
        );
        // Nothing enters the bridge but replies and published traffic.
        let fwd = rules_of(&v, FORWARD);
        let last = &fwd.last().unwrap().1;
        assert_eq!(last[1], json!({"drop": null}));
    }

    #[test]
    fn internal_networks_are_sealed_and_never_masqueraded_nor_published() {
        let mut st = FirewallState::default();
        let mut n = net("n1", "br1", &["10.0.0.0/24"]);
        n.internal = true;
        st.set_network(n);
        st.set_endpoint(
            "e1",
            Some(ports("e1", "n1", vec![tcp(HostIp::Any, 8080, 80, 1)])),
        );
        let v = json_of(&st);
        assert!(rules_of(&v, POSTROUTING).is_empty());
        assert!(elements(&st).values().all(BTreeSet::is_empty));
        let fwd = rules_of(&v, FORWARD);
        // Sealed both ways, then ICC.
        assert_eq!(fwd.len(), 3, "{fwd:?}");
        assert_eq!(fwd[0].1[2], json!({"drop": null}));
        assert_eq!(fwd[1].1[2], json!({"drop": null}));
        assert_eq!(fwd[2].1[2], json!({"accept": null}));
    }

    #[test]
    fn two_networks_are_isolated_and_icc_off_drops_within_the_bridge() {
        let mut st = FirewallState::default();
        let mut a = net("a", "bra", &["10.0.0.0/24"]);
        a.icc = false;
        st.set_network(a);
        st.set_network(net("b", "brb", &["10.0.1.0/24"]));
        let v = json_of(&st);
        let fwd = rules_of(&v, FORWARD);
        let icc: Vec<&Value> = fwd
            .iter()
            .filter(|(_, e)| e.as_array().unwrap().len() == 3 && e[1]["match"]["right"].is_string())
            .map(|(_, e)| &e[2])
            .take(2)
            .collect();
        assert_eq!(icc, [&json!({"drop": null}), &json!({"accept": null})]);
        let iso = fwd
            .iter()
            .find(|(c, _)| c == "weft:isolation")
            .expect("isolation rule");
        assert_eq!(iso.1[0]["match"]["right"], json!({"set": ["bra", "brb"]}));
    }

    #[test]
    fn the_ports_chain_is_four_lookups_whatever_is_published() {
        let mut st = FirewallState::default();
        st.set_network(net("n1", "br1", &["10.0.0.0/24"]));
        let empty = json_of(&st);
        st.set_endpoint(
            "e1",
            Some(ports("e1", "n1", vec![tcp(HostIp::Any, 8080, 80, 1)])),
        );
        assert_eq!(json_of(&st), empty, "ports are elements, not rules");
        let p = rules_of(&empty, PORTS);
        assert_eq!(p.len(), 4);
        assert_eq!(
            p[0].1[1],
            json!({"dnat": {"family": "ip",
                "addr": {"map": {"key": {"concat": [
                    {"payload": {"protocol": "ip", "field": "daddr"}},
                    {"meta": {"key": "l4proto"}},
                    {"payload": {"protocol": "th", "field": "dport"}}]},
                    "data": "@dnat4_bound_addr"}},
                "port": {"map": {"key": {"concat": [
                    {"payload": {"protocol": "ip", "field": "daddr"}},
                    {"meta": {"key": "l4proto"}},
                    {"payload": {"protocol": "th", "field": "dport"}}]},
                    "data": "@dnat4_bound_port"}}}})
        );
        assert_eq!(p[3].1[1]["dnat"]["family"], "ip6");
        assert_eq!(p[3].1[1]["dnat"]["addr"]["map"]["data"], "@dnat6_addr");
        let maps: Vec<&Value> = empty["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|o| o["add"].get("map"))
            .collect();
        assert_eq!(maps.len(), DNAT_MAPS.len());
        assert_eq!(
            maps[2],
            &json!({"family": "inet", "table": "weft", "name": "dnat4_bound_addr",
                    "type": ["ipv4_addr", "inet_proto", "inet_service"], "map": "ipv4_addr"})
        );
    }

    /// The elements of one map as (key, value) byte strings.
    fn pairs(e: &Elements, map: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
        e[map]
            .iter()
            .map(|el| {
                assert_eq!(el.comment.as_deref(), Some("weft:endpoint:e1"));
                match &el.data {
                    Some(Data::Value(v)) => (el.key.0.clone(), v.0.clone()),
                    d => panic!("{d:?}"),
                }
            })
            .collect()
    }

    #[test]
    fn published_ports_become_one_element_pair_per_host_port_and_family() {
        let mut st = FirewallState::default();
        st.set_network(net("n1", "br1", &["10.0.0.0/24", "fd00::/64"]));
        st.set_endpoint(
            "e1",
            Some(ports(
                "e1",
                "n1",
                vec![
                    tcp(HostIp::Any, 8080, 80, 1),
                    tcp(HostIp::Addr("192.0.2.1".parse().unwrap()), 9000, 9000, 3),
                    PortMapping {
                        protocol: Protocol::Udp,
                        ..tcp(HostIp::AnyV6, 5000, 6000, 2)
                    },
                ],
            )),
        );
        let e = elements(&st);
        let tcp_key = |p: u16| Key::new().proto(6).port(p).0;
        let v4 = Key::new().ipv4("10.0.0.2".parse().unwrap()).0;
        let v6 = Key::new().ipv6("fd00::2".parse().unwrap()).0;
        let port = |p: u16| Key::port_value(p).0;
        assert_eq!(pairs(&e, "dnat4_addr"), [(tcp_key(8080), v4.clone())]);
        assert_eq!(pairs(&e, "dnat4_port"), [(tcp_key(8080), port(80))]);
        let bound = |p: u16| {
            Key::new()
                .ipv4("192.0.2.1".parse().unwrap())
                .proto(6)
                .port(p)
                .0
        };
        assert_eq!(
            pairs(&e, "dnat4_bound_port"),
            [
                (bound(9000), port(9000)),
                (bound(9001), port(9001)),
                (bound(9002), port(9002))
            ]
        );
        assert_eq!(pairs(&e, "dnat4_bound_addr").len(), 3);
        let udp_key = |p: u16| Key::new().proto(17).port(p).0;
        assert_eq!(
            pairs(&e, "dnat6_addr"),
            [
                (tcp_key(8080), v6.clone()),
                (udp_key(5000), v6.clone()),
                (udp_key(5001), v6)
            ]
        );
        assert_eq!(
            pairs(&e, "dnat6_port"),
            [
                (tcp_key(8080), port(80)),
                (udp_key(5000), port(6000)),
                (udp_key(5001), port(6001))
            ]
        );
        assert!(e["dnat6_bound_addr"].is_empty());
        // A second endpoint claiming a taken key does not replace the holder's.
        st.set_endpoint(
            "e2",
            Some(ports("e2", "n1", vec![tcp(HostIp::AnyV4, 8080, 81, 1)])),
        );
        assert_eq!(elements(&st)["dnat4_port"], e["dnat4_port"]);
    }

    #[test]
    fn a_host_binding_address_narrows_unbound_ports_to_it_and_to_ipv4() {
        assert_eq!(
            binding(HostIp::Any, Some("192.0.2.9".parse().unwrap()), false),
            Some(Some("192.0.2.9".parse().unwrap()))
        );
        assert_eq!(
            binding(HostIp::Any, Some("192.0.2.9".parse().unwrap()), true),
            None
        );
        assert_eq!(binding(HostIp::Any, None, true), Some(None));
        assert_eq!(binding(HostIp::AnyV4, None, true), None);
        assert_eq!(
            binding(HostIp::Addr("fd00::1".parse().unwrap()), None, false),
            None
        );
    }

    #[test]
    fn clashes_name_the_holder_and_ignore_the_endpoint_itself() {
        let mut st = FirewallState::default();
        st.set_endpoint(
            "e1",
            Some(ports("e1", "n1", vec![tcp(HostIp::AnyV4, 8000, 80, 10)])),
        );
        let want = [tcp(HostIp::Addr("10.1.1.1".parse().unwrap()), 8005, 80, 1)];
        let c = st.clash("e2", &want).unwrap();
        assert_eq!(c.holder, "e1");
        assert_eq!(st.clash("e1", &want), None);
        // Another family, protocol or port range does not clash.
        assert_eq!(st.clash("e2", &[tcp(HostIp::AnyV6, 8005, 80, 1)]), None);
        assert_eq!(st.clash("e2", &[tcp(HostIp::AnyV4, 8010, 80, 1)]), None);
        let udp = PortMapping {
            protocol: Protocol::Udp,
            ..tcp(HostIp::AnyV4, 8000, 80, 1)
        };
        assert_eq!(st.clash("e2", &[udp]), None);
    }

    /// One guard rule as nft's JSON has it.
    fn guard(proto: &str, field: &str, addr: Value) -> (String, Value) {
        (
            "weft:loopback".to_owned(),
            json!([
                {"match": {"op": "!=", "left": {"meta": {"key": "iif"}}, "right": "lo"}},
                {"match": {"op": "==", "left": {"payload": {"protocol": proto, "field": field}},
                           "right": addr}},
                {"counter": null},
                {"drop": null}
            ]),
        )
    }

    #[test]
    fn the_loopback_guard_drops_loopback_addresses_from_any_interface_but_lo_before_nat() {
        let mut st = FirewallState::default();
        st.set_network(net("n1", "br1", &["10.0.0.0/24"]));
        let v = json_of(&st);
        let chains: Vec<&Value> = v["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|o| o["add"].get("chain"))
            .collect();
        // The first chain of the table, at raw priority: before conntrack (-200) and DNAT
        // (-100).
        assert_eq!(
            chains[0],
            &json!({"family": "inet", "table": "weft", "name": "loopback", "type": "filter",
                    "hook": "prerouting", "prio": -300, "policy": "accept"})
        );
        let v4 = json!({"prefix": {"addr": "127.0.0.0", "len": 8}});
        assert_eq!(
            rules_of(&v, LOOPBACK),
            [
                guard("ip", "daddr", v4.clone()),
                guard("ip", "saddr", v4),
                guard("ip6", "daddr", json!("::1")),
                guard("ip6", "saddr", json!("::1")),
            ]
        );
    }

    #[test]
    fn the_loopback_guard_is_there_whenever_a_network_turns_route_localnet_on() {
        let variants = [
            net("a", "bra", &["10.0.0.0/24"]),
            net("b", "brb", &["fd00::/64"]),
            NetworkRules {
                icc: false,
                masquerade: false,
                host_binding_ipv4: Some("192.0.2.1".parse().unwrap()),
                ..net("c", "brc", &["10.0.1.0/24", "fd00:1::/64"])
            },
            NetworkRules {
                internal: true,
                ..net("d", "brd", &["10.0.2.0/24"])
            },
        ];
        for n in variants {
            let localnet = super::super::sysctls_for(&n)
                .iter()
                .any(|s| s.path.ends_with("/route_localnet") && s.value == "1");
            let mut st = FirewallState::default();
            st.set_network(n.clone());
            let guard = rules_of(&json_of(&st), LOOPBACK);
            assert_eq!(guard.len(), 4, "{n:?}");
            // (The guard does not depend on the switch: internal networks get it too.)
            assert!(localnet || n.internal, "{n:?}");
        }
        // Ports alone (their network not known yet) keep the table, and the guard with it.
        let mut st = FirewallState::default();
        st.set_endpoint(
            "e1",
            Some(ports("e1", "n1", vec![tcp(HostIp::Any, 8080, 80, 1)])),
        );
        assert_eq!(rules_of(&json_of(&st), LOOPBACK).len(), 4);
    }

    #[test]
    fn long_ids_are_cut_to_the_comment_limit() {
        let c = endpoint_comment(&"é".repeat(100));
        assert!(c.len() <= COMMENT_MAX);
        assert!(c.starts_with("weft:endpoint:"));
    }
}
