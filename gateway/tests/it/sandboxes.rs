//! Sandboxes, Connect and Disconnect: IPAM, the host's agent and the store kept in step.

use tonic::Code;
use weft_proto::{gateway::v1 as pb, ipam::v1 as ipb};
use weft_testkit::Backend;

use crate::harness::{Stack, sandboxes, with_subnet};

weft_testkit::on_both_backends!(
    connect_allocates_attaches_records_and_disconnect_undoes_it,
    gw_priority_chooses_the_default_route,
    initial_networks_are_all_or_nothing,
    an_agent_failure_gives_the_address_back,
    networks_with_endpoints_are_not_deleted_and_sandbox_delete_releases_everything,
    addresses_can_be_asked_for_and_are_not_shared,
    a_published_range_clashes_with_any_port_it_covers_however_far_below,
);

fn sandbox(name: &str) -> pb::CreateSandboxRequest {
    pb::CreateSandboxRequest {
        name: name.into(),
        ..Default::default()
    }
}

fn connect(sandbox: &str, network: &str, settings: pb::EndpointSettings) -> pb::ConnectRequest {
    pb::ConnectRequest {
        sandbox: sandbox.into(),
        network: network.into(),
        settings: Some(settings),
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

async fn ipam_clean(s: &Stack) {
    let c = s
        .ipam()
        .check(ipb::CheckRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(c.problems_count, 0, "{c:?}");
}

async fn connect_allocates_attaches_records_and_disconnect_undoes_it(b: Backend) {
    let s = Stack::start(b).await;
    s.networks()
        .create_network(with_subnet("n1", "10.90.0.0/24"))
        .await
        .unwrap();
    let mut sb = sandboxes(&s);
    let created = sb
        .create_sandbox(sandbox("web"))
        .await
        .unwrap()
        .into_inner();
    assert!(
        created.netns_path.starts_with("/run/netns/fake-"),
        "the agent's namespace is recorded"
    );
    let ep = sb
        .connect(connect(
            "web",
            "n1",
            pb::EndpointSettings {
                aliases: vec!["www".into()],
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            ep.interface_name.as_str(),
            ep.ipv4_address.as_str(),
            ep.gateway.as_str()
        ),
        ("eth0", "10.90.0.2/24", "10.90.0.1")
    );
    assert!(ep.mac_address.starts_with("02:42:"));
    assert!(ep.default_route_v4);
    assert_eq!(ep.dns_names, vec!["web", "www"]);
    {
        let calls = s.agent.calls.lock().unwrap();
        let a = calls.attached.last().unwrap();
        let spec = a.endpoint.as_ref().unwrap();
        assert_eq!(
            (spec.endpoint_id.as_str(), spec.ipv4_address.as_str()),
            (ep.id.as_str(), "10.90.0.2/24")
        );
        assert_eq!(spec.netns_path, created.netns_path);
        assert!(spec.default_route_v4);
        assert_eq!(a.network.as_ref().unwrap().name, "n1");
    }
    let allocs = allocations(&s).await;
    assert_eq!(allocs.len(), 1);
    assert_eq!(allocs[0].owner, ep.id, "the endpoint id owns its address");
    let net = s
        .networks()
        .get_network(pb::GetNetworkRequest {
            network: "n1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(net.endpoints.len(), 1);
    assert_eq!(
        (
            net.endpoints[0].sandbox_name.as_str(),
            net.endpoints[0].ipv4_address.as_str()
        ),
        ("web", "10.90.0.2/24")
    );

    sb.disconnect(pb::DisconnectRequest {
        sandbox: "web".into(),
        network: "n1".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        s.agent
            .calls
            .lock()
            .unwrap()
            .detached
            .last()
            .unwrap()
            .endpoint_id,
        ep.id
    );
    assert!(allocations(&s).await.is_empty());
    let view = sb
        .get_sandbox(pb::GetSandboxRequest {
            sandbox: "web".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(view.endpoints.is_empty());
    let e = sb
        .disconnect(pb::DisconnectRequest {
            sandbox: "web".into(),
            network: "n1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    ipam_clean(&s).await;
}

async fn gw_priority_chooses_the_default_route(b: Backend) {
    let s = Stack::start(b).await;
    let mut nets = s.networks();
    nets.create_network(with_subnet("front", "10.91.0.0/24"))
        .await
        .unwrap();
    nets.create_network(with_subnet("back", "10.92.0.0/24"))
        .await
        .unwrap();
    nets.create_network(pb::CreateNetworkRequest {
        internal: true,
        ..with_subnet("inner", "10.93.0.0/24")
    })
    .await
    .unwrap();
    let mut sb = sandboxes(&s);
    sb.create_sandbox(sandbox("app")).await.unwrap();
    let f = sb
        .connect(connect("app", "front", pb::EndpointSettings::default()))
        .await
        .unwrap()
        .into_inner();
    assert!(f.default_route_v4);
    let bk = sb
        .connect(connect(
            "app",
            "back",
            pb::EndpointSettings {
                gw_priority: 10,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(
        bk.default_route_v4,
        "higher gw_priority takes the default route"
    );
    assert_eq!(bk.interface_name, "eth1");
    // An internal network never provides one, whatever its priority.
    let i = sb
        .connect(connect(
            "app",
            "inner",
            pb::EndpointSettings {
                gw_priority: 100,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!i.default_route_v4);
    assert!(i.gateway.is_empty());
    let view = sb
        .get_sandbox(pb::GetSandboxRequest {
            sandbox: "app".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let chosen: Vec<_> = view
        .endpoints
        .iter()
        .filter(|e| e.default_route_v4)
        .map(|e| e.network_name.clone())
        .collect();
    assert_eq!(chosen, vec!["back"]);
    sb.disconnect(pb::DisconnectRequest {
        sandbox: "app".into(),
        network: "back".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let view = sb
        .get_sandbox(pb::GetSandboxRequest {
            sandbox: "app".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let chosen: Vec<_> = view
        .endpoints
        .iter()
        .filter(|e| e.default_route_v4)
        .map(|e| e.network_name.clone())
        .collect();
    assert_eq!(
        chosen,
        vec!["front"],
        "the route moves back when the winner leaves"
    );
}

async fn initial_networks_are_all_or_nothing(b: Backend) {
    let s = Stack::start(b).await;
    s.networks()
        .create_network(with_subnet("ok", "10.94.0.0/24"))
        .await
        .unwrap();
    s.networks()
        .create_network(with_subnet("broken", "10.97.0.0/24"))
        .await
        .unwrap();
    let mut sb = sandboxes(&s);
    let attach = |networks: &[&str]| {
        networks
            .iter()
            .map(|n| pb::NetworkAttachment {
                network: (*n).into(),
                settings: None,
            })
            .collect::<Vec<_>>()
    };
    // A network that does not exist: refused before anything is done anywhere.
    let req = pb::CreateSandboxRequest {
        networks: attach(&["ok", "missing"]),
        ..sandbox("half")
    };
    let e = sb.create_sandbox(req).await.unwrap_err();
    assert_eq!(
        e.code(),
        Code::NotFound,
        "the error of the step that failed: {e:?}"
    );
    assert!(e.message().contains("missing"));
    {
        let calls = s.agent.calls.lock().unwrap();
        assert!(calls.sandboxes.is_empty() && calls.attached.is_empty());
    }
    assert!(allocations(&s).await.is_empty());
    // The agent refuses the second endpoint: everything is undone, both addresses given back.
    let req = pb::CreateSandboxRequest {
        networks: attach(&["ok", "broken"]),
        ..sandbox("half")
    };
    let e = sb.create_sandbox(req).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(e.message().contains("kernel said no"), "{}", e.message());
    assert!(
        sb.list_sandboxes(pb::ListSandboxesRequest::default())
            .await
            .unwrap()
            .into_inner()
            .sandboxes
            .is_empty()
    );
    assert!(
        allocations(&s).await.is_empty(),
        "the addresses taken for both endpoints were given back"
    );
    {
        let calls = s.agent.calls.lock().unwrap();
        assert!(calls.attached_now().is_empty(), "nothing left attached");
        assert_eq!(
            calls.removed_sandboxes.len(),
            1,
            "the agent was told to remove the sandbox"
        );
    }
    // With every network present it all lands at once.
    s.networks()
        .create_network(with_subnet("missing", "10.95.0.0/24"))
        .await
        .unwrap();
    let ok = sb
        .create_sandbox(pb::CreateSandboxRequest {
            networks: vec![
                pb::NetworkAttachment {
                    network: "ok".into(),
                    settings: None,
                },
                pb::NetworkAttachment {
                    network: "missing".into(),
                    settings: None,
                },
            ],
            ..sandbox("whole")
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        ok.endpoints
            .iter()
            .map(|e| e.interface_name.as_str())
            .collect::<Vec<_>>(),
        vec!["eth0", "eth1"]
    );
    ipam_clean(&s).await;
}

async fn an_agent_failure_gives_the_address_back(b: Backend) {
    let s = Stack::start(b).await;
    s.networks()
        .create_network(with_subnet("broken", "10.96.0.0/24"))
        .await
        .unwrap();
    let mut sb = sandboxes(&s);
    sb.create_sandbox(sandbox("c")).await.unwrap();
    let e = sb
        .connect(connect("c", "broken", pb::EndpointSettings::default()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(e.message().contains("kernel said no"), "{}", e.message());
    assert!(allocations(&s).await.is_empty());
    let view = sb
        .get_sandbox(pb::GetSandboxRequest {
            sandbox: "c".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(view.endpoints.is_empty());
    ipam_clean(&s).await;
}

async fn networks_with_endpoints_are_not_deleted_and_sandbox_delete_releases_everything(
    b: Backend,
) {
    let s = Stack::start(b).await;
    let mut nets = s.networks();
    nets.create_network(with_subnet("busy", "10.97.0.0/24"))
        .await
        .unwrap();
    let mut sb = sandboxes(&s);
    sb.create_sandbox(pb::CreateSandboxRequest {
        networks: vec![pb::NetworkAttachment {
            network: "busy".into(),
            settings: None,
        }],
        ..sandbox("db")
    })
    .await
    .unwrap();
    let e = nets
        .delete_network(pb::DeleteNetworkRequest {
            network: "busy".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(
        e.message().contains("db"),
        "names the sandbox: {}",
        e.message()
    );
    let pruned = nets
        .prune_networks(pb::PruneNetworksRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(pruned.networks_deleted.is_empty());
    let r = sb
        .delete_sandbox(pb::DeleteSandboxRequest {
            sandbox: "db".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.endpoint_ids.len(), 1);
    assert!(allocations(&s).await.is_empty());
    nets.delete_network(pb::DeleteNetworkRequest {
        network: "busy".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    ipam_clean(&s).await;
}

async fn addresses_can_be_asked_for_and_are_not_shared(b: Backend) {
    let s = Stack::start(b).await;
    s.networks()
        .create_network(with_subnet("n", "10.98.0.0/24"))
        .await
        .unwrap();
    let mut sb = sandboxes(&s);
    sb.create_sandbox(sandbox("a")).await.unwrap();
    sb.create_sandbox(sandbox("b")).await.unwrap();
    let ep = sb
        .connect(connect(
            "a",
            "n",
            pb::EndpointSettings {
                ipv4_address: "10.98.0.50".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ep.ipv4_address, "10.98.0.50/24");
    let e = sb
        .connect(connect("a", "n", pb::EndpointSettings::default()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "already connected");
    let e = sb
        .connect(connect(
            "b",
            "n",
            pb::EndpointSettings {
                ipv4_address: "10.98.0.50".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "address taken: {e:?}");
    let e = sb.create_sandbox(sandbox("a")).await.unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "sandbox name taken");
    assert_eq!(allocations(&s).await.len(), 1);
    ipam_clean(&s).await;
}

/// A sandbox publishing host ports `first..first+range` (container ports alike).
fn publishing(name: &str, first: u32, range: u32) -> pb::CreateSandboxRequest {
    pb::CreateSandboxRequest {
        port_mappings: vec![pb::PortMapping {
            host_port: first,
            container_port: first,
            range,
            ..Default::default()
        }],
        ..sandbox(name)
    }
}

/// The overlap check reads by index only the mappings that can reach the ports asked for (the
/// longest span bounds how far below they start): a long range far below still clashes, the
/// ports just past it and just before it do not.
async fn a_published_range_clashes_with_any_port_it_covers_however_far_below(b: Backend) {
    let s = Stack::start(b).await;
    let mut sb = sandboxes(&s);
    sb.create_sandbox(publishing("wide", 9000, 1000))
        .await
        .unwrap();
    for i in 0..20 {
        sb.create_sandbox(publishing(&format!("one-{i}"), 11000 + i, 1))
            .await
            .unwrap();
    }
    for (name, first, range) in [("late", 9999, 1), ("over", 8990, 20), ("in", 9500, 3)] {
        let err = sb
            .create_sandbox(publishing(name, first, range))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::AlreadyExists, "{name}: {err:?}");
        assert!(err.message().contains("wide"), "{name}: {err:?}");
    }
    let err = sb
        .create_sandbox(publishing("again", 11005, 1))
        .await
        .unwrap_err();
    assert!(err.message().contains("one-5"), "{err:?}");
    for (name, first, range) in [("after", 10000, 1), ("before", 8990, 10)] {
        sb.create_sandbox(publishing(name, first, range))
            .await
            .unwrap();
    }
}
