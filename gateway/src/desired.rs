//! What a host's agent is told: networks, sandboxes and endpoints in the agent's vocabulary
//! (`weft.agent.v1`), for one attach and for a whole host (`GetDesiredState`).
//!
//! Published ports go with the endpoint that provides the sandbox's default route (IPv4 first,
//! else IPv6), as Docker does; when the default route moves, they move with it.

use weft_proto::agent::v1 as apb;

use crate::{
    domain::{
        endpoint::{EndpointRecord, default_route, port_carrier},
        network::NetworkRecord,
        ports::PortRecord,
        sandbox::SandboxRecord,
    },
    engine::Gateway,
    error::GatewayError,
    files, store,
};

pub fn agent_network(n: &NetworkRecord) -> apb::NetworkSpec {
    let driver = match n.driver.as_str() {
        "bridge" => apb::Driver::Bridge,
        "host" => apb::Driver::Host,
        "none" => apb::Driver::None,
        "overlay" => apb::Driver::Overlay,
        "macvlan" => apb::Driver::Macvlan,
        _ => apb::Driver::Ipvlan,
    };
    let opt = |k: &str| n.options.get(k).cloned().unwrap_or_default();
    apb::NetworkSpec {
        network_id: n.id.clone(),
        name: n.name.clone(),
        driver: driver as i32,
        subnets: n
            .subnets
            .iter()
            .map(|s| apb::Subnet {
                cidr: s.subnet.clone(),
                gateway: s.gateway.clone(),
            })
            .collect(),
        enable_ipv4: n.enable_ipv4,
        enable_ipv6: n.enable_ipv6,
        internal: n.internal,
        mtu: opt("com.docker.network.driver.mtu").parse().unwrap_or(0),
        bridge_name: opt("com.docker.network.bridge.name"),
        enable_icc: opt("com.docker.network.bridge.enable_icc") != "false",
        enable_ip_masquerade: opt("com.docker.network.bridge.enable_ip_masquerade") != "false",
        host_binding_ipv4: opt("com.docker.network.bridge.host_binding_ipv4"),
        parent: opt("parent"),
        vni: n.vni().unwrap_or(0),
        macvlan_mode: macvlan_mode(&opt("macvlan_mode")) as i32,
        ipvlan_mode: ipvlan_mode(&opt("ipvlan_mode")) as i32,
        ipvlan_flag: ipvlan_flag(&opt("ipvlan_flag")) as i32,
        options: n.options.clone().into_iter().collect(),
        ..Default::default()
    }
}

/// Docker's `macvlan_mode` (validated at creation); unset: the agent's default (bridge).
fn macvlan_mode(v: &str) -> apb::MacvlanMode {
    match v {
        "bridge" => apb::MacvlanMode::Bridge,
        "private" => apb::MacvlanMode::Private,
        "vepa" => apb::MacvlanMode::Vepa,
        "passthru" => apb::MacvlanMode::Passthru,
        _ => apb::MacvlanMode::Unspecified,
    }
}

/// Docker's `ipvlan_mode`; unset: the agent's default (l2).
fn ipvlan_mode(v: &str) -> apb::IpvlanMode {
    match v {
        "l2" => apb::IpvlanMode::L2,
        "l3" => apb::IpvlanMode::L3,
        "l3s" => apb::IpvlanMode::L3s,
        _ => apb::IpvlanMode::Unspecified,
    }
}

/// Docker's `ipvlan_flag`; unset: the agent's default (bridge).
fn ipvlan_flag(v: &str) -> apb::IpvlanFlag {
    match v {
        "bridge" => apb::IpvlanFlag::Bridge,
        "private" => apb::IpvlanFlag::Private,
        "vepa" => apb::IpvlanFlag::Vepa,
        _ => apb::IpvlanFlag::Unspecified,
    }
}

