//! Reconciliation in proportion to what changed: a pass of the changes leaves alone what the
//! agent brought to the desired spec and the host still shows, ensures what drifted, and a
//! restarted agent (same data directory) trusts its own record instead of entering every
//! sandbox again; a record lost in a kill costs a full check of that object only.

use std::{net::SocketAddr, time::Instant};

use driver_agent::{
    Agent,
    reconcile::Depth,
    report::Report,
    sandbox::{Sandbox, managed_netns_name},
    spec::{Endpoint, Network},
};
use weft_proto::agent::v1 as pb;

use crate::{
    bridge::network,
    grpc::unique,
    support::{TestNs, addresses, assert_talks, echo_server, links},
};

const SANDBOXES: usize = 12;

/// A managed sandbox as the gateway describes it, and the namespace guard that deletes it.
fn sandbox(id: &str) -> (pb::SandboxSpec, TestNs) {
    let name = managed_netns_name(id);
    let guard = TestNs {
        path: driver_agent::netns::named_path(&name),
        name,
    };
    let spec = pb::SandboxSpec {
        sandbox_id: id.into(),
        resolv_conf: "nameserver 127.0.0.11\n".into(),
        hosts: format!("127.0.0.1 localhost\n127.0.1.1 {id}\n"),
        ..Default::default()
    };
    (spec, guard)
}

fn endpoint(id: &str, sb: &pb::SandboxSpec, net: &pb::NetworkSpec, k: usize) -> pb::EndpointSpec {
    pb::EndpointSpec {
        endpoint_id: id.into(),
        network_id: net.network_id.clone(),
        sandbox_id: sb.sandbox_id.clone(),
        netns_path: driver_agent::netns::named_path(&managed_netns_name(&sb.sandbox_id))
            .display()
            .to_string(),
        ipv4_address: format!("10.91.0.{}/24", 10 + k),
        ipv4_gateway: net.subnets[0].gateway.clone(),
        default_route_v4: true,
        ..Default::default()
    }
}

/// What the API does for one sandbox: the namespace and files, then the endpoint.
async fn create(agent: &Agent, sb: &pb::SandboxSpec, ep: &pb::EndpointSpec, net: &pb::NetworkSpec) {
    let mut report = Report::default();
    agent
        .create_sandbox(&Sandbox::from_pb(sb.clone()).unwrap(), &mut report)
        .await
        .unwrap();
    agent
        .attach(
            &Endpoint::from_pb(ep.clone(), "endpoint").unwrap(),
            &Network::from_pb(net.clone(), "network").unwrap(),
            &mut report,
        )
        .await
        .unwrap();
}

