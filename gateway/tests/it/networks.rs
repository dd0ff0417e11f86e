//! NetworkService on both backends, with a real ipam-svc behind it.

use tonic::Code;
use weft_proto::{gateway::v1 as pb, ipam::v1 as ipb};
use weft_testkit::Backend;

use crate::harness::{Stack, create, names, names_where, with_subnet};

weft_testkit::on_both_backends!(
    predefined_networks_exist_and_are_protected,
    create_inspect_list_and_delete_like_docker,
    subnets_are_picked_and_released_through_ipam,
    names_are_unique_and_lookups_accept_prefixes,
    a_failed_step_undoes_the_earlier_ones,
    request_ids_make_retries_safe,
    update_changes_labels_and_dns_servers,
    prune_removes_only_unused_user_networks,
    validate_only_writes_nothing,
    overlay_networks_get_unique_vxlan_ids_from_the_range,
);

async fn predefined_networks_exist_and_are_protected(b: Backend) {
    let s = Stack::start(b).await;
    let mut c = s.networks();
    assert_eq!(names(&mut c).await, vec!["bridge", "host", "none"]);
    let bridge = c
        .get_network(pb::GetNetworkRequest {
            network: "bridge".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(bridge.predefined);
    assert_eq!(bridge.driver, "bridge");
    // Docker's default bridge subnet on a fresh host.
    assert_eq!(bridge.ipam.unwrap().configs[0].subnet, "172.17.0.0/16");
    for n in ["bridge", "host", "none"] {
        let e = c
            .delete_network(pb::DeleteNetworkRequest {
                network: n.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{n}");
    }
    let e = c
        .create_network(pb::CreateNetworkRequest {
            driver: "host".into(),
            ..create("h2")
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
}

async fn create_inspect_list_and_delete_like_docker(b: Backend) {
    let s = Stack::start(b).await;
    let mut c = s.networks();
    let n = c
        .create_network(pb::CreateNetworkRequest {
            labels: [("env".to_owned(), "dev".to_owned())].into(),
            options: [(
                "com.docker.network.driver.mtu".to_owned(),
                "1400".to_owned(),
            )]
            .into(),
            internal: true,
            ..create("my-net")
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(n.id.len(), 64);
    assert_eq!((n.driver.as_str(), n.scope.as_str()), ("bridge", "local"));
    assert!(n.internal && n.enable_ipv4 && !n.enable_ipv6);
    assert_eq!(n.ipam.as_ref().unwrap().configs[0].subnet, "172.18.0.0/16");
    assert_eq!(n.ipam.as_ref().unwrap().configs[0].gateway, "172.18.0.1");
    let got = c
        .get_network(pb::GetNetworkRequest {
            network: "my-net".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, n);
    c.create_network(create("other")).await.unwrap();
    let filtered = |f: pb::ListNetworksRequest| {
        let mut c = c.clone();
        async move { names_where(&mut c, f).await }
    };
    assert_eq!(
        filtered(pb::ListNetworksRequest {
            label: vec!["env=dev".into()],
            ..Default::default()
        })
        .await,
        vec!["my-net"]
    );
    assert_eq!(
        filtered(pb::ListNetworksRequest {
            label: vec!["env".into()],
            ..Default::default()
        })
        .await,
        vec!["my-net"]
    );
    assert_eq!(
        filtered(pb::ListNetworksRequest {
            driver: vec!["host".into()],
            ..Default::default()
        })
        .await,
        vec!["host"]
    );
    assert_eq!(
        filtered(pb::ListNetworksRequest {
            name: vec!["net".into()],
            ..Default::default()
        })
        .await,
        vec!["my-net"]
    );
    assert_eq!(
        filtered(pb::ListNetworksRequest {
            id: vec![n.id[..12].to_owned()],
            ..Default::default()
        })
        .await,
        vec!["my-net"]
    );
    assert_eq!(
        filtered(pb::ListNetworksRequest {
            scope: vec!["global".into()],
            ..Default::default()
        })
        .await,
        Vec::<String>::new()
    );
    let r = c
        .delete_network(pb::DeleteNetworkRequest {
            network: "my-net".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.name, "my-net");
    let e = c
        .get_network(pb::GetNetworkRequest {
            network: "my-net".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert_eq!(names(&mut c).await, vec!["bridge", "host", "none", "other"]);
}

async fn subnets_are_picked_and_released_through_ipam(b: Backend) {
    let s = Stack::start(b).await;
    let mut c = s.networks();
    let mut ipam = s.ipam();
    let n = c
        .create_network(pb::CreateNetworkRequest {
            enable_ipv6: true,
            ..with_subnet("dual", "0.0.0.0/24")
        })
        .await
        .unwrap()
        .into_inner();
    let configs = n.ipam.unwrap().configs;
    assert_eq!(configs.len(), 2);
    assert_eq!(configs[0].subnet, "172.18.0.0/24");
    assert_eq!(configs[1].subnet, "fd77:6566:7400::/64");
    let pools = ipam
        .list_pools(ipb::ListPoolsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .pools;
    assert_eq!(pools.len(), 3, "bridge's and dual's two: {pools:?}");
    c.delete_network(pb::DeleteNetworkRequest {
        network: "dual".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let pools = ipam
        .list_pools(ipb::ListPoolsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .pools;
    assert_eq!(pools.len(), 1, "only bridge's pool is left: {pools:?}");
    // An explicit subnet that overlaps another network's is refused by IPAM, naming the pool.
    c.create_network(with_subnet("a", "10.50.0.0/16"))
        .await
        .unwrap();
    let e = c
        .create_network(with_subnet("b", "10.50.1.0/24"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    assert!(e.message().contains("10.50.0.0/16"), "{}", e.message());
}

async fn names_are_unique_and_lookups_accept_prefixes(b: Backend) {
    let s = Stack::start(b).await;
    let mut c = s.networks();
    let n = c.create_network(create("dup")).await.unwrap().into_inner();
    let e = c.create_network(create("dup")).await.unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    for key in [n.id.clone(), n.id[..10].to_owned(), "dup".to_owned()] {
        let got = c
            .get_network(pb::GetNetworkRequest {
                network: key.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.id, n.id, "{key}");
    }
    // A name wins over an id prefix that would also match.
    let prefix = n.id[..4].to_owned();
    let named = c
        .create_network(create(&prefix))
        .await
        .unwrap()
        .into_inner();
    let got = c
        .get_network(pb::GetNetworkRequest { network: prefix })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.id, named.id);
    // The pool of the refused duplicate was given back.
    assert_eq!(
        s.ipam()
            .list_pools(ipb::ListPoolsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .pools
            .len(),
        3
    );
}

async fn a_failed_step_undoes_the_earlier_ones(b: Backend) {
    let s = Stack::start(b).await;
    let mut c = s.networks();
    c.create_network(with_subnet("taken", "10.60.0.0/24"))
        .await
        .unwrap();
    // First subnet is fine, second clashes: the first pool must be released again.
    let e = c
        .create_network(pb::CreateNetworkRequest {
            ipam: Some(pb::Ipam {
                configs: vec![
                    pb::IpamConfig {
                        subnet: "10.61.0.0/24".into(),
                        ..Default::default()
                    },
                    pb::IpamConfig {
                        subnet: "10.60.0.0/25".into(),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }),
            ..create("half")
        })
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        Code::AlreadyExists,
        "the error of the step that failed: {e:?}"
    );
    let pools = s
        .ipam()
        .list_pools(ipb::ListPoolsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .pools;
    assert!(
        pools.iter().all(|p| p.subnet != "10.61.0.0/24"),
        "leaked pool: {pools:?}"
    );
    assert!(!names(&mut c).await.contains(&"half".to_owned()));
    let check = s
        .ipam()
        .check(ipb::CheckRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(check.problems_count, 0);
}

async fn request_ids_make_retries_safe(b: Backend) {
    let s = Stack::start(b).await;
    let mut c = s.networks();
    let req = pb::CreateNetworkRequest {
        request_id: "req-1".into(),
        ..create("once")
    };
    let first = c.create_network(req.clone()).await.unwrap().into_inner();
    let again = c.create_network(req).await.unwrap().into_inner();
    assert_eq!(first, again);
    let e = c
        .create_network(pb::CreateNetworkRequest {
            request_id: "req-1".into(),
            ..create("twice")
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("request_id"), "{}", e.message());
    let del = pb::DeleteNetworkRequest {
        network: "once".into(),
        request_id: "req-2".into(),
    };
    let d1 = c.delete_network(del.clone()).await.unwrap().into_inner();
    let d2 = c.delete_network(del).await.unwrap().into_inner();
    assert_eq!(d1, d2);
    assert_eq!(names(&mut c).await, vec!["bridge", "host", "none"]);
}

async fn update_changes_labels_and_dns_servers(b: Backend) {
    let s = Stack::start(b).await;
    let mut c = s.networks();
    c.create_network(create("u")).await.unwrap();
    let n = c
        .update_network(pb::UpdateNetworkRequest {
            network: "u".into(),
            labels: [("a".to_owned(), "1".to_owned())].into(),
            dns_servers: vec!["10.0.0.53".into()],
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["labels".into(), "dns_servers".into()],
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(n.labels.get("a").map(String::as_str), Some("1"));
    assert_eq!(n.dns_servers, vec!["10.0.0.53"]);
    assert!(n.updated_at.is_some());
    let got = c
        .get_network(pb::GetNetworkRequest {
            network: "u".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, n);
}

async fn prune_removes_only_unused_user_networks(b: Backend) {
    let s = Stack::start(b).await;
    let mut c = s.networks();
    c.create_network(pb::CreateNetworkRequest {
        labels: [("keep".to_owned(), "1".to_owned())].into(),
        ..create("kept")
    })
    .await
    .unwrap();
    c.create_network(create("gone1")).await.unwrap();
    c.create_network(create("gone2")).await.unwrap();
    let dry = c
        .prune_networks(pb::PruneNetworksRequest {
            label_not: vec!["keep".into()],
            validate_only: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(dry.networks_deleted, vec!["gone1", "gone2"]);
    assert_eq!(names(&mut c).await.len(), 6);
    let r = c
        .prune_networks(pb::PruneNetworksRequest {
            label_not: vec!["keep".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.networks_deleted, vec!["gone1", "gone2"]);
    assert_eq!(names(&mut c).await, vec!["bridge", "host", "kept", "none"]);
}

async fn validate_only_writes_nothing(b: Backend) {
    let s = Stack::start(b).await;
    let mut c = s.networks();
    let n = c
        .create_network(pb::CreateNetworkRequest {
            validate_only: true,
            ..with_subnet("dry", "0.0.0.0/24")
        })
        .await
        .unwrap()
        .into_inner();
    assert!(n.id.is_empty());
    assert_eq!(n.ipam.unwrap().configs[0].subnet, "172.18.0.0/24");
    assert_eq!(names(&mut c).await, vec!["bridge", "host", "none"]);
    assert_eq!(
        s.ipam()
            .list_pools(ipb::ListPoolsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .pools
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_hosts_reports_this_host_and_its_agents_capabilities() {
    let s = Stack::start(Backend::Sqlite).await;
    let mut h = s.hosts();
    let hosts = h
        .list_hosts(pb::ListHostsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .hosts;
    assert_eq!(hosts.len(), 1);
    assert_eq!(hosts[0].name, "local");
    assert_eq!(hosts[0].state, pb::HostState::Up as i32);
    let caps = hosts[0].capabilities.clone().unwrap();
    assert!(caps.bridge && caps.veth && !caps.ipvlan);
    assert_eq!(caps.drivers, vec!["bridge", "host", "none"]);
    let down = h
        .list_hosts(pb::ListHostsRequest {
            state: pb::HostState::Down as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(down.hosts.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_overlay_is_refused_naming_the_hosts_whose_kernel_lacks_ipsec_and_what() {
    let s = Stack::start(Backend::Sqlite).await;
    let mut c = s.networks();
    let encrypted = |value: &str| pb::CreateNetworkRequest {
        name: "secret-overlay".into(),
        driver: "overlay".into(),
        options: [("encrypted".to_owned(), value.to_owned())].into(),
        ..Default::default()
    };
    // Hosts as their agents report them: "lacks" as this project's CI kernel (no ESP, no
    // AES-GCM), "has" with both; the configured host ("local", the fake agent) never probed.
    let register = |name: &str, ipsec: bool, missing: &[&str]| {
        let mut r = crate::hosts::register(name, "127.0.0.1:1");
        let caps = r.capabilities.as_mut().unwrap();
        caps.ipsec = ipsec;
        caps.ipsec_missing = missing.iter().map(|m| (*m).to_owned()).collect();
        r
    };
    for (name, ipsec, missing) in [
        ("lacks", false, &["esp4", "rfc4106(gcm(aes))"][..]),
        ("has", true, &[]),
    ] {
        s.registry_for(name)
            .await
            .register_host(register(name, ipsec, missing))
            .await
            .unwrap();
    }
    for value in ["", "true"] {
        let err = c.create_network(encrypted(value)).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
        let m = err.message();
        assert!(
            m.contains("host \"lacks\" lacks esp4, rfc4106(gcm(aes))"),
            "{m}"
        );
        assert!(m.contains("host \"local\" has not probed it"), "{m}");
        assert!(
            !m.contains("\"has\""),
            "a host with IPsec is not named: {m}"
        );
        assert!(m.contains("without --opt encrypted"), "{m}");
    }
    // Every host's kernel has it: still refused, saying why honestly.
    for name in ["lacks", "local"] {
        s.registry_for(name)
            .await
            .register_host(register(name, true, &[]))
            .await
            .unwrap();
    }
    let err = c.create_network(encrypted("true")).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message()
            .contains("IPsec tunnels between hosts, which Weft does not program yet"),
        "{err:?}"
    );
    assert!(!err.message().contains("host \""), "{err:?}");
    // Hosts list what their agents reported.
    let hosts = s
        .hosts()
        .list_hosts(pb::ListHostsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .hosts;
    assert!(hosts.iter().all(|h| h.capabilities.as_ref().unwrap().ipsec));
    // Nothing was made; asked not to encrypt, it is an ordinary overlay network (scope global).
    assert!(!names(&mut c).await.contains(&"secret-overlay".to_owned()));
    let n = c
        .create_network(pb::CreateNetworkRequest {
            name: "plain-overlay".into(),
            driver: "overlay".into(),
            options: [("encrypted".to_owned(), "false".to_owned())].into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(n.scope, "global");
}

async fn overlay_networks_get_unique_vxlan_ids_from_the_range(b: Backend) {
    let s = Stack::start_with(b, &["--vni-range", "5000-5001"]).await;
    let mut c = s.networks();
    let overlay = |name: &str, vni: Option<&str>| pb::CreateNetworkRequest {
        name: name.into(),
        driver: "overlay".into(),
        options: vni
            .map(|v| {
                [(
                    "com.docker.network.driver.overlay.vxlanid_list".to_owned(),
                    v.to_owned(),
                )]
                .into()
            })
            .unwrap_or_default(),
        ..Default::default()
    };
    let vni = |n: &pb::Network| n.options["com.docker.network.driver.overlay.vxlanid_list"].clone();
    let a = c
        .create_network(overlay("ov-a", None))
        .await
        .unwrap()
        .into_inner();
    let b = c
        .create_network(overlay("ov-b", None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((vni(&a), vni(&b)), ("5000".into(), "5001".into()));
    // The range is used up; an id asked for is taken as given, unless another network has it.
    let full = c.create_network(overlay("ov-c", None)).await.unwrap_err();
    assert_eq!(full.code(), Code::ResourceExhausted, "{full:?}");
    let taken = c
        .create_network(overlay("ov-d", Some("5001")))
        .await
        .unwrap_err();
    assert_eq!(taken.code(), Code::AlreadyExists, "{taken:?}");
    assert!(taken.message().contains("5001"), "{taken:?}");
    let own = c
        .create_network(overlay("ov-e", Some("70000")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(vni(&own), "70000");
    // A deleted network's id is free again.
    c.delete_network(pb::DeleteNetworkRequest {
        network: "ov-a".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let again = c
        .create_network(overlay("ov-f", None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(vni(&again), "5000");
}
