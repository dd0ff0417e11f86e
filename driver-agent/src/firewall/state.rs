//! What the firewall must express: the bridge networks with their options and the endpoints
//! that publish ports. The table is a pure function of this: its skeleton
//! ([`super::rules::skeleton`]) and its map elements ([`super::rules::elements`]).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{Ipv4Addr, Ipv6Addr},
};

use ipnet::IpNet;

use crate::spec::{Endpoint, Network, PortMapping};

/// One bridge network as the firewall sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkRules {
    pub id: String,
    /// The bridge device in the managed namespace.
    pub bridge: String,
    /// IPv4 and IPv6 subnets.
    pub subnets: Vec<IpNet>,
    pub internal: bool,
    pub icc: bool,
    pub masquerade: bool,
    pub host_binding_ipv4: Option<Ipv4Addr>,
}

impl NetworkRules {
    pub fn from_network(net: &Network) -> Self {
        Self {
            id: net.id.clone(),
            bridge: net.bridge.clone(),
            subnets: net.subnets.clone(),
            internal: net.internal,
            icc: net.icc,
            masquerade: net.masquerade,
            host_binding_ipv4: net.host_binding_ipv4,
        }
    }

    /// Whether the network has an IPv6 subnet.
    pub fn has_ipv6(&self) -> bool {
        self.subnets.iter().any(|s| matches!(s, IpNet::V6(_)))
    }
}

/// The ports one endpoint publishes, with the addresses they forward to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointPorts {
    pub id: String,
    pub network_id: String,
    pub sandbox_id: String,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    /// Never empty: endpoints without ports are not kept.
    pub ports: Vec<PortMapping>,
}

impl EndpointPorts {
    /// The endpoint's published ports, or `None` when it publishes none.
    pub fn from_endpoint(ep: &Endpoint) -> Option<Self> {
        (!ep.ports.is_empty()).then(|| Self {
            id: ep.id.clone(),
            network_id: ep.network_id.clone(),
            sandbox_id: ep.sandbox_id.clone(),
            ipv4: ep.ipv4.map(|n| n.addr()),
            ipv6: ep.ipv6.map(|n| n.addr()),
            ports: ep.ports.clone(),
        })
    }
}

/// Everything the agent's nftables table expresses, keyed by id (ordered, so the generated
/// ruleset is stable). The endpoints change only through its methods, which keep an index of
/// their host ports for [`FirewallState::clash`].
#[derive(Debug, Clone, Default)]
pub struct FirewallState {
    pub networks: BTreeMap<String, NetworkRules>,
    endpoints: BTreeMap<String, EndpointPorts>,
    ports: PortIndex,
}

/// Two states are equal when they express the same (the index follows the endpoints).
impl PartialEq for FirewallState {
    fn eq(&self, other: &Self) -> bool {
        self.networks == other.networks && self.endpoints == other.endpoints
    }
}

impl Eq for FirewallState {}

/// The endpoints publishing ports, by (protocol, first host port) of each mapping: a clash
/// check reads the mappings that can reach the ports asked for, not every endpoint's. A
/// mapping starting at most `span` ports below a port can cover it (`span`: the longest range
/// ever indexed, an upper bound).
#[derive(Debug, Clone, Default)]
struct PortIndex {
    by_start: BTreeMap<(crate::spec::Protocol, u16), BTreeSet<String>>,
    span: u16,
}

impl PortIndex {
    fn add(&mut self, id: &str, e: &EndpointPorts) {
        for p in &e.ports {
            self.span = self.span.max(p.range.saturating_sub(1));
            self.by_start
                .entry((p.protocol, p.host_port))
                .or_default()
                .insert(id.to_owned());
        }
    }

    fn remove(&mut self, id: &str, e: &EndpointPorts) {
        for p in &e.ports {
            let key = (p.protocol, p.host_port);
            if let Some(ids) = self.by_start.get_mut(&key) {
                ids.remove(id);
                if ids.is_empty() {
                    self.by_start.remove(&key);
                }
            }
        }
    }

    /// The endpoints with a mapping of `p`'s protocol that may overlap `p`'s host ports.
    fn near<'a>(&'a self, p: &PortMapping) -> impl Iterator<Item = &'a String> + 'a {
        let from = (p.protocol, p.host_port.saturating_sub(self.span));
        let to = (p.protocol, p.host_end());
        self.by_start.range(from..=to).flat_map(|(_, ids)| ids)
    }
}

/// A host port already published by another endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clash {
    /// The requested mapping that clashes.
    pub mapping: PortMapping,
    /// The endpoint holding it.
    pub holder: String,
}

