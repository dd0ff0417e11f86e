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

fn driver(driver: &str) -> pb::CreateNetworkRequest {
    pb::CreateNetworkRequest {
        driver: driver.into(),
        ..create("d")
    }
}

fn net(name: &str, f: impl FnOnce(&mut pb::CreateNetworkRequest)) -> pb::CreateNetworkRequest {
    let mut r = create(name);
    f(&mut r);
    r
}

/// Asserts that `err` has `code` and a message naming each of `needles`.
#[track_caller]
fn assert_code_names(case: &str, err: &tonic::Status, code: Code, needles: &[&str]) {
    assert_eq!(err.code(), code, "{case}: {err:?}");
    for n in needles {
        assert!(
            err.message().contains(n),
            "{case}: message {:?} does not name {n:?}",
            err.message()
        );
    }
}

/// A stack with network `n` on `subnet` and sandbox `there`, and a sandbox client.
async fn with_n_and_there(
    subnet: &str,
) -> (
    Stack,
    pb::sandbox_service_client::SandboxServiceClient<weft_runtime::access::Authed>,
) {
    let s = Stack::start(Backend::Sqlite).await;
    s.networks()
        .create_network(with_subnet("n", subnet))
        .await
        .unwrap();
    let mut sb = s.sandboxes();
    sb.create_sandbox(pb::CreateSandboxRequest {
        name: "there".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    (s, sb)
}

/// What a refused call must leave as it was besides the networks.
#[derive(Debug, Clone, Copy)]
enum Kept {
    Pools,
    AllocationsAndSandboxes,
}

/// The networks (the list carries the current revision, so any event written changes the
/// snapshot too) and what `kept` names, as text.
async fn snapshot(s: &Stack, kept: Kept) -> String {
    let nets = s
        .networks()
        .list_networks(pb::ListNetworksRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut ipam = s.ipam();
    match kept {
        Kept::Pools => {
            let pools = ipam.list_pools(ipb::ListPoolsRequest::default()).await;
            format!("{nets:?}\n{:?}", pools.unwrap().into_inner())
        }
        Kept::AllocationsAndSandboxes => {
            let allocs = ipam
                .list_allocations(ipb::ListAllocationsRequest::default())
                .await;
            let sbs = s
                .sandboxes()
                .list_sandboxes(pb::ListSandboxesRequest::default())
                .await;
            format!(
                "{nets:?}\n{:?}\n{:?}",
                allocs.unwrap().into_inner(),
                sbs.unwrap().into_inner()
            )
        }
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
    use Call::{Create, Delete, Get, List, Update};
    const MTU: &str = "com.docker.network.driver.mtu";
    const BRIDGE: &str = "com.docker.network.bridge.name";
    let update = |network: &str, paths: &[&str], f: fn(&mut pb::UpdateNetworkRequest)| {
        let mut r = pb::UpdateNetworkRequest {
            network: network.into(),
            update_mask: (!paths.is_empty()).then(|| mask(paths)).flatten(),
            ..Default::default()
        };
        f(&mut r);
        Update(r)
    };
    let ipam = |f: fn(&mut pb::Ipam)| {
        net("i", |r| {
            let mut ipam = pb::Ipam::default();
            f(&mut ipam);
            r.ipam = Some(ipam);
        })
    };
    // (case, call, code, what the message names); one row a case.
    #[rustfmt::skip]
    let cases: Vec<(&str, Call, Code, &[&str])> = vec![
        ("empty name", Create(create("")), InvalidArgument, &["name", "\"\""]),
        ("name with space", Create(create("a b")), InvalidArgument, &["name", "a b"]),
        ("name starts with dash", Create(create("-x")), InvalidArgument, &["name", "-x"]),
        ("name too long", Create(create(&"n".repeat(129))), InvalidArgument, &["name", "128"]),
        ("name taken", Create(create("existing")), AlreadyExists, &["existing"]),
        ("unknown driver", Create(driver("wormhole")), InvalidArgument, &["driver", "wormhole", "bridge"]),
        ("second none network", Create(driver("none")), InvalidArgument, &["driver", "none", "predefined"]),
        ("unknown option", Create(opt("o", "com.docker.network.bridge.nmae", "x")), InvalidArgument, &["options[com.docker.network.bridge.nmae]", BRIDGE]),
        ("option of another driver", Create(opt("o", "macvlan_mode", "bridge")), InvalidArgument, &["options[macvlan_mode]"]),
        ("mtu too small", Create(opt("o", MTU, "67")), InvalidArgument, &[MTU, "67"]),
        ("mtu not a number", Create(opt("o", MTU, "big")), InvalidArgument, &[MTU, "big"]),
        ("icc not a bool", Create(opt("o", "com.docker.network.bridge.enable_icc", "maybe")), InvalidArgument, &["enable_icc", "maybe"]),
        ("binding not an ipv4", Create(opt("o", "com.docker.network.bridge.host_binding_ipv4", "::1")), InvalidArgument, &["host_binding_ipv4", "::1"]),
        ("bridge name too long", Create(opt("o", BRIDGE, "a-very-long-bridge-name")), InvalidArgument, &["bridge.name", "a-very-long-bridge-name"]),
        ("unknown ipam driver", Create(ipam(|i| i.driver = "dhcp".into())), InvalidArgument, &["ipam.driver", "dhcp"]),
        ("ipam option", Create(ipam(|i| i.options = [("x".to_owned(), "y".to_owned())].into())), InvalidArgument, &["ipam.options[x]"]),
        ("no family", Create(net("f", |r| r.enable_ipv4 = Some(false))), InvalidArgument, &["enable_ipv4", "false"]),
        ("v6 subnet without ipv6", Create(with_subnet("f", "fd00:1::/64")), InvalidArgument, &["ipam.configs[0].subnet", "fd00:1::/64", "enable_ipv6"]),
        ("empty subnet in a config", Create(cfg("s", |c| c.subnet = String::new())), InvalidArgument, &["ipam.configs[0].subnet", "required"]),
        ("prefix too long", Create(with_subnet("s", "10.0.0.0/33")), InvalidArgument, &["ipam.configs[0].subnet", "10.0.0.0/33"]),
        ("host bits", Create(with_subnet("s", "10.0.0.1/24")), InvalidArgument, &["ipam.configs[0].subnet", "10.0.0.1/24"]),
        ("gateway outside", Create(cfg("s", |c| c.gateway = "10.71.0.1".into())), InvalidArgument, &["ipam.configs[0].gateway", "10.71.0.1"]),
        ("range outside", Create(cfg("s", |c| c.ip_range = "10.72.0.0/25".into())), InvalidArgument, &["ipam.configs[0].ip_range", "10.72.0.0/25"]),
        ("aux outside", Create(cfg("s", |c| _ = c.aux_addresses.insert("r".into(), "10.73.0.9".into()))), InvalidArgument, &["ipam.configs[0].aux_addresses[r]", "10.73.0.9"]),
        ("overlap", Create(with_subnet("s", "10.80.4.0/24")), AlreadyExists, &["10.80.4.0/24", "10.80.0.0/16"]),
        ("dns server not an ip", Create(net("n", |r| r.dns_servers = vec!["dns.example".into()])), InvalidArgument, &["dns_servers[0]", "dns.example"]),
        ("request id too long", Create(net("n", |r| r.request_id = "r".repeat(200))), InvalidArgument, &["request_id", "128"]),
        ("get empty", Get(""), InvalidArgument, &["network", "\"\""]),
        ("get unknown", Get("nope"), NotFound, &["nope"]),
        ("delete unknown", Delete("ghost"), NotFound, &["ghost"]),
        ("delete predefined", Delete("host"), FailedPrecondition, &["host", "predefined"]),
        ("update without mask", update("existing", &[], |_| {}), InvalidArgument, &["update_mask"]),
        ("update unknown path", update("existing", &["driver"], |_| {}), InvalidArgument, &["update_mask", "driver"]),
        ("update bad dns", update("existing", &["dns_servers"], |r| r.dns_servers = vec!["1.2.3".into()]), InvalidArgument, &["dns_servers[0]", "1.2.3"]),
        ("update predefined", update("bridge", &["labels"], |_| {}), FailedPrecondition, &["bridge", "predefined"]),
        ("update unknown network", update("ghost", &["labels"], |_| {}), NotFound, &["ghost"]),
        ("bad label filter", List(pb::ListNetworksRequest { label: vec!["=x".into()], ..Default::default() }), InvalidArgument, &["label[0]", "=x"]),
    ];
    for (name, call, code, needles) in cases {
        let before = snapshot(&s, Kept::Pools).await;
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
        assert_code_names(name, &err, code, needles);
        if code == InvalidArgument {
            let details = tonic_types::StatusExt::get_error_details(&err);
            assert!(
                details.bad_request().is_some(),
                "{name}: no BadRequest details"
            );
        }
        assert_eq!(
            snapshot(&s, Kept::Pools).await,
            before,
            "{name}: state changed"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sandbox_input_is_refused_naming_field_and_value_and_changes_nothing() {
    use Code::*;
    let (s, mut sb) = with_n_and_there("10.81.0.0/24").await;
    let sandbox = |f: fn(&mut pb::CreateSandboxRequest)| {
        let mut r = pb::CreateSandboxRequest {
            name: "s".into(),
            ..Default::default()
        };
        f(&mut r);
        r
    };
    // A port mapping of container port 80 and what `f` sets.
    let port = |f: fn(&mut pb::PortMapping)| {
        let mut p = pb::PortMapping {
            container_port: 80,
            ..Default::default()
        };
        f(&mut p);
        sandbox_with_port(p)
    };
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
    // Connect sandbox `there` to network `n` with what `f` sets.
    let on_n = |f: fn(&mut pb::EndpointSettings)| S::Connect(connect("there", "n", f));
    enum S {
        Create(pb::CreateSandboxRequest),
        Connect(pb::ConnectRequest),
        Disconnect(&'static str, &'static str),
        Get(&'static str),
        Delete(&'static str),
    }
    use S::{Connect, Create, Delete, Disconnect, Get};
    // (case, call, code, what the message names); one row a case.
    #[rustfmt::skip]
    let cases: Vec<(&str, S, Code, &[&str])> = vec![
        ("sandbox name with a space", Create(sandbox(|r| r.name = "a b".into())), InvalidArgument, &["name", "a b"]),
        ("sandbox name taken", Create(sandbox(|r| r.name = "there".into())), AlreadyExists, &["there"]),
        ("unknown host", Create(sandbox(|r| r.host = "elsewhere".into())), InvalidArgument, &["host", "elsewhere"]),
        ("network mode container", Create(sandbox(|r| r.network_mode = "container:x".into())), InvalidArgument, &["network_mode", "container:x"]),
        ("bad hostname", Create(sandbox(|r| r.hostname = "-h".into())), InvalidArgument, &["hostname", "-h"]),
        ("dns server not an ip", Create(sandbox(|r| r.dns = Some(pb::DnsConfig { servers: vec!["resolver".into()], ..Default::default() }))), InvalidArgument, &["dns.servers[0]", "resolver"]),
        ("extra host address", Create(sandbox(|r| r.extra_hosts = vec![pb::ExtraHost { hostname: "db".into(), address: "10.0.0".into() }])), InvalidArgument, &["extra_hosts[0].address", "10.0.0"]),
        ("container port 0", Create(port(|p| p.container_port = 0)), InvalidArgument, &["port_mappings[0].container_port", "0"]),
        ("host port too big", Create(port(|p| p.host_port = 70000)), InvalidArgument, &["port_mappings[0].host_port", "70000"]),
        ("range past 65535", Create(port(|p| (p.container_port, p.range) = (65530, 10))), InvalidArgument, &["port_mappings[0].range", "10"]),
        ("unknown protocol", Create(port(|p| p.protocol = 9)), InvalidArgument, &["port_mappings[0].protocol", "9"]),
        ("bad host ip", Create(port(|p| p.host_ip = "localhost".into())), InvalidArgument, &["port_mappings[0].host_ip", "localhost"]),
        ("initial network unnamed", Create(sandbox(|r| r.networks = vec![pb::NetworkAttachment::default()])), InvalidArgument, &["networks[0].network"]),
        ("initial network missing", Create(sandbox(|r| r.networks = vec![pb::NetworkAttachment { network: "nowhere".into(), settings: None }])), NotFound, &["nowhere"]),
        ("mac not a mac", on_n(|s| s.mac_address = "zz:00".into()), InvalidArgument, &["settings.mac_address", "zz:00"]),
        ("multicast mac", on_n(|s| s.mac_address = "01:00:5e:00:00:01".into()), InvalidArgument, &["settings.mac_address", "01:00:5e:00:00:01"]),
        ("interface too long", on_n(|s| s.interface_name = "a-very-long-interface".into()), InvalidArgument, &["settings.interface_name", "a-very-long-interface"]),
        ("bad alias", on_n(|s| s.aliases = vec!["bad alias".into()]), InvalidArgument, &["settings.aliases[0]", "bad alias"]),
        ("v6 in ipv4_address", on_n(|s| s.ipv4_address = "fd00::5".into()), InvalidArgument, &["settings.ipv4_address", "fd00::5"]),
        ("address outside the subnet", on_n(|s| s.ipv4_address = "10.82.0.5".into()), InvalidArgument, &["settings.ipv4_address", "10.82.0.5"]),
        ("link-local not an ip", on_n(|s| s.link_local_ips = vec!["x".into()]), InvalidArgument, &["settings.link_local_ips[0]", "x"]),
        ("connect unknown sandbox", Connect(connect("ghost", "n", |_| {})), NotFound, &["ghost"]),
        ("connect unknown network", Connect(connect("there", "void", |_| {})), NotFound, &["void"]),
        ("connect to host network", Connect(connect("there", "host", |_| {})), FailedPrecondition, &["host", "network_mode"]),
        ("connect without sandbox", Connect(connect("", "n", |_| {})), InvalidArgument, &["sandbox", "\"\""]),
        ("disconnect not connected", Disconnect("there", "n"), NotFound, &["there", "\"n\""]),
        ("get unknown sandbox", Get("nobody"), NotFound, &["nobody"]),
        ("delete unknown sandbox", Delete("nobody"), NotFound, &["nobody"]),
    ];
    for (name, call, code, needles) in cases {
        let before = snapshot(&s, Kept::AllocationsAndSandboxes).await;
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
        assert_code_names(name, &err, code, needles);
        assert_eq!(
            snapshot(&s, Kept::AllocationsAndSandboxes).await,
            before,
            "{name}: state changed"
        );
    }
}

fn sandbox_with_port(p: pb::PortMapping) -> pb::CreateSandboxRequest {
    pb::CreateSandboxRequest {
        name: "s".into(),
        port_mappings: vec![p],
        ..Default::default()
    }
}

/// One kind of hostile string, as the attacker would send it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hostile {
    Newline,
    CarriageReturn,
    Nul,
    Tab,
    Space,
    /// nftables' interface wildcard.
    Star,
    Slash,
    /// 300 characters.
    Long,
    /// Multibyte, shorter than 12 bytes.
    MultibyteShort,
    /// Multibyte, longer than 12 bytes (a byte slice [..12] would split a character).
    MultibyteLong,
}

impl Hostile {
    const ALL: [Hostile; 10] = [
        Hostile::Newline,
        Hostile::CarriageReturn,
        Hostile::Nul,
        Hostile::Tab,
        Hostile::Space,
        Hostile::Star,
        Hostile::Slash,
        Hostile::Long,
        Hostile::MultibyteShort,
        Hostile::MultibyteLong,
    ];
    /// What a terminal, a file or a rule would take as a separator or a command.
    const CONTROL: [Hostile; 4] = [
        Hostile::Newline,
        Hostile::CarriageReturn,
        Hostile::Nul,
        Hostile::Tab,
    ];

    /// `good` made hostile.
    fn spoil(self, good: &str) -> String {
        match self {
            Hostile::Newline => format!("{good}\nnameserver 192.0.2.66"),
            Hostile::CarriageReturn => format!("{good}\rx"),
            Hostile::Nul => format!("{good}\0x"),
            Hostile::Tab => format!("{good}\tx"),
            Hostile::Space => format!("{good} x"),
            Hostile::Star => format!("{good}*"),
            Hostile::Slash => format!("{good}/x"),
            Hostile::Long => format!("{good}{}", "a".repeat(300)),
            Hostile::MultibyteShort => "éé".to_owned(),
            Hostile::MultibyteLong => "ééééééééé".to_owned(),
        }
    }
}

/// A request made hostile in one field.
#[derive(Debug, Clone)]
enum Attack {
    Sandbox(pb::CreateSandboxRequest),
    Connect(pb::ConnectRequest),
    Network(pb::CreateNetworkRequest),
    UpdateNetwork(pb::UpdateNetworkRequest),
    ListNetworks(pb::ListNetworksRequest),
    ListSandboxes(pb::ListSandboxesRequest),
    ListHosts(pb::ListHostsRequest),
}

/// The sandbox every sandbox attack starts from: on a network, so that a request that got
/// past validation would take an address from IPAM and reach the agent.
fn hostile_sandbox(f: impl FnOnce(&mut pb::CreateSandboxRequest)) -> Attack {
    let mut r = pb::CreateSandboxRequest {
        name: "hostile".into(),
        networks: vec![pb::NetworkAttachment {
            network: "n".into(),
            settings: None,
        }],
        ..Default::default()
    };
    f(&mut r);
    Attack::Sandbox(r)
}

fn hostile_settings(f: impl FnOnce(&mut pb::EndpointSettings)) -> Attack {
    let mut s = pb::EndpointSettings::default();
    f(&mut s);
    Attack::Connect(pb::ConnectRequest {
        sandbox: "there".into(),
        network: "n".into(),
        settings: Some(s),
        ..Default::default()
    })
}

fn hostile_network(f: impl FnOnce(&mut pb::CreateNetworkRequest)) -> Attack {
    let mut r = crate::harness::create("hostile-net");
    f(&mut r);
    Attack::Network(r)
}

/// Every row: a name, the attack, and the field the refusal must name. String fields get
/// every kind of hostile string they must refuse; repeated fields get one entry more than
/// their limit; ranges get the first value past them.
fn hostile_rows() -> Vec<(String, Attack, String)> {
    type Sb = fn(&mut pb::CreateSandboxRequest, String);
    type Ep = fn(&mut pb::EndpointSettings, String);
    let sandbox_strings: [(&str, Sb, &[Hostile]); 6] = [
        (
            "dns.search[0]",
            |r, v| {
                r.dns = Some(pb::DnsConfig {
                    search: vec![v],
                    ..Default::default()
                })
            },
            &Hostile::ALL,
        ),
        (
            "dns.options[0]",
            |r, v| {
                r.dns = Some(pb::DnsConfig {
                    options: vec![v],
                    ..Default::default()
                })
            },
            &Hostile::ALL,
        ),
        ("hostname", |r, v| r.hostname = v, &Hostile::ALL),
        (
            "extra_hosts[0].hostname",
            |r, v| {
                r.extra_hosts = vec![pb::ExtraHost {
                    hostname: v,
                    address: "192.0.2.7".into(),
                }]
            },
            &Hostile::ALL,
        ),
        ("container_id", |r, v| r.container_id = v, &Hostile::ALL),
        ("netns_path", |r, v| r.netns_path = v, &Hostile::CONTROL),
    ];
    let settings_strings: [(&str, Ep); 2] = [
        ("aliases[0]", |s, v| s.aliases = vec![v]),
        ("interface_name", |s, v| s.interface_name = v),
    ];
    let good = |field: &str| match field {
        "netns_path" => "/run/netns/x",
        "dns.options[0]" => "ndots:1",
        "interface_name" | "options[com.docker.network.bridge.name]" => "eth1",
        _ => "web",
    };
    let mut rows = Vec::new();
    for (field, set, classes) in sandbox_strings {
        for h in classes {
            let value = h.spoil(good(field));
            rows.push((
                format!("{field}: {h:?}"),
                hostile_sandbox(|r| set(r, value)),
                field.to_owned(),
            ));
        }
    }
    for (field, set) in settings_strings {
        for h in Hostile::ALL {
            let value = h.spoil(good(field));
            let v = value.clone();
            rows.push((
                format!("settings.{field}: {h:?}"),
                hostile_settings(|s| set(s, v)),
                format!("settings.{field}"),
            ));
            rows.push((
                format!("networks[0].settings.{field}: {h:?}"),
                hostile_sandbox(|r| {
                    let mut s = pb::EndpointSettings::default();
                    set(&mut s, value);
                    r.networks[0].settings = Some(s);
                }),
                format!("networks[0].settings.{field}"),
            ));
        }
    }
    for h in Hostile::ALL {
        let field = "options[com.docker.network.bridge.name]";
        let value = h.spoil(good(field));
        rows.push((
            format!("{field}: {h:?}"),
            hostile_network(|r| {
                r.options = [("com.docker.network.bridge.name".to_owned(), value)].into()
            }),
            field.to_owned(),
        ));
    }
    // Labels: keys refuse control characters, whitespace and length; values control characters.
    for h in Hostile::CONTROL
        .into_iter()
        .chain([Hostile::Space, Hostile::Long])
    {
        let key = h.spoil("team");
        let k = key.clone();
        rows.push((
            format!("sandbox label key: {h:?}"),
            hostile_sandbox(|r| r.labels = [(k, "x".to_owned())].into()),
            "labels".to_owned(),
        ));
        rows.push((
            format!("network label key: {h:?}"),
            hostile_network(|r| r.labels = [(key, "x".to_owned())].into()),
            "labels".to_owned(),
        ));
    }
    for h in Hostile::CONTROL {
        let value = h.spoil("blue");
        rows.push((
            format!("sandbox label value: {h:?}"),
            hostile_sandbox(|r| r.labels = [("team".to_owned(), value)].into()),
            "labels[team]".to_owned(),
        ));
    }
    rows.extend(count_rows());
    rows.extend(range_rows());
    rows
}

/// One row of a hostile table: its name, the attack, the field the refusal must name.
fn row(name: &str, attack: Attack, field: &str) -> (String, Attack, String) {
    (name.to_owned(), attack, field.to_owned())
}

/// One entry past each count limit (taken from the gateway's own constants).
#[rustfmt::skip]
fn count_rows() -> Vec<(String, Attack, String)> {
    use gateway::domain::limits as l;
    let n = |max: usize| max + 1;
    let labels = |count: usize| -> std::collections::HashMap<String, String> {
        (0..count)
            .map(|i| (format!("k{i}"), "v".to_owned()))
            .collect()
    };
    let ports = |count: usize| -> Vec<pb::PortMapping> {
        (0..count)
            .map(|i| pb::PortMapping {
                container_port: 80,
                host_port: 20000 + u32::try_from(i).unwrap(),
                ..Default::default()
            })
            .collect()
    };
    vec![
        row("1,000 labels on a network", hostile_network(|r| r.labels = labels(1000)), "labels"),
        row("one label too many on a sandbox", hostile_sandbox(|r| r.labels = labels(n(l::MAX_LABELS))), "labels"),
        row("one alias too many", hostile_settings(|s| { s.aliases = (0..n(l::MAX_ALIASES)).map(|i| format!("a{i}")).collect() }), "settings.aliases"),
        row("one extra host too many", hostile_sandbox(|r| { r.extra_hosts = (0..n(l::MAX_EXTRA_HOSTS)).map(|i| pb::ExtraHost { hostname: format!("h{i}"), address: "192.0.2.1".into() }).collect() }), "extra_hosts"),
        row("one DNS server too many", hostile_sandbox(|r| { r.dns = Some(pb::DnsConfig { servers: vec!["192.0.2.53".into(); n(l::MAX_DNS_SERVERS)],..Default::default() }) }), "dns.servers"),
        row("one network DNS server too many", hostile_network(|r| r.dns_servers = vec!["192.0.2.53".into(); n(l::MAX_DNS_SERVERS)]), "dns_servers"),
        row("one search domain too many", hostile_sandbox(|r| { r.dns = Some(pb::DnsConfig { search: (0..n(l::MAX_DNS_SEARCH)).map(|i| format!("d{i}.example")).collect(),..Default::default() }) }), "dns.search"),
        row("a search line longer than resolvers read", hostile_sandbox(|r| { r.dns = Some(pb::DnsConfig { search: (0..l::MAX_DNS_SEARCH).map(|i| format!("{i}{}", "d".repeat(60))).collect(),..Default::default() }) }), "dns.search"),
        row("one DNS option too many", hostile_sandbox(|r| { r.dns = Some(pb::DnsConfig { options: vec!["rotate".into(); n(l::MAX_DNS_OPTIONS)],..Default::default() }) }), "dns.options"),
        row("one port mapping too many", hostile_sandbox(|r| r.port_mappings = ports(n(l::MAX_PORT_MAPPINGS))), "port_mappings"),
        row("one initial network too many", hostile_sandbox(|r| { r.networks = vec![pb::NetworkAttachment { network: "n".into(), settings: None }; n(l::MAX_ATTACHMENTS)] }), "networks"),
        row("one link-local address too many", hostile_settings(|s| { s.link_local_ips = (0..n(l::MAX_LINK_LOCAL_IPS)).map(|i| format!("169.254.1.{i}")).collect() }), "settings.link_local_ips"),
        row("one subnet too many", hostile_network(|r| { r.ipam = Some(pb::Ipam { configs: (0..n(l::MAX_SUBNETS)).map(|i| pb::IpamConfig { subnet: format!("10.9{i}.0.0/24"),..Default::default() }).collect(),..Default::default() }) }), "ipam.configs"),
    ]
}

/// Values past a range, and values that would reach the kernel or a rule in a form it must
/// not take.
#[rustfmt::skip]
fn range_rows() -> Vec<(String, Attack, String)> {
    let subnet = |s: &str| {
        let s = s.to_owned();
        hostile_network(move |r| {
            r.enable_ipv6 = s.contains(':');
            r.ipam = Some(pb::Ipam {
                configs: vec![pb::IpamConfig {
                    subnet: s,
                    ..Default::default()
                }],
                ..Default::default()
            })
        })
    };
    let dns_option = |o: &str| {
        let o = o.to_owned();
        hostile_sandbox(move |r| {
            r.dns = Some(pb::DnsConfig {
                options: vec![o],
                ..Default::default()
            })
        })
    };
    let port = |host_port: u32, container_port: u32, range: u32| {
        hostile_sandbox(move |r| {
            r.port_mappings = vec![pb::PortMapping {
                host_port,
                container_port,
                range,
                ..Default::default()
            }]
        })
    };
    let sysctl = "com.docker.network.endpoint.sysctls";
    vec![
        row("port range past 65535", port(65000, 80, 600), "port_mappings[0].range"),
        row("a block of chosen ports past the ephemeral range", port(0, 1, 20000), "port_mappings[0].range"),
        row("a /4 subnet", subnet("16.0.0.0/4"), "ipam.configs[0].subnet"),
        row("any free /4", subnet("0.0.0.0/4"), "ipam.configs[0].subnet"),
        row("a /16 IPv6 subnet", subnet("fd00::/16"), "ipam.configs[0].subnet"),
        row("ndots past 15", dns_option("ndots:16"), "dns.options[0]"),
        row("an option the resolver does not know", dns_option("inet6-dns"), "dns.options[0]"),
        row("two options in one", dns_option("ndots:1 rotate"), "dns.options[0]"),
        row("netns path with ..", hostile_sandbox(|r| r.netns_path = "/run/netns/../../proc/1/ns/net".into()), "netns_path"),
        row("relative netns path", hostile_sandbox(|r| r.netns_path = "proc/1/ns/net".into()), "netns_path"),
        row("another sandbox's Weft-made namespace", hostile_sandbox(|r| r.netns_path = "/var/run/netns/weft-0123456789abcdef".into()), "netns_path"),
        row("netns path over 4096 bytes", hostile_sandbox(|r| r.netns_path = format!("/{}", "a".repeat(4200))), "netns_path"),
        row("hostname over 64 characters", hostile_sandbox(|r| r.hostname = format!("{}.b", "a".repeat(63))), "hostname"),
        row("a 300-char alias", hostile_settings(|s| s.aliases = vec!["a".repeat(300)]), "settings.aliases[0]"),
        row("a 64-char DNS label", hostile_settings(|s| s.aliases = vec!["a".repeat(64)]), "settings.aliases[0]"),
        row("interface name .", hostile_settings(|s| s.interface_name = ".".into()), "settings.interface_name"),
        row("interface name ..", hostile_settings(|s| s.interface_name = "..".into()), "settings.interface_name"),
        row("interface name of 16 bytes", hostile_settings(|s| s.interface_name = "abcdefghijklmnop".into()), "settings.interface_name"),
        row("a link-local address that is not", hostile_settings(|s| s.link_local_ips = vec!["127.0.0.1".into()]), "settings.link_local_ips[0]"),
        row("a handoff interface name of 16 bytes", hostile_settings(|s| { s.driver_options = [("weft.endpoint.handoff".to_owned(), "abcdefghijklmnop".to_owned())].into() }), "settings.driver_options[weft.endpoint.handoff]"),
        row("an unknown endpoint option", hostile_settings(|s| { s.driver_options = [("com.docker.network.endpoint.ifname".to_owned(), "x".to_owned())].into() }), "settings.driver_options[com.docker.network.endpoint.ifname]"),
        row("a sysctl outside the interface", hostile_settings(|s| { s.driver_options = [(sysctl.to_owned(), "net.ipv4.conf.IFNAME.../../../kernel/x=1".to_owned())].into() }), &format!("settings.driver_options[{sysctl}]")),
        row("a sysctl of another subsystem", hostile_settings(|s| { s.driver_options = [(sysctl.to_owned(), "kernel.panic=1".to_owned())].into() }), &format!("settings.driver_options[{sysctl}]")),
        row("a VLAN parent with VLAN id 4095", hostile_network(|r| { r.driver = "macvlan".into(); r.options = [("parent".to_owned(), "eth0.4095".to_owned())].into() }), "options[parent]"),
        row("parent with a wildcard", hostile_network(|r| { r.driver = "macvlan".into(); r.options = [("parent".to_owned(), "eth*".to_owned())].into() }), "options[parent]"),
        row("interface prefix too long", hostile_network(|r| { r.options = [("com.docker.network.container_iface_prefix".to_owned(), "abcdefghijklm".to_owned())].into() }), "options[com.docker.network.container_iface_prefix]"),
        row("VXLAN id past 24 bits", hostile_network(|r| { r.driver = "overlay".into(); r.options = [("com.docker.network.driver.overlay.vxlanid_list".to_owned(), "16777216".to_owned())].into() }), "options[com.docker.network.driver.overlay.vxlanid_list]"),
        row("a label update with a newline", Attack::UpdateNetwork(pb::UpdateNetworkRequest { network: "n".into(), labels: [("a\nb".to_owned(), "x".to_owned())].into(), update_mask: mask(&["labels"]),..Default::default() }), "labels"),
        row("a lookup key of 300 bytes", Attack::Connect(pb::ConnectRequest { sandbox: "s".repeat(300), network: "n".into(),..Default::default() }), "sandbox"),
        row("page_size past the maximum", Attack::ListNetworks(pb::ListNetworksRequest { page_size: 1001,..Default::default() }), "page_size"),
        row("a page token this list did not give", Attack::ListSandboxes(pb::ListSandboxesRequest { page_token: "not-a-token".into(),..Default::default() }), "page_token"),
        row("a hosts page token from the networks list", Attack::ListHosts(pb::ListHostsRequest { page_token: "76313a6e6574776f726b733a61".into(),..Default::default() }), "page_token"),
        row("a filter with too many values", Attack::ListNetworks(pb::ListNetworksRequest { name: vec!["x".into(); 65],..Default::default() }), "name"),
    ]
}

/// What a refused request must leave as it was: the event revision, IPAM's allocations and
/// pools, what the agent was asked, and no object of the attacker's name.
async fn written(s: &Stack) -> String {
    let (mut c, mut i) = (s.networks(), s.ipam());
    let revision = s.events_revision().await;
    let allocs = i
        .list_allocations(ipb::ListAllocationsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let pools = i
        .list_pools(ipb::ListPoolsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let agent = {
        let calls = s.agent.calls.lock().unwrap();
        (
            calls.attached.len(),
            calls.detached.len(),
            calls.sandboxes.len(),
        )
    };
    let sandbox = crate::harness::sandboxes(s)
        .get_sandbox(pb::GetSandboxRequest {
            sandbox: "hostile".into(),
        })
        .await
        .map(drop)
        .map_err(|e| e.code());
    let network = c
        .get_network(pb::GetNetworkRequest {
            network: "hostile-net".into(),
        })
        .await
        .map(drop)
        .map_err(|e| e.code());
    assert_eq!(sandbox, Err(Code::NotFound), "the hostile sandbox exists");
    assert_eq!(network, Err(Code::NotFound), "the hostile network exists");
    format!("revision {revision}\n{allocs:?}\n{pools:?}\nagent {agent:?}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_is_refused_naming_the_field_and_writes_nothing() {
    let (s, mut sb) = with_n_and_there("10.83.0.0/24").await;
    let (mut nets, mut hosts) = (s.networks(), s.hosts());
    let rows = hostile_rows();
    assert!(rows.len() >= 40, "only {} rows", rows.len());
    println!("{} hostile inputs", rows.len());
    for (name, attack, field) in rows {
        let before = written(&s).await;
        let err = match attack.clone() {
            Attack::Sandbox(r) => sb.create_sandbox(r).await.map(drop),
            Attack::Connect(r) => sb.connect(r).await.map(drop),
            Attack::Network(r) => nets.create_network(r).await.map(drop),
            Attack::UpdateNetwork(r) => nets.update_network(r).await.map(drop),
            Attack::ListNetworks(r) => nets.list_networks(r).await.map(drop),
            Attack::ListSandboxes(r) => sb.list_sandboxes(r).await.map(drop),
            Attack::ListHosts(r) => hosts.list_hosts(r).await.map(drop),
        }
        .expect_err(&name);
        assert_eq!(err.code(), Code::InvalidArgument, "{name}: {err:?}");
        let details = tonic_types::StatusExt::get_error_details(&err);
        let fields: Vec<String> = details
            .bad_request()
            .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
            .unwrap_or_default();
        assert!(
            fields.contains(&field),
            "{name}: BadRequest names {fields:?}, not {field:?}"
        );
        assert!(err.message().contains(&field), "{name}: {}", err.message());
        assert_eq!(written(&s).await, before, "{name}: something was written");
    }
}

/// A container id whose first 12 bytes would split a character: refused, and the gateway
/// serves on (the same id's first 12 characters would have become the hostname).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multibyte_container_id_never_panics_the_gateway() {
    let s = Stack::start(Backend::Sqlite).await;
    let mut sb = crate::harness::sandboxes(&s);
    for id in ["ééééééééé", "éé", "aaaaaaaaaaaé", "a\u{1F600}bcdefghijklmn"] {
        let err = sb
            .create_sandbox(pb::CreateSandboxRequest {
                name: "x".into(),
                container_id: id.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{id}");
        assert!(err.message().contains("container_id"), "{}", err.message());
    }
    let made = sb
        .create_sandbox(pb::CreateSandboxRequest {
            name: "after".into(),
            container_id: "0123456789abcdef".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(made.hostname, "0123456789ab");
}
