//! Hosts and their agents: registration, heartbeats and down marking, placement on a
//! registered host's agent, and the desired state an agent fetches to reconcile.

use std::time::Duration;

use tokio_stream::StreamExt as _;
use tonic::Code;
use weft_proto::gateway::v1 as pb;
use weft_testkit::Backend;

use crate::harness::{Stack, fake_agent, sandboxes, with_subnet};

weft_testkit::on_both_backends!(
    hosts_register_heartbeat_go_down_and_come_back,
    desired_state_has_the_hosts_networks_sandboxes_endpoints_and_ports,
);

pub(crate) fn register(name: &str, agent: &str) -> pb::RegisterHostRequest {
    pb::RegisterHostRequest {
        name: name.into(),
        agent_address: agent.into(),
        addresses: vec!["192.0.2.10".into()],
        capabilities: Some(pb::HostCapabilities {
            drivers: vec!["bridge".into()],
            bridge: true,
            veth: true,
            nftables: true,
            ..Default::default()
        }),
        agent_version: "test".into(),
        ..Default::default()
    }
}

/// The next event of one of `kinds`, within 5 s.
async fn next_of(stream: &mut tonic::Streaming<pb::Event>, kinds: &[pb::EventKind]) -> pb::Event {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let e = stream.next().await.unwrap().unwrap();
            if kinds.iter().any(|k| *k as i32 == e.kind) {
                return e;
            }
        }
    })
    .await
    .expect("event within 5 s")
}