impl FirewallState {
    /// The state for a full desired state (reconciliation): every network with a host device
    /// (a bridge; the driver says) and the ports of every endpoint that publishes some, but
    /// for endpoints of networks without one (macvlan: nothing on the host to forward from).
    pub fn from_specs<'a>(
        networks: impl IntoIterator<Item = &'a Network>,
        endpoints: impl IntoIterator<Item = &'a Endpoint>,
    ) -> Self {
        let mut s = Self::default();
        let mut hostless = std::collections::BTreeSet::new();
        for n in networks {
            if crate::driver::of(n.driver).host_device() {
                s.set_network(NetworkRules::from_network(n));
            } else {
                hostless.insert(n.id.as_str());
            }
        }
        for e in endpoints
            .into_iter()
            .filter(|e| !hostless.contains(e.network_id.as_str()))
        {
            s.set_endpoint(&e.id, EndpointPorts::from_endpoint(e));
        }
        s
    }

    /// Nothing to express: the agent's tables must not exist.
    pub fn is_empty(&self) -> bool {
        self.networks.is_empty() && self.endpoints.is_empty()
    }

    /// Adds or replaces a network.
    pub fn set_network(&mut self, net: NetworkRules) {
        self.networks.insert(net.id.clone(), net);
    }

    /// Removes a network and the ports of its endpoints.
    pub fn remove_network(&mut self, network_id: &str) {
        self.networks.remove(network_id);
        self.retain_endpoints(|e| e.network_id != network_id);
    }

    /// Sets the ports endpoint `id` publishes (`None`: none).
    pub fn set_endpoint(&mut self, id: &str, ports: Option<EndpointPorts>) {
        let old = match ports {
            Some(p) => {
                self.ports.add(id, &p);
                self.endpoints.insert(id.to_owned(), p)
            }
            None => self.endpoints.remove(id),
        };
        if let Some(old) = old {
            self.ports.remove(id, &old);
            // (The same mapping may be both in the old and the new ports.)
            if let Some(new) = self.endpoints.get(id) {
                self.ports.add(id, new);
            }
        }
    }

    /// Removes the ports of every endpoint of a sandbox.
    pub fn remove_sandbox(&mut self, sandbox_id: &str) {
        self.retain_endpoints(|e| e.sandbox_id != sandbox_id);
    }

    /// Keeps the endpoints `keep` says to keep.
    pub fn retain_endpoints(&mut self, mut keep: impl FnMut(&EndpointPorts) -> bool) {
        let ports = &mut self.ports;
        self.endpoints.retain(|id, e| {
            let kept = keep(e);
            if !kept {
                ports.remove(id, e);
            }
            kept
        });
    }

    /// Whether this state, with what `keep` names taken as it is in `now`, equals `now`: the
    /// networks and endpoints `keep` does not name are the same in both.
    pub fn same_but(&self, now: &FirewallState, keep: &impl Fn(&str) -> bool) -> bool {
        fn same<T: PartialEq>(
            a: &BTreeMap<String, T>,
            b: &BTreeMap<String, T>,
            keep: &impl Fn(&str) -> bool,
        ) -> bool {
            let of = |m: &BTreeMap<String, T>| m.iter().filter(|(id, _)| !keep(id)).count();
            of(a) == of(b)
                && a.iter()
                    .filter(|(id, _)| !keep(id))
                    .all(|(id, v)| b.get(id) == Some(v))
        }
        same(&self.networks, &now.networks, keep) && same(&self.endpoints, &now.endpoints, keep)
    }

    /// The endpoints `keep` names as they are in `now` (there or not), the others as here.
    pub fn keep_endpoints_of(&mut self, now: &FirewallState, keep: impl Fn(&str) -> bool) {
        self.retain_endpoints(|e| !keep(&e.id) || now.endpoints.contains_key(&e.id));
        for (id, v) in now.endpoints.iter().filter(|(id, _)| keep(id)) {
            self.set_endpoint(id, Some(v.clone()));
        }
    }

    /// The endpoints that publish ports, by id.
    pub fn endpoints(&self) -> &BTreeMap<String, EndpointPorts> {
        &self.endpoints
    }

    /// The first of `ports` that another endpoint than `endpoint_id` already publishes.
    pub fn clash(&self, endpoint_id: &str, ports: &[PortMapping]) -> Option<Clash> {
        ports.iter().find_map(|p| {
            self.ports
                .near(p)
                .filter(|id| id.as_str() != endpoint_id)
                .filter_map(|id| self.endpoints.get(id))
                .find(|e| e.ports.iter().any(|q| q.clashes_with(p)))
                .map(|e| Clash {
                    mapping: *p,
                    holder: e.id.clone(),
                })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{HostIp, Protocol};

    fn ports(id: &str, sandbox: &str, maps: &[(Protocol, u16, u16)]) -> EndpointPorts {
        EndpointPorts {
            id: id.into(),
            network_id: "n".into(),
            sandbox_id: sandbox.into(),
            ipv4: Some(Ipv4Addr::new(10, 0, 0, 2)),
            ipv6: None,
            ports: maps
                .iter()
                .map(|&(protocol, host_port, range)| PortMapping {
                    protocol,
                    host_ip: HostIp::AnyV4,
                    host_port,
                    container_port: host_port,
                    range,
                })
                .collect(),
        }
    }

    fn one(protocol: Protocol, host_port: u16, range: u16) -> Vec<PortMapping> {
        ports("x", "x", &[(protocol, host_port, range)]).ports
    }

    fn holder(s: &FirewallState, id: &str, p: &[PortMapping]) -> Option<String> {
        s.clash(id, p).map(|c| c.holder)
    }

    /// The index finds what a scan of every endpoint finds: a long range far below, the
    /// protocol apart, the asking endpoint itself left out, and follows every change.
    #[test]
    fn the_port_index_follows_every_change_of_the_endpoints() {
        use Protocol::{Tcp, Udp};
        let mut s = FirewallState::default();
        s.set_endpoint("wide", Some(ports("wide", "s1", &[(Tcp, 1000, 1000)])));
        for i in 0..50 {
            let id = format!("e{i}");
            s.set_endpoint(&id, Some(ports(&id, "s2", &[(Tcp, 3000 + i, 1)])));
        }
        assert_eq!(
            holder(&s, "new", &one(Tcp, 1999, 1)).as_deref(),
            Some("wide")
        );
        assert_eq!(
            holder(&s, "new", &one(Tcp, 990, 20)).as_deref(),
            Some("wide")
        );
        assert_eq!(holder(&s, "new", &one(Tcp, 2000, 1)), None);
        assert_eq!(holder(&s, "new", &one(Udp, 1500, 1)), None);
        assert_eq!(holder(&s, "wide", &one(Tcp, 1500, 1)), None);
        assert_eq!(holder(&s, "new", &one(Tcp, 3007, 1)).as_deref(), Some("e7"));
        // Its ports replaced: the old ones are free, the new ones taken.
        s.set_endpoint("e7", Some(ports("e7", "s2", &[(Tcp, 4000, 1)])));
        assert_eq!(holder(&s, "new", &one(Tcp, 3007, 1)), None);
        assert_eq!(holder(&s, "new", &one(Tcp, 4000, 1)).as_deref(), Some("e7"));
        // Gone, by id, by sandbox, by network.
        s.set_endpoint("e8", None);
        assert_eq!(holder(&s, "new", &one(Tcp, 3008, 1)), None);
        s.remove_sandbox("s1");
        assert_eq!(holder(&s, "new", &one(Tcp, 1500, 1)), None);
        s.remove_network("n");
        assert_eq!(holder(&s, "new", &one(Tcp, 3009, 1)), None);
        assert!(s.endpoints().is_empty());
        // Kept as another state has them.
        let mut now = FirewallState::default();
        now.set_endpoint("k", Some(ports("k", "s3", &[(Udp, 53, 1)])));
        s.set_endpoint("gone", Some(ports("gone", "s4", &[(Udp, 54, 1)])));
        s.keep_endpoints_of(&now, |id| id == "k" || id == "gone");
        assert_eq!(holder(&s, "new", &one(Udp, 53, 1)).as_deref(), Some("k"));
        assert_eq!(holder(&s, "new", &one(Udp, 54, 1)), None);
        assert_eq!(s, now);
    }

    /// A pass compares without copying: what `keep` names does not count, anything else does.
    #[test]
    fn same_but_ignores_exactly_what_is_kept() {
        use Protocol::Tcp;
        let mut a = FirewallState::default();
        let mut b = FirewallState::default();
        for s in [&mut a, &mut b] {
            s.set_endpoint("x", Some(ports("x", "s", &[(Tcp, 80, 1)])));
        }
        let none = |_: &str| false;
        let kept = |id: &str| id == "late";
        assert!(a.same_but(&b, &none));
        b.set_endpoint("late", Some(ports("late", "s2", &[(Tcp, 81, 1)])));
        assert!(!a.same_but(&b, &none));
        assert!(a.same_but(&b, &kept));
        a.set_endpoint("x", Some(ports("x", "s", &[(Tcp, 82, 1)])));
        assert!(!a.same_but(&b, &kept));
        a.set_endpoint("x", Some(ports("x", "s", &[(Tcp, 80, 1)])));
        a.set_endpoint("other", Some(ports("other", "s3", &[(Tcp, 83, 1)])));
        assert!(!a.same_but(&b, &kept));
    }
}
