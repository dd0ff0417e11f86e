//! Accepted requests as the sagas would record them, and the checks of what is rendered from
//! those records. The steps that depend on state (an id, IPAM's addresses, free host ports,
//! `host-gateway`) are mirrored here with fixed answers; everything rendered is the gateway's and
//! the agent's own code.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use driver_agent::{names, sandbox::Sandbox as AgentSandbox, spec as agent};
use gateway::{
    domain::{
        endpoint::{ConnectSpec, EndpointRecord, EndpointSpec, mac_for, next_interface},
        network::{NetworkRecord, NetworkSpec, SubnetRecord},
        ports::{self, PortRecord, Protocol},
        sandbox::{
            DnsRecord, HostAddress, NetworkMode, SandboxRecord, SandboxSpec, default_hostname,
            default_name,
        },
    },
    fuzzing::{self as gw, DNS_ADDRESS},
};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use weft_proto::gateway::v1 as pb;

use crate::{Outcome, files, nft};

const SANDBOX_ID: &str = "5a1db0c5000000000000000000000000000000000000000000000000000000a1";
/// The sandbox a `container:` sandbox shares.
const TARGET_ID: &str = "7a26e7000000000000000000000000000000000000000000000000000000000b";
/// `host-gateway`: the `bridge` network's gateway.
const HOST_GATEWAY: &str = "172.17.0.1";

fn id(kind: u8, n: usize) -> String {
    format!("{kind:02x}{n:062x}")
}

pub(crate) fn sandbox(req: &pb::CreateSandboxRequest, spec: SandboxSpec) -> Outcome {
    let mut later = false;
    let mut port_mappings = spec.ports.clone();
    if ports::assign("local", &[], &mut port_mappings).is_err() {
        // Two mappings of the request clash: the saga refuses the request.
        later = true;
        port_mappings.clear();
    }
    let s = sandbox_record(&spec, port_mappings);
    if !req.hostname.is_empty() {
        assert_eq!(s.hostname, req.hostname);
    }
    let mut nets = Vec::new();
    let mut eps = Vec::new();
    if spec.network_mode == NetworkMode::Own {
        for (i, a) in spec.networks.iter().enumerate() {
            let net = bridge_network(i, &a.settings);
            match endpoint(&s, &eps, &net, i, &a.settings) {
                Some(ep) => {
                    nets.push(net);
                    eps.push(ep);
                }
                None => later = true,
            }
        }
    }
    check_files(
        &s,
        &eps,
        req.dns.clone().unwrap_or_default(),
        &req.extra_hosts,
    );
    check_agent(&s, &nets, &eps);
    if later {
        Outcome::RefusedLater
    } else {
        Outcome::Accepted
    }
}

/// The sandbox's record as the saga writes it, with the fixed ids of this oracle.
fn sandbox_record(spec: &SandboxSpec, port_mappings: Vec<PortRecord>) -> SandboxRecord {
    let (netns_path, network_mode) = match &spec.network_mode {
        NetworkMode::Container(_) => (
            format!("/run/netns/weft-{TARGET_ID}"),
            format!("container:{TARGET_ID}"),
        ),
        _ => (spec.netns_path.clone(), spec.network_mode_text.clone()),
    };
    let managed = netns_path.is_empty() && spec.network_mode != NetworkMode::Host;
    SandboxRecord {
        id: SANDBOX_ID.into(),
        name: if spec.name.is_empty() {
            default_name(SANDBOX_ID)
        } else {
            spec.name.clone()
        },
        container_id: spec.container_id.clone(),
        host: "local".into(),
        netns_path: if managed {
            format!("/run/netns/weft-{SANDBOX_ID}")
        } else {
            netns_path
        },
        hostname: if spec.hostname.is_empty() {
            default_hostname(&spec.container_id, SANDBOX_ID)
        } else {
            spec.hostname.clone()
        },
        dns: spec.dns.clone(),
        extra_hosts: spec
            .extra_hosts
            .iter()
            .map(|(n, a)| match a {
                HostAddress::Ip(ip) => (n.clone(), ip.to_string()),
                HostAddress::HostGateway => (n.clone(), HOST_GATEWAY.to_owned()),
            })
            .collect(),
        port_mappings,
        network_mode,
        labels: spec.labels.clone(),
        created_at_ms: 0,
        netns_managed: managed,
        resolv_conf_path: String::new(),
        hosts_path: String::new(),
    }
}

