//! What the firewall must express: the bridge networks with their options and the endpoints
//! that publish ports. The table is a pure function of this: its skeleton
//! ([`super::rules::skeleton`]) and its map elements ([`super::rules::elements`]).

use std::{
    collections::BTreeMap,
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
/// ruleset is stable).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FirewallState {
    pub networks: BTreeMap<String, NetworkRules>,
    pub endpoints: BTreeMap<String, EndpointPorts>,
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
    /// (a bridge; the driver says) and the ports of every endpoint that publishes some.
    pub fn from_specs<'a>(
        networks: impl IntoIterator<Item = &'a Network>,
        endpoints: impl IntoIterator<Item = &'a Endpoint>,
    ) -> Self {
        let mut s = Self::default();
        for n in networks
            .into_iter()
            .filter(|n| crate::driver::of(n.driver).host_device())
        {
            s.set_network(NetworkRules::from_network(n));
        }
        for e in endpoints {
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
        self.endpoints.retain(|_, e| e.network_id != network_id);
    }

    /// Sets the ports endpoint `id` publishes (`None`: none).
    pub fn set_endpoint(&mut self, id: &str, ports: Option<EndpointPorts>) {
        match ports {
            Some(p) => {
                self.endpoints.insert(id.to_owned(), p);
            }
            None => {
                self.endpoints.remove(id);
            }
        }
    }

    /// Removes the ports of every endpoint of a sandbox.
    pub fn remove_sandbox(&mut self, sandbox_id: &str) {
        self.endpoints.retain(|_, e| e.sandbox_id != sandbox_id);
    }

    /// The first of `ports` that another endpoint than `endpoint_id` already publishes.
    pub fn clash(&self, endpoint_id: &str, ports: &[PortMapping]) -> Option<Clash> {
        // (The ports first: comparing every endpoint's id cost more than the rest of the scan.)
        ports.iter().find_map(|p| {
            self.endpoints
                .values()
                .find(|e| e.ports.iter().any(|q| q.clashes_with(p)) && e.id != endpoint_id)
                .map(|e| Clash {
                    mapping: *p,
                    holder: e.id.clone(),
                })
        })
    }
}
