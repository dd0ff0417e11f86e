//! The AgentService driven through a tonic client, with the agent managing a test namespace.

use std::{sync::Arc, time::Duration};

use driver_agent::names;
use tonic::Code;
use weft_proto::agent::v1::{self as pb, agent_service_client::AgentServiceClient};

use crate::{
    bridge::{endpoint, network},
    support::{TestNs, assert_talks, echo_server, gone, link, links},
};

/// Serves an agent for `host` on a free loopback port; stops when the returned sender drops.
/// The temporary directory holds the agent's files.
pub async fn serve(
    host: &TestNs,
) -> (
    AgentServiceClient<tonic::transport::Channel>,
    tokio::sync::oneshot::Sender<()>,
    tempfile::TempDir,
) {
    let (agent, data) = crate::support::agent(host).await;
    let agent = Arc::new(agent);
    let (addr, stop) = weft_testkit::serve_with(Duration::from_secs(1), |l, timing, stop| {
        driver_agent::serve(agent, l, timing, stop)
    })
    .await;
    (
        AgentServiceClient::new(weft_testkit::channel(addr)),
        stop,
        data,
    )
}

/// Detaches endpoint `ep` of `net` from the sandbox `sb` and expects no failure.
async fn detach(
    client: &mut AgentServiceClient<tonic::transport::Channel>,
    ep: &str,
    net: &pb::NetworkSpec,
    sb: &TestNs,
) {
    let detached = client
        .detach(pb::DetachRequest {
            endpoint_id: ep.to_owned(),
            network_id: net.network_id.clone(),
            sandbox_id: sb.name.clone(),
            netns_path: sb.path.display().to_string(),
            revision: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(detached.failures.is_empty(), "{detached:?}");
}

pub fn unique(tag: &str) -> String {
    format!("{tag}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: namespaces, links, nftables")]
async fn attach_detach_and_remove_network_through_grpc() {
    let (host, sb1, sb2) = (TestNs::new(), TestNs::new(), TestNs::new());
    let (mut client, _stop, _data) = serve(&host).await;
    let net = network(&unique("net"), "10.96.0.0/24", "10.96.0.1");

    let ensured = client
        .ensure_network(pb::EnsureNetworkRequest {
            network: Some(net.clone()),
            revision: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let bridge = names::bridge_name(&net.network_id);
    assert_eq!(ensured.network.unwrap().devices, [bridge.as_str()]);
    assert!(!ensured.changes.is_empty());

    let ep1 = unique("ep1");
    let mut spec = endpoint(&ep1, &net, &sb1, "10.96.0.2/24", true);
    spec.mac_address = "02:42:0a:60:00:02".into();
    let attached = client
        .attach(pb::AttachRequest {
            endpoint: Some(spec),
            network: Some(net.clone()),
            revision: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let iface = attached.interface.unwrap();
    assert_eq!(iface.name, "eth0");
    assert_eq!(iface.mac_address, "02:42:0a:60:00:02");
    assert_eq!(iface.addresses, ["10.96.0.2/24"]);
    assert_eq!(iface.mtu, 1500);
    assert_eq!(attached.default_route_v4_endpoint_id, ep1);

    let ep2 = unique("ep2");
    let mut spec2 = endpoint(&ep2, &net, &sb2, "10.96.0.3/24", false);
    spec2.interface_name = "eth1".into();
    let attached2 = client
        .attach(pb::AttachRequest {
            endpoint: Some(spec2),
            network: Some(net.clone()),
            revision: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(attached2.interface.unwrap().name, "eth1");
    assert_eq!(attached2.default_route_v4_endpoint_id, "");

    echo_server(&sb1.path, "10.96.0.2:7100".parse().unwrap()).await;
    assert_talks(&sb2.path, "10.96.0.2:7100".parse().unwrap()).await;

    detach(&mut client, &ep2, &net, &sb2).await;
    gone(&host, &names::veth_host_name(&ep2)).await;

    let removed = client
        .remove_network(pb::RemoveNetworkRequest {
            network_id: net.network_id.clone(),
            revision: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(removed.failures.is_empty(), "{removed:?}");
    let host_links = links(&host);
    assert!(link(&host_links, &bridge).is_none(), "{host_links:?}");
    assert!(link(&host_links, &names::veth_host_name(&ep1)).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: namespaces, links, nftables")]
async fn capabilities_and_refusals_through_grpc() {
    let (host, sb) = (TestNs::new(), TestNs::new());
    let (mut client, _stop, _data) = serve(&host).await;
    // What this kernel makes, asked of it directly: the refusals below depend on it.
    let (has_ipvlan, _, has_vlan) = crate::capabilities::kernel_link_kinds(&TestNs::new());
    // A driver this kernel lacks is FAILED_PRECONDITION; one it has that the agent does not
    // program yet is UNIMPLEMENTED.
    let refused = |has: bool| {
        if has {
            Code::Unimplemented
        } else {
            Code::FailedPrecondition
        }
    };

    let caps = client
        .get_capabilities(pb::GetCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    let f = caps.features.unwrap();
    assert!(f.bridge && f.veth && f.macvlan && f.vxlan, "{f:?}");
    assert_eq!((f.ipvlan, f.vlan), (has_ipvlan, has_vlan), "{f:?}");
    assert!(
        caps.drivers.contains(&"bridge".to_owned()),
        "{:?}",
        caps.drivers
    );
    assert!(
        caps.drivers.contains(&"macvlan".to_owned()),
        "{:?}",
        caps.drivers
    );
    assert!(
        !caps.drivers.contains(&"ipvlan".to_owned()),
        "{:?}",
        caps.drivers
    );
    assert_eq!(caps.agent_version, env!("CARGO_PKG_VERSION"));
    assert!(f.nftables && f.nftables_nat, "{f:?}");
    // A fresh namespace forwards nothing (yet).
    assert!(!caps.ipv4_forwarding && !caps.ipv6_forwarding);
    // The host's own address counts as underlay; a Weft bridge's gateway does not.
    let status = std::process::Command::new("ip")
        .args([
            "-n", &host.name, "link", "add", "up0", "type", "veth", "peer", "name", "up1",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let status = std::process::Command::new("ip")
        .args([
            "-n",
            &host.name,
            "addr",
            "add",
            "192.0.2.10/24",
            "dev",
            "up0",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let net = network(&unique("net"), "10.97.9.0/24", "10.97.9.1");
    client
        .ensure_network(pb::EnsureNetworkRequest {
            network: Some(net.clone()),
            revision: 0,
        })
        .await
        .unwrap();
    let caps = client
        .get_capabilities(pb::GetCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(caps.addresses, ["192.0.2.10"]);
    // The network masquerades: the agent turned IPv4 forwarding on, and says so.
    assert!(caps.ipv4_forwarding && !caps.ipv6_forwarding);
    client
        .remove_network(pb::RemoveNetworkRequest {
            network_id: net.network_id.clone(),
            revision: 0,
        })
        .await
        .unwrap();

    // A driver the kernel lacks: FAILED_PRECONDITION naming it, and nothing created (on a
    // kernel with ipvlan: UNIMPLEMENTED naming it).
    let mut ipvlan = network(&unique("net"), "10.97.0.0/24", "10.97.0.1");
    ipvlan.driver = pb::Driver::Ipvlan as i32;
    ipvlan.parent = "eth0".into();
    let err = client
        .attach(pb::AttachRequest {
            endpoint: Some(endpoint(&unique("ep"), &ipvlan, &sb, "10.97.0.2/24", true)),
            network: Some(ipvlan.clone()),
            revision: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), refused(has_ipvlan), "{err:?}");
    assert!(err.message().contains("ipvlan"), "{}", err.message());
    let err = client
        .ensure_network(pb::EnsureNetworkRequest {
            network: Some(ipvlan),
            revision: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), refused(has_ipvlan), "{err:?}");
    // Macvlan on a VLAN sub-interface needs 802.1Q (missing on this project's CI kernel).
    let mut macvlan = network(&unique("net"), "10.97.1.0/24", "10.97.1.1");
    macvlan.driver = pb::Driver::Macvlan as i32;
    macvlan.parent = "eth0.10".into();
    let err = client
        .ensure_network(pb::EnsureNetworkRequest {
            network: Some(macvlan),
            revision: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), refused(has_vlan), "{err:?}");
    if !has_vlan {
        assert!(err.message().contains("802.1Q"), "{}", err.message());
    }

    // Bad input: INVALID_ARGUMENT naming the field and the value.
    let mut bad = network(&unique("net"), "10.97.2.0/24", "10.97.2.1");
    bad.bridge_name = "a-name-that-is-far-too-long".into();
    let err = client
        .ensure_network(pb::EnsureNetworkRequest {
            network: Some(bad),
            revision: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message()
            .contains("network.bridge_name \"a-name-that-is-far-too-long\""),
        "{}",
        err.message()
    );

    // ApplyState needs a state; a dry run of an empty one repairs nothing.
    let err = client
        .apply_state(pb::ApplyStateRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("state"), "{}", err.message());
    let dry = client
        .apply_state(pb::ApplyStateRequest {
            state: Some(pb::DesiredState {
                revision: 7,
                ..Default::default()
            }),
            dry_run: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(dry.revision, 7);
    assert!(dry.failures.is_empty(), "{dry:?}");

    // Nothing was created in the managed namespace by any of the refused calls: lo and the
    // test's own veth pair only.
    let host_links = links(&host);
    assert_eq!(host_links.len(), 3, "{host_links:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: namespaces, links, nftables")]
async fn the_binary_programs_the_namespace_named_by_its_netns_flag() {
    let host = TestNs::new();
    let data = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_driver-agent");
    let svc = weft_testkit::ServiceProcess::start(
        bin,
        &[
            "--insecure-plaintext".to_owned(),
            "--netns".to_owned(),
            host.path.display().to_string(),
            "--data-dir".to_owned(),
            data.path().display().to_string(),
        ],
    )
    .await;
    let mut client = AgentServiceClient::new(weft_testkit::channel(svc.addr));
    let net = network(&unique("net"), "10.96.9.0/24", "10.96.9.1");
    client
        .ensure_network(pb::EnsureNetworkRequest {
            network: Some(net.clone()),
            revision: 0,
        })
        .await
        .unwrap();
    let bridge = names::bridge_name(&net.network_id);
    assert!(link(&links(&host), &bridge).is_some(), "{}", svc.log_text());
    drop(svc);
}

#[test]
fn the_binary_refuses_a_missing_netns() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_driver-agent"))
        .args([
            "--insecure-plaintext",
            "--netns",
            "/run/netns/wft-t-missing",
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    weft_testkit::logs::keep_output("driver-agent", &out);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/run/netns/wft-t-missing"), "{err}");
}

/// The last Detach from a network removes its bridge; a pass whose desired state was read
/// before that Detach (the network and the endpoint still in it, as `podman rm` of several
/// containers at once can produce) brings back neither the bridge nor the endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: namespaces, links, nftables")]
async fn a_state_read_before_the_last_detach_does_not_bring_the_bridge_back() {
    let (host, sb) = (TestNs::new(), TestNs::new());
    let (mut client, _stop, _data) = serve(&host).await;
    let net = network(&unique("net"), "10.97.0.0/24", "10.97.0.1");
    let bridge = names::bridge_name(&net.network_id);
    let ep = unique("ep");
    let spec = endpoint(&ep, &net, &sb, "10.97.0.2/24", true);
    client
        .attach(pb::AttachRequest {
            endpoint: Some(spec.clone()),
            network: Some(net.clone()),
            revision: 0,
        })
        .await
        .unwrap();
    let before = pb::DesiredState {
        revision: 1,
        networks: vec![net.clone()],
        endpoints: vec![spec],
        ..Default::default()
    };
    detach(&mut client, &ep, &net, &sb).await;
    gone(&host, &bridge).await;
    gone(&host, &names::veth_host_name(&ep)).await;

    let applied = client
        .apply_state(pb::ApplyStateRequest {
            state: Some(before),
            dry_run: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(applied.failures.is_empty(), "{applied:?}");
    let host_links = links(&host);
    assert!(link(&host_links, &bridge).is_none(), "{host_links:?}");
    assert!(link(&host_links, &names::veth_host_name(&ep)).is_none());
    assert!(
        !applied.changes.iter().any(|c| c.object == bridge),
        "{applied:?}"
    );
}