pub(crate) fn connect(req: &pb::ConnectRequest, spec: ConnectSpec) -> Outcome {
    // A sandbox with one endpoint already and one published port, so that the new endpoint's
    // gw_priority decides which of the two carries the port.
    let first = EndpointSpec::default();
    let s = SandboxRecord {
        id: SANDBOX_ID.into(),
        name: "web".into(),
        container_id: String::new(),
        host: "local".into(),
        netns_path: format!("/run/netns/weft-{SANDBOX_ID}"),
        hostname: "web".into(),
        dns: DnsRecord::default(),
        extra_hosts: vec![],
        port_mappings: vec![PortRecord {
            protocol: Protocol::Tcp,
            host_ip: String::new(),
            host_port: 8080,
            container_port: 80,
            range: 1,
        }],
        network_mode: String::new(),
        labels: BTreeMap::new(),
        created_at_ms: 0,
        netns_managed: true,
        resolv_conf_path: String::new(),
        hosts_path: String::new(),
    };
    let net0 = bridge_network(0, &first);
    let ep0 = endpoint(&s, &[], &net0, 0, &first).expect("a first endpoint");
    let net1 = bridge_network(1, &spec.settings);
    match endpoint(&s, std::slice::from_ref(&ep0), &net1, 1, &spec.settings) {
        Some(ep1) => {
            assert_eq!(
                ep1.aliases,
                req.settings.clone().unwrap_or_default().aliases
            );
            check_files(
                &s,
                &[ep0.clone(), ep1.clone()],
                pb::DnsConfig::default(),
                &[],
            );
            check_agent(&s, &[net0, net1], &[ep0, ep1]);
            Outcome::Accepted
        }
        None => Outcome::RefusedLater,
    }
}

pub(crate) fn network(spec: NetworkSpec) -> Outcome {
    let mut subnets = Vec::new();
    for (i, s) in spec.subnet_requests().iter().enumerate() {
        let Some(net) = ipam_subnet(i, s.subnet.as_str(), spec.enable_ipv6) else {
            return Outcome::RefusedLater;
        };
        let gateway = if s.gateway.is_empty() {
            first_host(net)
        } else {
            match s.gateway.parse::<IpAddr>() {
                Ok(g) if net.contains(&g) => g,
                // IPAM refuses a gateway outside the subnet (or not an address).
                _ => return Outcome::RefusedLater,
            }
        };
        subnets.push(SubnetRecord {
            pool_id: String::new(),
            subnet: net.to_string(),
            ip_range: String::new(),
            gateway: gateway.to_string(),
            aux_addresses: BTreeMap::new(),
        });
    }
    // As the gateway creates it: an overlay network gets a VXLAN id (the first of its range)
    // when it names none, and spans hosts.
    let mut options = spec.options.clone();
    if spec.driver == "overlay" {
        options
            .entry(gateway::domain::network::VXLAN_IDS.to_owned())
            .or_insert_with(|| "4096".to_owned());
    }
    let rec = NetworkRecord {
        id: id(0x7e, 1),
        name: spec.name.clone(),
        driver: spec.driver.clone(),
        scope: if spec.driver == "overlay" {
            "global"
        } else {
            "local"
        }
        .into(),
        subnets,
        enable_ipv4: spec.enable_ipv4,
        enable_ipv6: spec.enable_ipv6,
        internal: spec.internal,
        attachable: spec.attachable,
        labels: spec.labels.clone(),
        options,
        dns_servers: spec.dns_servers.clone(),
        predefined: false,
        created_at_ms: 0,
        updated_at_ms: 0,
    };
    let a = agent::Network::from_pb(gw::agent_network(&rec), "network").unwrap_or_else(|v| {
        panic!("the gateway accepted network {rec:?}, the agent refuses it: {v:?}")
    });
    let opt = |k: &str| spec.options.get(k).map(String::as_str);
    if matches!(a.driver, agent::Driver::Bridge | agent::Driver::Overlay) {
        let bridge = opt("com.docker.network.bridge.name")
            .map_or_else(|| names::bridge_name(&rec.id), str::to_owned);
        assert_eq!(a.bridge, bridge);
    }
    assert_eq!(
        a.icc,
        opt("com.docker.network.bridge.enable_icc") != Some("false")
    );
    assert_eq!(
        a.masquerade,
        opt("com.docker.network.bridge.enable_ip_masquerade") != Some("false")
    );
    let mtu = opt("com.docker.network.driver.mtu").map_or(0, |m| m.parse().unwrap_or(u32::MAX));
    assert_eq!(a.mtu, mtu);
    let binding = opt("com.docker.network.bridge.host_binding_ipv4")
        .map(|b| b.parse::<Ipv4Addr>().expect("validated"))
        .filter(|b| !b.is_unspecified());
    assert_eq!(a.host_binding_ipv4, binding);
    let want: Vec<IpNet> = rec
        .subnets
        .iter()
        .map(|s| s.subnet.parse().expect("ours"))
        .collect();
    assert_eq!(a.subnets, want);
    if a.driver == agent::Driver::Bridge && !a.subnets.is_empty() {
        // One endpoint publishing ports on it, so the network's binding address shows.
        let mut e = agent_endpoint_on(&a);
        e.ports = vec![
            mapping(agent::Protocol::Tcp, agent_host_ip(""), 8080, 80, 1),
            mapping(agent::Protocol::Udp, agent_host_ip("::"), 5353, 53, 2),
        ];
        nft::check(&[a], &[e]);
    }
    Outcome::Accepted
}

