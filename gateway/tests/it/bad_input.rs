//! Bad input to the network RPCs: the right code, a message naming the field and the value, and
//! no change to the networks, the event log or IPAM's pools.

use tonic::Code;
use weft_proto::{gateway::v1 as pb, ipam::v1 as ipb};
use weft_testkit::Backend;

use crate::harness::{Stack, create, with_subnet};

fn opt(name: &str, k: &str, v: &str) -> pb::CreateNetworkRequest {
    pb::CreateNetworkRequest {
        options: [(k.to_owned(), v.to_owned())].into(),
        ..create(name)
    }
}

fn cfg(name: &str, f: impl FnOnce(&mut pb::IpamConfig)) -> pb::CreateNetworkRequest {
    let mut c = pb::IpamConfig {
        subnet: "10.70.0.0/24".into(),
        ..Default::default()
    };
    f(&mut c);
    pb::CreateNetworkRequest {
        ipam: Some(pb::Ipam {
            configs: vec![c],
            ..Default::default()
        }),
        ..create(name)
    }
}

enum Call {
    Create(pb::CreateNetworkRequest),
    Get(&'static str),
    Delete(&'static str),
    Update(pb::UpdateNetworkRequest),
    List(pb::ListNetworksRequest),
}

fn mask(paths: &[&str]) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask {
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_network_input_is_refused_naming_field_and_value_and_changes_nothing() {
    use Code::*;
    let s = Stack::start(Backend::Sqlite).await;
    let mut c = s.networks();
    c.create_network(with_subnet("existing", "10.80.0.0/16"))
        .await
        .unwrap();
    let cases: Vec<(&str, Call, Code, &[&str])> = vec![
        (
            "empty name",
            Call::Create(create("")),
            InvalidArgument,
            &["name", "\"\""],
        ),
        (
            "name with space",
            Call::Create(create("a b")),
            InvalidArgument,
            &["name", "a b"],
        ),
        (
            "name starts with dash",
            Call::Create(create("-x")),
            InvalidArgument,
            &["name", "-x"],
        ),
        (
            "name too long",
            Call::Create(create(&"n".repeat(129))),
            InvalidArgument,
            &["name", "128"],
        ),
        (
            "name taken",
            Call::Create(create("existing")),
            AlreadyExists,
            &["existing"],
        ),
        (
            "unknown driver",
            Call::Create(pb::CreateNetworkRequest {
                driver: "wormhole".into(),
                ..create("d")
            }),
            InvalidArgument,
            &["driver", "wormhole", "bridge"],
        ),
        (
            "second none network",
            Call::Create(pb::CreateNetworkRequest {
                driver: "none".into(),
                ..create("d")
            }),
            InvalidArgument,
            &["driver", "none", "predefined"],
        ),
        (
            "unknown option",
            Call::Create(opt("o", "com.docker.network.bridge.nmae", "x")),
            InvalidArgument,
            &[
                "options[com.docker.network.bridge.nmae]",
                "com.docker.network.bridge.name",
            ],
        ),
        (
            "option of another driver",
            Call::Create(opt("o", "macvlan_mode", "bridge")),
            InvalidArgument,
            &["options[macvlan_mode]"],
        ),
        (
            "mtu too small",
            Call::Create(opt("o", "com.docker.network.driver.mtu", "67")),
            InvalidArgument,
            &["com.docker.network.driver.mtu", "67"],
        ),
        (
            "mtu not a number",
            Call::Create(opt("o", "com.docker.network.driver.mtu", "big")),
            InvalidArgument,
            &["com.docker.network.driver.mtu", "big"],
        ),
        (
            "icc not a bool",
            Call::Create(opt("o", "com.docker.network.bridge.enable_icc", "maybe")),
            InvalidArgument,
            &["enable_icc", "maybe"],
        ),
        (
            "binding not an ipv4",
            Call::Create(opt(
                "o",
                "com.docker.network.bridge.host_binding_ipv4",
                "::1",
            )),
            InvalidArgument,
            &["host_binding_ipv4", "::1"],
        ),
        (
            "bridge name too long",
            Call::Create(opt(
                "o",
                "com.docker.network.bridge.name",
                "a-very-long-bridge-name",
            )),
            InvalidArgument,
            &["bridge.name", "a-very-long-bridge-name"],
        ),
        (
            "unknown ipam driver",
            Call::Create(pb::CreateNetworkRequest {
                ipam: Some(pb::Ipam {
                    driver: "dhcp".into(),
                    ..Default::default()
                }),
                ..create("i")
            }),
            InvalidArgument,
            &["ipam.driver", "dhcp"],
        ),
        (
            "ipam option",
            Call::Create(pb::CreateNetworkRequest {
                ipam: Some(pb::Ipam {
                    options: [("x".to_owned(), "y".to_owned())].into(),
                    ..Default::default()
                }),
                ..create("i")
            }),
            InvalidArgument,
            &["ipam.options[x]"],
        ),
        (
            "no family",
            Call::Create(pb::CreateNetworkRequest {
                enable_ipv4: Some(false),
                ..create("f")
            }),
            InvalidArgument,
            &["enable_ipv4", "false"],
        ),
        (
            "v6 subnet without ipv6",
            Call::Create(with_subnet("f", "fd00:1::/64")),
            InvalidArgument,
            &["ipam.configs[0].subnet", "fd00:1::/64", "enable_ipv6"],
        ),
        (
            "empty subnet in a config",
            Call::Create(cfg("s", |c| c.subnet = String::new())),
            InvalidArgument,
            &["ipam.configs[0].subnet", "required"],
        ),
        (
            "prefix too long",
            Call::Create(with_subnet("s", "10.0.0.0/33")),
            InvalidArgument,
            &["ipam.configs[0].subnet", "10.0.0.0/33"],
        ),
        (
            "host bits",
            Call::Create(with_subnet("s", "10.0.0.1/24")),
            InvalidArgument,
            &["ipam.configs[0].subnet", "10.0.0.1/24"],
        ),
        (
            "gateway outside",
            Call::Create(cfg("s", |c| c.gateway = "10.71.0.1".into())),
            InvalidArgument,
            &["ipam.configs[0].gateway", "10.71.0.1"],
        ),
        (
            "range outside",
            Call::Create(cfg("s", |c| c.ip_range = "10.72.0.0/25".into())),
            InvalidArgument,
            &["ipam.configs[0].ip_range", "10.72.0.0/25"],
        ),
        (
            "aux outside",
            Call::Create(cfg("s", |c| {
                c.aux_addresses.insert("r".into(), "10.73.0.9".into());
            })),
            InvalidArgument,
            &["ipam.configs[0].aux_addresses[r]", "10.73.0.9"],
        ),
        (
            "overlap",
            Call::Create(with_subnet("s", "10.80.4.0/24")),
            AlreadyExists,
            &["10.80.4.0/24", "10.80.0.0/16"],
        ),
        (
            "dns server not an ip",
            Call::Create(pb::CreateNetworkRequest {
                dns_servers: vec!["dns.example".into()],
                ..create("n")
            }),
            InvalidArgument,
            &["dns_servers[0]", "dns.example"],
        ),
        (
            "request id too long",
            Call::Create(pb::CreateNetworkRequest {
                request_id: "r".repeat(200),
                ..create("n")
            }),
            InvalidArgument,
            &["request_id", "128"],
        ),
        (
            "get empty",
            Call::Get(""),
            InvalidArgument,
            &["network", "\"\""],
        ),
        ("get unknown", Call::Get("nope"), NotFound, &["nope"]),
        (
            "delete unknown",
            Call::Delete("ghost"),
            NotFound,
            &["ghost"],
        ),
        (
            "delete predefined",
            Call::Delete("host"),
            FailedPrecondition,
            &["host", "predefined"],
        ),
        (
            "update without mask",
            Call::Update(pb::UpdateNetworkRequest {
                network: "existing".into(),
                ..Default::default()
            }),
            InvalidArgument,
            &["update_mask"],
        ),
        (
            "update unknown path",
            Call::Update(pb::UpdateNetworkRequest {
                network: "existing".into(),
                update_mask: mask(&["driver"]),
                ..Default::default()
            }),
            InvalidArgument,
            &["update_mask", "driver"],
        ),
        (
            "update bad dns",
            Call::Update(pb::UpdateNetworkRequest {
                network: "existing".into(),
                dns_servers: vec!["1.2.3".into()],
                update_mask: mask(&["dns_servers"]),
                ..Default::default()
            }),
            InvalidArgument,
            &["dns_servers[0]", "1.2.3"],
        ),
        (
            "update predefined",
            Call::Update(pb::UpdateNetworkRequest {
                network: "bridge".into(),
                update_mask: mask(&["labels"]),
                ..Default::default()
            }),
            FailedPrecondition,
            &["bridge", "predefined"],
        ),
        (
            "update unknown network",
            Call::Update(pb::UpdateNetworkRequest {
                network: "ghost".into(),
                update_mask: mask(&["labels"]),
                ..Default::default()
            }),
            NotFound,
            &["ghost"],
        ),
        (
            "bad label filter",
            Call::List(pb::ListNetworksRequest {
                label: vec!["=x".into()],
                ..Default::default()
            }),
            InvalidArgument,
            &["label[0]", "=x"],
        ),
    ];
    // The list carries the current revision, so any event written changes the snapshot too.
    let snapshot = |s: &Stack| {
        let (mut c, mut i) = (s.networks(), s.ipam());
        async move {
            let nets = c
                .list_networks(pb::ListNetworksRequest::default())
                .await
                .unwrap()
                .into_inner();
            let pools = i
                .list_pools(ipb::ListPoolsRequest::default())
                .await
                .unwrap()
                .into_inner();
            format!("{nets:?}\n{pools:?}")
        }
    };
    for (name, call, code, needles) in cases {
        let before = snapshot(&s).await;
        let err = match call {
            Call::Create(r) => c.create_network(r).await.map(drop),
            Call::Get(n) => c
                .get_network(pb::GetNetworkRequest { network: n.into() })
                .await
                .map(drop),
            Call::Delete(n) => c
                .delete_network(pb::DeleteNetworkRequest {
                    network: n.into(),
                    ..Default::default()
                })
                .await
                .map(drop),
            Call::Update(r) => c.update_network(r).await.map(drop),
            Call::List(r) => c.list_networks(r).await.map(drop),
        }
        .expect_err(name);
        assert_eq!(err.code(), code, "{name}: {err:?}");
        for n in needles {
            assert!(
                err.message().contains(n),
                "{name}: message {:?} does not name {n:?}",
                err.message()
            );
        }
        if code == InvalidArgument {
            let details = tonic_types::StatusExt::get_error_details(&err);
            assert!(
                details.bad_request().is_some(),
                "{name}: no BadRequest details"
            );
        }
        assert_eq!(snapshot(&s).await, before, "{name}: state changed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sandbox_input_is_refused_naming_field_and_value_and_changes_nothing() {
    use Code::*;
    let s = Stack::start(Backend::Sqlite).await;
    s.networks()
        .create_network(with_subnet("n", "10.81.0.0/24"))
        .await
        .unwrap();
    let mut sb = crate::harness::sandboxes(&s);
    sb.create_sandbox(pb::CreateSandboxRequest {
        name: "there".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let sandbox = |f: fn(&mut pb::CreateSandboxRequest)| {
        let mut r = pb::CreateSandboxRequest {
            name: "s".into(),
            ..Default::default()
        };
        f(&mut r);
        r
    };
    let port = |p: pb::PortMapping| sandbox_with_port(p);
    let connect = |sandbox: &str, network: &str, f: fn(&mut pb::EndpointSettings)| {
        let mut settings = pb::EndpointSettings::default();
        f(&mut settings);
        pb::ConnectRequest {
            sandbox: sandbox.into(),
            network: network.into(),
            settings: Some(settings),
            ..Default::default()
        }
    };
    enum S {
        Create(pb::CreateSandboxRequest),
        Connect(pb::ConnectRequest),
        Disconnect(&'static str, &'static str),
        Get(&'static str),
        Delete(&'static str),
    }
    let cases: Vec<(&str, S, Code, &[&str])> = vec![
        (
            "sandbox name with a space",
            S::Create(sandbox(|r| r.name = "a b".into())),
            InvalidArgument,
            &["name", "a b"],
        ),
        (
            "sandbox name taken",
            S::Create(sandbox(|r| r.name = "there".into())),
            AlreadyExists,
            &["there"],
        ),
        (
            "unknown host",
            S::Create(sandbox(|r| r.host = "elsewhere".into())),
            InvalidArgument,
            &["host", "elsewhere"],
        ),
        (
            "network mode container",
            S::Create(sandbox(|r| r.network_mode = "container:x".into())),
            InvalidArgument,
            &["network_mode", "container:x"],
        ),
        (
            "bad hostname",
            S::Create(sandbox(|r| r.hostname = "-h".into())),
            InvalidArgument,
            &["hostname", "-h"],
        ),
        (
            "dns server not an ip",
            S::Create(sandbox(|r| {
                r.dns = Some(pb::DnsConfig {
                    servers: vec!["resolver".into()],
                    ..Default::default()
                })
            })),
            InvalidArgument,
            &["dns.servers[0]", "resolver"],
        ),
        (
            "extra host address",
            S::Create(sandbox(|r| {
                r.extra_hosts = vec![pb::ExtraHost {
                    hostname: "db".into(),
                    address: "10.0.0".into(),
                }]
            })),
            InvalidArgument,
            &["extra_hosts[0].address", "10.0.0"],
        ),
        (
            "container port 0",
            S::Create(port(pb::PortMapping {
                container_port: 0,
                ..Default::default()
            })),
            InvalidArgument,
            &["port_mappings[0].container_port", "0"],
        ),
        (
            "host port too big",
            S::Create(port(pb::PortMapping {
                container_port: 80,
                host_port: 70000,
                ..Default::default()
            })),
            InvalidArgument,
            &["port_mappings[0].host_port", "70000"],
        ),
        (
            "range past 65535",
            S::Create(port(pb::PortMapping {
                container_port: 65530,
                range: 10,
                ..Default::default()
            })),
            InvalidArgument,
            &["port_mappings[0].range", "10"],
        ),
        (
            "unknown protocol",
            S::Create(port(pb::PortMapping {
                container_port: 80,
                protocol: 9,
                ..Default::default()
            })),
            InvalidArgument,
            &["port_mappings[0].protocol", "9"],
        ),
        (
            "bad host ip",
            S::Create(port(pb::PortMapping {
                container_port: 80,
                host_ip: "localhost".into(),
                ..Default::default()
            })),
            InvalidArgument,
            &["port_mappings[0].host_ip", "localhost"],
        ),
        (
            "initial network unnamed",
            S::Create(sandbox(|r| {
                r.networks = vec![pb::NetworkAttachment::default()]
            })),
            InvalidArgument,
            &["networks[0].network"],
        ),
        (
            "initial network missing",
            S::Create(sandbox(|r| {
                r.networks = vec![pb::NetworkAttachment {
                    network: "nowhere".into(),
                    settings: None,
                }]
            })),
            NotFound,
            &["nowhere"],
        ),
        (
            "mac not a mac",
            S::Connect(connect("there", "n", |s| s.mac_address = "zz:00".into())),
            InvalidArgument,
            &["settings.mac_address", "zz:00"],
        ),
        (
            "multicast mac",
            S::Connect(connect("there", "n", |s| {
                s.mac_address = "01:00:5e:00:00:01".into()
            })),
            InvalidArgument,
            &["settings.mac_address", "01:00:5e:00:00:01"],
        ),
        (
            "interface too long",
            S::Connect(connect("there", "n", |s| {
                s.interface_name = "a-very-long-interface".into()
            })),
            InvalidArgument,
            &["settings.interface_name", "a-very-long-interface"],
        ),
        (
            "bad alias",
            S::Connect(connect("there", "n", |s| {
                s.aliases = vec!["bad alias".into()]
            })),
            InvalidArgument,
            &["settings.aliases[0]", "bad alias"],
        ),
        (
            "v6 in ipv4_address",
            S::Connect(connect("there", "n", |s| s.ipv4_address = "fd00::5".into())),
            InvalidArgument,
            &["settings.ipv4_address", "fd00::5"],
        ),
        (
            "address outside the subnet",
            S::Connect(connect("there", "n", |s| {
                s.ipv4_address = "10.82.0.5".into()
            })),
            InvalidArgument,
            &["settings.ipv4_address", "10.82.0.5"],
        ),
        (
            "link-local not an ip",
            S::Connect(connect("there", "n", |s| {
                s.link_local_ips = vec!["x".into()]
            })),
            InvalidArgument,
            &["settings.link_local_ips[0]", "x"],
        ),
        (
            "connect unknown sandbox",
            S::Connect(connect("ghost", "n", |_| {})),
            NotFound,
            &["ghost"],
        ),
        (
            "connect unknown network",
            S::Connect(connect("there", "void", |_| {})),
            NotFound,
            &["void"],
        ),
        (
            "connect to host network",
            S::Connect(connect("there", "host", |_| {})),
            FailedPrecondition,
            &["host", "network_mode"],
        ),
        (
            "connect without sandbox",
            S::Connect(connect("", "n", |_| {})),
            InvalidArgument,
            &["sandbox", "\"\""],
        ),
        (
            "disconnect not connected",
            S::Disconnect("there", "n"),
            NotFound,
            &["there", "\"n\""],
        ),
        (
            "get unknown sandbox",
            S::Get("nobody"),
            NotFound,
            &["nobody"],
        ),
        (
            "delete unknown sandbox",
            S::Delete("nobody"),
            NotFound,
            &["nobody"],
        ),
    ];
    let snapshot = |s: &Stack| {
        let (mut c, mut i, mut sb) = (s.networks(), s.ipam(), crate::harness::sandboxes(s));
        async move {
            let nets = c
                .list_networks(pb::ListNetworksRequest::default())
                .await
                .unwrap()
                .into_inner();
            let allocs = i
                .list_allocations(ipb::ListAllocationsRequest::default())
                .await
                .unwrap()
                .into_inner();
            let sbs = sb
                .list_sandboxes(pb::ListSandboxesRequest::default())
                .await
                .unwrap()
                .into_inner();
            format!("{nets:?}\n{allocs:?}\n{sbs:?}")
        }
    };
    for (name, call, code, needles) in cases {
        let before = snapshot(&s).await;
        let err = match call {
            S::Create(r) => sb.create_sandbox(r).await.map(drop),
            S::Connect(r) => sb.connect(r).await.map(drop),
            S::Disconnect(a, n) => sb
                .disconnect(pb::DisconnectRequest {
                    sandbox: a.into(),
                    network: n.into(),
                    ..Default::default()
                })
                .await
                .map(drop),
            S::Get(a) => sb
                .get_sandbox(pb::GetSandboxRequest { sandbox: a.into() })
                .await
                .map(drop),
            S::Delete(a) => sb
                .delete_sandbox(pb::DeleteSandboxRequest {
                    sandbox: a.into(),
                    ..Default::default()
                })
                .await
                .map(drop),
        }
        .expect_err(name);
        assert_eq!(err.code(), code, "{name}: {err:?}");
        for n in needles {
            assert!(
                err.message().contains(n),
                "{name}: message {:?} does not name {n:?}",
                err.message()
            );
        }
        assert_eq!(snapshot(&s).await, before, "{name}: state changed");
    }
}

fn sandbox_with_port(p: pb::PortMapping) -> pb::CreateSandboxRequest {
    pb::CreateSandboxRequest {
        name: "s".into(),
        port_mappings: vec![p],
        ..Default::default()
    }
}
