//! The bridge driver, through the library: bridges and veths as the kernel shows them, TCP
//! between sandboxes, isolation between networks, idempotence and teardown.

use std::net::SocketAddr;

use driver_agent::{
    Agent,
    error::AgentError,
    names,
    report::{Action, Kind, Report},
    spec::{Endpoint, Network},
};
use weft_proto::agent::v1 as pb;

use crate::support::{
    TestNs, addresses, addresses6, assert_talks, default_route, default_route6, echo_server,
    exchange, gone, link, links,
};

pub fn network(id: &str, subnet: &str, gateway: &str) -> pb::NetworkSpec {
    pb::NetworkSpec {
        network_id: id.into(),
        name: id.into(),
        driver: pb::Driver::Bridge as i32,
        subnets: vec![pb::Subnet {
            cidr: subnet.into(),
            gateway: gateway.into(),
        }],
        enable_ipv4: true,
        // What the gateway sends for a network created without options (Docker's defaults).
        enable_icc: true,
        enable_ip_masquerade: true,
        ..Default::default()
    }
}

pub fn endpoint(
    id: &str,
    net: &pb::NetworkSpec,
    sandbox: &TestNs,
    cidr: &str,
    default_route: bool,
) -> pb::EndpointSpec {
    pb::EndpointSpec {
        endpoint_id: id.into(),
        network_id: net.network_id.clone(),
        sandbox_id: sandbox.name.clone(),
        netns_path: sandbox.path.display().to_string(),
        ipv4_address: cidr.into(),
        ipv4_gateway: net.subnets[0].gateway.clone(),
        default_route_v4: default_route,
        ..Default::default()
    }
}