/// The subnet IPAM gives for one request: the one asked for, or for "any free /N" (an
/// unspecified address, or nothing) one of that size; `None` where IPAM refuses.
fn ipam_subnet(i: usize, asked: &str, v6: bool) -> Option<IpNet> {
    let n = u8::try_from(i).unwrap_or(0);
    if asked.is_empty() {
        return Some(IpNet::V4(
            Ipv4Net::new(Ipv4Addr::new(172, 18, n, 0), 24).ok()?,
        ));
    }
    let _ = v6;
    let net: IpNet = asked.parse().ok()?;
    Some(match net {
        IpNet::V4(v) if v.addr().is_unspecified() => IpNet::V4(
            Ipv4Net::new(Ipv4Addr::new(10, 100 + n, 0, 0), v.prefix_len())
                .ok()?
                .trunc(),
        ),
        IpNet::V6(v) if v.addr().is_unspecified() => IpNet::V6(
            Ipv6Net::new(
                Ipv6Addr::new(0xfd00, 100 + u16::from(n), 0, 0, 0, 0, 0, 0),
                v.prefix_len(),
            )
            .ok()?
            .trunc(),
        ),
        net => net.trunc(),
    })
}

fn first_host(net: IpNet) -> IpAddr {
    net.hosts().next().unwrap_or(net.addr())
}

/// A host address of `net` other than `not`.
fn gateway_for(net: IpNet, not: IpAddr) -> IpAddr {
    net.hosts()
        .take(3)
        .find(|h| *h != not)
        .unwrap_or(net.network())
}

/// The bridge network attachment `i` joins, with the subnets its requested addresses are in.
fn bridge_network(i: usize, s: &EndpointSpec) -> NetworkRecord {
    let (v4, v6) = addresses(i, s);
    let subnet = |a: IpAddr, len: u8| {
        let net = IpNet::new(a, len).expect("prefix").trunc();
        SubnetRecord {
            pool_id: String::new(),
            subnet: net.to_string(),
            ip_range: String::new(),
            gateway: gateway_for(net, a).to_string(),
            aux_addresses: BTreeMap::new(),
        }
    };
    NetworkRecord {
        id: id(0x7e, i + 1),
        name: format!("net{i}"),
        driver: "bridge".into(),
        scope: "local".into(),
        subnets: [
            Some(subnet(IpAddr::V4(v4), 24)),
            v6.map(|a| subnet(IpAddr::V6(a), 64)),
        ]
        .into_iter()
        .flatten()
        .collect(),
        enable_ipv4: true,
        enable_ipv6: v6.is_some(),
        internal: false,
        attachable: true,
        labels: BTreeMap::new(),
        options: BTreeMap::new(),
        dns_servers: vec![],
        predefined: false,
        created_at_ms: 0,
        updated_at_ms: 0,
    }
}