/// The sandbox as the agent creates it (namespace and files).
pub fn agent_sandbox(s: &SandboxRecord, endpoints: &[EndpointRecord]) -> apb::SandboxSpec {
    apb::SandboxSpec {
        sandbox_id: s.id.clone(),
        name: s.name.clone(),
        // The agent makes a managed namespace itself and uses its own for host mode: a path is
        // given only for a namespace the caller brought (or one a `container:` sandbox shares).
        netns_path: if s.netns_managed || s.network_mode == "host" {
            String::new()
        } else {
            s.netns_path.clone()
        },
        host_network: s.network_mode == "host",
        hostname: s.hostname.clone(),
        resolv_conf: files::resolv_conf(s),
        hosts: files::hosts(s, endpoints),
    }
}

/// Recorded ports are complete (protocol, chosen host port and range filled in at creation).
fn agent_ports(ports: &[PortRecord]) -> Vec<apb::PortMapping> {
    ports
        .iter()
        .map(|p| apb::PortMapping {
            protocol: i32::from(p.protocol),
            host_ip: p.host_ip.clone(),
            host_port: p.host_port,
            container_port: p.container_port,
            range: p.range,
        })
        .collect()
}

/// The agent takes link-local addresses in CIDR form; the API takes them as bare addresses
/// (Docker's `--link-local-ip`). Each goes on the interface as a host address (/32, /128), as
/// Docker adds them (libnetwork's `setInterfaceLinkLocalIPs` uses a full-length mask), so none
/// adds a route for the whole link-local range.
fn link_local_cidrs(ips: &[String]) -> Vec<String> {
    ips.iter()
        .map(|ip| match ip.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(a)) => format!("{a}/32"),
            Ok(std::net::IpAddr::V6(a)) => format!("{a}/128"),
            // Validated at the edge; passed on as is for the agent to name.
            Err(_) => ip.clone(),
        })
        .collect()
}

/// `ep` as the agent attaches it, given all the sandbox's endpoints (`ep` included): whether it
/// provides a default route, and the ports it publishes.
pub fn agent_endpoint(
    sandbox: &SandboxRecord,
    all: &[EndpointRecord],
    ep: &EndpointRecord,
) -> apb::EndpointSpec {
    let is = |d: Option<&EndpointRecord>| d.is_some_and(|d| d.id == ep.id);
    apb::EndpointSpec {
        endpoint_id: ep.id.clone(),
        network_id: ep.network_id.clone(),
        sandbox_id: sandbox.id.clone(),
        netns_path: sandbox.netns_path.clone(),
        interface_name: ep.interface_name.clone(),
        mac_address: ep.mac_address.clone(),
        ipv4_address: ep.ipv4_address.clone(),
        ipv6_address: ep.ipv6_address.clone(),
        ipv4_gateway: ep.gateway.clone(),
        ipv6_gateway: ep.ipv6_gateway.clone(),
        link_local_ips: link_local_cidrs(&ep.link_local_ips),
        gw_priority: ep.gw_priority,
        default_route_v4: is(default_route(all, false)),
        default_route_v6: is(default_route(all, true)),
        port_mappings: if is(port_carrier(all)) {
            agent_ports(&sandbox.port_mappings)
        } else {
            Vec::new()
        },
        aliases: ep.aliases.clone(),
        driver_options: ep.driver_options.clone().into_iter().collect(),
    }
}

/// What changes for the agent about an endpoint when the sandbox's endpoints change: its
/// default-route flags and its published ports.
pub(crate) fn role(
    sandbox: &SandboxRecord,
    all: &[EndpointRecord],
    ep: &EndpointRecord,
) -> (bool, bool, usize) {
    let spec = agent_endpoint(sandbox, all, ep);
    (
        spec.default_route_v4,
        spec.default_route_v6,
        spec.port_mappings.len(),
    )
}

impl Gateway {
    /// The full desired state of `host`, read in one snapshot.
    pub async fn desired_state(&self, host: &str) -> Result<apb::DesiredState, GatewayError> {
        if host.is_empty() {
            return Err(GatewayError::invalid("host", host, "must name a host"));
        }
        let mut tx = store::read_snapshot(&self.db).await?;
        let revision = self.registered_revision(&mut tx, host).await?;
        let networks = store::networks::list(&mut tx).await?;
        let state = full_state(&mut tx, host, revision, &networks).await?;
        tx.commit().await?;
        Ok(state)
    }

