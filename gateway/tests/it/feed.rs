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

weft_testkit::on_both_backends!(
    a_hosts_revision_moves_only_with_changes_to_that_host,
    the_changes_since_a_revision_merged_give_the_whole_state,
);

pub(crate) fn on(name: &str, host: &str, network: &str) -> pb::CreateSandboxRequest {
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
    for (name, addr) in [("h1", addr1), ("h2", addr2)] {
        s.registry_for(name)
            .await
            .register_host(register(name, &addr.to_string()))
            .await
            .unwrap();
    }
    // What the host's heartbeat is told, and what its desired state says: always the same.
    let s = &s;
    let revision = |host: &'static str| async move {
        let mut reg = s.registry_for(host).await;
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
            .get_desired_state(pb::GetDesiredStateRequest {
                host: host.into(),
                ..Default::default()
            })
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
    let mut sb = sandboxes(s);
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

/// The host's whole state, and the answer to "what changed since `since`".
async fn states(
    s: &Stack,
    host: &str,
    since: u64,
) -> (
    weft_proto::agent::v1::DesiredState,
    pb::GetDesiredStateResponse,
) {
    let mut reg = s.registry_for(host).await;
    let whole = reg
        .get_desired_state(pb::GetDesiredStateRequest {
            host: host.into(),
            since_revision: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!whole.changes_only);
    let changes = reg
        .get_desired_state(pb::GetDesiredStateRequest {
            host: host.into(),
            since_revision: since,
        })
        .await
        .unwrap()
        .into_inner();
    (whole.state.unwrap(), changes)
}

/// An agent holding its host's state at one revision asks for what changed since; merged
/// (`weft_runtime::desired::apply_changes`, what the agent does), that is exactly the whole
/// state, after creates, connects, disconnects and deletes on its host and others. What the
/// events cannot tell (a network updated, a revision never given) gets the whole state.
async fn the_changes_since_a_revision_merged_give_the_whole_state(b: Backend) {
    let s = Stack::start(b).await;
    let (_a1, addr1, _stop1) = fake_agent().await;
    let (_a2, addr2, _stop2) = fake_agent().await;
    for (name, addr) in [("h1", addr1), ("h2", addr2)] {
        s.registry_for(name)
            .await
            .register_host(register(name, &addr.to_string()))
            .await
            .unwrap();
    }
    let mut nets = s.networks();
    for (name, subnet) in [
        ("one", "10.97.0.0/24"),
        ("two", "10.97.1.0/24"),
        ("three", "10.97.2.0/24"),
    ] {
        nets.create_network(with_subnet(name, subnet))
            .await
            .unwrap();
    }
    let mut sb = sandboxes(&s);
    for (name, host) in [("a", "h1"), ("b", "h1"), ("c", "h2"), ("d", "h1")] {
        sb.create_sandbox(on(name, host, "one")).await.unwrap();
    }
    let (mut held, _) = states(&s, "h1", 0).await;
    let check = |held: &mut weft_proto::agent::v1::DesiredState,
                 whole: weft_proto::agent::v1::DesiredState,
                 changes: pb::GetDesiredStateResponse| {
        assert!(changes.changes_only, "{changes:?}");
        weft_runtime::desired::apply_changes(
            held,
            changes.state.unwrap(),
            &changes.removed_sandboxes,
        );
        assert_eq!(*held, whole);
    };

    // Nothing changed: nothing sent but the revision.
    let (whole, changes) = states(&s, "h1", held.revision).await;
    let got = changes.state.clone().unwrap();
    assert!(
        got.sandboxes.is_empty() && changes.removed_sandboxes.is_empty(),
        "{changes:?}"
    );
    check(&mut held, whole, changes);

    // Creates here and elsewhere, a connect (a new network used), a sandbox gone, a disconnect.
    sb.create_sandbox(on("e", "h1", "two")).await.unwrap();
    sb.create_sandbox(on("f", "h2", "two")).await.unwrap();
    sb.connect(pb::ConnectRequest {
        sandbox: "a".into(),
        network: "three".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    sb.delete_sandbox(pb::DeleteSandboxRequest {
        sandbox: "b".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let (whole, changes) = states(&s, "h1", held.revision).await;
    let mut names: Vec<&str> = changes
        .state
        .as_ref()
        .unwrap()
        .sandboxes
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["a", "e"], "only what changed on h1");
    assert_eq!(changes.removed_sandboxes.len(), 1);
    check(&mut held, whole, changes);
    sb.disconnect(pb::DisconnectRequest {
        sandbox: "a".into(),
        network: "three".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    sb.delete_sandbox(pb::DeleteSandboxRequest {
        sandbox: "e".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let (whole, changes) = states(&s, "h1", held.revision).await;
    check(&mut held, whole.clone(), changes);
    assert!(
        held.networks.iter().all(|n| n.name == "one"),
        "networks no endpoint uses are gone: {:?}",
        held.networks
    );

    // A network updated: the whole state. A revision from nowhere: the whole state.
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
    let (whole, changes) = states(&s, "h1", held.revision).await;
    assert!(!changes.changes_only);
    assert_eq!(changes.state.unwrap(), whole);
    let (whole, changes) = states(&s, "h1", whole.revision + 1_000).await;
    assert!(!changes.changes_only);
    assert_eq!(changes.state.unwrap(), whole);
}
