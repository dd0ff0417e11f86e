//! The chaos run's invariants, checked once the faults stop and the stack has healed: the
//! gateway's and IPAM's consistency checks are clean, the API holds exactly what the
//! acknowledged operations imply, the kernel holds exactly what the API describes, and every
//! sandbox reaches its peers and resolves their names.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

use serde_json::Value;
use weft_proto::gateway::v1::{
    self as pb, check_service_client::CheckServiceClient,
    network_service_client::NetworkServiceClient, sandbox_service_client::SandboxServiceClient,
};
use weft_runtime::access::Authed;

use super::load::{Model, PREFIX, SandboxModel};
use crate::{TestNs, heal::in_netns, join::weftctl, wait_until};

/// How long the stack has to settle (sweep, reconciliation) before an invariant fails.
const SETTLE: Duration = Duration::from_secs(120);

/// What the API says the run's objects are.
pub(crate) struct Described {
    pub(crate) networks: Vec<pb::Network>,
    pub(crate) sandboxes: Vec<pb::Sandbox>,
}

/// Polls the gateway's consistency check until it is clean (the sweep has finished what the
/// kills interrupted, the agent has repaired its drift); prints it.
pub(crate) fn consistency_is_clean(rt: &tokio::runtime::Runtime, gw: &Authed) {
    let clean = |c: &pb::CheckConsistencyResponse| {
        c.leaked_addresses_total == 0
            && c.leaked_pools_total == 0
            && c.endpoints_without_address_total == 0
            && c.operations_pending == 0
            && c.drift.is_empty()
            && c.hosts_checked == 1
    };
    let mut last = String::new();
    let found = wait_until(SETTLE, "a clean consistency check", || {
        let answer = rt.block_on(async {
            CheckServiceClient::new(gw.clone())
                .check_consistency(pb::CheckConsistencyRequest {})
                .await
        });
        match answer {
            Ok(c) if clean(c.get_ref()) => Some(c.into_inner()),
            other => {
                let now = format!("{:?}", other.map(tonic::Response::into_inner));
                if now != last {
                    println!("consistency check, not clean yet: {now}");
                    last = now;
                }
                None
            }
        }
    });
    println!("invariant: the gateway's consistency check is clean: {found:?}");
}

/// ipam-svc's own check reports no problem.
pub(crate) fn ipam_is_clean(ns: &TestNs, data: &std::path::Path) {
    let pki = data.join("pki").display().to_string();
    let out = weftctl(ns, data, &["ipam", "check", "--tls-dir", &pki])
        .unwrap_or_else(|e| panic!("ipam check: {e}"));
    assert!(out.contains("problems: 0"), "{out}");
    println!(
        "invariant: IPAM's check finds no problem ({})",
        out.trim().replace('\n', ", ")
    );
}

