//! The macvlan driver, through the library, over a veth parent: the namespace playing the host
//! has `lan0`, whose peer `lan1` sits in a namespace playing the LAN (its router and a
//! server). Sandboxes reach the LAN's server with their own addresses (the server sees them),
//! talk to each other in bridge mode and not in private mode; a parent that is not there, or
//! that is one of Weft's own links, is refused by name; reconciliation makes macvlan sandboxes
//! once, a second pass changes nothing, and the audit removes the device of an endpoint no
//! longer desired from a sandbox that stays; and when everything is gone the host namespace
//! is exactly as before (links, routes, FDB, neighbours, nftables).

use std::{net::SocketAddr, time::Instant};

use driver_agent::{
    Agent,
    error::AgentError,
    names,
    reconcile::{Depth, Prepared},
    report::Report,
    sandbox::managed_netns_name,
    spec::{Endpoint, Network},
};
use serde_json::Value;
use tokio::io::AsyncWriteExt as _;
use weft_proto::agent::v1 as pb;
use weft_testkit::netns::tcp_listener_in;

use crate::{
    grpc::unique,
    support::{TestNs, addresses, assert_talks, default_route, echo_server, exchange, link, links},
};

/// The LAN's segment, its router (the networks' gateway) and its server.
const SUBNET: &str = "198.51.100.0/24";
const ROUTER: &str = "198.51.100.1";
const SERVER: &str = "198.51.100.2";

/// A host whose `lan0` is wired to a LAN namespace (`lan1`, the router's and the server's
/// addresses), both with loopback up.
fn host_and_lan() -> (TestNs, TestNs) {
    let host = TestNs::new().with_lo_up();
    let lan = TestNs::new().with_lo_up();
    host.veth_to("lan0", None, &lan, "lan1", Some(&format!("{ROUTER}/24")));
    lan.ip(&["addr", "add", &format!("{SERVER}/24"), "dev", "lan1"]);
    (host, lan)
}

/// Everything of the host namespace a network or an endpoint could leave behind.
fn host_view(host: &TestNs) -> Vec<Value> {
    host.settle_ipv6();
    let fdb = host.exec_ok("bridge", &["-j", "fdb", "show"]);
    vec![
        host.ip_json(&["-d", "link", "show"]),
        host.ip_json(&["route", "show", "table", "all"]),
        host.ip_json(&["-6", "route", "show", "table", "all"]),
        host.ip_json(&["neigh", "show"]),
        serde_json::from_slice(&fdb).unwrap_or(Value::Null),
        host.nft_json(&["list", "ruleset"]),
    ]
}

fn macvlan(id: &str, parent: &str, mode: pb::MacvlanMode) -> pb::NetworkSpec {
    pb::NetworkSpec {
        network_id: id.into(),
        name: id.into(),
        driver: pb::Driver::Macvlan as i32,
        subnets: vec![pb::Subnet {
            cidr: SUBNET.into(),
            gateway: ROUTER.into(),
        }],
        enable_ipv4: true,
        parent: parent.into(),
        macvlan_mode: mode as i32,
        ..Default::default()
    }
}

fn endpoint(id: &str, net: &pb::NetworkSpec, netns: &str, last: u8) -> pb::EndpointSpec {
    pb::EndpointSpec {
        endpoint_id: id.into(),
        network_id: net.network_id.clone(),
        sandbox_id: format!("sb-{id}"),
        netns_path: netns.into(),
        ipv4_address: format!("198.51.100.{last}/24"),
        ipv4_gateway: ROUTER.into(),
        default_route_v4: true,
        ..Default::default()
    }
}

async fn attach(
    agent: &Agent,
    ep: &pb::EndpointSpec,
    net: &pb::NetworkSpec,
) -> Result<Report, AgentError> {
    let mut report = Report::default();
    agent
        .attach(
            &Endpoint::from_pb(ep.clone(), "endpoint").unwrap(),
            &Network::from_pb(net.clone(), "network").unwrap(),
            &mut report,
        )
        .await?;
    Ok(report)
}

/// A TCP server in `ns` that answers each connection with the peer's address as it sees it.
async fn whoami_server(ns: &TestNs, addr: SocketAddr) {
    let listener = tcp_listener_in(&ns.path, addr).await;
    tokio::spawn(async move {
        while let Ok((mut stream, peer)) = listener.accept().await {
            let _ = stream
                .write_all(format!("{}\n", peer.ip()).as_bytes())
                .await;
        }
    });
}

