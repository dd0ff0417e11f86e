//! The nftables firewall with real traffic. Each test builds a small world of its own: a
//! namespace playing the host (managed by the agent, with forwarding on), one playing "the
//! internet" linked to the host's uplink by a veth, and sandboxes. Nothing leaves them.

use std::{
    io::{BufRead as _, BufReader},
    net::{IpAddr, SocketAddr, TcpStream, UdpSocket},
    path::Path,
    process::Command,
    time::Duration,
};

use driver_agent::{
    Agent,
    error::AgentError,
    names, netns,
    report::{Kind, Report},
    spec::{Endpoint, Network},
};
use serde_json::Value;
use weft_proto::agent::v1 as pb;
use weft_testkit::netns::{tcp_listener_in, udp_socket_in};

use crate::{
    bridge::{dual_stack, endpoint, network},
    grpc::unique,
    support::{TestNs, assert_talks, echo_server, exchange, ip_json, link, links, nft_json},
};

/// The host's uplink addresses and the internet namespace's.
const HOST_V4: &str = "192.0.2.1";
const HOST_V6: &str = "2001:db8::1";
const NET_V4: &str = "192.0.2.100";
const NET_V6: &str = "2001:db8::100";

fn ip(ns: &TestNs, args: &[&str]) {
    let out = Command::new("ip")
        .args(["-n", &ns.name])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The host and the internet, linked: host `up0` (192.0.2.1, 2001:db8::1) <-> internet `wan0`
/// (192.0.2.100, 2001:db8::100). Loopback is up on both.
struct World {
    host: TestNs,
    internet: TestNs,
}

impl World {
    fn new() -> Self {
        let (host, internet) = (TestNs::new(), TestNs::new());
        ip(
            &host,
            &[
                "link",
                "add",
                "up0",
                "type",
                "veth",
                "peer",
                "name",
                "wan0",
                "netns",
                &internet.name,
            ],
        );
        for (ns, dev, v4, v6) in [
            (&host, "up0", HOST_V4, HOST_V6),
            (&internet, "wan0", NET_V4, NET_V6),
        ] {
            // No duplicate address detection: the link-local address is final at once, so
            // that snapshots of the host do not catch it tentative.
            let out = Command::new("ip")
                .args(["netns", "exec", &ns.name, "sysctl", "-qw"])
                .arg(format!("net.ipv6.conf.{dev}.accept_dad=0"))
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            ip(ns, &["addr", "add", &format!("{v4}/24"), "dev", dev]);
            ip(
                ns,
                &["addr", "add", &format!("{v6}/64"), "dev", dev, "nodad"],
            );
            ip(ns, &["link", "set", dev, "up"]);
            ip(ns, &["link", "set", "lo", "up"]);
        }
        Self { host, internet }
    }
}

fn sock(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}

/// `nft -j list ruleset` of a namespace, parsed.
fn ruleset(ns: &TestNs) -> Value {
    nft_json(ns, &["list", "ruleset"])
}

/// The comments of every rule and every map element in a ruleset dump (published ports are
/// map elements marked with their endpoint).
fn rule_comments(v: &Value) -> Vec<String> {
    let objs = v["nftables"].as_array().unwrap();
    let rules = objs
        .iter()
        .filter_map(|o| o["rule"]["comment"].as_str().map(str::to_owned));
    let elements = objs
        .iter()
        .filter_map(|o| o["map"]["elem"].as_array())
        .flatten()
        .filter_map(|pair| pair[0]["elem"]["comment"].as_str().map(str::to_owned));
    rules.chain(elements).collect()
}

fn nft(ns: &TestNs, args: &[&str]) {
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name, "nft"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nft {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn sysctl(ns: &Path, path: &'static str) -> String {
    netns::run_in(ns, move || std::fs::read_to_string(path).unwrap())
        .await
        .unwrap()
        .trim()
        .to_owned()
}

async fn attach(
    agent: &Agent,
    ep: pb::EndpointSpec,
    net: &pb::NetworkSpec,
) -> Result<Report, AgentError> {
    let ep = Endpoint::from_pb(ep, "endpoint").unwrap();
    let net = Network::from_pb(net.clone(), "network").unwrap();
    let mut report = Report::default();
    agent.attach(&ep, &net, &mut report).await?;
    Ok(report)
}

/// An endpoint with both families and both default routes.
fn endpoint6(id: &str, net: &pb::NetworkSpec, sb: &TestNs, v4: &str, v6: &str) -> pb::EndpointSpec {
    let mut e = endpoint(id, net, sb, v4, true);
    e.ipv6_address = v6.into();
    e.ipv6_gateway = net.subnets[1].gateway.clone();
    e.default_route_v6 = true;
    e
}

fn tcp(host_ip: &str, host_port: u32, container_port: u32, range: u32) -> pb::PortMapping {
    pb::PortMapping {
        protocol: pb::Protocol::Tcp as i32,
        host_ip: host_ip.into(),
        host_port,
        container_port,
        range,
    }
}

/// A TCP server in `ns` that answers every connection with the peer's address.
async fn peer_server(ns: &Path, addr: SocketAddr) {
    let listener = tcp_listener_in(ns, addr).await;
    tokio::spawn(async move {
        while let Ok((mut stream, peer)) = listener.accept().await {
            use tokio::io::AsyncWriteExt as _;
            let _ = stream
                .write_all(format!("peer {}\n", peer.ip()).as_bytes())
                .await;
        }
    });
}

/// The address the server at `to` sees when `ns` connects.
async fn seen_as(ns: &Path, to: SocketAddr) -> std::io::Result<IpAddr> {
    netns::run_in(ns, move || {
        let s = TcpStream::connect_timeout(&to, Duration::from_millis(700))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line)?;
        line.trim()
            .strip_prefix("peer ")
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad answer {line:?}")))
    })
    .await
    .unwrap()
}

/// A UDP echo server in `ns`.
async fn udp_echo(ns: &Path, addr: SocketAddr) {
    let std_sock = udp_socket_in(ns, addr).await;
    std_sock.set_nonblocking(true).unwrap();
    let sock = tokio::net::UdpSocket::from_std(std_sock).unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            let _ = sock.send_to(&buf[..n], from).await;
        }
    });
}