/// The addresses IPAM gives attachment `i`: those asked for, else fixed ones.
fn addresses(i: usize, s: &EndpointSpec) -> (Ipv4Addr, Option<Ipv6Addr>) {
    let n = u8::try_from(i).unwrap_or(0);
    let v4 = s.ipv4_address.parse().unwrap_or(Ipv4Addr::new(10, n, 0, 2));
    (v4, s.ipv6_address.parse().ok())
}

/// The endpoint the connect saga records (`new_endpoint`, then IPAM's addresses); `None`
/// where the saga refuses it (an interface name already used in the sandbox).
fn endpoint(
    s: &SandboxRecord,
    existing: &[EndpointRecord],
    net: &NetworkRecord,
    i: usize,
    settings: &EndpointSpec,
) -> Option<EndpointRecord> {
    let id = id(0xe9, i + 1);
    let interface_name = if settings.interface_name.is_empty() {
        next_interface(existing)
    } else {
        settings.interface_name.clone()
    };
    if existing.iter().any(|e| e.interface_name == interface_name) {
        return None;
    }
    let (v4, v6) = addresses(i, settings);
    let sub = |v6: bool| net.subnets.iter().find(|x| x.subnet.contains(':') == v6);
    let v4sub = sub(false).expect("an IPv4 subnet");
    Some(EndpointRecord {
        network_id: net.id.clone(),
        network_name: net.name.clone(),
        sandbox_id: s.id.clone(),
        sandbox_name: s.name.clone(),
        host: s.host.clone(),
        interface_name,
        mac_address: if settings.mac_address.is_empty() {
            mac_for(&id)
        } else {
            settings.mac_address.clone()
        },
        ipv4_address: format!("{v4}/24"),
        ipv6_address: v6.map(|a| format!("{a}/64")).unwrap_or_default(),
        gateway: v4sub.gateway.clone(),
        ipv6_gateway: sub(true).map(|x| x.gateway.clone()).unwrap_or_default(),
        aliases: settings.aliases.clone(),
        gw_priority: settings.gw_priority,
        link_local_ips: settings.link_local_ips.clone(),
        driver_options: settings.driver_options.clone(),
        internal: net.internal,
        created_at_ms: 0,
        host_down: false,
        global: false,
        host_interface: if weft_runtime::names::driver_has_host_veth(&net.driver) {
            weft_runtime::names::veth_host_name(&id)
        } else {
            String::new()
        },
        id,
    })
}

/// The files rendered for the sandbox give back exactly what was asked (`dns`, `extra`: the
/// request's own fields), and the sandbox's own addresses under its hostname.
fn check_files(
    s: &SandboxRecord,
    eps: &[EndpointRecord],
    dns: pb::DnsConfig,
    extra: &[pb::ExtraHost],
) {
    let resolv = gw::resolv_conf(s);
    let hosts = gw::hosts(s, eps);
    if s.network_mode == "host" {
        assert_eq!((resolv.as_str(), hosts.as_str()), ("", ""));
        return;
    }
    let r = files::read_resolv(&resolv);
    assert_eq!(r.nameservers, [DNS_ADDRESS]);
    assert_eq!(r.search, dns.search);
    let mut options = Vec::new();
    if !dns.options.iter().any(|o| o.starts_with("ndots:")) {
        options.push("ndots:0".to_owned());
    }
    options.extend(dns.options);
    assert_eq!(r.options, options);
    assert_eq!(r.upstreams, dns.servers);
    let mut want = Vec::new();
    for e in eps {
        for cidr in [&e.ipv4_address, &e.ipv6_address] {
            if let Some((ip, _)) = cidr.split_once('/') {
                want.push((ip.parse::<IpAddr>().expect("ours"), s.hostname.clone()));
            }
        }
    }
    for h in extra {
        let address = if h.address == "host-gateway" {
            HOST_GATEWAY
        } else {
            &h.address
        };
        want.push((address.parse().expect("validated"), h.hostname.clone()));
    }
    assert_eq!(files::read_hosts(&hosts), want);
}

