//! The Docker "Networking overview", statement by statement, against `weft up` running inside a
//! namespace that plays the host (with a namespace of its own as "the internet" and a fake
//! upstream DNS there), through `weftctl` and `grpcurl`, checked with real traffic, real DNS
//! answers (`dig` inside the sandboxes) and the kernel's own view.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod attack_dns;
mod attack_kernel;
mod attack_requests;
mod audit;
mod identity;
mod intact;
mod observe;
mod recorder;
mod world;

use std::{net::SocketAddr, path::Path, sync::atomic::Ordering};

use serde_json::Value;
use world::{
    HOST_UPLINK, INTERNET, UPSTREAM_ANSWER, Weft, World, default_gateway, dig, ip_in,
    tcp_eventually, tcp_from, udp_echo_server, udp_from, who_is_server,
};

/// The first IPv4 address (without prefix) of a sandbox's endpoint on `network`.
fn ip_on(sb: &Value, network: &str) -> String {
    sb["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["networkName"] == network)
        .and_then(|e| e["ipv4Address"].as_str())
        .unwrap_or_else(|| panic!("no endpoint on {network}: {sb}"))
        .split('/')
        .next()
        .unwrap()
        .to_owned()
}

fn netns(sb: &Value) -> String {
    sb["netnsPath"].as_str().unwrap().to_owned()
}

fn at(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: runs `weft up` in a namespace")]
async fn heavy_user_defined_networks_names_and_the_outside() {
    let w = World::new().await;
    let _weft = Weft::up(&w).await;

    // The default networks exist (weftctl and grpcurl).
    let ls = w.ok(&["network", "ls"]);
    for n in ["bridge", "host", "none"] {
        assert!(
            ls.lines().any(|l| l.split_whitespace().nth(1) == Some(n)),
            "{ls}"
        );
    }
    let listed = w.grpcurl("weft.gateway.v1.NetworkService/ListNetworks", "{}");
    let names: Vec<&str> = listed["networks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["name"].as_str())
        .collect();
    assert_eq!(names, ["bridge", "host", "none"]);

    // `docker network create -d bridge my-net`; two containers on it.
    w.ok(&["network", "create", "-d", "bridge", "my-net"]);
    w.ok(&["sandbox", "create", "a", "--network", "my-net"]);
    w.ok(&["sandbox", "create", "b", "--network", "my-net"]);
    let (a, b) = (w.sandbox("a"), w.sandbox("b"));
    let b_ip = ip_on(&b, "my-net");
    who_is_server(Path::new(&netns(&b)), at(&b_ip, 8000)).await;
    // By address…
    let got = tcp_eventually(Path::new(&netns(&a)), at(&b_ip, 8000)).await;
    assert_eq!(got, format!("from {}", ip_on(&a, "my-net")));
    // …and by name, resolved inside the sandbox through 127.0.0.11.
    let (status, answers) = dig(&netns(&a), "127.0.0.11", "b");
    assert_eq!(
        (status.as_str(), answers.clone()),
        ("NOERROR", vec![b_ip.clone()])
    );
    let got = tcp_from(Path::new(&netns(&a)), at(&answers[0], 8000))
        .await
        .unwrap();
    assert!(got.starts_with("from "), "{got}");
    // And they reach the outside, seen there with the host's address (masquerade).
    let got = tcp_eventually(Path::new(&netns(&a)), at(INTERNET, 80)).await;
    assert_eq!(got, format!("from {HOST_UPLINK}"));
    // Other names go to the upstream.
    let before = w.upstream_queries.load(Ordering::SeqCst);
    let (status, answers) = dig(&netns(&a), "127.0.0.11", "example.test");
    assert_eq!(
        (status.as_str(), answers),
        ("NOERROR", vec![UPSTREAM_ANSWER.to_owned()])
    );
    assert!(w.upstream_queries.load(Ordering::SeqCst) > before);

    // On the default bridge network, containers do not resolve each other by name.
    w.ok(&["sandbox", "create", "c", "--network", "bridge"]);
    w.ok(&["sandbox", "create", "d", "--network", "bridge"]);
    // (Names that are not Weft's go to the upstream, which here answers everything with
    // UPSTREAM_ANSWER: what matters is that no container's address comes back.)
    let (c, d) = (w.sandbox("c"), w.sandbox("d"));
    let (status, answers) = dig(&netns(&c), "127.0.0.11", "d");
    assert!(
        !answers.contains(&ip_on(&d, "bridge")),
        "{status} {answers:?}"
    );
    let (_, answers) = dig(&netns(&c), "127.0.0.11", "a");
    assert!(
        !answers.contains(&ip_on(&a, "my-net")),
        "c is not on my-net: {answers:?}"
    );
    // …but reach the outside.
    let got = tcp_eventually(Path::new(&netns(&c)), at(INTERNET, 80)).await;
    assert_eq!(got, format!("from {HOST_UPLINK}"));

    // Inspect shows the network's containers with their addresses.
    let net = w.network("my-net");
    let eps = net["endpoints"].as_array().unwrap();
    let mut shown: Vec<(&str, &str)> = eps
        .iter()
        .map(|e| {
            (
                e["sandboxName"].as_str().unwrap(),
                e["ipv4Address"].as_str().unwrap(),
            )
        })
        .collect();
    shown.sort_unstable();
    assert_eq!(shown.len(), 2);
    assert_eq!(shown[1].0, "b");
    assert!(shown[1].1.starts_with(&b_ip), "{shown:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: runs `weft up` in a namespace")]
async fn heavy_internal_backend_and_gw_priority() {
    let w = World::new().await;
    let _weft = Weft::up(&w).await;
    w.ok(&["network", "create", "frontend"]);
    w.ok(&["network", "create", "--internal", "backend"]);
    w.ok(&[
        "sandbox",
        "create",
        "web",
        "--network",
        "frontend",
        "--network",
        "backend",
    ]);
    w.ok(&["sandbox", "create", "db", "--network", "backend"]);
    let (web, db) = (w.sandbox("web"), w.sandbox("db"));
    let db_ip = ip_on(&db, "backend");
    who_is_server(Path::new(&netns(&db)), at(&db_ip, 5432)).await;

    // web reaches the outside through the frontend, and db through the backend.
    let got = tcp_eventually(Path::new(&netns(&web)), at(INTERNET, 80)).await;
    assert_eq!(got, format!("from {HOST_UPLINK}"));
    let got = tcp_eventually(Path::new(&netns(&web)), at(&db_ip, 5432)).await;
    assert_eq!(got, format!("from {}", ip_on(&web, "backend")));
    let (_, answers) = dig(&netns(&web), "127.0.0.11", "db");
    assert_eq!(answers, [db_ip.as_str()]);
    // db, on the internal network only, reaches nothing outside, not even by DNS.
    assert!(
        tcp_from(Path::new(&netns(&db)), at(INTERNET, 80))
            .await
            .is_err()
    );
    let before = w.upstream_queries.load(Ordering::SeqCst);
    let (_, answers) = dig(&netns(&db), "127.0.0.11", "example.test");
    assert!(answers.is_empty(), "{answers:?}");
    assert_eq!(w.upstream_queries.load(Ordering::SeqCst), before);
    // …but web by name.
    let (_, answers) = dig(&netns(&db), "127.0.0.11", "web");
    assert_eq!(answers, [ip_on(&web, "backend")]);

    // gw-priority picks the default route; changing attachments moves it.
    // (This part through grpcurl.)
    w.grpcurl(
        "weft.gateway.v1.NetworkService/CreateNetwork",
        r#"{"name":"alt","ipam":{"configs":[{"subnet":"10.77.0.0/24","gateway":"10.77.0.1"}]}}"#,
    );
    let ep = w.grpcurl(
        "weft.gateway.v1.SandboxService/Connect",
        r#"{"sandbox":"web","network":"alt","settings":{"gwPriority":"10"}}"#,
    );
    assert_eq!(ep["defaultRouteV4"], true, "{ep}");
    let web = w.sandbox("web");
    assert_eq!(default_gateway(&netns(&web)).as_deref(), Some("10.77.0.1"));
    w.ok(&["network", "disconnect", "alt", "web"]);
    let frontend_gw = w.network("frontend")["ipam"]["configs"][0]["gateway"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(default_gateway(&netns(&web)), Some(frontend_gw));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: runs `weft up` in a namespace")]
async fn heavy_published_ports_as_docker_documents() {
    let w = World::new().await;
    let _weft = Weft::up(&w).await;
    w.ok(&["network", "create", "pub"]);
    w.ok(&[
        "sandbox",
        "create",
        "srv",
        "--network",
        "pub",
        "-p",
        "8080:80",
        "-p",
        "127.0.0.1:8081:80/udp",
    ]);
    w.grpcurl(
        "weft.gateway.v1.SandboxService/CreateSandbox",
        r#"{"name":"peer","networks":[{"network":"pub"}]}"#,
    );
    let srv = w.sandbox("srv");
    let srv_ip = ip_on(&srv, "pub");
    who_is_server(Path::new(&netns(&srv)), at(&srv_ip, 80)).await;
    udp_echo_server(Path::new(&netns(&srv)), at(&srv_ip, 80)).await;

    // -p 8080:80: from the internet to the host's address, from the host itself, and from
    // another container through the host's address.
    let got = tcp_eventually(&w.internet.path, at(HOST_UPLINK, 8080)).await;
    assert_eq!(got, format!("from {INTERNET}"));
    tcp_eventually(&w.host.path, at(HOST_UPLINK, 8080)).await;
    tcp_eventually(&w.host.path, at("127.0.0.1", 8080)).await;
    let peer = w.sandbox("peer");
    tcp_eventually(Path::new(&netns(&peer)), at(HOST_UPLINK, 8080)).await;
    // -p 127.0.0.1:8081:80/udp: from the host's loopback only.
    assert_eq!(
        udp_from(&w.host.path, at("127.0.0.1", 8081), "ping")
            .await
            .as_deref(),
        Some("ping")
    );
    assert_eq!(
        udp_from(&w.internet.path, at(HOST_UPLINK, 8081), "ping").await,
        None
    );

    // Gone with the sandbox: no answer, no rule.
    w.ok(&["sandbox", "rm", "srv"]);
    assert!(
        tcp_from(&w.internet.path, at(HOST_UPLINK, 8080))
            .await
            .is_err()
    );
    let rules = world::run(
        "ip",
        &[
            "netns",
            "exec",
            &w.host.name,
            "nft",
            "-j",
            "list",
            "ruleset",
        ],
    );
    let srv_ep = srv["endpoints"][0]["id"].as_str().unwrap();
    assert!(!rules.contains(srv_ep), "a rule of srv remains: {rules}");
    assert!(!rules.contains("8080"), "{rules}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: runs `weft up` in a namespace")]
async fn heavy_network_modes_and_resolver_settings() {
    let w = World::new().await;
    let _weft = Weft::up(&w).await;
    w.ok(&["network", "create", "app"]);

    // --network none: loopback only.
    w.grpcurl(
        "weft.gateway.v1.SandboxService/CreateSandbox",
        r#"{"name":"alone","networkMode":"none"}"#,
    );
    let links = ip_in(&netns(&w.sandbox("alone")), &["link", "show"]);
    let names: Vec<&str> = links
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["ifname"].as_str())
        .collect();
    assert_eq!(names, ["lo"]);

    // --network host: the host's own namespace.
    w.ok(&["sandbox", "create", "hosty", "--network", "host"]);
    assert_eq!(
        netns(&w.sandbox("hosty")),
        w.host.path.display().to_string()
    );

    // --network container:<name>: the other sandbox's namespace and endpoints.
    w.ok(&["sandbox", "create", "main", "--network", "app"]);
    w.ok(&["sandbox", "create", "side", "--network", "container:main"]);
    let (main, side) = (w.sandbox("main"), w.sandbox("side"));
    assert_eq!(netns(&side), netns(&main));
    assert_eq!(ip_on(&side, "app"), ip_on(&main, "app"));

    // --dns, --dns-search, --dns-option, --hostname, --add-host: in the files, and in effect.
    w.ok(&[
        "sandbox",
        "create",
        "tuned",
        "--network",
        "app",
        "--dns",
        INTERNET,
        "--dns-search",
        "example.test",
        "--dns-option",
        "ndots:2",
        "--hostname",
        "tuned-host",
        "--add-host",
        "db.local:10.1.2.3",
    ]);
    let tuned = w.sandbox("tuned");
    let resolv = std::fs::read_to_string(tuned["resolvConfPath"].as_str().unwrap()).unwrap();
    assert!(resolv.contains("nameserver 127.0.0.11"), "{resolv}");
    assert!(resolv.contains("search example.test"), "{resolv}");
    assert!(resolv.contains("ndots:2"), "{resolv}");
    let hosts = std::fs::read_to_string(tuned["hostsPath"].as_str().unwrap()).unwrap();
    assert!(hosts.contains("10.1.2.3\tdb.local"), "{hosts}");
    assert!(
        hosts.contains(&format!("{}\ttuned-host", ip_on(&tuned, "app"))),
        "{hosts}"
    );
    // The hostname is a name on the network; --dns is where other names go.
    let (_, answers) = dig(&netns(&main), "127.0.0.11", "tuned-host");
    assert_eq!(answers, [ip_on(&tuned, "app")]);
    let before = w.upstream_queries.load(Ordering::SeqCst);
    let (_, answers) = dig(&netns(&tuned), "127.0.0.11", "somewhere.example");
    assert_eq!(answers, [UPSTREAM_ANSWER]);
    assert!(w.upstream_queries.load(Ordering::SeqCst) > before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: runs `weft up` in a namespace")]
async fn heavy_prune_and_the_host_as_it_was() {
    let w = World::new().await;
    let _weft = Weft::up(&w).await;
    let before = w.host_snapshot();
    w.ok(&["network", "create", "used"]);
    w.ok(&["network", "create", "unused"]);
    w.ok(&[
        "sandbox",
        "create",
        "x",
        "--network",
        "used",
        "-p",
        "9090:90",
    ]);
    let pruned = w.ok(&["network", "prune", "-f"]);
    let lines: Vec<&str> = pruned.lines().map(str::trim).collect();
    assert!(
        lines.contains(&"unused") && !lines.contains(&"used"),
        "{pruned}"
    );
    let got = w.grpcurl(
        "weft.gateway.v1.NetworkService/GetNetwork",
        r#"{"network":"used"}"#,
    );
    assert_eq!(got["endpoints"][0]["sandboxName"], "x", "{got}");
    let ls = w.ok(&["network", "ls", "-q", "--no-trunc"]);
    assert_eq!(ls.lines().count(), 4, "bridge, host, none, used: {ls}");
    // Remove everything: the host namespace is as it was.
    w.ok(&["sandbox", "rm", "x"]);
    w.ok(&["network", "rm", "used"]);
    let after = weft_testkit::wait_for(
        std::time::Duration::from_secs(10),
        "the host namespace to be as it was",
        || async {
            let now = w.host_snapshot();
            (now == before).then_some(now)
        },
    )
    .await;
    assert_eq!(after, before);
}

/// After Connect returns, the very next query for the new endpoint's name answers with its
/// address, 100 times out of 100; after Disconnect returns, the name no longer gives it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: runs `weft up` in a namespace")]
async fn heavy_the_next_query_after_connect_and_disconnect_sees_it() {
    let w = World::new().await;
    let _weft = Weft::up(&w).await;
    w.ok(&["network", "create", "fresh"]);
    w.ok(&["sandbox", "create", "asker", "--network", "fresh"]);
    let asker = netns(&w.sandbox("asker"));
    let mut hits = 0;
    for i in 0..100 {
        let name = format!("t{i}");
        w.ok(&["sandbox", "create", &name]);
        w.ok(&["network", "connect", "fresh", &name]);
        let (status, answers) = dig(&asker, "127.0.0.11", &name);
        let ip = ip_on(&w.sandbox(&name), "fresh");
        assert_eq!(answers, [ip.as_str()], "query {i} after Connect: {status}");
        hits += 1;
        w.ok(&["network", "disconnect", "fresh", &name]);
        let (_, answers) = dig(&asker, "127.0.0.11", &name);
        assert!(
            !answers.contains(&ip),
            "query {i} after Disconnect: {answers:?}"
        );
        w.ok(&["sandbox", "rm", &name]);
    }
    println!("{hits} of 100 queries right after Connect answered with the new address");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: runs `weft up` in a namespace")]
async fn heavy_bystanders_hold_when_nothing_happens() {
    let w = World::new().await;
    let _weft = Weft::up(&w).await;
    let mut by = intact::Bystanders::new(&w).await;
    by.baseline(&w);
    by.check(&w).await;
}