async fn hosts_register_heartbeat_go_down_and_come_back(b: Backend) {
    let s = Stack::start_with(b, &["--heartbeat-interval", "200ms"]).await;
    let mut reg = s.registry_for("h1").await;
    let mut watch = s
        .events()
        .watch(pb::WatchRequest {
            skip_snapshot: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let r = reg
        .register_host(register("h1", "127.0.0.1:1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.host.as_ref().unwrap().state, pb::HostState::Up as i32);
    assert_eq!(r.heartbeat_interval.unwrap().nanos, 200_000_000);
    let up = next_of(&mut watch, &[pb::EventKind::HostUp]).await;
    assert!(matches!(up.object, Some(pb::event::Object::Host(ref h)) if h.name == "h1"));

    // Listed with what it registered, next to the configured host ("local").
    let hosts = s
        .hosts()
        .list_hosts(pb::ListHostsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .hosts;
    let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["h1", "local"]);
    assert_eq!(hosts[0].addresses, ["192.0.2.10"]);
    assert!(hosts[0].capabilities.as_ref().unwrap().nftables);

    // Heartbeats keep it up; an unknown host is told to register.
    for _ in 0..4 {
        reg.heartbeat(pb::HeartbeatRequest {
            host: "h1".into(),
            ..Default::default()
        })
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // (An agent speaks for its own host only: this one is the unregistered host's.)
    let err = s
        .registry_for("nobody")
        .await
        .heartbeat(pb::HeartbeatRequest {
            host: "nobody".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // Silence: three missed intervals mark it down, with an event. The check runs until it
    // marks something (not after a fixed sleep that races the 600 ms cutoff).
    let marked = weft_testkit::wait_for(Duration::from_secs(10), "h1 marked down", || async {
        let marked = s.gateway_handle().mark_stale_hosts_down().await.unwrap();
        (!marked.is_empty()).then_some(marked)
    })
    .await;
    assert_eq!(marked, ["h1"]);
    let down = next_of(&mut watch, &[pb::EventKind::HostDown]).await;
    assert!(
        matches!(down.object, Some(pb::event::Object::Host(ref h)) if h.name == "h1" && h.state == pb::HostState::Down as i32)
    );
    // Marking again does nothing (one replica wins, once).
    assert!(
        s.gateway_handle()
            .mark_stale_hosts_down()
            .await
            .unwrap()
            .is_empty()
    );
    let listed = s
        .hosts()
        .list_hosts(pb::ListHostsRequest {
            state: pb::HostState::Down as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .hosts;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, "h1");

    // A sandbox cannot be placed on a down host.
    let err = sandboxes(&s)
        .create_sandbox(pb::CreateSandboxRequest {
            name: "x".into(),
            host: "h1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("down"), "{err:?}");

    // The next heartbeat brings it back.
    reg.heartbeat(pb::HeartbeatRequest {
        host: "h1".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let up = next_of(&mut watch, &[pb::EventKind::HostUp]).await;
    assert!(matches!(up.object, Some(pb::event::Object::Host(ref h)) if h.name == "h1"));

    // A watcher from scratch sees the host in its snapshot.
    let mut fresh = s
        .events()
        .watch(pb::WatchRequest::default())
        .await
        .unwrap()
        .into_inner();
    let first = fresh.next().await.unwrap().unwrap();
    assert_eq!(first.kind, pb::EventKind::HostUp as i32);

    // Bad registrations are refused naming the field.
    let err = s
        .registry_for("h2")
        .await
        .register_host(pb::RegisterHostRequest {
            name: "h2".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("agent_address"), "{err:?}");
}

async fn desired_state_has_the_hosts_networks_sandboxes_endpoints_and_ports(b: Backend) {
    let s = Stack::start(b).await;
    // A second host with an agent of its own.
    let (agent2, addr2, _stop2) = fake_agent().await;
    s.registry_for("h2")
        .await
        .register_host(register("h2", &addr2.to_string()))
        .await
        .unwrap();
    let mut nets = s.networks();
    nets.create_network(with_subnet("front", "10.95.0.0/24"))
        .await
        .unwrap();
    nets.create_network(with_subnet("back", "10.95.1.0/24"))
        .await
        .unwrap();
    nets.create_network(with_subnet("other", "10.95.2.0/24"))
        .await
        .unwrap();
    let mut sb = sandboxes(&s);
    // With two hosts, the host must be named.
    let err = sb
        .create_sandbox(pb::CreateSandboxRequest {
            name: "nowhere".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("host"), "{err:?}");

    let port = pb::PortMapping {
        host_port: 8080,
        container_port: 80,
        ..Default::default()
    };
    let web = sb
        .create_sandbox(pb::CreateSandboxRequest {
            name: "web".into(),
            host: "h2".into(),
            port_mappings: vec![port.clone()],
            networks: vec![
                pb::NetworkAttachment {
                    network: "front".into(),
                    settings: None,
                },
                pb::NetworkAttachment {
                    network: "back".into(),
                    settings: Some(pb::EndpointSettings {
                        gw_priority: 10,
                        ..Default::default()
                    }),
                },
            ],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    sb.create_sandbox(pb::CreateSandboxRequest {
        name: "elsewhere".into(),
        host: "local".into(),
        networks: vec![pb::NetworkAttachment {
            network: "other".into(),
            settings: None,
        }],
        ..Default::default()
    })
    .await
    .unwrap();
    // The registered host's own agent did the work; the configured one only for "elsewhere".
    let on_h2 = agent2.calls.lock().unwrap().attached_now();
    assert_eq!(on_h2.len(), 2);
    assert_eq!(s.agent.calls.lock().unwrap().attached_now().len(), 1);

    // The last attach of each endpoint on h2 says where the default route and the ports are.
    let last = |net: &str| {
        let calls = agent2.calls.lock().unwrap();
        calls
            .attached
            .iter()
            .rev()
            .find(|a| a.network.as_ref().unwrap().name == net)
            .unwrap()
            .endpoint
            .clone()
            .unwrap()
    };
    assert!(last("back").default_route_v4);
    assert_eq!(last("back").port_mappings.len(), 1);
    assert!(
        !last("front").default_route_v4,
        "the default route moved to back"
    );
    assert!(
        last("front").port_mappings.is_empty(),
        "the ports moved to back"
    );

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
    assert_eq!(state.host, "h2");
    let mut net_names: Vec<&str> = state.networks.iter().map(|n| n.name.as_str()).collect();
    net_names.sort_unstable();
    assert_eq!(net_names, ["back", "front"]);
    assert_eq!(state.sandboxes.len(), 1);
    assert_eq!(state.sandboxes[0].sandbox_id, web.id);
    assert!(
        state.sandboxes[0]
            .resolv_conf
            .contains("nameserver 127.0.0.11")
    );
    assert_eq!(state.endpoints.len(), 2);
    let carrier: Vec<_> = state
        .endpoints
        .iter()
        .filter(|e| !e.port_mappings.is_empty())
        .collect();
    assert_eq!(carrier.len(), 1);
    assert!(carrier[0].default_route_v4);
    assert_eq!(carrier[0].port_mappings[0].host_port, 8080);
    assert_eq!(
        carrier[0].port_mappings[0].protocol,
        pb::Protocol::Tcp as i32
    );

    // Disconnecting the carrier moves route and ports back to front.
    sb.disconnect(pb::DisconnectRequest {
        sandbox: "web".into(),
        network: "back".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(last("front").default_route_v4);
    assert_eq!(last("front").port_mappings.len(), 1);

    // The same host port cannot be published twice on h2; an ephemeral one is picked.
    let err = sb
        .create_sandbox(pb::CreateSandboxRequest {
            name: "clash".into(),
            host: "h2".into(),
            port_mappings: vec![port],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert!(err.message().contains("web"), "{err:?}");
    let eph = sb
        .create_sandbox(pb::CreateSandboxRequest {
            name: "eph".into(),
            host: "h2".into(),
            port_mappings: vec![pb::PortMapping {
                container_port: 80,
                range: 3,
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let p = &eph.port_mappings[0];
    assert!((49153..=60999).contains(&p.host_port), "{p:?}");
    assert_eq!(p.range, 3);

    let err = s
        .registry_for("unknown")
        .await
        .get_desired_state(pb::GetDesiredStateRequest {
            host: "unknown".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

/// validate_only on CreateSandbox and Connect: the answer shows what would happen, nothing is
/// written, no address stays taken, the agent is not called.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_only_sandbox_and_connect_change_nothing() {
    let s = Stack::start(Backend::Sqlite).await;
    s.networks()
        .create_network(with_subnet("v", "10.96.0.0/24"))
        .await
        .unwrap();
    let mut sb = sandboxes(&s);
    let before = s.events_revision().await;
    let dry = sb
        .create_sandbox(pb::CreateSandboxRequest {
            name: "dry".into(),
            validate_only: true,
            networks: vec![pb::NetworkAttachment {
                network: "v".into(),
                settings: None,
            }],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(dry.id.is_empty());
    assert_eq!(dry.endpoints.len(), 1);
    assert_eq!(dry.endpoints[0].ipv4_address, "10.96.0.2/24");
    assert_eq!(dry.endpoints[0].interface_name, "eth0");
    assert!(dry.endpoints[0].default_route_v4);
    assert_eq!(s.events_revision().await, before);
    assert!(s.agent.calls.lock().unwrap().sandboxes.is_empty());
    let err = sb
        .get_sandbox(pb::GetSandboxRequest {
            sandbox: "dry".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    sb.create_sandbox(pb::CreateSandboxRequest {
        name: "real".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let before = s.events_revision().await;
    let ep = sb
        .connect(pb::ConnectRequest {
            sandbox: "real".into(),
            network: "v".into(),
            validate_only: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(ep.id.is_empty());
    // Probing takes and gives back an address; IPAM's next-fit cursor may have moved past it.
    assert!(ep.ipv4_address.starts_with("10.96.0."), "{ep:?}");
    assert_eq!(s.events_revision().await, before);
    assert!(s.agent.calls.lock().unwrap().attached.is_empty());
    let allocs = s
        .ipam()
        .list_allocations(weft_proto::ipam::v1::ListAllocationsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .allocations;
    assert!(allocs.is_empty(), "{allocs:?}");
    // A bad dry run is refused like a real one.
    let err = sb
        .connect(pb::ConnectRequest {
            sandbox: "real".into(),
            network: "v".into(),
            validate_only: true,
            settings: Some(pb::EndpointSettings {
                ipv4_address: "10.97.0.5".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
}

/// A retried CreateSandbox, Connect, Disconnect or DeleteSandbox with its request_id gets the
/// first answer and does nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_make_sandbox_retries_safe() {
    let s = Stack::start(Backend::Sqlite).await;
    s.networks()
        .create_network(with_subnet("r", "10.98.0.0/24"))
        .await
        .unwrap();
    let mut sb = sandboxes(&s);
    let create = pb::CreateSandboxRequest {
        name: "once".into(),
        request_id: "c-1".into(),
        ..Default::default()
    };
    let a = sb
        .create_sandbox(create.clone())
        .await
        .unwrap()
        .into_inner();
    let b = sb.create_sandbox(create).await.unwrap().into_inner();
    assert_eq!(a, b);
    let connect = pb::ConnectRequest {
        sandbox: "once".into(),
        network: "r".into(),
        request_id: "k-1".into(),
        ..Default::default()
    };
    let e1 = sb.connect(connect.clone()).await.unwrap().into_inner();
    let e2 = sb.connect(connect.clone()).await.unwrap().into_inner();
    assert_eq!(e1, e2);
    assert_eq!(s.agent.calls.lock().unwrap().attached_now().len(), 1);
    // The same id for another request is refused.
    let err = sb
        .connect(pb::ConnectRequest {
            network: "bridge".into(),
            ..connect
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("request_id"), "{err:?}");
    let disconnect = pb::DisconnectRequest {
        sandbox: "once".into(),
        network: "r".into(),
        request_id: "d-1".into(),
        ..Default::default()
    };
    let d1 = sb
        .disconnect(disconnect.clone())
        .await
        .unwrap()
        .into_inner();
    let d2 = sb.disconnect(disconnect).await.unwrap().into_inner();
    assert_eq!(d1, d2);
    assert_eq!(d1.endpoint_id, e1.id);
    let delete = pb::DeleteSandboxRequest {
        sandbox: "once".into(),
        request_id: "x-1".into(),
    };
    let x1 = sb
        .delete_sandbox(delete.clone())
        .await
        .unwrap()
        .into_inner();
    let x2 = sb.delete_sandbox(delete).await.unwrap().into_inner();
    assert_eq!(x1, x2);
    assert_eq!(x1.name, "once");
}

/// network_mode: none and host take no attachments; container:<sandbox> shares the other
/// sandbox's namespace and shows its endpoints, and keeps it from being deleted first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_modes_none_host_and_container() {
    let s = Stack::start(Backend::Sqlite).await;
    s.networks()
        .create_network(with_subnet("m", "10.99.0.0/24"))
        .await
        .unwrap();
    let mut sb = sandboxes(&s);
    let main = sb
        .create_sandbox(pb::CreateSandboxRequest {
            name: "main".into(),
            networks: vec![pb::NetworkAttachment {
                network: "m".into(),
                settings: None,
            }],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let side = sb
        .create_sandbox(pb::CreateSandboxRequest {
            name: "side".into(),
            network_mode: "container:main".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(side.network_mode, format!("container:{}", main.id));
    assert_eq!(side.netns_path, main.netns_path);
    assert_eq!(side.endpoints.len(), 1);
    assert_eq!(side.endpoints[0].id, main.endpoints[0].id);
    let err = sb
        .connect(pb::ConnectRequest {
            sandbox: "side".into(),
            network: "bridge".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let err = sb
        .delete_sandbox(pb::DeleteSandboxRequest {
            sandbox: "main".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("side"), "{err:?}");
    sb.delete_sandbox(pb::DeleteSandboxRequest {
        sandbox: "side".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    sb.delete_sandbox(pb::DeleteSandboxRequest {
        sandbox: "main".into(),
        ..Default::default()
    })
    .await
    .unwrap();

    let host = sb
        .create_sandbox(pb::CreateSandboxRequest {
            name: "on-host".into(),
            network_mode: "host".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(host.network_mode, "host");
    let err = sb
        .create_sandbox(pb::CreateSandboxRequest {
            name: "bad-host".into(),
            network_mode: "host".into(),
            port_mappings: vec![pb::PortMapping {
                container_port: 80,
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("port_mappings"), "{err:?}");
    let none = sb
        .create_sandbox(pb::CreateSandboxRequest {
            name: "nothing".into(),
            network_mode: "none".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(none.endpoints.is_empty());
    let err = sb
        .connect(pb::ConnectRequest {
            sandbox: "nothing".into(),
            network: "m".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
}