/// The agent accepts what the gateway tells it, and programs exactly that.
fn check_agent(s: &SandboxRecord, nets: &[NetworkRecord], eps: &[EndpointRecord]) {
    let spec = gw::agent_sandbox(s, eps);
    assert_eq!(spec.hostname, s.hostname);
    let a = AgentSandbox::from_pb(spec.clone())
        .unwrap_or_else(|v| panic!("the agent refuses sandbox {spec:?}: {v:?}"));
    assert_eq!(a.resolv_conf, gw::resolv_conf(s));
    let agent_nets: Vec<agent::Network> = nets
        .iter()
        .map(|n| {
            agent::Network::from_pb(gw::agent_network(n), "network")
                .unwrap_or_else(|v| panic!("the agent refuses network {n:?}: {v:?}"))
        })
        .collect();
    let mut agent_eps = Vec::new();
    for e in eps {
        let spec = gw::agent_endpoint(s, eps, e);
        assert_eq!(spec.aliases, e.aliases);
        for alias in &spec.aliases {
            assert!(
                alias.split('.').all(|l| !l.is_empty()
                    && l.len() <= 63
                    && l.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')),
                "alias {alias:?} is not a DNS name"
            );
        }
        let a = agent::Endpoint::from_pb(spec.clone(), "endpoint").unwrap_or_else(|v| {
            panic!("the gateway accepted endpoint {e:?}, the agent refuses it: {v:?}")
        });
        assert_eq!(a.ifname, e.interface_name);
        assert_eq!(
            names::format_mac(&a.mac),
            e.mac_address.to_ascii_lowercase()
        );
        let ll: Vec<IpAddr> = a.link_local.iter().map(IpNet::addr).collect();
        let want_ll: Vec<IpAddr> = e
            .link_local_ips
            .iter()
            .map(|l| l.parse().expect("validated"))
            .collect();
        assert_eq!(ll, want_ll);
        if !spec.port_mappings.is_empty() {
            let want: Vec<agent::PortMapping> = s
                .port_mappings
                .iter()
                .map(|p| {
                    let protocol = match p.protocol {
                        Protocol::Tcp => agent::Protocol::Tcp,
                        Protocol::Udp => agent::Protocol::Udp,
                        Protocol::Sctp => agent::Protocol::Sctp,
                    };
                    let port = |n: u32| u16::try_from(n).expect("validated");
                    mapping(
                        protocol,
                        agent_host_ip(&p.host_ip),
                        port(p.host_port),
                        port(p.container_port),
                        port(p.range),
                    )
                })
                .collect();
            assert_eq!(a.ports, want);
        }
        agent_eps.push(a);
    }
    nft::check(&agent_nets, &agent_eps);
}

fn mapping(
    protocol: agent::Protocol,
    host_ip: agent::HostIp,
    host_port: u16,
    container_port: u16,
    range: u16,
) -> agent::PortMapping {
    agent::PortMapping {
        protocol,
        host_ip,
        host_port,
        container_port,
        range,
    }
}

/// A host address as the request gave it, in the agent's terms (read independently of the
/// agent's own parser).
fn agent_host_ip(raw: &str) -> agent::HostIp {
    match raw.parse::<IpAddr>() {
        Err(_) => agent::HostIp::Any,
        Ok(a) if a.is_unspecified() && a.is_ipv4() => agent::HostIp::AnyV4,
        Ok(a) if a.is_unspecified() => agent::HostIp::AnyV6,
        Ok(a) => agent::HostIp::Addr(a),
    }
}

/// An endpoint on `net` at its first addresses.
fn agent_endpoint_on(net: &agent::Network) -> agent::Endpoint {
    let v4 = net.subnets.iter().find_map(|s| match s {
        IpNet::V4(n) => Ipv4Net::new(n.hosts().nth(1).unwrap_or(n.addr()), n.prefix_len()).ok(),
        IpNet::V6(_) => None,
    });
    let v6 = net.subnets.iter().find_map(|s| match s {
        IpNet::V6(n) => Ipv6Net::new(n.hosts().nth(5).unwrap_or(n.addr()), n.prefix_len()).ok(),
        IpNet::V4(_) => None,
    });
    agent::Endpoint {
        id: id(0xe9, 99),
        network_id: net.id.clone(),
        sandbox_id: SANDBOX_ID.into(),
        netns: format!("/run/netns/weft-{SANDBOX_ID}").into(),
        ifname: "eth0".into(),
        mac: [2, 0x42, 0, 0, 0, 1],
        ipv4: v4,
        ipv6: v6,
        ipv4_gateway: None,
        ipv6_gateway: None,
        link_local: vec![],
        default_route_v4: false,
        default_route_v6: false,
        ports: vec![],
        handoff: None,
    }
}
