//! The per-host change feed: a host's desired-state revision (what its agent's heartbeat is
//! told, and what GetDesiredState reports) moves with changes to that host only: its sandboxes,
//! their endpoints, the networks those use. Changes elsewhere in the cluster leave it alone,
//! so an agent reconciles when its own host changes, not on every revision of the cluster.

use weft_proto::gateway::v1 as pb;
use weft_testkit::Backend;

use crate::{
    harness::{Stack, fake_agent, sandboxes, with_subnet},
    hosts::register,
};

weft_testkit::on_both_backends!(a_hosts_revision_moves_only_with_changes_to_that_host,);

fn on(name: &str, host: &str, network: &str) -> pb::CreateSandboxRequest {
    pb::CreateSandboxRequest {
        name: name.into(),
        host: host.into(),
        networks: vec![pb::NetworkAttachment {
            network: network.into(),
            settings: None,
        }],
        ..Default::default()
    }
}

async fn a_hosts_revision_moves_only_with_changes_to_that_host(b: Backend) {
    let s = Stack::start(b).await;
    let (_a1, addr1, _stop1) = fake_agent().await;
    let (_a2, addr2, _stop2) = fake_agent().await;
    let mut reg = s.registry();
    for (name, addr) in [("h1", addr1), ("h2", addr2)] {
        reg.register_host(register(name, &addr.to_string()))
            .await
            .unwrap();
    }
    // What the host's heartbeat is told, and what its desired state says: always the same.
    let revision = |host: &'static str| {
        let mut reg = s.registry();
        async move {
            let beat = reg
                .heartbeat(pb::HeartbeatRequest {
                    host: host.into(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .desired_revision;
            let state = reg
                .get_desired_state(pb::GetDesiredStateRequest { host: host.into() })
                .await
                .unwrap()
                .into_inner()
                .state
                .unwrap();
            assert_eq!(
                state.revision, beat,
                "{host}: heartbeat and desired state agree"
            );
            beat
        }
    };
    let mut nets = s.networks();
    nets.create_network(with_subnet("one", "10.96.0.0/24"))
        .await
        .unwrap();
    nets.create_network(with_subnet("two", "10.96.1.0/24"))
        .await
        .unwrap();
    let (h1, h2) = (revision("h1").await, revision("h2").await);

    // A sandbox on h1 moves h1, not h2.
    let mut sb = sandboxes(&s);
    sb.create_sandbox(on("a", "h1", "one")).await.unwrap();
    let h1_after = revision("h1").await;
    assert!(h1_after > h1, "{h1_after} > {h1}");
    assert_eq!(revision("h2").await, h2);

    // Many changes elsewhere (new networks, sandboxes on h2) leave h1 where it was.
    for i in 0..5 {
        nets.create_network(with_subnet(
            &format!("x{i}"),
            &format!("10.96.{}.0/24", 10 + i),
        ))
        .await
        .unwrap();
    }
    sb.create_sandbox(on("b", "h2", "two")).await.unwrap();
    assert_eq!(revision("h1").await, h1_after);
    let h2_after = revision("h2").await;
    assert!(h2_after > h2);

    // Updating a network moves the hosts with endpoints on it, only them.
    nets.update_network(pb::UpdateNetworkRequest {
        network: "one".into(),
        dns_servers: vec!["192.0.2.53".into()],
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["dns_servers".into()],
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let h1_updated = revision("h1").await;
    assert!(h1_updated > h1_after);
    assert_eq!(revision("h2").await, h2_after);

    // Connect and Disconnect move the sandbox's host; deleting a sandbox too.
    sb.connect(pb::ConnectRequest {
        sandbox: "a".into(),
        network: "two".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let h1_connected = revision("h1").await;
    assert!(h1_connected > h1_updated);
    assert_eq!(revision("h2").await, h2_after);
    sb.delete_sandbox(pb::DeleteSandboxRequest {
        sandbox: "b".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(revision("h2").await > h2_after);
    assert_eq!(revision("h1").await, h1_connected);
}