/// The run's networks and sandboxes as the API lists them.
pub(crate) fn described(rt: &tokio::runtime::Runtime, gw: &Authed) -> Described {
    rt.block_on(async {
        let networks = NetworkServiceClient::new(gw.clone())
            .list_networks(pb::ListNetworksRequest {
                page_size: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let sandboxes = SandboxServiceClient::new(gw.clone())
            .list_sandboxes(pb::ListSandboxesRequest {
                page_size: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            networks.next_page_token.is_empty() && sandboxes.next_page_token.is_empty(),
            "more than one page"
        );
        Described {
            networks: networks
                .networks
                .into_iter()
                .filter(|n| n.name.starts_with(PREFIX))
                .collect(),
            sandboxes: sandboxes.sandboxes,
        }
    })
}

/// Every acknowledged mutation is in effect, and nothing else is: the API lists exactly the
/// model's networks (with their subnets) and sandboxes (with their networks and ports).
pub(crate) fn api_matches_model(d: &Described, model: &Model) {
    let networks: BTreeMap<String, String> = d
        .networks
        .iter()
        .map(|n| {
            let subnet = n.ipam.as_ref().map(|i| i.configs[0].subnet.clone());
            (n.name.clone(), subnet.unwrap_or_default())
        })
        .collect();
    assert_eq!(
        networks, model.networks,
        "networks: the API against the model"
    );
    let sandboxes: BTreeMap<String, SandboxModel> = d
        .sandboxes
        .iter()
        .map(|s| {
            let model = SandboxModel {
                networks: s.endpoints.iter().map(|e| e.network_name.clone()).collect(),
                port: s.port_mappings.first().map(|p| p.host_port),
            };
            (s.name.clone(), model)
        })
        .collect();
    assert_eq!(
        sandboxes, model.sandboxes,
        "sandboxes: the API against the model"
    );
    println!(
        "invariant: the API holds exactly the {} network(s) and {} sandbox(es) the acknowledged \
         operations imply",
        networks.len(),
        sandboxes.len()
    );
}

/// The link of the host whose alias names `id`.
fn aliased<'a>(links: &'a [Value], id: &str) -> Option<&'a Value> {
    links
        .iter()
        .find(|l| l["ifalias"].as_str().is_some_and(|a| a.contains(id)))
}

/// The kernel as the API describes it, or what differs.
fn kernel_differences(ns: &TestNs, d: &Described) -> Vec<String> {
    let mut diff = Vec::new();
    let links = ns.ip_json(&["-d", "address", "show"]);
    let links = links.as_array().unwrap();
    let endpoints: Vec<&pb::Endpoint> = d.sandboxes.iter().flat_map(|s| &s.endpoints).collect();
    // Bridges: one per network in use, with its gateway address; nothing else of Weft's.
    let used: BTreeMap<&str, &pb::Endpoint> = endpoints
        .iter()
        .map(|e| (e.network_id.as_str(), *e))
        .collect();
    let weft_links: Vec<&Value> = links
        .iter()
        .filter(|l| l["ifalias"].as_str().is_some_and(|a| !a.is_empty()))
        .collect();
    let bridges: BTreeSet<String> = weft_links
        .iter()
        .filter(|l| l["linkinfo"]["info_kind"] == "bridge")
        .map(|l| l["ifname"].as_str().unwrap().to_owned())
        .collect();
    let mut want_bridges = BTreeSet::new();
    for (net, e) in &used {
        let Some(br) = aliased(links, net) else {
            diff.push(format!("no bridge for network {net}"));
            continue;
        };
        want_bridges.insert(br["ifname"].as_str().unwrap().to_owned());
        let prefix = e.ipv4_address.split('/').nth(1).unwrap();
        let addrs = inet(br);
        let want = vec![format!("{}/{prefix}", e.gateway)];
        if addrs != want {
            diff.push(format!(
                "bridge of {net}: addresses {addrs:?}, want {want:?}"
            ));
        }
    }
    if bridges != want_bridges {
        diff.push(format!(
            "bridges {bridges:?}, want those of the networks in use {want_bridges:?}"
        ));
    }
    // Veths: one per endpoint, in its network's bridge; nothing else of Weft's.
    let veths: BTreeSet<String> = weft_links
        .iter()
        .filter(|l| l["linkinfo"]["info_kind"] == "veth")
        .map(|l| l["ifname"].as_str().unwrap().to_owned())
        .collect();
    let mut want_veths = BTreeSet::new();
    for e in &endpoints {
        let Some(veth) = aliased(links, &e.id) else {
            diff.push(format!("no host veth for endpoint {}", e.id));
            continue;
        };
        want_veths.insert(veth["ifname"].as_str().unwrap().to_owned());
        let bridge = aliased(links, &e.network_id).map(|b| b["ifname"].clone());
        if bridge.as_ref() != Some(&veth["master"]) {
            diff.push(format!(
                "veth of {} in {:?}, want {bridge:?}",
                e.id, veth["master"]
            ));
        }
    }
    if veths != want_veths {
        diff.push(format!("veths {veths:?}, want {want_veths:?}"));
    }
    for s in &d.sandboxes {
        diff.extend(sandbox_differences(s));
    }
    diff.extend(published_differences(ns, d));
    diff
}

/// A link's IPv4 addresses, `ADDRESS/PREFIX`.
fn inet(link: &Value) -> Vec<String> {
    link["addr_info"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|a| a["family"] == "inet")
                .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
                .collect()
        })
        .unwrap_or_default()
}

