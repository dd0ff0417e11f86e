//! The overlay driver across three "hosts": namespaces joined by an underlay bridge in a fourth
//! (198.51.100.0/24, TEST-NET-2), which also plays the internet. One agent per host, in
//! process, each given the same network (same VNI) with the endpoints of the other two as
//! peers. Asserted with real traffic and with the kernel's own dumps (`ip -j`, `bridge -j`),
//! and every host namespace is left as it was found.

use std::{
    collections::BTreeSet,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use driver_agent::{
    Agent, names,
    reconcile::Depth,
    report::{Kind, Report},
    spec::{Endpoint, Network},
};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use weft_proto::agent::v1 as pb;
use weft_testkit::netns::tcp_listener_in;

use crate::{
    bridge::network as bridge_network,
    grpc::unique,
    support::{TestNs, assert_talks, echo_server, exchange, gone, ip_json, link, links},
};

/// The underlay namespace's address on its bridge: every host's default gateway, and the
/// "internet" overlay members reach through their own host.
const INTERNET: &str = "198.51.100.254";

/// Host `i`'s underlay address (its VTEP).
pub(crate) fn vtep(i: usize) -> String {
    format!("198.51.100.{}", i + 1)
}

/// Hosts on an underlay: `underlay` holds the bridge `ul` all hosts' `eth0` hang off.
pub(crate) struct Cluster {
    underlay: TestNs,
    pub(crate) hosts: Vec<TestNs>,
}

impl Cluster {
    pub(crate) fn new(n: usize) -> Self {
        let underlay = TestNs::new().with_lo_up();
        underlay.ip(&["link", "add", "ul", "type", "bridge"]);
        underlay.ip(&["addr", "add", &format!("{INTERNET}/24"), "dev", "ul"]);
        underlay.ip(&["link", "set", "ul", "up"]);
        let hosts: Vec<TestNs> = (0..n).map(|_| TestNs::new().with_lo_up()).collect();
        for (i, h) in hosts.iter().enumerate() {
            let port = format!("h{i}");
            h.veth_to(
                "eth0",
                Some(&format!("{}/24", vtep(i))),
                &underlay,
                &port,
                None,
            );
            underlay.ip(&["link", "set", &port, "master", "ul"]);
            h.ip(&["route", "add", "default", "via", INTERNET]);
        }
        Self { underlay, hosts }
    }

    /// Waits until each host's `eth0` has the IPv6 link-local address the kernel gives it
    /// shortly after it comes up (its route is part of what a host is compared by).
    pub(crate) async fn settled(&self) {
        for h in &self.hosts {
            weft_testkit::wait_for(
                Duration::from_secs(5),
                "an IPv6 link-local address",
                || async {
                    let r = ip_json(h, &["-6", "route", "show", "table", "local", "dev", "eth0"]);
                    r.as_array()
                        .unwrap()
                        .iter()
                        .any(|r| r["dst"].as_str().is_some_and(|d| d.starts_with("fe80:")))
                        .then_some(())
                },
            )
            .await;
        }
    }
}

/// One overlay member: its endpoint, on host `host`, in its own sandbox namespace.
pub(crate) struct Member {
    pub(crate) host: usize,
    pub(crate) id: String,
    pub(crate) ip: String,
    pub(crate) sandbox: TestNs,
}

pub(crate) fn member(host: usize, ip: &str) -> Member {
    Member {
        host,
        id: unique("ep"),
        ip: ip.into(),
        sandbox: TestNs::new(),
    }
}

/// The overlay network as the gateway sends it to `host`: the members on other hosts are its
/// peers (their MACs left to the derivation rule, as the gateway does for endpoints).
pub(crate) fn overlay(
    id: &str,
    vni: u32,
    (subnet, gateway): (&str, &str),
    members: &[&Member],
    host: usize,
) -> pb::NetworkSpec {
    pb::NetworkSpec {
        driver: pb::Driver::Overlay as i32,
        vni,
        peers: members
            .iter()
            .filter(|m| m.host != host)
            .map(|m| pb::OverlayPeer {
                endpoint_id: m.id.clone(),
                mac_address: String::new(),
                ipv4_address: m.ip.clone(),
                ipv6_address: String::new(),
                vtep_address: vtep(m.host),
            })
            .collect(),
        ..bridge_network(id, subnet, gateway)
    }
}

pub(crate) fn endpoint_spec(m: &Member, net: &pb::NetworkSpec) -> pb::EndpointSpec {
    pb::EndpointSpec {
        endpoint_id: m.id.clone(),
        network_id: net.network_id.clone(),
        sandbox_id: m.sandbox.name.clone(),
        netns_path: m.sandbox.path_str(),
        ipv4_address: format!("{}/24", m.ip),
        ipv4_gateway: net.subnets[0].gateway.clone(),
        default_route_v4: true,
        ..Default::default()
    }
}

pub(crate) async fn attach(agent: &Agent, ep: pb::EndpointSpec, net: &pb::NetworkSpec) -> Report {
    let ep = Endpoint::from_pb(ep, "endpoint").unwrap();
    let net = Network::from_pb(net.clone(), "network").unwrap();
    let mut report = Report::default();
    agent.attach(&ep, &net, &mut report).await.unwrap();
    report
}

pub(crate) async fn agents(cluster: &Cluster) -> Vec<(Agent, tempfile::TempDir)> {
    let mut out = Vec::new();
    for h in &cluster.hosts {
        out.push(crate::support::agent(h).await);
    }
    out
}

pub(crate) fn addr(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}

/// Pairs of strings as the kernel's dumps give them: (MAC, VTEP) or (address, MAC).
type Entries = BTreeSet<(String, String)>;

/// The VXLAN device's own FDB entries as `bridge -j fdb show` gives them: (MAC, VTEP).
fn fdb(ns: &TestNs, dev: &str) -> Entries {
    let v: Value =
        serde_json::from_slice(&ns.exec_ok("bridge", &["-j", "fdb", "show", "dev", dev])).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .filter(|e| e["flags"].as_array().unwrap().iter().any(|f| f == "self"))
        .map(|e| {
            assert_eq!(e["state"], "permanent", "{e}");
            (
                e["mac"].as_str().unwrap().to_owned(),
                e["dst"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

/// The VXLAN device's neighbour entries: (address, MAC), each permanent.
fn neighbours(ns: &TestNs, dev: &str) -> Entries {
    ip_json(ns, &["neigh", "show", "dev", dev])
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e["state"], serde_json::json!(["PERMANENT"]), "{e}");
            (
                e["dst"].as_str().unwrap().to_owned(),
                e["lladdr"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The gateway's view for `host`: an FDB entry and a neighbour entry per member elsewhere.
fn expected(members: &[&Member], host: usize) -> (Entries, Entries) {
    let others = members.iter().filter(|m| m.host != host);
    let mac = |m: &Member| names::format_mac(&names::derived_mac(&m.id));
    (
        others.clone().map(|m| (mac(m), vtep(m.host))).collect(),
        others.map(|m| (m.ip.clone(), mac(m))).collect(),
    )
}

/// A server in `ns` on `at` that answers each connection with the address it came from.
async fn whoami_server(ns: &TestNs, at: SocketAddr) {
    let listener = tcp_listener_in(&ns.path, at).await;
    tokio::spawn(async move {
        while let Ok((mut s, from)) = listener.accept().await {
            let _ = s.write_all(format!("{}\n", from.ip()).as_bytes()).await;
        }
    });
}

/// A server in `ns` on `at` that reads one connection to its end and hands the bytes over.
async fn sink_server(ns: &TestNs, at: SocketAddr) -> tokio::sync::oneshot::Receiver<Vec<u8>> {
    let listener = tcp_listener_in(&ns.path, at).await;
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        if let Ok((mut s, _)) = listener.accept().await {
            let mut got = Vec::new();
            let _ = s.read_to_end(&mut got).await;
            let _ = tx.send(got);
        }
    });
    rx
}

/// Bytes no compression or repetition could fake (xorshift).
fn payload(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}

/// Sends `data` from inside `ns` to `to` and closes the connection.
async fn send_all(ns: &TestNs, to: SocketAddr, data: Vec<u8>) {
    driver_agent::netns::run_in(&ns.path, move || {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
        s.set_write_timeout(Some(Duration::from_secs(20)))?;
        s.write_all(&data)?;
        s.shutdown(std::net::Shutdown::Write)?;
        // Wait for the peer to close: everything was read.
        let mut rest = Vec::new();
        s.read_to_end(&mut rest)?;
        Ok::<_, std::io::Error>(())
    })
    .await
    .expect("enter namespace")
    .expect("send 10 MB");
}

/// The line a whoami server answers from inside `ns`.
async fn ask(ns: &TestNs, to: SocketAddr) -> std::io::Result<String> {
    driver_agent::netns::run_in(&ns.path, move || {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_millis(700))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut line = String::new();
        s.read_to_string(&mut line)?;
        Ok(line.trim_end().to_owned())
    })
    .await
    .expect("enter namespace")
}

fn mtu(ns: &TestNs, dev: &str) -> u64 {
    link(&links(ns), dev).unwrap_or_else(|| panic!("no {dev} in {}", ns.name))["mtu"]
        .as_u64()
        .unwrap()
}

/// Reconciles `agent` to `state` (a pass of the changes unless `full`); no failure.
async fn pass(agent: &Agent, state: &pb::DesiredState, full: bool) -> Report {
    let depth = if full { Depth::Full } else { Depth::Changes };
    let r = agent.reconcile(state, depth, Instant::now()).await;
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: namespaces, links, nftables")]
async fn overlay_members_on_three_hosts_talk_both_ways_move_10_mb_intact_and_stay_isolated() {
    let cluster = Cluster::new(3);
    cluster.settled().await;
    let before: Vec<Vec<Value>> = cluster.hosts.iter().map(TestNs::kernel_snapshot).collect();
    let agents = agents(&cluster).await;
    let members: Vec<Member> = (0..3)
        .map(|i| member(i, &format!("10.60.0.{}", 10 + i)))
        .collect();
    let net_id = unique("ovl");
    let subnet = ("10.60.0.0/24", "10.60.0.1");
    let all: Vec<&Member> = members.iter().collect();
    for m in &members {
        let net = overlay(&net_id, 4242, subnet, &all, m.host);
        let mut ep = endpoint_spec(m, &net);
        if m.host == 0 {
            // A published port on an overlay endpoint works on the sandbox's host.
            ep.port_mappings = vec![pb::PortMapping {
                protocol: pb::Protocol::Tcp as i32,
                host_ip: String::new(),
                host_port: 8080,
                container_port: 7000,
                range: 1,
            }];
        }
        attach(&agents[m.host].0, ep, &net).await;
    }

    // The kernel's view of host 0: the VXLAN device as asked, in the bridge, everything at the
    // underlay's MTU minus 50; an FDB and a neighbour entry per remote member, nothing else.
    let (bridge, vx) = (names::bridge_name(&net_id), names::vxlan_name(&net_id));
    let h0 = &cluster.hosts[0];
    let h0_links = links(h0);
    let dev = link(&h0_links, &vx).unwrap_or_else(|| panic!("{vx}: {h0_links:?}"));
    let info = &dev["linkinfo"];
    assert_eq!(info["info_kind"], "vxlan", "{dev}");
    let data = &info["info_data"];
    assert_eq!(data["id"], 4242, "{dev}");
    assert_eq!(data["local"], vtep(0), "{dev}");
    assert_eq!(data["port"], 4789, "{dev}");
    assert_eq!(data["learning"], false, "{dev}");
    assert_eq!(data["proxy"], true, "{dev}");
    assert!(
        data.get("group").is_none() && data.get("remote").is_none(),
        "{dev}"
    );
    assert_eq!(dev["master"], bridge.as_str());
    assert_eq!(dev["ifalias"], names::vxlan_alias(&net_id));
    for name in [
        bridge.as_str(),
        vx.as_str(),
        &names::veth_host_name(&members[0].id),
    ] {
        assert_eq!(mtu(h0, name), 1450, "{name}");
    }
    assert_eq!(mtu(&members[0].sandbox, "eth0"), 1450);
    for (i, h) in cluster.hosts.iter().enumerate() {
        let (want_fdb, want_neigh) = expected(&all, i);
        assert_eq!(fdb(h, &vx), want_fdb, "host {i}");
        assert_eq!(neighbours(h, &vx), want_neigh, "host {i}");
    }

    // TCP both ways between hosts.
    for m in &members {
        echo_server(&m.sandbox.path, addr(&m.ip, 7000)).await;
    }
    for (from, to) in [(0, 1), (1, 0), (0, 2), (2, 0), (1, 2), (2, 1)] {
        assert_talks(&members[from].sandbox.path, addr(&members[to].ip, 7000)).await;
    }

    // 10 MB from host 0 to host 2 and back from host 1, byte for byte, at the overlay MTU.
    for (from, to, port) in [(0, 2, 7100), (1, 0, 7101)] {
        let data = payload(10 << 20);
        let got = sink_server(&members[to].sandbox, addr(&members[to].ip, port)).await;
        send_all(
            &members[from].sandbox,
            addr(&members[to].ip, port),
            data.clone(),
        )
        .await;
        let got = tokio::time::timeout(Duration::from_secs(30), got)
            .await
            .expect("the transfer ends")
            .expect("the server read it");
        assert_eq!(got.len(), data.len(), "{from} -> {to}");
        assert!(got == data, "{from} -> {to}: the bytes differ");
    }

    // Out to the internet through the member's own host (masqueraded to that host's address).
    whoami_server(&cluster.underlay, addr(INTERNET, 8000)).await;
    for m in &members {
        let seen = ask(&m.sandbox, addr(INTERNET, 8000)).await.unwrap();
        assert_eq!(seen, vtep(m.host), "member on host {}", m.host);
    }
    // The published port, from the internet, on host 0's address.
    assert_talks(&cluster.underlay.path, addr(&vtep(0), 8080)).await;

    // Another overlay (another VNI) on hosts 1 and 2, and a bridge network on host 0: none of
    // their members reaches the first overlay's, on their host or elsewhere.
    let others: Vec<Member> = (1..3)
        .map(|i| member(i, &format!("10.61.0.{}", 10 + i)))
        .collect();
    let other_id = unique("ovl2");
    let all_others: Vec<&Member> = others.iter().collect();
    for m in &others {
        let net = overlay(
            &other_id,
            4343,
            ("10.61.0.0/24", "10.61.0.1"),
            &all_others,
            m.host,
        );
        attach(&agents[m.host].0, endpoint_spec(m, &net), &net).await;
    }
    echo_server(&others[1].sandbox.path, addr(&others[1].ip, 7000)).await;
    assert_talks(&others[0].sandbox.path, addr(&others[1].ip, 7000)).await;
    let bridged = member(0, "10.62.0.10");
    let bridge_net = bridge_network(&unique("br"), "10.62.0.0/24", "10.62.0.1");
    attach(
        &agents[0].0,
        endpoint_spec(&bridged, &bridge_net),
        &bridge_net,
    )
    .await;
    for outsider in [&others[0].sandbox, &others[1].sandbox, &bridged.sandbox] {
        for m in &members {
            assert!(
                exchange(&outsider.path, addr(&m.ip, 7000), "hi")
                    .await
                    .is_err(),
                "{} reached {}",
                outsider.name,
                m.ip
            );
        }
    }
    // Nor do the first overlay's members reach the second's.
    assert!(
        exchange(&members[0].sandbox.path, addr(&others[1].ip, 7000), "hi")
            .await
            .is_err()
    );

    // Teardown: the endpoints detached, the gateway's desired state for each host then names no
    // network (no endpoint is left there): a pass removes everything; each host is as before.
    for m in members.iter().chain(&others).chain([&bridged]) {
        agents[m.host]
            .0
            .detach(&m.id, &m.sandbox.path)
            .await
            .unwrap();
        gone(&cluster.hosts[m.host], &names::veth_host_name(&m.id)).await;
    }
    for (i, (agent, _)) in agents.iter().enumerate() {
        let r = pass(agent, &pb::DesiredState::default(), true).await;
        assert!(
            r.changes
                .iter()
                .any(|c| c.kind == Kind::Link && c.object == vx),
            "host {i}: {:?}",
            r.changes
        );
        assert_eq!(cluster.hosts[i].kernel_snapshot(), before[i], "host {i}");
    }
}

/// The desired state the gateway gives `host` for one overlay network: the network (only when
/// the host has members of it, as the gateway does) with every member elsewhere as a peer, and
/// the host's own members' endpoints.
fn desired(
    revision: u64,
    net_id: &str,
    vni: u32,
    members: &[&Member],
    host: usize,
) -> pb::DesiredState {
    let net = overlay(net_id, vni, ("10.70.0.0/24", "10.70.0.1"), members, host);
    let endpoints: Vec<pb::EndpointSpec> = members
        .iter()
        .filter(|m| m.host == host)
        .map(|m| endpoint_spec(m, &net))
        .collect();
    pb::DesiredState {
        revision,
        networks: if endpoints.is_empty() {
            Vec::new()
        } else {
            vec![net]
        },
        endpoints,
        ..Default::default()
    }
}

/// Asserts that host `i`'s VXLAN device holds exactly the gateway's view for it.
fn assert_converged(cluster: &Cluster, vx: &str, members: &[&Member], i: usize) {
    let (want_fdb, want_neigh) = expected(members, i);
    assert_eq!(fdb(&cluster.hosts[i], vx), want_fdb, "FDB of host {i}");
    assert_eq!(
        neighbours(&cluster.hosts[i], vx),
        want_neigh,
        "neighbours of host {i}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: namespaces, links, nftables")]
async fn overlay_entries_follow_the_peer_lists_are_repaired_by_reconciliation_and_after_a_restart()
{
    let cluster = Cluster::new(3);
    cluster.settled().await;
    let before: Vec<Vec<Value>> = cluster.hosts.iter().map(TestNs::kernel_snapshot).collect();
    let mut agents = agents(&cluster).await;
    let net_id = unique("ovl");
    let vx = names::vxlan_name(&net_id);
    let vni = 4500;
    let mut members = vec![
        member(0, "10.70.0.10"),
        member(1, "10.70.0.11"),
        member(2, "10.70.0.12"),
        member(2, "10.70.0.13"),
    ];
    let mut revision = 1;
    let states = |revision, members: &[Member]| -> Vec<pb::DesiredState> {
        let refs: Vec<&Member> = members.iter().collect();
        (0..3)
            .map(|i| desired(revision, &net_id, vni, &refs, i))
            .collect()
    };

    // The desired states, applied in full: every host holds the gateway's view.
    let mut state = states(revision, &members);
    for (i, (agent, _)) in agents.iter().enumerate() {
        pass(agent, &state[i], true).await;
    }
    for i in 0..3 {
        assert_converged(&cluster, &vx, &members.iter().collect::<Vec<_>>(), i);
    }
    echo_server(&members[0].sandbox.path, addr(&members[0].ip, 7000)).await;
    assert_talks(&members[3].sandbox.path, addr(&members[0].ip, 7000)).await;

    // Reconciling again changes nothing, a pass of the changes nor a full one.
    for (i, (agent, _)) in agents.iter().enumerate() {
        let r = pass(agent, &state[i], false).await;
        assert!(r.changes.is_empty(), "host {i}: {:?}", r.changes);
        assert_eq!(r.ensured, 0, "host {i}");
        let r = pass(agent, &state[i], true).await;
        assert!(r.changes.is_empty(), "host {i}: {:?}", r.changes);
    }

    // Drift by hand on host 0: an FDB entry and a neighbour entry deleted, a stranger's of each
    // added (flooding to an unknown VTEP, an address nobody has). A pass of the changes puts
    // back what is missing and removes what is extra; the one after it changes nothing.
    let h0 = &cluster.hosts[0];
    let mac1 = names::format_mac(&names::derived_mac(&members[1].id));
    h0.exec_ok("bridge", &["fdb", "del", &mac1, "dev", &vx, "self"]);
    h0.ip(&["neigh", "del", &members[2].ip, "dev", &vx]);
    h0.exec_ok(
        "bridge",
        &[
            "fdb",
            "append",
            "00:00:00:00:00:00",
            "dev",
            &vx,
            "dst",
            "198.51.100.9",
            "self",
            "permanent",
        ],
    );
    h0.ip(&[
        "neigh",
        "add",
        "10.70.0.99",
        "lladdr",
        "02:00:00:00:00:99",
        "dev",
        &vx,
        "nud",
        "permanent",
    ]);
    let r = pass(&agents[0].0, &state[0], false).await;
    let kinds: BTreeSet<String> = r
        .changes
        .iter()
        .map(|c| format!("{:?} {:?}", c.action, c.kind))
        .collect();
    assert_eq!(
        kinds,
        [
            "Created FdbEntry",
            "Created Neighbour",
            "Removed FdbEntry",
            "Removed Neighbour"
        ]
        .map(String::from)
        .into(),
        "{:?}",
        r.changes
    );
    assert_converged(&cluster, &vx, &members.iter().collect::<Vec<_>>(), 0);
    let r = pass(&agents[0].0, &state[0], false).await;
    assert!(r.changes.is_empty(), "{:?}", r.changes);

    // An endpoint removed on host 2: detached there, gone from the peer lists of the others,
    // it disappears from their FDB and neighbour entries.
    let removed = members.remove(3);
    agents[2]
        .0
        .detach(&removed.id, &removed.sandbox.path)
        .await
        .unwrap();
    revision += 1;
    state = states(revision, &members);
    for (i, (agent, _)) in agents.iter().enumerate() {
        pass(agent, &state[i], false).await;
        assert_converged(&cluster, &vx, &members.iter().collect::<Vec<_>>(), i);
    }
    let removed_mac = names::format_mac(&names::derived_mac(&removed.id));
    for i in 0..2 {
        assert!(
            !fdb(&cluster.hosts[i], &vx)
                .iter()
                .any(|(mac, _)| *mac == removed_mac),
            "host {i}"
        );
    }

    // Host 1's agent killed (nothing cleaned up) and started again on the same data
    // directory, while its kernel drifted (an entry deleted, a stranger's added) and the
    // gateway's view moved on (a new member on host 0): a pass of the changes converges.
    let (killed, data1) = agents.remove(1);
    drop(killed);
    let h1 = &cluster.hosts[1];
    let mac0 = names::format_mac(&names::derived_mac(&members[0].id));
    h1.exec_ok("bridge", &["fdb", "del", &mac0, "dev", &vx, "self"]);
    h1.exec_ok(
        "bridge",
        &[
            "fdb",
            "add",
            "02:00:00:00:00:77",
            "dev",
            &vx,
            "dst",
            "198.51.100.3",
            "self",
            "permanent",
        ],
    );
    members.push(member(0, "10.70.0.14"));
    revision += 1;
    state = states(revision, &members);
    pass(&agents[0].0, &state[0], false).await;
    let restarted = Agent::start(h1.path.clone(), data1.path().to_owned())
        .await
        .unwrap();
    agents.insert(1, (restarted, data1));
    for (i, (agent, _)) in agents.iter().enumerate() {
        pass(agent, &state[i], false).await;
        assert_converged(&cluster, &vx, &members.iter().collect::<Vec<_>>(), i);
    }
    assert_talks(&members[1].sandbox.path, addr(&members[0].ip, 7000)).await;

    // The last endpoint leaving host 2: its desired state names the network no more, and the
    // pass removes the bridge and the VXLAN device; host 2 is as it was.
    let last = members.remove(2);
    agents[2]
        .0
        .detach(&last.id, &last.sandbox.path)
        .await
        .unwrap();
    gone(&cluster.hosts[2], &names::veth_host_name(&last.id)).await;
    revision += 1;
    state = states(revision, &members);
    assert!(state[2].networks.is_empty());
    for (i, (agent, _)) in agents.iter().enumerate() {
        pass(agent, &state[i], false).await;
    }
    assert!(link(&links(&cluster.hosts[2]), &vx).is_none());
    assert_eq!(cluster.hosts[2].kernel_snapshot(), before[2], "host 2");
    for i in 0..2 {
        assert_converged(&cluster, &vx, &members.iter().collect::<Vec<_>>(), i);
    }

    // Everything gone: every host as it was.
    for m in &members {
        agents[m.host]
            .0
            .detach(&m.id, &m.sandbox.path)
            .await
            .unwrap();
        gone(&cluster.hosts[m.host], &names::veth_host_name(&m.id)).await;
    }
    for (i, (agent, _)) in agents.iter().enumerate() {
        pass(agent, &pb::DesiredState::default(), false).await;
        assert_eq!(cluster.hosts[i].kernel_snapshot(), before[i], "host {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: namespaces, links, nftables")]
async fn an_internal_overlay_spans_hosts_but_reaches_nothing_outside() {
    let cluster = Cluster::new(2);
    cluster.settled().await;
    let before: Vec<Vec<Value>> = cluster.hosts.iter().map(TestNs::kernel_snapshot).collect();
    let agents = agents(&cluster).await;
    let members = [member(0, "10.80.0.10"), member(1, "10.80.0.11")];
    let all: Vec<&Member> = members.iter().collect();
    let net_id = unique("int");
    for m in &members {
        let mut net = overlay(&net_id, 4600, ("10.80.0.0/24", "10.80.0.1"), &all, m.host);
        net.internal = true;
        attach(&agents[m.host].0, endpoint_spec(m, &net), &net).await;
    }
    echo_server(&members[1].sandbox.path, addr(&members[1].ip, 7000)).await;
    assert_talks(&members[0].sandbox.path, addr(&members[1].ip, 7000)).await;
    // A control: the internet answers the hosts themselves.
    whoami_server(&cluster.underlay, addr(INTERNET, 8000)).await;
    assert_eq!(
        ask(&cluster.hosts[0], addr(INTERNET, 8000)).await.unwrap(),
        vtep(0)
    );
    for m in &members {
        assert!(
            ask(&m.sandbox, addr(INTERNET, 8000)).await.is_err(),
            "member on host {} reached the internet",
            m.host
        );
    }
    for m in &members {
        agents[m.host]
            .0
            .detach(&m.id, &m.sandbox.path)
            .await
            .unwrap();
        gone(&cluster.hosts[m.host], &names::veth_host_name(&m.id)).await;
    }
    for (i, (agent, _)) in agents.iter().enumerate() {
        pass(agent, &pb::DesiredState::default(), false).await;
        assert_eq!(cluster.hosts[i].kernel_snapshot(), before[i], "host {i}");
    }
}