    /// What changed on `host` since its revision `since` (see `GetDesiredState`): the
    /// sandboxes an event since names (a sandbox of the host, or an endpoint of one), each
    /// read whole, with the networks they use, and the ids of those gone. A full state when
    /// the events cannot tell: `since` is 0, not a revision of this log (ahead of it, or
    /// older than its oldest event), more than [`MAX_CHANGES`] events ago, or a network
    /// changed meanwhile (its endpoints' specs with it). All in one read snapshot.
    pub async fn desired_changes(
        &self,
        host: &str,
        since: u64,
    ) -> Result<DesiredAnswer, GatewayError> {
        if host.is_empty() {
            return Err(GatewayError::invalid("host", host, "must name a host"));
        }
        let mut tx = store::read_snapshot(&self.db).await?;
        let revision = self.registered_revision(&mut tx, host).await?;
        // Read once: what changed is told from them (overlays), and the answer uses them.
        let networks = store::networks::list(&mut tx).await?;
        let touched = if since == 0 || since > revision {
            None
        } else {
            touched_since(&mut tx, host, since, revision, &networks).await?
        };
        let answer = match touched {
            None => DesiredAnswer {
                state: full_state(&mut tx, host, revision, &networks).await?,
                changes_only: false,
                removed: Vec::new(),
            },
            Some(ids) => changes_of(&mut tx, host, revision, ids, &networks).await?,
        };
        tx.commit().await?;
        Ok(answer)
    }

    /// The agent's spec of `net` for `host`: with its peers when it is an overlay network.
    pub(crate) async fn network_spec(
        &self,
        net: &NetworkRecord,
        host: &str,
    ) -> Result<apb::NetworkSpec, GatewayError> {
        let mut spec = agent_network(net);
        if net.driver == "overlay" {
            let mut conn = self.db.read().acquire().await?;
            spec.peers = crate::overlay::peers_for(&mut conn, &net.id, host).await?;
        }
        Ok(spec)
    }

    /// The host's revision; refuses a host never registered (but this gateway's own).
    async fn registered_revision(
        &self,
        tx: &mut sqlx::AnyConnection,
        host: &str,
    ) -> Result<u64, GatewayError> {
        let revision = store::hosts::revision_of(tx, host).await?;
        let registered = store::hosts::get(tx, host).await?.is_some();
        if !registered && host != self.host {
            return Err(GatewayError::HostNotFound(host.to_owned()));
        }
        Ok(revision)
    }
}

/// The most events a change answer is worked out from; beyond, a full state is as cheap.
pub const MAX_CHANGES: usize = 2_000;

/// An answer of `GetDesiredState`.
#[derive(Debug)]
pub struct DesiredAnswer {
    pub state: apb::DesiredState,
    pub changes_only: bool,
    pub removed: Vec<String>,
}

/// The ids of `host`'s sandboxes named by an event after `since` (up to `revision`), or `None`
/// when the events cannot tell what changed.
async fn touched_since(
    tx: &mut sqlx::AnyConnection,
    host: &str,
    since: u64,
    revision: u64,
    networks: &[NetworkRecord],
) -> Result<Option<std::collections::BTreeSet<String>>, GatewayError> {
    use weft_proto::gateway::v1::{EventKind, event::Object};
    let mut touched = std::collections::BTreeSet::new();
    if since == revision {
        return Ok(Some(touched));
    }
    // The first event wanted must still be in the log.
    match store::oldest_event(tx).await? {
        Some(oldest) if oldest <= since + 1 => {}
        _ => return Ok(None),
    }
    // An endpoint of an overlay network on another host changes this host's peers: the
    // networks are then sent whole.
    let overlays: std::collections::BTreeSet<&str> = networks
        .iter()
        .filter(|n| n.driver == "overlay")
        .map(|n| n.id.as_str())
        .collect();
    let (mut last, mut seen) = (since, 0);
    while last < revision {
        let page = store::events_after(tx, last, 500).await?;
        if page.is_empty() {
            break;
        }
        for e in page {
            last = e.revision;
            seen += 1;
            if seen > MAX_CHANGES {
                return Ok(None);
            }
            match e.object {
                Some(Object::Sandbox(s)) if s.host == host => {
                    touched.insert(s.id);
                }
                Some(Object::Endpoint(ep)) if ep.host == host => {
                    touched.insert(ep.sandbox_id);
                }
                Some(Object::Endpoint(ep)) if overlays.contains(ep.network_id.as_str()) => {
                    return Ok(None);
                }
                Some(Object::Network(_)) if e.kind == EventKind::NetworkUpdated as i32 => {
                    return Ok(None);
                }
                _ => {}
            }
        }
    }
    Ok(Some(touched))
}

