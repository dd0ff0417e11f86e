//! `HostService.RemoveHost`: a host goes with its sandboxes (their addresses back in IPAM, their
//! events, the agent asked while it is up), its tokens are revoked, and it cannot be the
//! gateway's own, nor up unless forced. A host down past `--host-down-grace` keeps its
//! addresses but has its endpoints marked down until it is back. A gateway without a CA key
//! makes no join tokens.

use std::time::Duration;

use tokio_stream::StreamExt as _;
use tonic::Code;
use weft_proto::{gateway::v1 as pb, ipam::v1 as ipb};
use weft_testkit::Backend;

use crate::{
    harness::{Stack, fake_agent, sandboxes, with_subnet},
    hosts::register,
};

weft_testkit::on_both_backends!(
    a_removed_host_goes_with_its_sandboxes_addresses_and_tokens,
    a_host_down_past_its_grace_has_its_endpoints_marked_down_until_it_is_back,
);

fn on(host: &str, name: &str, network: &str) -> pb::CreateSandboxRequest {
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

async fn allocations(s: &Stack) -> Vec<ipb::Allocation> {
    s.ipam()
        .list_allocations(ipb::ListAllocationsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .allocations
}

async fn a_removed_host_goes_with_its_sandboxes_addresses_and_tokens(b: Backend) {
    // Nothing marks hosts down in the background here: the test does, for h3.
    let s = Stack::start_with(b, &["--heartbeat-interval", "100ms"]).await;
    let (agent2, addr2, _stop2) = fake_agent().await;
    let mut reg = s.registry_for("h2").await;
    reg.register_host(register("h2", &addr2.to_string()))
        .await
        .unwrap();
    s.networks()
        .create_network(with_subnet("front", "10.96.0.0/24"))
        .await
        .unwrap();
    let mut sb = sandboxes(&s);
    sb.create_sandbox(pb::CreateSandboxRequest {
        port_mappings: vec![pb::PortMapping {
            host_port: 8080,
            container_port: 80,
            ..Default::default()
        }],
        ..on("h2", "web", "front")
    })
    .await
    .unwrap();
    sb.create_sandbox(on("h2", "db", "front")).await.unwrap();
    sb.create_sandbox(on("local", "stays", "front"))
        .await
        .unwrap();
    let before = allocations(&s).await;

    let mut hosts = s.hosts();
    let remove = |name: &str, force: bool| pb::RemoveHostRequest {
        name: name.into(),
        force,
    };
    // Not the gateway's own host, not one it does not know, not one that is up unforced.
    let own = hosts.remove_host(remove("local", true)).await.unwrap_err();
    assert_eq!(own.code(), Code::FailedPrecondition, "{own:?}");
    assert!(own.message().contains("own host"), "{own:?}");
    let unknown = hosts.remove_host(remove("nope", false)).await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
    let up = hosts.remove_host(remove("h2", false)).await.unwrap_err();
    assert_eq!(up.code(), Code::FailedPrecondition, "{up:?}");
    assert!(up.message().contains("is up"), "{up:?}");

    let mut watch = s
        .events()
        .watch(pb::WatchRequest {
            skip_snapshot: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let r = hosts
        .remove_host(remove("h2", true))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.host.unwrap().name, "h2");
    let mut gone = r.sandboxes.clone();
    gone.sort();
    assert_eq!(gone, ["db", "web"]);

    // Events: each sandbox's endpoint and the sandbox, then the host.
    let mut kinds = Vec::new();
    while kinds.last() != Some(&pb::EventKind::HostRemoved) {
        let e = tokio::time::timeout(Duration::from_secs(5), watch.next())
            .await
            .expect("events within 5 s")
            .unwrap()
            .unwrap();
        kinds.push(pb::EventKind::try_from(e.kind).unwrap());
        if e.kind == pb::EventKind::HostRemoved as i32 {
            assert!(matches!(e.object, Some(pb::event::Object::Host(ref h)) if h.name == "h2"));
        }
    }
    let removed = |k| kinds.iter().filter(|x| **x == k).count();
    assert_eq!(removed(pb::EventKind::SandboxRemoved), 2, "{kinds:?}");
    assert_eq!(removed(pb::EventKind::EndpointDisconnected), 2, "{kinds:?}");

    // The host was up (forced): its agent was asked to remove the sandboxes.
    assert!(agent2.calls.lock().unwrap().attached_now().is_empty());
    // Records, addresses and the host are gone; the other host's sandbox stays.
    let left: Vec<String> = sb
        .list_sandboxes(pb::ListSandboxesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .sandboxes
        .into_iter()
        .map(|x| x.name)
        .collect();
    assert_eq!(left, ["stays"]);
    let after = allocations(&s).await;
    assert_eq!(after.len() + 2, before.len(), "{before:?}\n{after:?}");
    let names: Vec<String> = hosts
        .list_hosts(pb::ListHostsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .hosts
        .into_iter()
        .map(|h| h.name)
        .collect();
    assert_eq!(names, ["local"]);

    // Its agent's token was revoked with it.
    let beat = reg
        .heartbeat(pb::HeartbeatRequest {
            host: "h2".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(beat.code(), Code::Unauthenticated, "{beat:?}");

    // A host that is down goes without force (and without asking its agent).
    let mut reg3 = s.registry_for("h3").await;
    reg3.register_host(register("h3", "127.0.0.1:1"))
        .await
        .unwrap();
    weft_testkit::wait_for(Duration::from_secs(10), "h3 marked down", || async {
        let marked = s.gateway_handle().mark_stale_hosts_down().await.unwrap();
        marked.contains(&"h3".to_owned()).then_some(())
    })
    .await;
    hosts.remove_host(remove("h3", false)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_without_a_ca_key_makes_no_join_tokens() {
    let s = Stack::start(Backend::Sqlite).await;
    let err = s
        .hosts()
        .create_join_token(pb::CreateJoinTokenRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("--tls-ca-key"), "{err:?}");
}

/// The next ENDPOINT_UPDATED, within 5 s.
async fn next_update(watch: &mut tonic::Streaming<pb::Event>) -> pb::Event {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let e = watch.next().await.unwrap().unwrap();
            if e.kind == pb::EventKind::EndpointUpdated as i32 {
                return e;
            }
        }
    })
    .await
    .expect("an ENDPOINT_UPDATED within 5 s")
}

async fn endpoint_of(s: &Stack, sandbox: &str) -> pb::Endpoint {
    sandboxes(s)
        .get_sandbox(pb::GetSandboxRequest {
            sandbox: sandbox.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .endpoints
        .remove(0)
}

async fn a_host_down_past_its_grace_has_its_endpoints_marked_down_until_it_is_back(b: Backend) {
    let s = Stack::start_with(
        b,
        &[
            "--heartbeat-interval",
            "100ms",
            "--host-down-grace",
            "300ms",
        ],
    )
    .await;
    let (_agent2, addr2, _stop2) = fake_agent().await;
    let mut reg = s.registry_for("h2").await;
    reg.register_host(register("h2", &addr2.to_string()))
        .await
        .unwrap();
    s.networks()
        .create_network(with_subnet("back", "10.97.0.0/24"))
        .await
        .unwrap();
    sandboxes(&s)
        .create_sandbox(on("h2", "far", "back"))
        .await
        .unwrap();
    let before = allocations(&s).await;
    let mut watch = s
        .events()
        .watch(pb::WatchRequest {
            skip_snapshot: true,
            kinds: vec![pb::EventKind::EndpointUpdated as i32],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();

    // Silent: down, then (past the grace) its endpoint is marked down, once.
    weft_testkit::wait_for(Duration::from_secs(10), "h2 marked down", || async {
        let marked = s.gateway_handle().mark_stale_hosts_down().await.unwrap();
        marked.contains(&"h2".to_owned()).then_some(())
    })
    .await;
    let n = weft_testkit::wait_for(Duration::from_secs(10), "endpoints marked down", || async {
        let n = s
            .gateway_handle()
            .mark_endpoints_of_long_down_hosts()
            .await
            .unwrap();
        (n > 0).then_some(n)
    })
    .await;
    assert_eq!(n, 1);
    assert_eq!(
        s.gateway_handle()
            .mark_endpoints_of_long_down_hosts()
            .await
            .unwrap(),
        0
    );
    let ev = next_update(&mut watch).await;
    assert!(
        matches!(ev.object, Some(pb::event::Object::Endpoint(ref e)) if e.host_down && e.sandbox_name == "far"),
        "{ev:?}"
    );
    assert!(endpoint_of(&s, "far").await.host_down);
    // Its address stays reserved.
    assert_eq!(allocations(&s).await.len(), before.len());

    // Back: the endpoint is up again, with an event.
    reg.heartbeat(pb::HeartbeatRequest {
        host: "h2".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let ev = next_update(&mut watch).await;
    assert!(
        matches!(ev.object, Some(pb::event::Object::Endpoint(ref e)) if !e.host_down),
        "{ev:?}"
    );
    assert!(!endpoint_of(&s, "far").await.host_down);
}