fn addr(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}

/// The sandbox's `eth0` as `ip -d -j` shows it.
fn eth0(sb: &TestNs) -> Value {
    link(&links(sb), "eth0")
        .cloned()
        .unwrap_or_else(|| panic!("no eth0 in {}", sb.name))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: namespaces, links, nftables")]
async fn macvlan_sandboxes_reach_the_lan_with_their_own_addresses_and_each_other_and_leave_the_host_as_it_was()
 {
    let (host, lan) = host_and_lan();
    let (sb1, sb2, sb3) = (TestNs::new(), TestNs::new(), TestNs::new());
    let (agent, _data) = crate::support::agent(&host).await;
    whoami_server(&lan, addr(SERVER, 7070)).await;
    let before = host_view(&host);

    // A parent this host lacks, and one of Weft's own links: refused by name, nothing made.
    let net = macvlan(&unique("mv"), "nope0", pb::MacvlanMode::Unspecified);
    let ep1 = endpoint(&unique("e1"), &net, &sb1.path_str(), 10);
    let err = attach(&agent, &ep1, &net).await.unwrap_err();
    assert!(
        matches!(&err, AgentError::NoParent { name } if name == "nope0"),
        "{err:?}"
    );
    let st = tonic::Status::from(err);
    assert_eq!(st.code(), tonic::Code::FailedPrecondition);
    assert!(st.message().contains("\"nope0\""), "{}", st.message());
    host.ip(&[
        "link",
        "add",
        "wft-fake",
        "type",
        "veth",
        "peer",
        "name",
        "wft-fake1",
    ]);
    host.ip(&["link", "set", "wft-fake", "alias", "weft:network:other"]);
    let wefts = macvlan(&net.network_id, "wft-fake", pb::MacvlanMode::Unspecified);
    let err = attach(&agent, &ep1, &wefts).await.unwrap_err();
    assert!(
        matches!(&err, AgentError::ParentIsWefts { name, .. } if name == "wft-fake"),
        "{err:?}"
    );
    host.ip(&["link", "del", "wft-fake"]);
    assert!(link(&links(&sb1), "eth0").is_none());
    assert_eq!(
        host_view(&host),
        before,
        "a refusal leaves the host as it was"
    );

    // Bridge mode (the default): the device is born in the sandbox, never on the host.
    let net = macvlan(&net.network_id, "lan0", pb::MacvlanMode::Unspecified);
    let ep2 = endpoint(&unique("e2"), &net, &sb2.path_str(), 11);
    let report = attach(&agent, &ep1, &net).await.unwrap();
    assert!(report.failures.is_empty(), "{report:?}");
    attach(&agent, &ep2, &net).await.unwrap();
    let host_links = links(&host);
    assert!(
        host_links
            .iter()
            .all(|l| l["linkinfo"]["info_kind"] != "macvlan"),
        "{host_links:?}"
    );
    let e = eth0(&sb1);
    assert_eq!(e["linkinfo"]["info_kind"], "macvlan", "{e}");
    assert_eq!(e["linkinfo"]["info_data"]["mode"], "bridge", "{e}");
    assert_eq!(e["ifalias"], names::endpoint_alias(&ep1.endpoint_id));
    assert_eq!(
        e["address"],
        names::format_mac(&names::derived_mac(&ep1.endpoint_id))
    );
    assert_eq!(e["mtu"], 1500, "the parent's MTU");
    assert_eq!(addresses(&sb1, "eth0"), ["198.51.100.10/24"]);
    assert_eq!(
        default_route(&sb1),
        Some((ROUTER.to_owned(), "eth0".to_owned()))
    );

    // The LAN's server sees each sandbox's own address; the sandboxes talk to each other.
    for (sb, ip) in [(&sb1, "198.51.100.10"), (&sb2, "198.51.100.11")] {
        let seen = weft_testkit::wait_for(
            std::time::Duration::from_secs(5),
            "an answer from the LAN's server",
            || async { exchange(&sb.path, addr(SERVER, 7070), "who").await.ok() },
        )
        .await;
        assert_eq!(seen, ip);
    }
    echo_server(&sb2.path, addr("198.51.100.11", 7071)).await;
    assert_talks(&sb1.path, addr("198.51.100.11", 7071)).await;

    // Private mode: the LAN yes, the other macvlan devices on the parent no.
    let private = macvlan(&unique("mvp"), "lan0", pb::MacvlanMode::Private);
    let ep3 = endpoint(&unique("e3"), &private, &sb3.path_str(), 12);
    attach(&agent, &ep3, &private).await.unwrap();
    assert_eq!(eth0(&sb3)["linkinfo"]["info_data"]["mode"], "private");
    let seen = weft_testkit::wait_for(
        std::time::Duration::from_secs(5),
        "an answer from the LAN's server",
        || async { exchange(&sb3.path, addr(SERVER, 7070), "who").await.ok() },
    )
    .await;
    assert_eq!(seen, "198.51.100.12");
    assert!(
        exchange(&sb3.path, addr("198.51.100.11", 7071), "hello")
            .await
            .is_err(),
        "a private device reaches no other device on its parent"
    );

    // Detach and remove: the sandboxes lose their devices, the host is exactly as before.
    for (ep, sb) in [(&ep1, &sb1), (&ep2, &sb2), (&ep3, &sb3)] {
        let (_, r) = agent.detach(&ep.endpoint_id, &sb.path).await.unwrap();
        assert!(r.failures.is_empty(), "{r:?}");
        assert!(link(&links(sb), "eth0").is_none(), "{}", sb.name);
    }
    for n in [&net, &private] {
        let r = agent.remove_network(&n.network_id).await;
        assert!(r.failures.is_empty(), "{r:?}");
    }
    assert_eq!(host_view(&host), before);
}

/// A managed sandbox (`weft-<id>`, made by reconciliation) and the guard that deletes it.
fn managed(id: &str) -> (pb::SandboxSpec, TestNs) {
    let name = managed_netns_name(id);
    let guard = TestNs {
        path: driver_agent::netns::named_path(&name),
        name,
    };
    let spec = pb::SandboxSpec {
        sandbox_id: id.into(),
        hosts: "127.0.0.1 localhost\n".into(),
        ..Default::default()
    };
    (spec, guard)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: namespaces, links, nftables")]
async fn reconcile_makes_macvlan_sandboxes_once_changes_nothing_again_and_the_audit_removes_a_stray()
 {
    let (host, lan) = host_and_lan();
    // No parent named: the link of the host's default route (its own address on the LAN,
    // the LAN's router).
    host.ip(&["addr", "add", "198.51.100.3/24", "dev", "lan0"]);
    host.ip(&["route", "add", "default", "via", ROUTER]);
    let data = tempfile::tempdir().unwrap();
    let agent = Agent::start(host.path.clone(), data.path().to_owned())
        .await
        .unwrap();
    whoami_server(&lan, addr(SERVER, 7070)).await;
    let before = host_view(&host);
    let net = macvlan(&unique("mv"), "", pb::MacvlanMode::Bridge);
    let mut state = pb::DesiredState {
        revision: 1,
        networks: vec![net.clone()],
        ..Default::default()
    };
    let mut guards = Vec::new();
    for last in [20, 21] {
        let (sb, guard) = managed(&unique("s"));
        let mut ep = endpoint(&unique("e"), &net, &guard.path_str(), last);
        ep.sandbox_id.clone_from(&sb.sandbox_id);
        state.sandboxes.push(sb);
        state.endpoints.push(ep);
        guards.push(guard);
    }

    let first = agent.apply_state(&state, false).await;
    assert!(first.failures.is_empty(), "{:?}", first.failures);
    let index = |g: &TestNs| eth0(g)["ifindex"].clone();
    let made: Vec<Value> = guards.iter().map(index).collect();
    assert_eq!(eth0(&guards[0])["linkinfo"]["info_kind"], "macvlan");

    // Twice more in full, then a pass of the changes: nothing changed, nothing made again.
    for _ in 0..2 {
        let again = agent.apply_state(&state, false).await;
        assert!(again.failures.is_empty(), "{:?}", again.failures);
        assert!(again.changes.is_empty(), "{:?}", again.changes);
    }
    let changes = agent
        .reconcile(&state, Depth::Changes, Instant::now())
        .await;
    assert!(changes.failures.is_empty(), "{:?}", changes.failures);
    assert_eq!(changes.ensured, 0, "{:?}", changes.changes);
    assert!(changes.changes.is_empty(), "{:?}", changes.changes);
    let dry = agent.apply_state(&state, true).await;
    assert!(dry.changes.is_empty(), "no drift seen: {:?}", dry.changes);
    assert_eq!(guards.iter().map(index).collect::<Vec<_>>(), made);
    for (g, ip) in guards.iter().zip(["198.51.100.20", "198.51.100.21"]) {
        let seen = weft_testkit::wait_for(
            std::time::Duration::from_secs(5),
            "an answer from the LAN's server",
            || async { exchange(&g.path, addr(SERVER, 7070), "who").await.ok() },
        )
        .await;
        assert_eq!(seen, ip);
    }

    // The gateway no longer wants the second endpoint (its detach never came), the sandbox
    // stays: nothing on the host shows it, the audit finds the device inside and removes it.
    let mut fewer = state.clone();
    fewer.revision = 2;
    let stray = fewer.endpoints.pop().unwrap();
    let r = agent.apply_state(&fewer, false).await;
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    let r = agent.audit(&Prepared::new(&fewer), Instant::now()).await;
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    assert_eq!(r.changes.len(), 1, "{:?}", r.changes);
    assert_eq!(r.changes[0].owner, stray.endpoint_id);
    assert!(link(&links(&guards[1]), "eth0").is_none());
    assert_eq!(
        index(&guards[0]),
        made[0],
        "the desired one stays as it was"
    );

    // Nothing desired: the sandboxes go with their devices; the host is as before.
    let empty = pb::DesiredState {
        revision: 3,
        ..Default::default()
    };
    let gone = agent.apply_state(&empty, false).await;
    assert!(gone.failures.is_empty(), "{:?}", gone.failures);
    for g in &guards {
        assert!(!g.path.exists(), "{} removed", g.name);
    }
    // (The kernel dismantles a deleted namespace's devices a moment later: their addresses
    // leave the parent's FDB then.)
    weft_testkit::wait_for(
        std::time::Duration::from_secs(5),
        "the host as it was before",
        || async { (host_view(&host) == before).then_some(()) },
    )
    .await;
}

/// A link named `name` in `host` standing in for a VLAN sub-interface (this project's CI
/// kernel has no 802.1Q): one end of a veth pair, with `alias` when given. What the agent
/// decides about a VLAN parent goes by its name and its mark, never its kind.
fn stand_in(host: &TestNs, name: &str, alias: Option<&str>) {
    host.ip(&[
        "link",
        "add",
        name,
        "type",
        "veth",
        "peer",
        "name",
        &format!("p{name}"),
    ]);
    if let Some(a) = alias {
        host.ip(&["link", "set", name, "alias", a]);
    }
}

fn has_link(host: &TestNs, name: &str) -> bool {
    link(&links(host), name).is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: namespaces, links, nftables")]
async fn vlan_parents_the_agent_made_go_with_their_last_network_and_the_admins_stay() {
    let (host, _lan) = host_and_lan();
    let (agent, _data) = crate::support::agent(&host).await;
    let vlan = agent.capabilities().features.vlan;
    let sb = TestNs::new();
    let net = macvlan(&unique("vl"), "lan0.50", pb::MacvlanMode::Bridge);
    let ep = endpoint(&unique("e"), &net, &sb.path_str(), 30);
    if vlan {
        // A kernel with 802.1Q: the agent makes lan0.50 on lan0, marked, up, with VLAN id 50,
        // and removes it with its network.
        attach(&agent, &ep, &net).await.unwrap();
        let l = link(&links(&host), "lan0.50")
            .cloned()
            .expect("lan0.50 made");
        assert_eq!(l["linkinfo"]["info_kind"], "vlan", "{l}");
        assert_eq!(l["linkinfo"]["info_data"]["id"], 50, "{l}");
        assert_eq!(l["link"], "lan0", "{l}");
        assert_eq!(l["ifalias"], names::vlan_alias("lan0.50"), "{l}");
        assert!(l["flags"].as_array().unwrap().contains(&"UP".into()), "{l}");
        agent.detach(&ep.endpoint_id, &sb.path).await.unwrap();
        // (Removal deletes it once a reconciliation told the agent every network here.)
        let state = pb::DesiredState {
            revision: 1,
            networks: vec![net.clone()],
            ..Default::default()
        };
        agent.apply_state(&state, false).await;
        let r = agent.remove_network(&net.network_id).await;
        assert!(r.failures.is_empty(), "{r:?}");
        assert!(!has_link(&host, "lan0.50"));
    } else {
        // This project's CI kernel: refused naming 802.1Q, before anything is made.
        let before = host_view(&host);
        let st = tonic::Status::from(attach(&agent, &ep, &net).await.unwrap_err());
        assert_eq!(st.code(), tonic::Code::FailedPrecondition, "{st:?}");
        assert!(st.message().contains("802.1Q"), "{}", st.message());
        assert_eq!(host_view(&host), before);
    }

    // The agent's (marked) VLAN, and the admin's: one without a mark, one with another alias.
    stand_in(&host, "lan0.50", Some(&names::vlan_alias("lan0.50")));
    stand_in(&host, "lan0.60", None);
    stand_in(&host, "lan0.70", Some("uplink to the lab"));
    let on = |id: &str, parent: &str| macvlan(id, parent, pb::MacvlanMode::Bridge);
    let (a, b) = (on(&unique("a"), "lan0.50"), on(&unique("b"), "lan0.50"));
    let admins = on(&unique("c"), "lan0.60");
    let state = |revision: u64, networks: &[&pb::NetworkSpec]| pb::DesiredState {
        revision,
        networks: networks.iter().map(|n| (*n).clone()).collect(),
        ..Default::default()
    };

    // Two networks on lan0.50 and one on the admin's lan0.60, a fourth on a missing lan0.90:
    // a dry run sees lan0.90 missing and nothing orphaned.
    let missing = on(&unique("d"), "lan0.90");
    let dry = agent
        .apply_state(&state(2, &[&a, &b, &admins, &missing]), true)
        .await;
    let seen: Vec<(&str, &str)> = dry
        .changes
        .iter()
        .map(|c| (c.object.as_str(), c.detail.as_str()))
        .collect();
    assert_eq!(seen, [("lan0.90", "missing")], "{:?}", dry.changes);
    let r = agent
        .apply_state(&state(2, &[&a, &b, &admins]), false)
        .await;
    if !vlan {
        assert!(
            r.failures.iter().all(|f| f.error.contains("802.1Q")),
            "{:?}",
            r.failures
        );
    }
    assert!(has_link(&host, "lan0.50") && has_link(&host, "lan0.60"));

    // Its first network goes: the other still uses it. The second goes: so does lan0.50.
    let r = agent.remove_network(&a.network_id).await;
    assert!(r.changes.is_empty() && r.failures.is_empty(), "{r:?}");
    assert!(has_link(&host, "lan0.50"));
    let r = agent.remove_network(&b.network_id).await;
    assert!(r.failures.is_empty(), "{r:?}");
    assert_eq!(r.changes.len(), 1, "{:?}", r.changes);
    assert_eq!(r.changes[0].object, "lan0.50");
    assert!(!has_link(&host, "lan0.50"));
    // The admin's VLAN outlives its last network.
    let r = agent.remove_network(&admins.network_id).await;
    assert!(r.changes.is_empty(), "{r:?}");
    assert!(has_link(&host, "lan0.60") && has_link(&host, "lan0.70"));

    // A VLAN of the agent's that no desired network uses (its RemoveNetwork never came) is an
    // orphan: the dry run names it, reconciliation removes it; the admin's stay.
    stand_in(&host, "lan0.50", Some(&names::vlan_alias("lan0.50")));
    let dry = agent.apply_state(&state(3, &[&admins]), true).await;
    let seen: Vec<(&str, &str)> = dry
        .changes
        .iter()
        .map(|c| (c.object.as_str(), c.detail.as_str()))
        .collect();
    assert_eq!(seen, [("lan0.50", "orphan")], "{:?}", dry.changes);
    let r = agent.apply_state(&state(3, &[&admins]), false).await;
    assert!(
        r.changes.iter().any(|c| c.object == "lan0.50"),
        "{:?}",
        r.changes
    );
    assert!(!has_link(&host, "lan0.50"));
    assert!(has_link(&host, "lan0.60") && has_link(&host, "lan0.70"));
}
