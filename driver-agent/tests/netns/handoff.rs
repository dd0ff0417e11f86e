//! The `weft.endpoint.handoff` endpoint option (Docker's remote drivers): the container end
//! left in the host's namespace under the given name, unconfigured; a runtime moving it into
//! its container (as dockerd does) changes nothing the agent then repairs; detach removes both
//! ends wherever the container end went.

use driver_agent::names;

use crate::{
    bridge::{endpoint, network},
    support::{TestNs, addresses, assert_talks, echo_server, gone, link, links},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: namespaces, links, nftables")]
async fn a_handed_off_end_waits_in_the_host_and_may_be_moved_by_the_runtime() {
    let (host, placeholder, container) = (TestNs::new(), TestNs::new(), TestNs::new());
    let (agent, _data) = crate::support::agent(&host).await;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let net = network(&format!("neth-{}", &id[..8]), "10.94.0.0/24", "10.94.0.1");
    let mut spec = endpoint(
        &format!("eph-{}", &id[..8]),
        &net,
        &placeholder,
        "10.94.0.2/24",
        true,
    );
    spec.mac_address = "02:42:0a:5e:00:02".into();
    spec.driver_options = [(weft_proto::HANDOFF_OPTION.to_owned(), "wdtest0".to_owned())].into();
    let ep = driver_agent::spec::Endpoint::from_pb(spec.clone(), "endpoint").unwrap();
    let net_d = driver_agent::spec::Network::from_pb(net.clone(), "network").unwrap();
    let mut report = driver_agent::report::Report::default();
    agent.attach(&ep, &net_d, &mut report).await.unwrap();

    // In the host: the host end in the bridge, the peer under the handoff name with Weft's MAC,
    // down and without an address; nothing in the sandbox's own namespace.
    let host_links = links(&host);
    let bridge = link(&host_links, &names::bridge_name(&net.network_id))
        .unwrap()
        .clone();
    let veth = link(&host_links, &names::veth_host_name(&ep.id)).unwrap();
    assert_eq!(veth["master"], bridge["ifname"]);
    let peer = link(&host_links, "wdtest0").unwrap_or_else(|| panic!("{host_links:?}"));
    assert_eq!(peer["address"], "02:42:0a:5e:00:02");
    assert!(addresses(&host, "wdtest0").is_empty());
    assert!(link(&links(&placeholder), "eth0").is_none());

    // The runtime takes it (as dockerd does: move, rename, address, up).
    host.ip(&["link", "set", "wdtest0", "netns", &container.name]);
    container.ip(&["link", "set", "wdtest0", "name", "eth0"]);
    container.ip(&["addr", "add", "10.94.0.2/24", "dev", "eth0"]);
    container.ip(&["link", "set", "eth0", "up"]);

    // Attaching again (a reconciliation) keeps the host end and makes no second peer.
    let mut again = driver_agent::report::Report::default();
    agent.attach(&ep, &net_d, &mut again).await.unwrap();
    assert!(link(&links(&host), "wdtest0").is_none());
    assert!(
        again
            .changes
            .iter()
            .all(|c| c.object != names::veth_host_name(&ep.id)),
        "{again:?}"
    );
    // It carries traffic from inside the container to the bridge's gateway address.
    echo_server(&host.path, "10.94.0.1:7003".parse().unwrap()).await;
    assert_talks(&container.path, "10.94.0.1:7003".parse().unwrap()).await;

    // Detach: both ends go, the container's too.
    agent.detach(&ep.id, &placeholder.path).await.unwrap();
    gone(&host, &names::veth_host_name(&ep.id)).await;
    gone(&container, "eth0").await;
}

/// The same on an overlay network (Docker's global-scope driver): the handed-off end, moved
/// into a container by the runtime, talks across the VXLAN tunnel to a member on another host,
/// both ways; detach removes both ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: namespaces, links, nftables")]
async fn a_handed_off_end_on_an_overlay_network_talks_to_a_member_on_another_host() {
    use crate::overlay::{Cluster, addr, agents, attach, endpoint_spec, member, overlay};

    let cluster = Cluster::new(2);
    cluster.settled().await;
    let agents = agents(&cluster).await;
    let (ours, theirs) = (member(0, "10.61.0.10"), member(1, "10.61.0.11"));
    let container = TestNs::new();
    let net_id = crate::grpc::unique("ovh");
    let subnet = ("10.61.0.0/24", "10.61.0.1");
    let all = [&ours, &theirs];
    let net0 = overlay(&net_id, 4343, subnet, &all, 0);
    let mut spec = endpoint_spec(&ours, &net0);
    spec.driver_options = [(weft_proto::HANDOFF_OPTION.to_owned(), "wdovl0".to_owned())].into();
    attach(&agents[0].0, spec, &net0).await;
    let net1 = overlay(&net_id, 4343, subnet, &all, 1);
    attach(&agents[1].0, endpoint_spec(&theirs, &net1), &net1).await;

    // Host 0: the host end in the overlay's bridge, the peer waiting under the handoff name at
    // the overlay's MTU, nothing in the placeholder sandbox.
    let h0 = &cluster.hosts[0];
    let host_links = links(h0);
    let veth = link(&host_links, &names::veth_host_name(&ours.id)).unwrap();
    assert_eq!(veth["master"], names::bridge_name(&net_id).as_str());
    let peer = link(&host_links, "wdovl0").unwrap_or_else(|| panic!("{host_links:?}"));
    assert_eq!(peer["mtu"], 1450);
    assert!(addresses(h0, "wdovl0").is_empty());
    assert!(link(&links(&ours.sandbox), "eth0").is_none());

    // The runtime takes it, then traffic crosses the tunnel both ways.
    h0.ip(&["link", "set", "wdovl0", "netns", &container.name]);
    container.ip(&["link", "set", "wdovl0", "name", "eth0"]);
    container.ip(&["addr", "add", "10.61.0.10/24", "dev", "eth0"]);
    container.ip(&["link", "set", "eth0", "up"]);
    echo_server(&theirs.sandbox.path, addr(&theirs.ip, 7004)).await;
    echo_server(&container.path, addr(&ours.ip, 7005)).await;
    assert_talks(&container.path, addr(&theirs.ip, 7004)).await;
    assert_talks(&theirs.sandbox.path, addr(&ours.ip, 7005)).await;

    agents[0]
        .0
        .detach(&ours.id, &ours.sandbox.path)
        .await
        .unwrap();
    gone(h0, &names::veth_host_name(&ours.id)).await;
    gone(&container, "eth0").await;
    agents[1]
        .0
        .detach(&theirs.id, &theirs.sandbox.path)
        .await
        .unwrap();
}
