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