/// The sandboxes `ids` of `host` as they are now (with their endpoints and the networks
/// those use); the ids no longer there, removed.
async fn changes_of(
    tx: &mut sqlx::AnyConnection,
    host: &str,
    revision: u64,
    ids: std::collections::BTreeSet<String>,
    networks: &[NetworkRecord],
) -> Result<DesiredAnswer, GatewayError> {
    let mut sandboxes = Vec::new();
    let mut removed = Vec::new();
    for id in ids {
        match store::sandboxes::by_id(tx, &id).await? {
            Some(s) if s.host == host => {
                let eps = store::sandboxes::endpoints_of(tx, store::sandboxes::Owner::Sandbox, &id)
                    .await?;
                sandboxes.push((s, eps));
            }
            _ => removed.push(id),
        }
    }
    let mut state = assemble(host, revision, sandboxes, networks);
    crate::overlay::fill_peers(tx, host, &mut state).await?;
    Ok(DesiredAnswer {
        state,
        changes_only: true,
        removed,
    })
}

/// Every sandbox of `host` with its endpoints, and the networks they use.
async fn full_state(
    tx: &mut sqlx::AnyConnection,
    host: &str,
    revision: u64,
    networks: &[NetworkRecord],
) -> Result<apb::DesiredState, GatewayError> {
    let sandboxes = store::sandboxes::list_on_host(tx, host).await?;
    let endpoints = store::sandboxes::endpoints_on_host(tx, host).await?;
    let mut by_sandbox: std::collections::HashMap<String, Vec<EndpointRecord>> =
        std::collections::HashMap::new();
    for ep in endpoints {
        by_sandbox
            .entry(ep.sandbox_id.clone())
            .or_default()
            .push(ep);
    }
    let sandboxes = sandboxes
        .into_iter()
        .map(|s| {
            let eps = by_sandbox.remove(&s.id).unwrap_or_default();
            (s, eps)
        })
        .collect();
    let mut state = assemble(host, revision, sandboxes, networks);
    crate::overlay::fill_peers(tx, host, &mut state).await?;
    Ok(state)
}

