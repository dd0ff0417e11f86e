//! IPv6 only where a network has it: an endpoint of an IPv4-only network has IPv6 off in its
//! sandbox (no link-local address, no multicast membership, no router advertisement taken), an
//! endpoint of a dual-stack network has it on, and no bridge port (host-side veth) makes an
//! IPv6 address of its own. Checked in the kernel, for a namespace the caller made and for one
//! the agent made, with traffic over both families.

use std::net::SocketAddr;

use driver_agent::{
    names,
    netns::{self},
    sandbox::managed_netns_name,
    spec::{Endpoint, Network},
};
use weft_proto::agent::v1 as pb;

use crate::{
    bridge::{dual_stack, endpoint, network},
    grpc::{serve, unique},
    support::{
        TestNs, addresses, addresses6, assert_talks, default_route, default_route6, echo_server,
        ip_json, links,
    },
};

/// `net.ipv6.conf.<dev>.disable_ipv6` in `ns`, as the kernel has it.
fn ipv6_disabled(ns: &TestNs, dev: &str) -> bool {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &ns.name, "cat"])
        .arg(format!("/proc/sys/net/ipv6/conf/{dev}/disable_ipv6"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    match String::from_utf8_lossy(&out.stdout).trim() {
        "1" => true,
        "0" => false,
        other => panic!("disable_ipv6 of {dev}: {other:?}"),
    }
}

/// Every IPv6 address on `dev` in `ns`, link-local ones too.
fn all_addresses6(ns: &TestNs, dev: &str) -> Vec<String> {
    ip_json(ns, &["-6", "addr", "show", "dev", dev])[0]["addr_info"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["local"].as_str().map(str::to_owned))
        .collect()
}

/// What the kernel says of both ends of each endpoint: eth0 (the IPv4-only network) without
/// IPv6, eth1 (the dual-stack one) with its address and a link-local one, the host-side
/// veths without any IPv6 address and with `addrgenmode none`.
fn assert_ipv6_only_where_wanted(host: &TestNs, sb: &TestNs, veths: [&str; 2]) {
    assert!(ipv6_disabled(sb, "eth0"));
    assert_eq!(all_addresses6(sb, "eth0"), Vec::<String>::new());
    assert!(!ipv6_disabled(sb, "eth1"));
    assert_eq!(addresses6(sb, "eth1"), ["fd00:91::2/64"]);
    assert!(
        all_addresses6(sb, "eth1")
            .iter()
            .any(|a| a.starts_with("fe80:")),
        "{:?}",
        all_addresses6(sb, "eth1")
    );
    assert_eq!(addresses(sb, "eth0"), ["10.91.0.2/24"]);
    // Loopback keeps ::1.
    assert_eq!(all_addresses6(sb, "lo"), ["::1"]);
    let host_links = links(host);
    for v in veths {
        let l = host_links
            .iter()
            .find(|l| l["ifname"] == v)
            .unwrap_or_else(|| panic!("{v} missing"));
        assert_eq!(l["inet6_addr_gen_mode"], "none", "{l}");
        assert_eq!(all_addresses6(host, v), Vec::<String>::new());
    }
}

/// Both families still carry traffic: IPv4 through eth0, IPv6 through eth1.
async fn assert_both_families_talk(host: &TestNs, sb: &TestNs, port: u16) {
    echo_server(&sb.path, SocketAddr::from(([10, 91, 0, 2], port))).await;
    assert_talks(&host.path, SocketAddr::from(([10, 91, 0, 2], port))).await;
    let v6: SocketAddr = format!("[fd00:91::2]:{}", port + 1).parse().unwrap();
    echo_server(&sb.path, v6).await;
    assert_talks(&host.path, v6).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: namespaces, links, nftables")]
async fn in_a_callers_namespace_only_the_dual_stack_endpoint_has_ipv6() {
    let (host, sb) = (TestNs::new(), TestNs::new());
    let (agent, _data) = crate::support::agent(&host).await;
    let v4 = network(&unique("net"), "10.91.0.0/24", "10.91.0.1");
    let dual = dual_stack(
        &unique("net"),
        ("10.92.0.0/24", "10.92.0.1"),
        ("fd00:91::/64", "fd00:91::1"),
    );
    let (ep0, ep1) = (unique("ep"), unique("ep"));
    let mut e0 = endpoint(&ep0, &v4, &sb, "10.91.0.2/24", true);
    e0.interface_name = "eth0".into();
    let mut e1 = endpoint(&ep1, &dual, &sb, "10.92.0.2/24", false);
    e1.interface_name = "eth1".into();
    e1.ipv6_address = "fd00:91::2/64".into();
    e1.ipv6_gateway = "fd00:91::1".into();
    e1.default_route_v6 = true;
    for _ in 0..2 {
        // The second round re-attaches: nothing changes, IPv6 stays as it is.
        for (e, n) in [(&e0, &v4), (&e1, &dual)] {
            let ep = Endpoint::from_pb(e.clone(), "endpoint").unwrap();
            let net = Network::from_pb(n.clone(), "network").unwrap();
            let mut report = driver_agent::report::Report::default();
            agent.attach(&ep, &net, &mut report).await.unwrap();
        }
    }
    let veths = [names::veth_host_name(&ep0), names::veth_host_name(&ep1)];
    assert_ipv6_only_where_wanted(&host, &sb, [&veths[0], &veths[1]]);
    assert_both_families_talk(&host, &sb, 7300).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: namespaces, links, nftables")]
async fn in_a_namespace_the_agent_makes_only_the_dual_stack_endpoint_has_ipv6() {
    let host = TestNs::new();
    let (mut client, _stop, _data) = serve(&host).await;
    let v4 = network(&unique("net"), "10.91.0.0/24", "10.91.0.1");
    let dual = dual_stack(
        &unique("net"),
        ("10.92.0.0/24", "10.92.0.1"),
        ("fd00:91::/64", "fd00:91::1"),
    );
    let id = unique("t");
    let name = managed_netns_name(&id);
    // (A guard: deleted when the test ends, whichever way.)
    let sb = TestNs {
        path: netns::named_path(&name),
        name,
    };
    let (ep0, ep1) = (unique("ep"), unique("ep"));
    let attachment = |ep: &str, net: &pb::NetworkSpec, cidr: &str, ifname: &str| {
        let mut e = endpoint(ep, net, &host, cidr, ifname == "eth0");
        e.sandbox_id = id.clone();
        e.netns_path = String::new();
        e.interface_name = ifname.into();
        if ifname == "eth1" {
            e.ipv6_address = "fd00:91::2/64".into();
            e.ipv6_gateway = "fd00:91::1".into();
            e.default_route_v6 = true;
        }
        pb::AttachRequest {
            endpoint: Some(e),
            network: Some(net.clone()),
            revision: 0,
        }
    };
    let created = client
        .create_sandbox(pb::CreateSandboxRequest {
            sandbox: Some(pb::SandboxSpec {
                sandbox_id: id.clone(),
                ..Default::default()
            }),
            revision: 0,
            attachments: vec![
                attachment(&ep0, &v4, "10.91.0.2/24", "eth0"),
                attachment(&ep1, &dual, "10.92.0.2/24", "eth1"),
            ],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(created.netns_managed);
    assert_eq!(created.netns_path, sb.path.display().to_string());
    // Which endpoint carries each family's default route, as answered, and as the kernel has it.
    let carriers: Vec<(&str, &str)> = created
        .attached
        .iter()
        .map(|a| {
            (
                a.default_route_v4_endpoint_id.as_str(),
                a.default_route_v6_endpoint_id.as_str(),
            )
        })
        .collect();
    assert_eq!(carriers, [(ep0.as_str(), ""), (ep0.as_str(), ep1.as_str())]);
    assert_eq!(
        default_route(&sb),
        Some(("10.91.0.1".to_owned(), "eth0".to_owned()))
    );
    assert_eq!(
        default_route6(&sb),
        Some(("fd00:91::1".to_owned(), "eth1".to_owned()))
    );
    let veths = [names::veth_host_name(&ep0), names::veth_host_name(&ep1)];
    assert_ipv6_only_where_wanted(&host, &sb, [&veths[0], &veths[1]]);
    assert_both_families_talk(&host, &sb, 7310).await;
}
