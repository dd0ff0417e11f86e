//! Overlay networks span hosts: every host with endpoints on one is given the network's
//! endpoints on the other hosts as peers (MAC, addresses, the remote host's VTEP), in its
//! attaches, in its desired state, and pushed at once when a peer comes or goes.

use std::time::Duration;

use weft_proto::{agent::v1 as apb, gateway::v1 as pb};
use weft_testkit::{Backend, fake_agent::FakeAgent};

use crate::harness::{Stack, fake_agent, sandboxes, with_subnet};

weft_testkit::on_both_backends!(overlay_peers_reach_every_host_of_the_network,);

fn register(name: &str, agent: &str, underlay: &str) -> pb::RegisterHostRequest {
    pb::RegisterHostRequest {
        name: name.into(),
        agent_address: agent.into(),
        addresses: vec![underlay.into()],
        capabilities: Some(pb::HostCapabilities {
            drivers: vec!["bridge".into(), "overlay".into()],
            bridge: true,
            veth: true,
            vxlan: true,
            nftables: true,
            ..Default::default()
        }),
        agent_version: "test".into(),
        ..Default::default()
    }
}

fn on(host: &str, name: &str) -> pb::CreateSandboxRequest {
    pb::CreateSandboxRequest {
        name: name.into(),
        host: host.into(),
        networks: vec![pb::NetworkAttachment {
            network: "ov".into(),
            settings: None,
        }],
        ..Default::default()
    }
}

/// The peers of the last EnsureNetwork `agent` was sent for `network_id`, once it has been sent
/// `count` of them.
async fn pushed(agent: &FakeAgent, network_id: &str, count: usize) -> Vec<apb::OverlayPeer> {
    weft_testkit::wait_for(Duration::from_secs(10), "a push of the peers", || async {
        let calls = agent.calls.lock().unwrap();
        let mine: Vec<&apb::EnsureNetworkRequest> = calls
            .ensured
            .iter()
            .filter(|r| {
                r.network
                    .as_ref()
                    .is_some_and(|n| n.network_id == network_id)
            })
            .collect();
        (mine.len() >= count).then(|| mine[count - 1].network.clone().unwrap().peers)
    })
    .await
}

async fn overlay_peers_reach_every_host_of_the_network(b: Backend) {
    let s = Stack::start(b).await;
    let (agent2, addr2, _stop2) = fake_agent().await;
    let (agent3, addr3, _stop3) = fake_agent().await;
    for (host, addr, underlay) in [("h2", addr2, "192.0.2.2"), ("h3", addr3, "192.0.2.3")] {
        s.registry_for(host)
            .await
            .register_host(register(host, &addr.to_string(), underlay))
            .await
            .unwrap();
    }
    let net = s
        .networks()
        .create_network(pb::CreateNetworkRequest {
            driver: "overlay".into(),
            ..with_subnet("ov", "10.98.0.0/24")
        })
        .await
        .unwrap()
        .into_inner();
    let mut sb = sandboxes(&s);
    let a = sb.create_sandbox(on("h2", "a")).await.unwrap().into_inner();
    let a_ep = a.endpoints[0].clone();
    // h2 alone: no peers.
    let first = agent2.calls.lock().unwrap().attached[0].clone();
    let spec = first.network.unwrap();
    assert!(spec.peers.is_empty());
    assert!(spec.vni >= 4096, "{}", spec.vni);

    // b on h3 is attached knowing a (on h2's VTEP); h2 is told of b at once.
    let b_sb = sb.create_sandbox(on("h3", "b")).await.unwrap().into_inner();
    let b_ep = b_sb.endpoints[0].clone();
    let at_h3 = agent3.calls.lock().unwrap().attached[0].clone();
    let peers = at_h3.network.unwrap().peers;
    assert_eq!(peers.len(), 1, "{peers:?}");
    assert_eq!(peers[0].endpoint_id, a_ep.id);
    assert_eq!(peers[0].vtep_address, "192.0.2.2");
    assert_eq!(peers[0].mac_address, a_ep.mac_address);
    assert_eq!(
        peers[0].ipv4_address,
        a_ep.ipv4_address.split('/').next().unwrap()
    );
    let told = pushed(&agent2, &net.id, 1).await;
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!(told[0].endpoint_id, b_ep.id);
    assert_eq!(told[0].vtep_address, "192.0.2.3");

    // h2's desired state has the same peers (its reconciliation keeps them).
    let state = s
        .registry_for("h2")
        .await
        .get_desired_state(pb::GetDesiredStateRequest {
            host: "h2".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .state
        .unwrap();
    let ov = state
        .networks
        .iter()
        .find(|n| n.network_id == net.id)
        .unwrap();
    assert_eq!(ov.peers, told);

    // b goes: h2 is told its peer list is empty.
    sb.delete_sandbox(pb::DeleteSandboxRequest {
        sandbox: "b".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(pushed(&agent2, &net.id, 2).await.is_empty());
    // Nothing was pushed to the host that made the change.
    assert!(
        agent3
            .calls
            .lock()
            .unwrap()
            .ensured
            .iter()
            .all(|r| r.network.as_ref().is_some_and(|n| n.network_id != net.id))
    );
}