fn unique(tag: &str) -> String {
    format!("{tag}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
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

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: namespaces, links, nftables")]
async fn two_sandboxes_on_one_network_talk_tcp_and_a_sandbox_on_another_network_cannot() {
    let (host, sb1, sb2, sb3) = (TestNs::new(), TestNs::new(), TestNs::new(), TestNs::new());
    let (agent, _data) = crate::support::agent(&host).await;
    let net_a = network(&unique("neta"), "10.91.0.0/24", "10.91.0.1");
    let net_b = network(&unique("netb"), "10.92.0.0/24", "10.92.0.1");
    let ep1 = unique("ep1");
    attach(
        &agent,
        endpoint(&ep1, &net_a, &sb1, "10.91.0.2/24", true),
        &net_a,
    )
    .await
    .unwrap();
    attach(
        &agent,
        endpoint(&unique("ep2"), &net_a, &sb2, "10.91.0.3/24", true),
        &net_a,
    )
    .await
    .unwrap();
    attach(
        &agent,
        endpoint(&unique("ep3"), &net_b, &sb3, "10.92.0.2/24", true),
        &net_b,
    )
    .await
    .unwrap();

    // The kernel's view of the host: one bridge per network, marked with the network id,
    // carrying the gateway; the endpoint's veth enslaved to it and marked with its id.
    let host_links = links(&host);
    let bridge_a = names::bridge_name(&net_a.network_id);
    let br = link(&host_links, &bridge_a).unwrap_or_else(|| panic!("{bridge_a}: {host_links:?}"));
    assert_eq!(br["linkinfo"]["info_kind"], "bridge");
    assert_eq!(br["ifalias"], names::network_alias(&net_a.network_id));
    assert_eq!(br["mtu"], 1500);
    assert!(
        br["flags"].as_array().unwrap().iter().any(|f| f == "UP"),
        "{br}"
    );
    assert_eq!(addresses(&host, &bridge_a), ["10.91.0.1/24"]);
    let veth = link(&host_links, &names::veth_host_name(&ep1)).unwrap();
    assert_eq!(veth["master"], bridge_a.as_str());
    assert_eq!(veth["ifalias"], names::endpoint_alias(&ep1));
    assert_eq!(veth["linkinfo"]["info_kind"], "veth");

    // The sandbox's view: eth0 with the derived MAC and the address, lo up, the default route.
    let sb_links = links(&sb1);
    let eth0 = link(&sb_links, "eth0").unwrap();
    assert_eq!(
        eth0["address"],
        names::format_mac(&names::derived_mac(&ep1))
    );
    assert_eq!(eth0["ifalias"], names::endpoint_alias(&ep1));
    let lo = link(&sb_links, "lo").unwrap();
    assert!(
        lo["flags"].as_array().unwrap().iter().any(|f| f == "UP"),
        "{lo}"
    );
    assert_eq!(addresses(&sb1, "eth0"), ["10.91.0.2/24"]);
    assert_eq!(
        default_route(&sb1),
        Some(("10.91.0.1".to_owned(), "eth0".to_owned()))
    );

    // Real traffic: sandbox to sandbox over the bridge, and sandbox to its gateway on the host.
    echo_server(&sb1.path, addr("10.91.0.2:7000")).await;
    assert_talks(&sb2.path, addr("10.91.0.2:7000")).await;
    echo_server(&host.path, addr("10.91.0.1:7001")).await;
    assert_talks(&sb1.path, addr("10.91.0.1:7001")).await;

    // The sandbox on the other network has a route to the host, but no path to network A: the
    // agent turned forwarding on for masquerading, and its nftables isolation rules drop
    // traffic between its bridges.
    echo_server(&sb3.path, addr("10.92.0.2:7002")).await;
    assert_talks(&sb3.path, addr("10.92.0.2:7002")).await;
    let blocked = exchange(&sb3.path, addr("10.91.0.2:7000"), "hello").await;
    assert!(blocked.is_err(), "network B reached network A: {blocked:?}");

    // A sandbox connected to both networks reaches both.
    let sb4 = TestNs::new();
    attach(
        &agent,
        endpoint(&unique("ep4a"), &net_a, &sb4, "10.91.0.4/24", true),
        &net_a,
    )
    .await
    .unwrap();
    let mut on_b = endpoint(&unique("ep4b"), &net_b, &sb4, "10.92.0.4/24", false);
    on_b.interface_name = "eth1".into();
    attach(&agent, on_b, &net_b).await.unwrap();
    assert_talks(&sb4.path, addr("10.91.0.2:7000")).await;
    assert_talks(&sb4.path, addr("10.92.0.2:7002")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: namespaces, links, nftables")]
async fn attach_is_idempotent_and_detach_removes_the_veth_even_after_the_sandbox_is_gone() {
    let (host, sb1) = (TestNs::new(), TestNs::new());
    let (agent, _data) = crate::support::agent(&host).await;
    let net = network(&unique("net"), "10.93.0.0/24", "10.93.0.1");
    let ep = unique("ep");
    let spec = endpoint(&ep, &net, &sb1, "10.93.0.2/24", true);

    let first = attach(&agent, spec.clone(), &net).await.unwrap();
    assert!(
        first.changes.iter().any(|c| c.action == Action::Created
            && c.kind == Kind::Link
            && c.object == names::veth_host_name(&ep)),
        "{first:?}"
    );
    let again = attach(&agent, spec.clone(), &net).await.unwrap();
    assert!(
        again.changes.is_empty(),
        "second attach changed something: {again:?}"
    );
    assert_eq!(addresses(&sb1, "eth0"), ["10.93.0.2/24"]);

    // Re-attached with another address: the interface stays, the old address goes.
    let index_before = link(&links(&sb1), "eth0").unwrap()["ifindex"].clone();
    let mut moved = spec;
    moved.ipv4_address = "10.93.0.20/24".into();
    let changed = attach(&agent, moved, &net).await.unwrap();
    let what: Vec<(Action, &str)> = changed
        .changes
        .iter()
        .filter(|c| c.kind == Kind::Address)
        .map(|c| (c.action, c.object.as_str()))
        .collect();
    assert_eq!(
        what,
        [
            (Action::Removed, "10.93.0.2/24 dev eth0"),
            (Action::Created, "10.93.0.20/24 dev eth0")
        ]
    );
    assert_eq!(
        default_route(&sb1),
        Some(("10.93.0.1".to_owned(), "eth0".to_owned()))
    );
    assert_eq!(addresses(&sb1, "eth0"), ["10.93.0.20/24"]);
    assert_eq!(link(&links(&sb1), "eth0").unwrap()["ifindex"], index_before);

    let (routes, report) = agent.detach(&ep, &sb1.path).await.unwrap();
    assert!(report.failures.is_empty(), "{report:?}");
    assert_eq!(routes.v4, None);
    // Inert at once (out of the bridge, both ends down), removed within moments.
    let veth = link(&links(&host), &names::veth_host_name(&ep)).cloned();
    if let Some(v) = veth {
        assert!(v.get("master").is_none(), "{v}");
        assert!(
            !v["flags"].as_array().unwrap().contains(&"UP".into()),
            "{v}"
        );
    }
    // A second Detach while it is removed has nothing left to do.
    let (_, report) = agent.detach(&ep, &sb1.path).await.unwrap();
    assert!(
        report.failures.is_empty() && report.changes.is_empty(),
        "{report:?}"
    );
    gone(&host, &names::veth_host_name(&ep)).await;
    gone(&sb1, "eth0").await;
    let (_, report) = agent.detach(&ep, &sb1.path).await.unwrap();
    assert!(
        report.failures.is_empty() && report.changes.is_empty(),
        "{report:?}"
    );

    // Detach when the sandbox's namespace no longer exists.
    let sb2 = TestNs::new();
    let ep2 = unique("ep2");
    attach(
        &agent,
        endpoint(&ep2, &net, &sb2, "10.93.0.3/24", true),
        &net,
    )
    .await
    .unwrap();
    let gone_ns = sb2.path.clone();
    drop(sb2);
    let (routes, report) = agent.detach(&ep2, &gone_ns).await.unwrap();
    assert!(report.failures.is_empty(), "{report:?}");
    assert_eq!(routes.v4, None);
    gone(&host, &names::veth_host_name(&ep2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: namespaces, links, nftables")]
async fn remove_network_deletes_its_bridge_and_endpoints_and_is_idempotent() {
    let (host, sb1) = (TestNs::new(), TestNs::new());
    let (agent, _data) = crate::support::agent(&host).await;
    let net = network(&unique("net"), "10.94.0.0/24", "10.94.0.1");
    let ep = unique("ep");
    attach(
        &agent,
        endpoint(&ep, &net, &sb1, "10.94.0.2/24", false),
        &net,
    )
    .await
    .unwrap();
    assert_eq!(default_route(&sb1), None);

    let report = agent.remove_network(&net.network_id).await;
    assert!(report.failures.is_empty(), "{report:?}");
    let removed = |kind: Kind| -> Vec<&str> {
        report
            .changes
            .iter()
            .filter(|c| c.kind == kind && c.action == Action::Removed)
            .map(|c| c.object.as_str())
            .collect()
    };
    let bridge = names::bridge_name(&net.network_id);
    let veth = names::veth_host_name(&ep);
    assert_eq!(removed(Kind::Link), [veth.as_str(), bridge.as_str()]);
    // The network's firewall rules went too, and with the last network the agent's table.
    assert_eq!(
        removed(Kind::NftRule),
        [format!("inet weft network {bridge}")]
    );
    assert_eq!(removed(Kind::NftTable), ["inet weft"]);
    let host_links = links(&host);
    assert!(link(&host_links, &bridge).is_none(), "{host_links:?}");
    assert!(link(&host_links, &veth).is_none(), "{host_links:?}");

    let report = agent.remove_network(&net.network_id).await;
    assert!(
        report.failures.is_empty() && report.changes.is_empty(),
        "{report:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: namespaces, links, nftables")]
async fn a_bridge_name_held_by_a_foreign_link_is_refused_and_left_alone() {
    let host = TestNs::new();
    let status = std::process::Command::new("ip")
        .args([
            "-n",
            &host.name,
            "link",
            "add",
            "br-foreign",
            "type",
            "bridge",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let (agent, _data) = crate::support::agent(&host).await;
    let mut spec = network(&unique("net"), "10.95.0.0/24", "10.95.0.1");
    spec.bridge_name = "br-foreign".into();
    let net = Network::from_pb(spec.clone(), "network").unwrap();
    let err = agent
        .ensure_network(&net, &mut Report::default())
        .await
        .unwrap_err();
    assert!(matches!(err, AgentError::NotOurs { .. }), "{err:?}");
    let status = tonic::Status::from(err);
    assert_eq!(status.code(), tonic::Code::AlreadyExists);

    // Removing the network leaves the foreign bridge alone: it carries no Weft alias.
    let report = agent.remove_network(&spec.network_id).await;
    assert!(report.changes.is_empty(), "{report:?}");
    let host_links = links(&host);
    let br = link(&host_links, "br-foreign").unwrap();
    assert!(br.get("ifalias").is_none(), "{br}");
    assert!(addresses(&host, "br-foreign").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: namespaces, links, nftables")]
async fn the_default_route_follows_the_endpoint_that_carries_it() {
    let (host, sb) = (TestNs::new(), TestNs::new());
    let (agent, _data) = crate::support::agent(&host).await;
    let net_a = network(&unique("neta"), "10.98.0.0/24", "10.98.0.1");
    let net_b = network(&unique("netb"), "10.98.1.0/24", "10.98.1.1");
    let (ep_a, ep_b) = (unique("epa"), unique("epb"));
    attach(
        &agent,
        endpoint(&ep_a, &net_a, &sb, "10.98.0.2/24", true),
        &net_a,
    )
    .await
    .unwrap();
    assert_eq!(
        default_route(&sb),
        Some(("10.98.0.1".to_owned(), "eth0".to_owned()))
    );

    // The gateway moves the default route to the second endpoint: B carries it, A no more.
    let mut spec_b = endpoint(&ep_b, &net_b, &sb, "10.98.1.2/24", true);
    spec_b.interface_name = "eth1".into();
    attach(&agent, spec_b, &net_b).await.unwrap();
    let report = attach(
        &agent,
        endpoint(&ep_a, &net_a, &sb, "10.98.0.2/24", false),
        &net_a,
    )
    .await
    .unwrap();
    assert!(
        !report.changes.iter().any(|c| c.kind == Kind::Route),
        "A carried no route any more: {report:?}"
    );
    assert_eq!(
        default_route(&sb),
        Some(("10.98.1.1".to_owned(), "eth1".to_owned()))
    );
    let (routes, _) = agent.detach("no-such-endpoint", &sb.path).await.unwrap();
    assert_eq!(routes.v4.as_deref(), Some(ep_b.as_str()));

    // Detaching B takes its route with it.
    let (routes, report) = agent.detach(&ep_b, &sb.path).await.unwrap();
    assert!(report.failures.is_empty(), "{report:?}");
    assert_eq!(routes.v4, None);
    assert_eq!(default_route(&sb), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: namespaces, links, nftables")]
async fn a_failed_attach_leaves_nothing_behind() {
    let (host, sb) = (TestNs::new(), TestNs::new());
    let (agent, _data) = crate::support::agent(&host).await;
    let before = links(&host);

    // The sandbox already has an eth0 that is not Weft's.
    let status = std::process::Command::new("ip")
        .args([
            "-n", &sb.name, "link", "add", "eth0", "type", "veth", "peer", "name", "x0",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let net = network(&unique("net"), "10.99.0.0/24", "10.99.0.1");
    let err = attach(
        &agent,
        endpoint(&unique("ep"), &net, &sb, "10.99.0.2/24", true),
        &net,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, AgentError::NotOurs { .. }), "{err:?}");
    assert_eq!(
        links(&host),
        before,
        "the new network's bridge was not undone"
    );

    // The sandbox's namespace does not exist: NOT_FOUND, and again nothing left.
    let mut spec = endpoint(&unique("ep"), &net, &sb, "10.99.0.3/24", true);
    spec.netns_path = "/run/netns/wft-t-missing".into();
    let err = attach(&agent, spec, &net).await.unwrap_err();
    assert!(matches!(err, AgentError::NetnsNotFound { .. }), "{err:?}");
    assert_eq!(tonic::Status::from(err).code(), tonic::Code::NotFound);
    assert_eq!(links(&host), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: namespaces, links, nftables")]
async fn the_network_mtu_applies_to_bridge_and_both_veth_ends() {
    let (host, sb) = (TestNs::new(), TestNs::new());
    let (agent, _data) = crate::support::agent(&host).await;
    let mut net = network(&unique("net"), "10.99.1.0/24", "10.99.1.1");
    net.mtu = 1400;
    let ep = unique("ep");
    attach(&agent, endpoint(&ep, &net, &sb, "10.99.1.2/24", true), &net)
        .await
        .unwrap();
    let host_links = links(&host);
    assert_eq!(
        link(&host_links, &names::bridge_name(&net.network_id)).unwrap()["mtu"],
        1400
    );
    assert_eq!(
        link(&host_links, &names::veth_host_name(&ep)).unwrap()["mtu"],
        1400
    );
    assert_eq!(link(&links(&sb), "eth0").unwrap()["mtu"], 1400);

    // Changing the MTU updates the existing bridge and says so.
    net.mtu = 1300;
    let mut report = Report::default();
    agent
        .ensure_network(
            &Network::from_pb(net.clone(), "network").unwrap(),
            &mut report,
        )
        .await
        .unwrap();
    assert!(
        report
            .changes
            .iter()
            .any(|c| c.action == Action::Updated && c.detail == "mtu 1400 -> 1300"),
        "{report:?}"
    );
}

pub fn dual_stack(id: &str, v4: (&str, &str), v6: (&str, &str)) -> pb::NetworkSpec {
    let mut n = network(id, v4.0, v4.1);
    n.subnets.push(pb::Subnet {
        cidr: v6.0.into(),
        gateway: v6.1.into(),
    });
    n.enable_ipv6 = true;
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: namespaces, links, nftables")]
async fn dual_stack_sandboxes_talk_over_ipv6_and_route_through_the_v6_gateway() {
    let (host, sb1, sb2) = (TestNs::new(), TestNs::new(), TestNs::new());
    let (agent, _data) = crate::support::agent(&host).await;
    let net = dual_stack(
        &unique("net"),
        ("10.90.0.0/24", "10.90.0.1"),
        ("fd00:90::/64", "fd00:90::1"),
    );
    let ep1 = unique("ep1");
    for (ep, sb, v4, v6) in [
        (ep1.as_str(), &sb1, "10.90.0.2/24", "fd00:90::2/64"),
        ("ep2-dual", &sb2, "10.90.0.3/24", "fd00:90::3/64"),
    ] {
        let mut spec = endpoint(ep, &net, sb, v4, true);
        spec.ipv6_address = v6.into();
        spec.ipv6_gateway = "fd00:90::1".into();
        spec.default_route_v6 = true;
        attach(&agent, spec, &net).await.unwrap();
    }
    let bridge = names::bridge_name(&net.network_id);
    assert_eq!(addresses6(&host, &bridge), ["fd00:90::1/64"]);
    assert_eq!(addresses6(&sb1, "eth0"), ["fd00:90::2/64"]);
    assert_eq!(
        default_route6(&sb1),
        Some(("fd00:90::1".to_owned(), "eth0".to_owned()))
    );
    let (routes, _) = agent.detach("no-such-endpoint", &sb1.path).await.unwrap();
    assert_eq!(routes.v6.as_deref(), Some(ep1.as_str()));

    echo_server(&sb1.path, addr("[fd00:90::2]:7200")).await;
    assert_talks(&sb2.path, addr("[fd00:90::2]:7200")).await;
    echo_server(&host.path, addr("[fd00:90::1]:7201")).await;
    assert_talks(&sb1.path, addr("[fd00:90::1]:7201")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: namespaces, links, nftables")]
async fn concurrent_attaches_to_a_new_network_share_one_bridge() {
    let host = TestNs::new();
    let sandboxes: Vec<TestNs> = (0..6).map(|_| TestNs::new()).collect();
    let (agent, _data) = crate::support::agent(&host).await;
    let net = network(&unique("net"), "10.89.0.0/24", "10.89.0.1");
    let ids: Vec<String> = (0..sandboxes.len())
        .map(|i| unique(&format!("ep{i}")))
        .collect();
    let attaches = sandboxes.iter().zip(&ids).enumerate().map(|(i, (sb, id))| {
        let spec = endpoint(id, &net, sb, &format!("10.89.0.{}/24", i + 2), true);
        attach(&agent, spec, &net)
    });
    for res in futures::future::join_all(attaches).await {
        res.unwrap();
    }
    let host_links = links(&host);
    let bridge = names::bridge_name(&net.network_id);
    let bridges: Vec<_> = host_links
        .iter()
        .filter(|l| l["linkinfo"]["info_kind"] == "bridge")
        .collect();
    assert_eq!(bridges.len(), 1, "{host_links:?}");
    for id in &ids {
        let veth = link(&host_links, &names::veth_host_name(id)).unwrap();
        assert_eq!(veth["master"], bridge.as_str());
    }
    echo_server(&sandboxes[0].path, addr("10.89.0.2:7300")).await;
    assert_talks(&sandboxes[5].path, addr("10.89.0.2:7300")).await;
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: namespaces, links, nftables")]
async fn repeated_attach_and_detach_leak_no_links_or_netlink_sockets() {
    let (host, sb) = (TestNs::new(), TestNs::new());
    let (agent, _data) = crate::support::agent(&host).await;
    let net = network(&unique("net"), "10.88.0.0/24", "10.88.0.1");
    // The network's bridge stays; what comes and goes per endpoint must not accumulate.
    attach(
        &agent,
        endpoint(&unique("ep"), &net, &sb, "10.88.0.9/24", false),
        &net,
    )
    .await
    .unwrap();
    let (links_before, fds_before) = (links(&host).len(), open_fds());
    for i in 0..20 {
        let ep = unique(&format!("ep{i}"));
        let mut spec = endpoint(&ep, &net, &sb, "10.88.0.2/24", true);
        spec.interface_name = "eth1".into();
        attach(&agent, spec, &net).await.unwrap();
        let (_, report) = agent.detach(&ep, &sb.path).await.unwrap();
        assert!(report.failures.is_empty(), "{report:?}");
    }
    // (The last detached veth is removed off the request path.)
    weft_testkit::wait_for(
        std::time::Duration::from_secs(5),
        "the detached veths to be removed",
        || async { (links(&host).len() == links_before).then_some(()) },
    )
    .await;
    // Per-namespace connections end when their handle is dropped; their tasks close the
    // sockets asynchronously, hence the wait.
    weft_testkit::wait_for(
        std::time::Duration::from_secs(5),
        "netlink sockets of finished attaches to close",
        || async { (open_fds() <= fds_before).then_some(()) },
    )
    .await;
}