async fn pass(agent: &Agent, state: &pb::DesiredState) -> Report {
    let r = agent.reconcile(state, Depth::Changes, Instant::now()).await;
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: namespaces, links, nftables")]
async fn a_pass_of_the_changes_ensures_only_what_drifted_also_after_a_restart() {
    let host = TestNs::new().with_lo_up();
    let data = tempfile::tempdir().unwrap();
    let agent = Agent::start(host.path.clone(), data.path().to_owned())
        .await
        .unwrap()
        .with_audit(0);
    let net = network(&unique("net"), "10.91.0.0/24", "10.91.0.1");
    let mut state = pb::DesiredState {
        revision: 1,
        networks: vec![net.clone()],
        ..Default::default()
    };
    let mut guards = Vec::new();
    for k in 0..SANDBOXES {
        let (sb, guard) = sandbox(&unique("s"));
        let ep = endpoint(&unique("e"), &sb, &net, k);
        create(&agent, &sb, &ep, &net).await;
        state.sandboxes.push(sb);
        state.endpoints.push(ep);
        guards.push(guard);
    }
    let veth_count = || {
        links(&host)
            .iter()
            .filter(|l| {
                l["ifalias"]
                    .as_str()
                    .is_some_and(|a| a.starts_with("weft:endpoint:"))
            })
            .count()
    };
    assert_eq!(veth_count(), SANDBOXES);

    // Nothing changed: nothing ensured, nothing changed.
    let r = pass(&agent, &state).await;
    assert_eq!(r.ensured, 0, "{:?}", r.changes);
    assert!(r.changes.is_empty(), "{:?}", r.changes);

    // A changed spec (the sandbox's hosts file) is ensured, and only it.
    state.sandboxes[3].hosts.push_str("10.91.0.99 extra\n");
    let r = pass(&agent, &state).await;
    assert_eq!(r.ensured, 1, "{:?}", r.changes);
    let hosts = std::fs::read_to_string(
        data.path()
            .join("sandboxes")
            .join(&state.sandboxes[3].sandbox_id)
            .join("hosts"),
    )
    .unwrap();
    assert!(hosts.contains("10.91.0.99 extra"), "{hosts}");

    // A veth deleted by hand: the survey sees it; only that endpoint is made again.
    let victim = &state.endpoints[5];
    let veth = driver_agent::names::veth_host_name(&victim.endpoint_id);
    host.ip(&["link", "del", &veth]);
    assert_eq!(veth_count(), SANDBOXES - 1);
    let r = pass(&agent, &state).await;
    assert_eq!(r.ensured, 1, "{:?}", r.changes);
    assert_eq!(veth_count(), SANDBOXES);
    let target = &guards[5];
    echo_server(&target.path, "0.0.0.0:7070".parse().unwrap()).await;
    assert_talks(
        &guards[0].path,
        "10.91.0.15:7070".parse::<SocketAddr>().unwrap(),
    )
    .await;

    // A restarted agent (same data directory, nothing in memory): its record stands in for
    // entering every sandbox; the broker still learns where each namespace is.
    drop(agent);
    let agent = Agent::start(host.path.clone(), data.path().to_owned())
        .await
        .unwrap()
        .with_audit(0);
    let r = pass(&agent, &state).await;
    assert_eq!(r.ensured, 0, "{:?}", r.changes);
    for s in &state.sandboxes {
        assert!(
            agent.sandbox_netns(&s.sandbox_id).is_some(),
            "{}",
            s.sandbox_id
        );
    }

    // Drift inside a sandbox (an address removed) is beyond the survey: a pass of the changes
    // leaves it, the audit or a full pass (ApplyState) repairs it.
    guards[7].ip(&["addr", "flush", "dev", "eth0"]);
    assert!(addresses(&guards[7], "eth0").is_empty());
    let r = pass(&agent, &state).await;
    assert_eq!(r.ensured, 0);
    let r = agent.apply_state(&state, false).await;
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    assert_eq!(r.ensured, 2 * SANDBOXES + 1);
    assert_eq!(addresses(&guards[7], "eth0"), ["10.91.0.17/24"]);

    // An agent killed in the middle of changing an endpoint: its record was forgotten before
    // the change began (a tombstone in the log). Only that endpoint is ensured in full.
    drop(agent);
    let victim = &state.endpoints[9];
    let log = data.path().join(driver_agent::applied::FILE);
    let mut text = std::fs::read_to_string(&log).unwrap();
    text.push_str(&format!("e {} -\n", victim.endpoint_id));
    std::fs::write(&log, text).unwrap();
    guards[9].ip(&["addr", "flush", "dev", "eth0"]);
    let agent = Agent::start(host.path.clone(), data.path().to_owned())
        .await
        .unwrap()
        .with_audit(0);
    let r = pass(&agent, &state).await;
    assert_eq!(r.ensured, 1, "{:?}", r.changes);
    assert_eq!(addresses(&guards[9], "eth0"), ["10.91.0.19/24"]);

    // The audit (after each pass of the agent's loop) reaches drift inside a sandbox in turn:
    // with one sandbox per pass, within as many passes as there are sandboxes.
    let agent = agent.with_audit(1);
    guards[2].ip(&["addr", "flush", "dev", "eth0"]);
    let mut passes = 0;
    while addresses(&guards[2], "eth0").is_empty() {
        assert!(passes < SANDBOXES, "not audited within {passes} passes");
        assert_eq!(pass(&agent, &state).await.ensured, 0);
        let r = agent
            .audit(
                &driver_agent::reconcile::Prepared::new(&state),
                Instant::now(),
            )
            .await;
        assert!(r.failures.is_empty(), "{:?}", r.failures);
        // One sandbox, its network and its endpoint.
        assert_eq!(r.ensured, 3);
        passes += 1;
    }

    // Sandboxes no longer desired go; their records with them.
    let gone: Vec<String> = state.sandboxes.drain(..4).map(|s| s.sandbox_id).collect();
    state.endpoints.drain(..4);
    state.revision += 1;
    let r = pass(&agent, &state).await;
    assert_eq!(r.ensured, 0);
    assert_eq!(veth_count(), SANDBOXES - 4);
    for id in &gone {
        assert!(!driver_agent::netns::named_path(&managed_netns_name(id)).exists());
    }
    drop(agent);
    let record = driver_agent::applied::Applied::load(data.path());
    assert_eq!(record.len(), 2 * (SANDBOXES - 4) + 1);
}

/// What `ip -j link` shows of each link: index, name, alias, controller, up.
fn ip_view(ns: &TestNs) -> Vec<(u32, String, String, Option<u32>, bool)> {
    let all = links(ns);
    let index_of = |name: &str| {
        all.iter().find(|x| x["ifname"] == name).unwrap()["ifindex"]
            .as_u64()
            .unwrap()
    };
    let mut v: Vec<_> = all
        .iter()
        .map(|l| {
            (
                u32::try_from(l["ifindex"].as_u64().unwrap()).unwrap(),
                l["ifname"].as_str().unwrap().to_owned(),
                l["ifalias"].as_str().unwrap_or("").to_owned(),
                l["master"]
                    .as_str()
                    .map(|m| u32::try_from(index_of(m)).unwrap()),
                l["flags"].as_array().unwrap().iter().any(|f| f == "UP"),
            )
        })
        .collect();
    v.sort();
    v
}

fn survey_view(
    socket: &mut driver_agent::survey::LinkSocket,
) -> Vec<(u32, String, String, Option<u32>, bool)> {
    let mut v: Vec<_> = socket
        .links()
        .unwrap()
        .iter()
        .map(|l| (l.index, l.name.clone(), l.alias.clone(), l.controller, l.up))
        .collect();
    v.sort();
    v
}

/// The survey agrees with the kernel's own view (`ip -j link`) on every link (index, name,
/// alias, controller, up): after its one dump, and after links are added, removed and changed
/// by someone else, which it learns from the kernel's notifications without dumping again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: namespaces, links, nftables")]
async fn the_link_survey_reads_what_ip_link_shows_and_follows_changes_without_dumping() {
    let ns = TestNs::new().with_lo_up();
    ns.ip(&["link", "add", "br-s", "type", "bridge"]);
    ns.ip(&["link", "set", "br-s", "up"]);
    for i in 0..40 {
        let (a, b) = (format!("va{i}"), format!("vb{i}"));
        ns.ip(&["link", "add", &a, "type", "veth", "peer", "name", &b]);
        ns.ip(&["link", "set", &a, "alias", &format!("weft:endpoint:e{i}")]);
        if i % 2 == 0 {
            ns.ip(&["link", "set", &a, "master", "br-s", "up"]);
        }
    }
    let mut socket = driver_agent::netns::run_in(&ns.path, driver_agent::survey::LinkSocket::open)
        .await
        .unwrap()
        .unwrap();
    let first = survey_view(&mut socket);
    assert_eq!(first.len(), 82, "{first:?}");
    assert_eq!(first, ip_view(&ns));
    assert_eq!(socket.dumps(), 1);
    // Nothing changed: the same answer.
    assert_eq!(survey_view(&mut socket), first);
    // Changes by someone else, learnt from the notifications: no second dump.
    ns.ip(&["link", "del", "va1"]);
    ns.ip(&["link", "set", "va2", "alias", "changed"]);
    ns.ip(&["link", "set", "va4", "down"]);
    ns.ip(&["link", "set", "va3", "master", "br-s", "up"]);
    ns.ip(&[
        "link", "add", "vnew", "type", "veth", "peer", "name", "vnew-p",
    ]);
    let other = TestNs::new();
    ns.ip(&["link", "set", "vb6", "netns", &other.name]);
    // An alias set while the link is down comes with no notification of its own; a port
    // leaving the bridge comes with the bridge's own RTM_DELLINK (the link stays).
    ns.ip(&[
        "link", "add", "vdown", "type", "veth", "peer", "name", "vdown-p",
    ]);
    ns.ip(&["link", "set", "vdown", "alias", "weft:endpoint:down"]);
    ns.ip(&["link", "set", "va0", "nomaster"]);
    let after = survey_view(&mut socket);
    assert_eq!(after, ip_view(&ns));
    assert_eq!(after.len(), 83);
    assert!(
        after
            .iter()
            .any(|l| l.1 == "vdown" && l.2 == "weft:endpoint:down")
    );
    assert!(after.iter().any(|l| l.1 == "va0" && l.3.is_none()));
    assert_eq!(socket.dumps(), 1);

    // More links to ask for again than asking one by one is worth: one new dump, the same truth.
    let batch = tempfile::NamedTempFile::new().unwrap();
    let lines: String = (0..driver_agent::survey::REASK_MAX)
        .map(|i| format!("link add vm{i} type veth peer name vm{i}-p\n"))
        .collect();
    std::fs::write(batch.path(), lines).unwrap();
    ns.ip(&["-batch", &batch.path().display().to_string()]);
    let many = survey_view(&mut socket);
    assert_eq!(many, ip_view(&ns));
    assert_eq!(many.len(), 83 + 2 * driver_agent::survey::REASK_MAX);
    assert_eq!(socket.dumps(), 2);
}