/// Sends one datagram from `ns` to `to` and waits for the echo.
async fn udp_exchange(ns: &Path, to: SocketAddr) -> std::io::Result<String> {
    netns::run_in(ns, move || {
        let any: SocketAddr = if to.is_ipv4() {
            "0.0.0.0:0".parse().unwrap()
        } else {
            "[::]:0".parse().unwrap()
        };
        let s = UdpSocket::bind(any)?;
        s.set_read_timeout(Some(Duration::from_millis(700)))?;
        s.send_to(b"ping", to)?;
        let mut buf = [0u8; 64];
        let (n, _) = s.recv_from(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    })
    .await
    .unwrap()
}

/// Waits (with a deadline) until `f` succeeds.
async fn eventually<T, F, Fut>(what: &str, f: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = std::io::Result<T>>,
{
    weft_testkit::wait_for(Duration::from_secs(5), what, || async { f().await.ok() }).await
}

/// A TCP exchange that must fail; retried a little, so that a lucky early failure (an address
/// not ready yet) cannot hide a path that opens later.
async fn assert_blocked(ns: &Path, to: SocketAddr) {
    for _ in 0..2 {
        let r = exchange(ns, to, "hello").await;
        assert!(r.is_err(), "{to} answered from {}: {r:?}", ns.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: namespaces, links, nftables")]
async fn networks_stay_isolated_with_forwarding_on_and_icc_off_separates_endpoints() {
    let w = World::new();
    let (sb1, sb2, sb3, sb4, sb5) = (
        TestNs::new(),
        TestNs::new(),
        TestNs::new(),
        TestNs::new(),
        TestNs::new(),
    );
    let (agent, _data) = crate::support::agent(&w.host).await;
    let net_a = network(&unique("neta"), "10.81.0.0/24", "10.81.0.1");
    let net_b = network(&unique("netb"), "10.82.0.0/24", "10.82.0.1");
    attach(
        &agent,
        endpoint(&unique("e1"), &net_a, &sb1, "10.81.0.2/24", true),
        &net_a,
    )
    .await
    .unwrap();
    attach(
        &agent,
        endpoint(&unique("e3"), &net_b, &sb3, "10.82.0.2/24", true),
        &net_b,
    )
    .await
    .unwrap();
    // Forwarding is on in the host namespace (the agent turned it on), and only there.
    assert_eq!(
        sysctl(&w.host.path, "/proc/sys/net/ipv4/ip_forward").await,
        "1"
    );
    assert_eq!(
        sysctl(&w.internet.path, "/proc/sys/net/ipv4/ip_forward").await,
        "0"
    );

    echo_server(&sb1.path, sock("10.81.0.2", 7000)).await;
    echo_server(&sb3.path, sock("10.82.0.2", 7000)).await;
    echo_server(&w.host.path, sock("10.82.0.1", 7001)).await;
    // The sandbox on B is up and reaches its gateway, but neither network reaches the other.
    assert_talks(&sb3.path, sock("10.82.0.1", 7001)).await;
    assert_blocked(&sb3.path, sock("10.81.0.2", 7000)).await;
    assert_blocked(&sb1.path, sock("10.82.0.2", 7000)).await;

    // A sandbox connected to both reaches both.
    attach(
        &agent,
        endpoint(&unique("e4a"), &net_a, &sb4, "10.81.0.4/24", true),
        &net_a,
    )
    .await
    .unwrap();
    let mut on_b = endpoint(&unique("e4b"), &net_b, &sb4, "10.82.0.4/24", false);
    on_b.interface_name = "eth1".into();
    attach(&agent, on_b, &net_b).await.unwrap();
    assert_talks(&sb4.path, sock("10.81.0.2", 7000)).await;
    assert_talks(&sb4.path, sock("10.82.0.2", 7000)).await;

    // ICC off: two endpoints of one bridge cannot talk; each still reaches its gateway.
    let mut net_c = network(&unique("netc"), "10.83.0.0/24", "10.83.0.1");
    net_c.enable_icc = false;
    attach(
        &agent,
        endpoint(&unique("e2"), &net_c, &sb2, "10.83.0.2/24", true),
        &net_c,
    )
    .await
    .unwrap();
    attach(
        &agent,
        endpoint(&unique("e5"), &net_c, &sb5, "10.83.0.3/24", true),
        &net_c,
    )
    .await
    .unwrap();
    echo_server(&sb2.path, sock("10.83.0.2", 7000)).await;
    echo_server(&w.host.path, sock("10.83.0.1", 7001)).await;
    assert_talks(&sb5.path, sock("10.83.0.1", 7001)).await;
    assert_talks(&sb2.path, sock("10.83.0.1", 7001)).await;
    assert_blocked(&sb5.path, sock("10.83.0.2", 7000)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: namespaces, links, nftables")]
async fn an_internal_network_is_sealed_and_a_normal_one_reaches_the_internet_masqueraded() {
    let w = World::new();
    let (sb1, sb2, sb3) = (TestNs::new(), TestNs::new(), TestNs::new());
    let (agent, _data) = crate::support::agent(&w.host).await;
    peer_server(&w.internet.path, sock(NET_V4, 7400)).await;

    let mut internal = network(&unique("int"), "10.84.0.0/24", "10.84.0.1");
    internal.internal = true;
    // Internal endpoints get no gateway from the gateway service; this one keeps a default
    // route to prove the host would not forward it anyway.
    attach(
        &agent,
        endpoint(&unique("i1"), &internal, &sb1, "10.84.0.2/24", true),
        &internal,
    )
    .await
    .unwrap();
    attach(
        &agent,
        endpoint(&unique("i2"), &internal, &sb2, "10.84.0.3/24", true),
        &internal,
    )
    .await
    .unwrap();
    echo_server(&sb1.path, sock("10.84.0.2", 7000)).await;
    assert_talks(&sb2.path, sock("10.84.0.2", 7000)).await;

    let normal = network(&unique("nor"), "10.85.0.0/24", "10.85.0.1");
    attach(
        &agent,
        endpoint(&unique("n1"), &normal, &sb3, "10.85.0.2/24", true),
        &normal,
    )
    .await
    .unwrap();
    // The normal network reaches the internet, which sees the host's uplink address.
    let peer = eventually("an answer from the internet", || {
        seen_as(&sb3.path, sock(NET_V4, 7400))
    })
    .await;
    assert_eq!(peer, HOST_V4.parse::<IpAddr>().unwrap());
    // Forwarding is on (for the normal network), yet the internal one stays inside.
    assert_eq!(
        sysctl(&w.host.path, "/proc/sys/net/ipv4/ip_forward").await,
        "1"
    );
    for _ in 0..2 {
        let r = seen_as(&sb1.path, sock(NET_V4, 7400)).await;
        assert!(
            r.is_err(),
            "the internal network reached the internet: {r:?}"
        );
    }
    // Neither is the internal network reachable from the normal one.
    assert_blocked(&sb3.path, sock("10.84.0.2", 7000)).await;

    // Every rule of the agent names its owner; the internal network has no NAT rule.
    let rs = ruleset(&w.host);
    let comments = rule_comments(&rs);
    assert!(!comments.is_empty());
    assert!(
        comments.iter().all(|c| c.starts_with("weft:")),
        "{comments:?}"
    );
    let internal_nat = rs["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["rule"]["chain"] == "postrouting")
        .filter(|o| o["rule"]["comment"] == format!("weft:network:{}", internal.network_id))
        .count();
    assert_eq!(internal_nat, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: namespaces, links, nftables")]
async fn published_ports_answer_from_outside_from_the_host_through_localhost_and_hairpin() {
    let w = World::new();
    let (sb1, sb2, sb3) = (TestNs::new(), TestNs::new(), TestNs::new());
    let (agent, _data) = crate::support::agent(&w.host).await;
    let net = network(&unique("net"), "10.86.0.0/24", "10.86.0.1");
    let other = network(&unique("oth"), "10.87.0.0/24", "10.87.0.1");
    let e1 = unique("e1");
    let mut spec = endpoint(&e1, &net, &sb1, "10.86.0.2/24", true);
    spec.port_mappings = vec![
        tcp("", 8080, 80, 1),
        // A shifted range: 9000-9002 -> 7000-7002.
        tcp("0.0.0.0", 9000, 7000, 3),
        pb::PortMapping {
            protocol: pb::Protocol::Udp as i32,
            ..tcp("", 5353, 53, 1)
        },
    ];
    let report = attach(&agent, spec, &net).await.unwrap();
    assert!(
        report
            .changes
            .iter()
            .any(|c| c.kind == Kind::NftRule && c.owner == e1),
        "{report:?}"
    );
    attach(
        &agent,
        endpoint(&unique("e2"), &net, &sb2, "10.86.0.3/24", true),
        &net,
    )
    .await
    .unwrap();
    attach(
        &agent,
        endpoint(&unique("e3"), &other, &sb3, "10.87.0.2/24", true),
        &other,
    )
    .await
    .unwrap();
    echo_server(&sb1.path, sock("0.0.0.0", 80)).await;
    echo_server(&sb1.path, sock("0.0.0.0", 7001)).await;
    udp_echo(&sb1.path, sock("0.0.0.0", 53)).await;

    let published = sock(HOST_V4, 8080);
    // From another machine, to the host's uplink address.
    assert_talks(&w.internet.path, published).await;
    // From the host itself, through its own address and through 127.0.0.1.
    assert_talks(&w.host.path, published).await;
    assert_talks(&w.host.path, sock("127.0.0.1", 8080)).await;
    // From a container on the same bridge through the host's address (hairpin), and from one
    // on another network.
    assert_talks(&sb2.path, published).await;
    assert_talks(&sb3.path, published).await;
    // The range keeps its offset: 9001 reaches 7001; 9000 reaches 7000, where nobody listens.
    assert_talks(&w.internet.path, sock(HOST_V4, 9001)).await;
    assert_blocked(&w.internet.path, sock(HOST_V4, 9000)).await;
    // UDP.
    let got = eventually("a UDP echo", || {
        udp_exchange(&w.internet.path, sock(HOST_V4, 5353))
    })
    .await;
    assert_eq!(got, "ping");
    // The server sees the real client address from the internet (no SNAT on the way in).
    peer_server(&sb1.path, sock("0.0.0.0", 81)).await;
    attach(
        &agent,
        {
            let mut s = endpoint(&e1, &net, &sb1, "10.86.0.2/24", true);
            s.port_mappings = vec![tcp("", 8080, 80, 1), tcp(HOST_V4, 8181, 81, 1)];
            s
        },
        &net,
    )
    .await
    .unwrap();
    let peer = eventually("the peer server", || {
        seen_as(&w.internet.path, sock(HOST_V4, 8181))
    })
    .await;
    assert_eq!(peer, NET_V4.parse::<IpAddr>().unwrap());
    // The re-attach dropped the range and UDP.
    assert_blocked(&w.internet.path, sock(HOST_V4, 9001)).await;

    // Detached: no rule of the endpoint remains, and the port is closed.
    let (_, report) = agent.detach(&e1, &sb1.path).await.unwrap();
    assert!(report.failures.is_empty(), "{report:?}");
    let comments = rule_comments(&ruleset(&w.host));
    assert!(!comments.iter().any(|c| c.contains(&e1)), "{comments:?}");
    assert!(!comments.is_empty(), "the networks keep their rules");
    assert_blocked(&w.internet.path, published).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: namespaces, links, nftables")]
async fn published_ports_and_masquerade_work_over_ipv6_on_a_dual_stack_network() {
    let w = World::new();
    let (sb1, sb2) = (TestNs::new(), TestNs::new());
    let (agent, _data) = crate::support::agent(&w.host).await;
    let net = dual_stack(
        &unique("net"),
        ("10.88.0.0/24", "10.88.0.1"),
        ("fd00:88::/64", "fd00:88::1"),
    );
    let e1 = unique("e1");
    let mut spec = endpoint6(&e1, &net, &sb1, "10.88.0.2/24", "fd00:88::2/64");
    spec.port_mappings = vec![tcp("", 8080, 80, 1), tcp(HOST_V6, 8443, 443, 1)];
    attach(&agent, spec, &net).await.unwrap();
    attach(
        &agent,
        endpoint6(&unique("e2"), &net, &sb2, "10.88.0.3/24", "fd00:88::3/64"),
        &net,
    )
    .await
    .unwrap();
    assert_eq!(
        sysctl(&w.host.path, "/proc/sys/net/ipv6/conf/all/forwarding").await,
        "1"
    );
    echo_server(&sb1.path, sock("::", 80)).await;
    echo_server(&sb1.path, sock("::", 443)).await;

    let published = sock(HOST_V6, 8080);
    assert_talks(&w.internet.path, published).await;
    assert_talks(&w.internet.path, sock(HOST_V6, 8443)).await;
    // The same port over IPv4 (host_ip empty: both families); 8443 is bound to IPv6 only.
    assert_talks(&w.internet.path, sock(HOST_V4, 8080)).await;
    assert_blocked(&w.internet.path, sock(HOST_V4, 8443)).await;
    // From the host through its own address, and hairpin from a container.
    assert_talks(&w.host.path, published).await;
    assert_talks(&sb2.path, published).await;
    // Outgoing IPv6 is masqueraded to the host's uplink address.
    peer_server(&w.internet.path, sock(NET_V6, 7401)).await;
    let peer = eventually("an answer from the internet over IPv6", || {
        seen_as(&sb2.path, sock(NET_V6, 7401))
    })
    .await;
    assert_eq!(peer, HOST_V6.parse::<IpAddr>().unwrap());

    let (_, report) = agent.detach(&e1, &sb1.path).await.unwrap();
    assert!(report.failures.is_empty(), "{report:?}");
    let comments = rule_comments(&ruleset(&w.host));
    assert!(!comments.iter().any(|c| c.contains(&e1)), "{comments:?}");
    assert_blocked(&w.internet.path, published).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: namespaces, links, nftables")]
async fn a_published_port_clash_is_refused_naming_the_holder_and_creates_nothing() {
    let w = World::new();
    let (sb1, sb2) = (TestNs::new(), TestNs::new());
    let (agent, _data) = crate::support::agent(&w.host).await;
    let net = network(&unique("net"), "10.89.10.0/24", "10.89.10.1");
    let e1 = unique("e1");
    let mut spec = endpoint(&e1, &net, &sb1, "10.89.10.2/24", true);
    spec.port_mappings = vec![tcp("0.0.0.0", 8000, 80, 10)];
    attach(&agent, spec, &net).await.unwrap();
    let names =
        |ns: &TestNs| -> Vec<Value> { links(ns).iter().map(|l| l["ifname"].clone()).collect() };
    let before = (names(&w.host), rule_comments(&ruleset(&w.host)));

    let e2 = unique("e2");
    let mut spec = endpoint(&e2, &net, &sb2, "10.89.10.3/24", true);
    spec.port_mappings = vec![tcp(HOST_V4, 8005, 80, 1)];
    let err = attach(&agent, spec.clone(), &net).await.unwrap_err();
    assert!(matches!(err, AgentError::PortTaken { .. }), "{err:?}");
    let status = tonic::Status::from(err);
    assert_eq!(status.code(), tonic::Code::AlreadyExists);
    assert!(status.message().contains(&e1), "{}", status.message());
    assert_eq!((names(&w.host), rule_comments(&ruleset(&w.host))), before);
    assert!(link(&links(&sb2), "eth0").is_none());

    // Another protocol on the same port is fine.
    spec.port_mappings[0].protocol = pb::Protocol::Udp as i32;
    attach(&agent, spec, &net).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: namespaces, links, nftables")]
async fn attaching_without_ports_runs_no_nft_and_a_flushed_table_is_restored() {
    let w = World::new();
    let (sb1, sb2) = (TestNs::new(), TestNs::new());
    let (agent, _data) = crate::support::agent(&w.host).await;
    let net = network(&unique("net"), "10.89.20.0/24", "10.89.20.1");
    let parsed = Network::from_pb(net.clone(), "network").unwrap();
    agent
        .ensure_network(&parsed, &mut Report::default())
        .await
        .unwrap();
    let after_ensure = agent.firewall().transactions();
    assert_eq!(after_ensure, 1);
    agent
        .ensure_network(&parsed, &mut Report::default())
        .await
        .unwrap();
    attach(
        &agent,
        endpoint(&unique("e2"), &net, &sb2, "10.89.20.3/24", true),
        &net,
    )
    .await
    .unwrap();
    assert_eq!(agent.firewall().transactions(), after_ensure, "no nft run");

    let e1 = unique("e1");
    let mut spec = endpoint(&e1, &net, &sb1, "10.89.20.2/24", true);
    spec.port_mappings = vec![tcp("", 8080, 80, 1)];
    attach(&agent, spec, &net).await.unwrap();
    assert_eq!(agent.firewall().transactions(), after_ensure + 1);
    echo_server(&sb1.path, sock("0.0.0.0", 80)).await;
    assert_talks(&w.internet.path, sock(HOST_V4, 8080)).await;

    // Someone flushes the agent's table: the port is gone until the agent re-applies.
    let wanted = agent.firewall().kernel_table().await.unwrap().unwrap();
    nft(&w.host, &["flush", "table", "inet", "weft"]);
    assert_blocked(&w.internet.path, sock(HOST_V4, 8080)).await;
    agent.firewall().reapply().await.unwrap();
    assert_talks(&w.internet.path, sock(HOST_V4, 8080)).await;
    // apply_all with the same state is idempotent: the same table again.
    let state = agent.firewall().state().await;
    agent
        .firewall()
        .apply_all(state.clone(), &mut Report::default())
        .await
        .unwrap();
    agent
        .firewall()
        .apply_all(state, &mut Report::default())
        .await
        .unwrap();
    let again = agent.firewall().kernel_table().await.unwrap().unwrap();
    assert_eq!(strip_handles(again), strip_handles(wanted));
}

/// A table dump without its handles (they change with every rewrite).
fn strip_handles(mut v: Value) -> Value {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(m) => {
                m.remove("handle");
                m.values_mut().for_each(walk);
            }
            Value::Array(a) => a.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut v);
    v
}

/// The host's kernel state as `ip -j` and `nft -j` print it. Normalised: IPv6 anycast routes
/// are left out, because the kernel adds them to the uplink when forwarding is turned on (a
/// namespace-wide switch the agent leaves on, as Docker does).
fn host_dump(ns: &TestNs) -> Vec<Value> {
    let mut v6 = ip_json(ns, &["-6", "route", "show", "table", "all"]);
    if let Value::Array(routes) = &mut v6 {
        routes.retain(|r| r["type"] != "anycast");
    }
    vec![
        ip_json(ns, &["-d", "link", "show"]),
        ip_json(ns, &["addr", "show"]),
        ip_json(ns, &["-4", "route", "show", "table", "all"]),
        v6,
        ruleset(ns),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: namespaces, links, nftables")]
async fn removing_every_endpoint_and_network_restores_the_host_exactly() {
    let w = World::new();
    let (sb1, sb2, sb3) = (TestNs::new(), TestNs::new(), TestNs::new());
    let before = host_dump(&w.host);
    let (agent, _data) = crate::support::agent(&w.host).await;
    let dual = dual_stack(
        &unique("dual"),
        ("10.89.30.0/24", "10.89.30.1"),
        ("fd00:8930::/64", "fd00:8930::1"),
    );
    let mut internal = network(&unique("int"), "10.89.31.0/24", "10.89.31.1");
    internal.internal = true;
    let mut quiet = network(&unique("icc"), "10.89.32.0/24", "10.89.32.1");
    quiet.enable_icc = false;
    let e1 = unique("e1");
    let mut spec = endpoint6(&e1, &dual, &sb1, "10.89.30.2/24", "fd00:8930::2/64");
    spec.port_mappings = vec![tcp("", 8080, 80, 1)];
    attach(&agent, spec, &dual).await.unwrap();
    let e2 = unique("e2");
    attach(
        &agent,
        endpoint(&e2, &internal, &sb2, "10.89.31.2/24", false),
        &internal,
    )
    .await
    .unwrap();
    let e3 = unique("e3");
    let mut spec = endpoint(&e3, &quiet, &sb3, "10.89.32.2/24", true);
    spec.port_mappings = vec![tcp("0.0.0.0", 9090, 90, 1)];
    attach(&agent, spec, &quiet).await.unwrap();
    assert_ne!(host_dump(&w.host), before);
    let names = rule_comments(&ruleset(&w.host));
    assert!(names.iter().any(|c| c.contains(&e1)) && names.iter().any(|c| c.contains(&e3)));

    // One endpoint by detach, one with its sandbox, the last one with its network.
    let (_, r) = agent.detach(&e1, &sb1.path).await.unwrap();
    assert!(r.failures.is_empty(), "{r:?}");
    let r = agent.remove_sandbox(&sb3.name, &sb3.path).await.unwrap();
    assert!(r.failures.is_empty(), "{r:?}");
    for net in [&dual, &internal, &quiet] {
        let r = agent.remove_network(&net.network_id).await;
        assert!(r.failures.is_empty(), "{r:?}");
    }
    assert_eq!(host_dump(&w.host), before);
    assert_eq!(agent.firewall().kernel_table().await.unwrap(), None);
    // The veth of the removed sandbox went with it.
    assert!(link(&links(&w.host), &names::veth_host_name(&e3)).is_none());
}

/// The elements of one of the agent's maps as `nft -j` lists them: (protocol, host port) ->
/// value, for the maps keyed without a host address.
fn kernel_map(ns: &TestNs, name: &str) -> std::collections::BTreeMap<(String, u64), Value> {
    let v = nft_json(ns, &["list", "map", "inet", "weft", name]);
    let elems = v["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|o| o["map"].as_object())
        .expect("the map")
        .get("elem")
        .cloned()
        .unwrap_or(Value::Array(Vec::new()));
    elems
        .as_array()
        .unwrap()
        .iter()
        .map(|pair| {
            // With a comment, the key is wrapped: {"elem": {"val": ..., "comment": ...}}.
            let key = pair[0].get("elem").map_or(&pair[0], |e| &e["val"]);
            let k = &key["concat"];
            (
                (k[0].as_str().unwrap().to_owned(), k[1].as_u64().unwrap()),
                pair[1].clone(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: namespaces, links, nftables")]
async fn an_attach_and_a_detach_with_a_published_port_spawn_no_process() {
    let w = World::new();
    let sb1 = TestNs::new();
    let (agent, _data) = crate::support::agent(&w.host).await;
    let net = network(&unique("net"), "10.89.40.0/24", "10.89.40.1");
    let parsed = Network::from_pb(net.clone(), "network").unwrap();
    agent
        .ensure_network(&parsed, &mut Report::default())
        .await
        .unwrap();
    let fw = agent.firewall();
    let (processes, netlink) = (fw.nft_processes(), fw.netlink_transactions());
    assert_eq!(processes, 2, "the skeleton written and listed once");

    let e1 = unique("e1");
    let mut spec = endpoint(&e1, &net, &sb1, "10.89.40.2/24", true);
    spec.port_mappings = vec![tcp("", 8080, 80, 1)];
    attach(&agent, spec, &net).await.unwrap();
    assert_eq!(fw.nft_processes(), processes, "no process on attach");
    assert_eq!(fw.netlink_transactions(), netlink + 1, "one transaction");
    echo_server(&sb1.path, sock("0.0.0.0", 80)).await;
    assert_talks(&w.internet.path, sock(HOST_V4, 8080)).await;
    assert_eq!(
        kernel_map(&w.host, "dnat4_addr")
            .into_iter()
            .collect::<Vec<_>>(),
        [(("tcp".to_owned(), 8080), Value::from("10.89.40.2"))]
    );

    let (_, r) = agent.detach(&e1, &sb1.path).await.unwrap();
    assert!(r.failures.is_empty(), "{r:?}");
    assert_eq!(fw.nft_processes(), processes, "no process on detach");
    assert_eq!(fw.netlink_transactions(), netlink + 2);
    assert!(kernel_map(&w.host, "dnat4_addr").is_empty());
    assert!(kernel_map(&w.host, "dnat4_port").is_empty());
}

/// The ports of a synthetic endpoint `i` (no interfaces: its elements are what is checked).
fn synthetic(network_id: &str, i: u32) -> driver_agent::firewall::EndpointPorts {
    let host = u16::try_from(10_000 + i).unwrap();
    driver_agent::firewall::EndpointPorts {
        id: format!("syn-{i:05}"),
        network_id: network_id.to_owned(),
        sandbox_id: format!("sbsyn-{i:05}"),
        ipv4: Some(std::net::Ipv4Addr::new(
            10,
            90,
            u8::try_from(1 + i / 250).unwrap(),
            u8::try_from(2 + i % 250).unwrap(),
        )),
        ipv6: None,
        ports: vec![driver_agent::spec::PortMapping {
            protocol: driver_agent::spec::Protocol::Tcp,
            host_ip: driver_agent::spec::HostIp::AnyV4,
            host_port: host,
            container_port: 80,
            range: 1,
        }],
    }
}

type Want = (
    std::collections::BTreeMap<(String, u64), Value>,
    std::collections::BTreeMap<(String, u64), Value>,
);

/// What the unbound IPv4 maps must hold: the real endpoint's port 8080 and synthetic
/// endpoints `ids`.
fn expected(ids: impl Iterator<Item = u32>, net: &str) -> Want {
    let mut addr = std::collections::BTreeMap::new();
    let mut port = std::collections::BTreeMap::new();
    addr.insert(("tcp".to_owned(), 8080), Value::from("10.90.0.2"));
    port.insert(("tcp".to_owned(), 8080), Value::from(80));
    for i in ids {
        let e = synthetic(net, i);
        let key = ("tcp".to_owned(), u64::from(e.ports[0].host_port));
        addr.insert(key.clone(), Value::from(e.ipv4.unwrap().to_string()));
        port.insert(key, Value::from(80));
    }
    (addr, port)
}

fn held(ns: &TestNs) -> Want {
    (kernel_map(ns, "dnat4_addr"), kernel_map(ns, "dnat4_port"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: namespaces, links, nftables")]
async fn five_thousand_endpoints_are_exactly_the_kernels_elements_and_reconciliation_repairs_only_drift()
 {
    const N: u32 = 5_000;
    const BATCH: u32 = 500;
    let w = World::new();
    let sb1 = TestNs::new();
    let (agent, _data) = crate::support::agent(&w.host).await;
    let net = network(&unique("net"), "10.90.0.0/16", "10.90.0.1");
    let id = net.network_id.clone();
    let e1 = unique("e1");
    let mut spec = endpoint(&e1, &net, &sb1, "10.90.0.2/16", true);
    spec.port_mappings = vec![tcp("", 8080, 80, 1)];
    attach(&agent, spec, &net).await.unwrap();
    echo_server(&sb1.path, sock("0.0.0.0", 80)).await;

    // 5,000 endpoints' ports, in batches of 500: one netlink transaction each, no process.
    let fw = agent.firewall();
    let (processes, netlink) = (fw.nft_processes(), fw.netlink_transactions());
    for b in 0..N / BATCH {
        let mut report = Report::default();
        fw.update(&mut report, |s| {
            for i in b * BATCH..(b + 1) * BATCH {
                let e = synthetic(&id, i);
                s.set_endpoint(&e.id.clone(), Some(e));
            }
            Ok(())
        })
        .await
        .unwrap();
    }
    assert_eq!(fw.nft_processes(), processes);
    assert_eq!(fw.netlink_transactions(), netlink + u64::from(N / BATCH));
    let want = expected(0..N, &id);
    assert_eq!(want.0.len(), 5_001);
    assert_eq!(held(&w.host), want);
    assert_talks(&w.internet.path, sock(HOST_V4, 8080)).await;

    // Reconciliation with nothing to change: one listing, no transaction.
    let state = fw.state().await;
    let (processes, netlink) = (fw.nft_processes(), fw.netlink_transactions());
    fw.apply_all(state.clone(), &mut Report::default())
        .await
        .unwrap();
    assert_eq!(fw.nft_processes(), processes + 1);
    assert_eq!(fw.netlink_transactions(), netlink);
    // Again: nothing committed to nftables since the agent's own last transaction (the
    // kernel's ruleset generation says so), so not even a listing.
    fw.apply_all(state.clone(), &mut Report::default())
        .await
        .unwrap();
    assert_eq!(fw.nft_processes(), processes + 1);
    assert_eq!(fw.netlink_transactions(), netlink);

    // One more endpoint, as an attach sets it, and then removed as a detach does: one netlink
    // transaction each, only that endpoint's elements computed and sent, no process.
    let more = synthetic(&id, N);
    assert!(
        fw.set(
            &mut Report::default(),
            None,
            Some((&more.id.clone(), Some(more)))
        )
        .await
        .unwrap()
    );
    assert_eq!(held(&w.host), expected(0..=N, &id));
    let gone = synthetic(&id, N).id;
    assert!(
        fw.set(&mut Report::default(), None, Some((&gone, None)))
            .await
            .unwrap()
    );
    assert_eq!(held(&w.host), want);
    assert_eq!(fw.nft_processes(), processes + 1);
    assert_eq!(fw.netlink_transactions(), netlink + 2);
    let netlink = netlink + 2;
    // Its ports taken by another endpoint: refused, nothing sent.
    let mut thief = synthetic(&id, N + 1);
    thief.ports = synthetic(&id, 7).ports;
    let err = fw
        .set(
            &mut Report::default(),
            None,
            Some((&thief.id.clone(), Some(thief))),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("syn-00007"), "{err}");
    assert_eq!(fw.netlink_transactions(), netlink);
    assert_eq!(fw.state().await, state);

    // Drift: an element deleted by hand, a foreign one added; one transaction puts it right.
    nft(
        &w.host,
        &[
            "delete",
            "element",
            "inet",
            "weft",
            "dnat4_addr",
            "{ tcp . 10007 }",
        ],
    );
    nft(
        &w.host,
        &[
            "add",
            "element",
            "inet",
            "weft",
            "dnat4_port",
            "{ tcp . 999 : 99 }",
        ],
    );
    assert_ne!(held(&w.host), want);
    fw.apply_all(state.clone(), &mut Report::default())
        .await
        .unwrap();
    assert_eq!(fw.netlink_transactions(), netlink + 1);
    assert_eq!(held(&w.host), want);

    // A reconciliation whose desired state was read before an attach and a detach: what the
    // API touched stays as the API left it (decided under the firewall's lock).
    let late = synthetic(&id, N + 2);
    fw.set(
        &mut Report::default(),
        None,
        Some((&late.id.clone(), Some(late.clone()))),
    )
    .await
    .unwrap();
    fw.set(&mut Report::default(), None, Some(("syn-00003", None)))
        .await
        .unwrap();
    let touched = [late.id.clone(), "syn-00003".to_owned()];
    fw.apply_all_keeping(
        &state,
        |i| touched.iter().any(|t| t == i),
        &mut Report::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        held(&w.host),
        expected((0..N).filter(|i| *i != 3).chain([N + 2]), &id)
    );
    // Once nothing is touched lately, the desired state wins.
    fw.apply_all(state.clone(), &mut Report::default())
        .await
        .unwrap();
    assert_eq!(held(&w.host), want);

    // A restarted agent (nothing in memory) wanting 1,000 endpoints fewer: the kernel ends up
    // with exactly those, and the published port keeps working throughout.
    let restarted = driver_agent::firewall::Firewall::new(w.host.path.clone());
    let mut fewer = state;
    for i in 0..1_000 {
        fewer.set_endpoint(&format!("syn-{i:05}"), None);
    }
    restarted
        .apply_all(fewer, &mut Report::default())
        .await
        .unwrap();
    assert_eq!(held(&w.host), expected(1_000..N, &id));
    assert_talks(&w.internet.path, sock(HOST_V4, 8080)).await;
}