/// Inside one sandbox: exactly its endpoints' interfaces and addresses, their subnets' routes
/// and one default route through one of them.
fn sandbox_differences(s: &pb::Sandbox) -> Vec<String> {
    let mut diff = Vec::new();
    let path = &s.netns_path;
    if !std::path::Path::new(path).exists() {
        return vec![format!("sandbox {}: no namespace at {path}", s.name)];
    }
    let links = weft_testkit::netns::ip_json_at(path, &["address", "show"]);
    let have: BTreeMap<String, Vec<String>> = links
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["ifname"] != "lo")
        .map(|l| (l["ifname"].as_str().unwrap().to_owned(), inet(l)))
        .collect();
    let want: BTreeMap<String, Vec<String>> = s
        .endpoints
        .iter()
        .map(|e| (e.interface_name.clone(), vec![e.ipv4_address.clone()]))
        .collect();
    if have != want {
        diff.push(format!(
            "sandbox {}: interfaces {have:?}, want {want:?}",
            s.name
        ));
    }
    let routes = weft_testkit::netns::ip_json_at(path, &["-4", "route", "show"]);
    let mut defaults = Vec::new();
    let mut connected = BTreeSet::new();
    for r in routes.as_array().unwrap() {
        let dev = r["dev"].as_str().unwrap_or_default().to_owned();
        if r["dst"] == "default" {
            defaults.push((r["gateway"].as_str().unwrap_or_default().to_owned(), dev));
        } else {
            connected.insert((r["dst"].as_str().unwrap_or_default().to_owned(), dev));
        }
    }
    let want_connected: BTreeSet<(String, String)> = s
        .endpoints
        .iter()
        .map(|e| (subnet_of(&e.ipv4_address), e.interface_name.clone()))
        .collect();
    if connected != want_connected {
        diff.push(format!(
            "sandbox {}: routes {connected:?}, want {want_connected:?}",
            s.name
        ));
    }
    let default_ok = match defaults.as_slice() {
        [] => s.endpoints.is_empty(),
        [(via, dev)] => s
            .endpoints
            .iter()
            .any(|e| &e.gateway == via && &e.interface_name == dev),
        _ => false,
    };
    if !default_ok {
        diff.push(format!("sandbox {}: default routes {defaults:?}", s.name));
    }
    diff
}

/// The subnet of an interface address: `10.0.0.7/24` is in `10.0.0.0/24`.
fn subnet_of(cidr: &str) -> String {
    let (ip, prefix) = cidr.split_once('/').unwrap();
    let ip: std::net::Ipv4Addr = ip.parse().unwrap();
    let prefix: u32 = prefix.parse().unwrap();
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    format!(
        "{}/{prefix}",
        std::net::Ipv4Addr::from(u32::from(ip) & mask)
    )
}