/// The agent's view of `sandboxes` (in order, each with its endpoints) and of the networks
/// they use (in `networks`' order).
fn assemble(
    host: &str,
    revision: u64,
    sandboxes: Vec<(SandboxRecord, Vec<EndpointRecord>)>,
    networks: &[NetworkRecord],
) -> apb::DesiredState {
    let mut state = apb::DesiredState {
        revision,
        host: host.to_owned(),
        ..Default::default()
    };
    let mut used = std::collections::BTreeSet::new();
    for (s, eps) in &sandboxes {
        state.sandboxes.push(agent_sandbox(s, eps));
        for ep in eps {
            used.insert(ep.network_id.clone());
            state.endpoints.push(agent_endpoint(s, eps, ep));
        }
    }
    state.networks = networks
        .iter()
        .filter(|n| used.contains(&n.id))
        .map(agent_network)
        .collect();
    state
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::sandbox::DnsRecord;

    fn record(network_mode: &str, netns_path: &str, managed: bool) -> SandboxRecord {
        SandboxRecord {
            id: "0123456789abcdef".into(),
            name: "s".into(),
            container_id: String::new(),
            host: "h".into(),
            netns_path: netns_path.into(),
            hostname: "s".into(),
            dns: DnsRecord::default(),
            extra_hosts: Vec::new(),
            port_mappings: Vec::new(),
            network_mode: network_mode.into(),
            labels: Default::default(),
            created_at_ms: 0,
            netns_managed: managed,
            resolv_conf_path: String::new(),
            hosts_path: String::new(),
        }
    }

    /// Every value CreateNetwork accepts for these options reaches the agent as its own enum
    /// value (none falls back to the default unnoticed), and unset is the agent's default.
    #[test]
    fn parent_and_modes_reach_the_agent() {
        let net = |driver: &str, options: &[(&str, &str)]| NetworkRecord {
            id: "n".into(),
            name: "n".into(),
            driver: driver.into(),
            scope: "local".into(),
            subnets: Vec::new(),
            enable_ipv4: true,
            enable_ipv6: false,
            internal: false,
            attachable: false,
            labels: Default::default(),
            options: options
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            dns_servers: Vec::new(),
            predefined: false,
            created_at_ms: 0,
            updated_at_ms: 0,
        };
        let m = agent_network(&net("macvlan", &[("parent", "eth1")]));
        assert_eq!(m.driver, apb::Driver::Macvlan as i32);
        assert_eq!(m.parent, "eth1");
        assert_eq!(m.macvlan_mode, apb::MacvlanMode::Unspecified as i32);
        for (v, want) in [
            ("bridge", apb::MacvlanMode::Bridge),
            ("private", apb::MacvlanMode::Private),
            ("vepa", apb::MacvlanMode::Vepa),
            ("passthru", apb::MacvlanMode::Passthru),
        ] {
            let m = agent_network(&net("macvlan", &[("macvlan_mode", v)]));
            assert_eq!(m.macvlan_mode, want as i32, "{v}");
        }
        for (v, want) in [
            ("l2", apb::IpvlanMode::L2),
            ("l3", apb::IpvlanMode::L3),
            ("l3s", apb::IpvlanMode::L3s),
        ] {
            let m = agent_network(&net("ipvlan", &[("ipvlan_mode", v)]));
            assert_eq!(m.ipvlan_mode, want as i32, "{v}");
        }
        for (v, want) in [
            ("bridge", apb::IpvlanFlag::Bridge),
            ("private", apb::IpvlanFlag::Private),
            ("vepa", apb::IpvlanFlag::Vepa),
        ] {
            let m = agent_network(&net("ipvlan", &[("ipvlan_flag", v)]));
            assert_eq!(m.ipvlan_flag, want as i32, "{v}");
        }
    }

    /// The agent refuses a path together with host_network (and makes managed namespaces
    /// itself), so reconciliation must send neither.
    #[test]
    fn only_a_brought_or_shared_namespace_is_sent_by_path() {
        let host = agent_sandbox(&record("host", "/proc/1/ns/net", false), &[]);
        assert!(host.host_network && host.netns_path.is_empty(), "{host:?}");
        let managed = agent_sandbox(&record("", "/run/netns/weft-0123456789abcdef", true), &[]);
        assert!(!managed.host_network && managed.netns_path.is_empty());
        let brought = agent_sandbox(&record("", "/run/netns/mine", false), &[]);
        assert_eq!(brought.netns_path, "/run/netns/mine");
    }

    /// Found by the fuzz oracle: the agent takes link-local addresses only in CIDR form, so a
    /// Connect with `link_local_ips` was accepted here and then refused by the agent.
    #[test]
    fn link_local_addresses_reach_the_agent_in_cidr_form() {
        let ep = EndpointRecord {
            id: "e".into(),
            network_id: "n".into(),
            network_name: "n".into(),
            sandbox_id: "0123456789abcdef".into(),
            sandbox_name: "s".into(),
            host: "h".into(),
            interface_name: "eth0".into(),
            mac_address: "02:42:00:00:00:01".into(),
            ipv4_address: "10.0.0.2/24".into(),
            ipv6_address: String::new(),
            gateway: "10.0.0.1".into(),
            ipv6_gateway: String::new(),
            aliases: vec![],
            gw_priority: 0,
            link_local_ips: vec!["169.254.1.1".into(), "fe80::1".into()],
            driver_options: Default::default(),
            internal: false,
            created_at_ms: 0,
            host_down: false,
            global: false,
            host_interface: String::new(),
        };
        let s = record("", "/run/netns/mine", false);
        let spec = agent_endpoint(&s, std::slice::from_ref(&ep), &ep);
        assert_eq!(spec.link_local_ips, ["169.254.1.1/32", "fe80::1/128"]);
    }
}
