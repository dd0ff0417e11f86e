//! Hand-picked requests through the oracle: each bug the fuzzer found, and the hostile shapes
//! it should keep refusing.

use weft_fuzz_oracle::{Outcome, connect, network, sandbox};
use weft_proto::gateway::v1 as pb;

fn attachment(settings: pb::EndpointSettings) -> pb::NetworkAttachment {
    pb::NetworkAttachment {
        network: "front".into(),
        settings: Some(settings),
    }
}

fn port(host_ip: &str, host_port: u32, container_port: u32, range: u32) -> pb::PortMapping {
    pb::PortMapping {
        host_ip: host_ip.into(),
        host_port,
        container_port,
        protocol: pb::Protocol::Tcp as i32,
        range,
    }
}

#[test]
fn a_full_sandbox_renders_and_reads_back() {
    let req = pb::CreateSandboxRequest {
        name: "web".into(),
        hostname: "web-1".into(),
        dns: Some(pb::DnsConfig {
            servers: vec!["192.0.2.53".into(), "[fd00::1]:5353".into()],
            search: vec!["example.com".into(), "corp.".into()],
            options: vec!["ndots:2".into(), "rotate".into()],
        }),
        extra_hosts: vec![
            pb::ExtraHost {
                hostname: "db.example".into(),
                address: "0:0::7".into(),
            },
            pb::ExtraHost {
                hostname: "gw".into(),
                address: "host-gateway".into(),
            },
        ],
        port_mappings: vec![port("", 8080, 80, 1), port("127.0.0.1", 9000, 9100, 3)],
        networks: vec![attachment(pb::EndpointSettings {
            ipv6_address: "fd00::5".into(),
            aliases: vec!["api".into()],
            link_local_ips: vec!["169.254.7.7".into()],
            ..Default::default()
        })],
        ..Default::default()
    };
    assert_eq!(sandbox(req), Outcome::Accepted);
}

/// The agent refused both (link-local addresses not in CIDR form; the zero MAC).
#[test]
fn connect_with_link_local_addresses_or_a_zero_mac() {
    let req = |settings| pb::ConnectRequest {
        sandbox: "web".into(),
        network: "front".into(),
        settings: Some(settings),
        ..Default::default()
    };
    let ll = pb::EndpointSettings {
        link_local_ips: vec!["169.254.1.1".into(), "fe80::1".into()],
        ..Default::default()
    };
    assert_eq!(connect(req(ll)), Outcome::Accepted);
    let zero = pb::EndpointSettings {
        mac_address: "00:00:00:00:00:00".into(),
        ..Default::default()
    };
    assert_eq!(connect(req(zero)), Outcome::Refused);
}

/// Two spellings of one address, or a wildcard spelled long, are the same host address.
#[test]
fn host_addresses_spelled_differently_still_clash() {
    for (a, b) in [("::0", "::1"), ("0::1", "::1"), ("0.0.0.0", "127.0.0.1")] {
        let req = pb::CreateSandboxRequest {
            port_mappings: vec![port(a, 8080, 80, 1), port(b, 8080, 80, 1)],
            networks: vec![attachment(pb::EndpointSettings::default())],
            ..Default::default()
        };
        assert_eq!(sandbox(req), Outcome::RefusedLater, "{a} and {b}");
    }
}

#[test]
fn hostile_strings_are_refused_naming_the_field() {
    for bad in ["a\nnameserver 1.1.1.1", "a b", "a\tb", "é", "a*", "x;drop"] {
        let req = pb::CreateSandboxRequest {
            hostname: bad.into(),
            ..Default::default()
        };
        assert_eq!(sandbox(req), Outcome::Refused, "{bad:?}");
        let req = pb::CreateNetworkRequest {
            name: "n".into(),
            options: [("com.docker.network.bridge.name".to_owned(), bad.to_owned())].into(),
            ..Default::default()
        };
        assert_eq!(network(req), Outcome::Refused, "{bad:?}");
    }
}

#[test]
fn a_network_with_its_own_bridge_name_and_binding_address() {
    let req = pb::CreateNetworkRequest {
        name: "n".into(),
        enable_ipv6: true,
        ipam: Some(pb::Ipam {
            configs: vec![pb::IpamConfig {
                subnet: "10.9.0.0/24".into(),
                gateway: "10.9.0.1".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        options: [
            ("com.docker.network.bridge.name", "br-front"),
            ("com.docker.network.bridge.host_binding_ipv4", "192.0.2.1"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .into(),
        ..Default::default()
    };
    assert_eq!(network(req), Outcome::Accepted);
}

/// Found by the fuzz loop (seed 2): 255 bytes of search domains made a `search` line musl
/// ignores; now refused naming `dns.search`.
#[test]
fn a_search_line_musl_would_ignore_is_refused() {
    let search = |last: &str| {
        let mut s: Vec<String> = ["a", "b", "c", "d"].map(|c| c.repeat(60)).to_vec();
        s.push(last.into());
        pb::CreateSandboxRequest {
            dns: Some(pb::DnsConfig {
                search: s,
                ..Default::default()
            }),
            ..Default::default()
        }
    };
    assert_eq!(sandbox(search("abc")), Outcome::Accepted);
    assert_eq!(sandbox(search("abcdefghijk")), Outcome::Refused);
}