/// nftables: the published ports' map elements are exactly the ports of the sandboxes that
/// have an endpoint to publish them on.
fn published_differences(ns: &TestNs, d: &Described) -> Vec<String> {
    let out = ns
        .exec("nft")
        .args(["-j", "list", "table", "inet", "weft"])
        .output()
        .unwrap();
    // With no network in use, the agent has removed its table.
    let table: Value = if out.status.success() {
        serde_json::from_slice(&out.stdout).unwrap()
    } else {
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("No such file or directory"),
            "nft: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::json!({ "nftables": [] })
    };
    let mut ports = BTreeSet::new();
    for item in table["nftables"].as_array().unwrap() {
        let Some(map) = item.get("map") else { continue };
        for elem in map["elem"].as_array().into_iter().flatten() {
            // [key, value]; a key with a comment (its endpoint) is wrapped as
            // {"elem": {"val": key, "comment": …}}; the key's last part is the port.
            let key = elem[0].get("elem").map_or(&elem[0], |e| &e["val"]);
            let port = key["concat"]
                .as_array()
                .and_then(|c| c.last())
                .unwrap_or(key);
            ports.insert(port.as_u64().unwrap_or_default());
        }
    }
    let want: BTreeSet<u64> = d
        .sandboxes
        .iter()
        .filter(|s| !s.endpoints.is_empty())
        .flat_map(|s| &s.port_mappings)
        .map(|p| u64::from(p.host_port))
        .collect();
    if ports == want {
        Vec::new()
    } else {
        vec![format!(
            "published ports in nftables {ports:?}, want {want:?}"
        )]
    }
}

/// The kernel equals what the API describes (waiting for the agent's reconciliation).
pub(crate) fn kernel_matches(ns: &TestNs, d: &Described) {
    let mut last = Vec::new();
    let settled = std::time::Instant::now() + SETTLE;
    loop {
        let diff = kernel_differences(ns, d);
        if diff.is_empty() {
            break;
        }
        if diff != last {
            println!("kernel, not as described yet: {diff:#?}");
        }
        assert!(
            std::time::Instant::now() < settled,
            "the kernel differs from the desired state: {diff:#?}"
        );
        last = diff;
        std::thread::sleep(Duration::from_millis(200));
    }
    let endpoints: usize = d.sandboxes.iter().map(|s| s.endpoints.len()).sum();
    println!(
        "invariant: the kernel holds exactly the desired bridges, veths, sandbox interfaces, \
         addresses, routes and published ports ({} sandboxes, {endpoints} endpoints)",
        d.sandboxes.len()
    );
}

/// Every sandbox reaches every peer (TCP) on each network they share and resolves its name to it.
pub(crate) fn peers_reach_each_other(d: &Described) {
    let mut pairs = 0;
    for a in &d.sandboxes {
        for b in &d.sandboxes {
            if a.id == b.id {
                continue;
            }
            for eb in &b.endpoints {
                if !a.endpoints.iter().any(|e| e.network_id == eb.network_id) {
                    continue;
                }
                let ip = eb.ipv4_address.split('/').next().unwrap().to_owned();
                wait_until(
                    Duration::from_secs(30),
                    &format!("{} reaching {} at {ip}", a.name, b.name),
                    || reaches(&a.netns_path, &b.netns_path, &ip).then_some(()),
                );
                let answer = wait_until(
                    Duration::from_secs(30),
                    &format!("{} resolving {} to {ip}", a.name, b.name),
                    || {
                        crate::join::dig_once(&a.netns_path, &b.name, 2)
                            .filter(|out| out.lines().any(|l| l == ip))
                    },
                );
                pairs += 1;
                println!(
                    "invariant: {} reaches {} at {ip} and resolves it ({})",
                    a.name,
                    b.name,
                    answer.replace('\n', " ")
                );
            }
        }
    }
    println!("invariant: {pairs} peer pair(s) reach and resolve each other");
}

/// Whether a TCP connection from the namespace at `from` reaches a listener in the one at `to`
/// on `ip` (the handshake is a round trip).
fn reaches(from: &str, to: &str, ip: &str) -> bool {
    let listener = in_netns(to, || TcpListener::bind(("0.0.0.0", 0))).unwrap();
    let port = listener.local_addr().unwrap().port();
    let addr = SocketAddr::new(ip.parse().unwrap(), port);
    in_netns(from, move || {
        TcpStream::connect_timeout(&addr, Duration::from_secs(2))
    })
    .is_ok()
}
