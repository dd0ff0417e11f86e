//! How large a request may be (`weft_runtime::size`): past its method's limit, a request of a
//! known caller is refused with RESOURCE_EXHAUSTED naming the limit, while one at the limit goes
//! on to validation; an unknown caller is told first that it needs credentials; and every
//! method's limit is above the largest request its validation lets through. Run with
//! `--nocapture` to see each method's largest request against its limit.

use std::collections::HashMap;

use gateway::domain::limits::{
    MAX_ALIASES, MAX_ATTACHMENTS, MAX_AUX_ADDRESSES, MAX_CONTAINER_ID, MAX_DNS_NAME,
    MAX_DNS_OPTIONS, MAX_DNS_SEARCH, MAX_DNS_SEARCH_LINE, MAX_DNS_SERVERS, MAX_ENDPOINT_SYSCTLS,
    MAX_EXTRA_HOSTS, MAX_FILTER_VALUE, MAX_FILTER_VALUES, MAX_HOST_ADDRESSES, MAX_HOST_DRIVERS,
    MAX_HOST_TEXT, MAX_HOSTNAME, MAX_IFNAME, MAX_IFNAME_PREFIX, MAX_KEY, MAX_LABEL_KEY,
    MAX_LABEL_VALUE, MAX_LABELS, MAX_LINK_LOCAL_IPS, MAX_NAME, MAX_NETNS_PATH, MAX_PORT_MAPPINGS,
    MAX_SUBNETS,
};
use prost::Message;
use tonic::Code;
use tonic_types::StatusExt as _;
use weft_proto::gateway::v1::{self as pb, network_service_client::NetworkServiceClient};
use weft_runtime::{access::Bearer, size};
use weft_testkit::{Backend, channel};

use crate::harness::{Stack, names};

const CREATE_NETWORK: &str = "/weft.gateway.v1.NetworkService/CreateNetwork";

/// The limit the gateway's access table gives `method`.
fn limit_of(method: &str) -> usize {
    gateway::access::RULES
        .iter()
        .find(|r| r.method == method)
        .unwrap_or_else(|| panic!("{method} is not in the table"))
        .max_message
}

/// What the limit counts: the encoded message and gRPC's 5-byte prefix.
fn body_len(m: &impl Message) -> usize {
    m.encoded_len() + 5
}

/// A CreateNetwork whose body is exactly `bytes`, most of it one label's value, with more
/// labels than a network may have (the error names their count, not a value as long as the
/// request).
fn create_of_size(bytes: usize) -> pb::CreateNetworkRequest {
    let with = |n: usize| pb::CreateNetworkRequest {
        name: "big".into(),
        labels: (0..MAX_LABELS)
            .map(|i| (format!("l{i}"), String::new()))
            .chain([("pad".to_owned(), "x".repeat(n))])
            .collect(),
        ..Default::default()
    };
    let mut n = bytes - body_len(&with(0));
    for _ in 0..4 {
        let got = body_len(&with(n));
        if got == bytes {
            return with(n);
        }
        n = n + bytes - got;
    }
    panic!("no CreateNetwork of {bytes} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_its_methods_limit_is_refused_naming_the_limit_once_the_caller_is_known() {
    let s = Stack::start(Backend::Sqlite).await;
    let limit = limit_of(CREATE_NETWORK);
    assert_eq!(limit, size::NETWORK);
    let mut admin = s.networks();

    let err = admin
        .create_network(create_of_size(limit + 1))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().contains("too large")
            && err.message().contains(&format!("at most {limit} bytes")),
        "{}",
        err.message()
    );
    assert!(
        err.get_details_retry_info().is_none(),
        "the same request is refused every time: no time to retry"
    );

    // At the limit, the request reaches validation, which names the field.
    let err = admin
        .create_network(create_of_size(limit))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let violations = err.get_details_bad_request().unwrap().field_violations;
    assert_eq!(violations[0].field, "labels", "{err:?}");
    assert!(
        violations[0].description.contains("at most 64 entries"),
        "{err:?}"
    );

    // A caller without credentials learns that first, however large its request.
    let mut anonymous = NetworkServiceClient::new(Bearer::none().on(channel(s.gateway)));
    let err = anonymous
        .create_network(create_of_size(limit + 1))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(!names(&mut admin).await.contains(&"big".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_largest_valid_create_network_is_taken() {
    let s = Stack::start(Backend::Sqlite).await;
    let req = largest_valid_network();
    let len = body_len(&req);
    assert!(
        len > size::LISTS_AND_LABELS && len < limit_of(CREATE_NETWORK),
        "{len} bytes"
    );
    let net = s.networks().create_network(req).await.unwrap().into_inner();
    assert_eq!(net.ipam.unwrap().configs.len(), MAX_SUBNETS);
    assert_eq!(net.labels.len(), MAX_LABELS);
}

/// A CreateNetwork that passes validation with every list full and every string at its longest:
/// eight IPv6 subnets of 64 reserved addresses each, 64 labels.
fn largest_valid_network() -> pb::CreateNetworkRequest {
    let configs = (0..MAX_SUBNETS)
        .map(|i| {
            let net = format!("fdff:ffff:ffff:ff{i:02x}");
            pb::IpamConfig {
                subnet: format!("{net}::/64"),
                ip_range: format!("{net}:ffff:ffff:ffff:ff00/120"),
                gateway: format!("{net}:ffff:ffff:ffff:fffe"),
                aux_addresses: (0..MAX_AUX_ADDRESSES)
                    .map(|j| {
                        (
                            text(MAX_LABEL_KEY, &format!("aux{j}-")),
                            format!("{net}:ffff:ffff:ffff:ff{:02x}", 0x80 + j),
                        )
                    })
                    .collect(),
            }
        })
        .collect();
    pb::CreateNetworkRequest {
        name: text(MAX_NAME, "n"),
        enable_ipv4: Some(false),
        enable_ipv6: true,
        ipam: Some(pb::Ipam {
            configs,
            ..Default::default()
        }),
        labels: labels(),
        options: [
            ("com.docker.network.bridge.name", "b".repeat(MAX_IFNAME)),
            ("com.docker.network.driver.mtu", "65535".into()),
            (
                "com.docker.network.container_iface_prefix",
                "e".repeat(MAX_IFNAME_PREFIX),
            ),
            (
                "com.docker.network.bridge.gateway_mode_ipv6",
                "nat-unprotected".into(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect(),
        dns_servers: vec![V6.into(); MAX_DNS_SERVERS],
        validate_only: true,
        ..Default::default()
    }
}

/// The longest text form of an IP address.
const V6: &str = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255";
/// The longest text form of an IP prefix.
const CIDR: &str = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255/128";
/// The longest page token a list decodes.
const PAGE_TOKEN: usize = 2048;

/// `prefix`, then digits up to `len` bytes.
fn text(len: usize, prefix: &str) -> String {
    format!("{prefix}{}", "7".repeat(len - prefix.len()))
}

/// A DNS name of `len` bytes: labels of 63 and a shorter last one.
fn dns_name(len: usize, prefix: &str) -> String {
    let flat = text(len, prefix).into_bytes();
    let mut out = Vec::with_capacity(len);
    for (i, b) in flat.into_iter().enumerate() {
        out.push(if i % 64 == 63 { b'.' } else { b });
    }
    String::from_utf8(out).unwrap()
}

fn labels() -> HashMap<String, String> {
    (0..MAX_LABELS)
        .map(|i| {
            (
                text(MAX_LABEL_KEY, &format!("l{i}-")),
                "v".repeat(MAX_LABEL_VALUE),
            )
        })
        .collect()
}

fn filter() -> Vec<String> {
    vec!["f".repeat(MAX_FILTER_VALUE); MAX_FILTER_VALUES]
}

fn key() -> String {
    "k".repeat(MAX_KEY)
}

/// Settings of an endpoint with every list full and every string at its longest.
fn settings() -> pb::EndpointSettings {
    let sysctl = format!("net.ipv4.conf.IFNAME.{}={}", "k".repeat(64), "v".repeat(64));
    pb::EndpointSettings {
        ipv4_address: "255.255.255.255".into(),
        ipv6_address: V6.into(),
        mac_address: "02:42:ac:11:00:02".into(),
        aliases: (0..MAX_ALIASES)
            .map(|i| dns_name(MAX_DNS_NAME, &format!("a{i}")))
            .collect(),
        gw_priority: i64::MIN,
        driver_options: [(
            "com.docker.network.endpoint.sysctls".to_owned(),
            vec![sysctl; MAX_ENDPOINT_SYSCTLS].join(","),
        )]
        .into(),
        link_local_ips: vec![V6.into(); MAX_LINK_LOCAL_IPS],
        interface_name: "i".repeat(MAX_IFNAME),
    }
}

/// Each method whose request can be large, with a request that has every field the validation
/// bounds at its bound (and every address at its longest): no valid request is larger.
fn largest_requests() -> Vec<(&'static str, usize)> {
    let network = largest_valid_network();
    let create_network = pb::CreateNetworkRequest {
        driver: "overlay".into(),
        ipam: Some(pb::Ipam {
            driver: "default".into(),
            configs: vec![
                pb::IpamConfig {
                    subnet: CIDR.into(),
                    ip_range: CIDR.into(),
                    gateway: V6.into(),
                    aux_addresses: (0..MAX_AUX_ADDRESSES)
                        .map(|j| (text(MAX_LABEL_KEY, &format!("aux{j}-")), V6.to_owned()))
                        .collect(),
                };
                MAX_SUBNETS
            ],
            ..Default::default()
        }),
        enable_ipv4: Some(true),
        internal: true,
        attachable: true,
        options: [
            ("com.docker.network.bridge.enable_icc", "false"),
            ("com.docker.network.bridge.enable_ip_masquerade", "false"),
            (
                "com.docker.network.bridge.host_binding_ipv4",
                "255.255.255.255",
            ),
            (
                "com.docker.network.bridge.gateway_mode_ipv4",
                "nat-unprotected",
            ),
            ("weft.network.allow_wide_subnets", "false"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .chain(network.options.clone())
        .collect(),
        request_id: text(128, "r"),
        ..network
    };
    let create_sandbox = pb::CreateSandboxRequest {
        name: text(MAX_NAME, "s"),
        container_id: text(MAX_CONTAINER_ID, "c"),
        host: key(),
        netns_path: text(MAX_NETNS_PATH, "/"),
        hostname: text(MAX_HOSTNAME, "h"),
        dns: Some(pb::DnsConfig {
            servers: vec![format!("[{V6}]:65535"); MAX_DNS_SERVERS],
            search: (0..MAX_DNS_SEARCH)
                .map(|i| text(MAX_DNS_SEARCH_LINE / MAX_DNS_SEARCH, &i.to_string()))
                .collect(),
            options: vec!["single-request-reopen".into(); MAX_DNS_OPTIONS],
        }),
        extra_hosts: (0..MAX_EXTRA_HOSTS)
            .map(|i| pb::ExtraHost {
                hostname: dns_name(MAX_DNS_NAME, &format!("x{i}")),
                address: V6.into(),
            })
            .collect(),
        port_mappings: vec![
            pb::PortMapping {
                host_ip: V6.into(),
                host_port: 65535,
                container_port: 65535,
                protocol: pb::Protocol::Sctp as i32,
                range: 65535,
            };
            MAX_PORT_MAPPINGS
        ],
        networks: vec![
            pb::NetworkAttachment {
                network: key(),
                settings: Some(settings()),
            };
            MAX_ATTACHMENTS
        ],
        network_mode: format!("container:{}", key()),
        request_id: text(128, "r"),
        validate_only: true,
        labels: labels(),
    };
    let connect = pb::ConnectRequest {
        sandbox: key(),
        network: key(),
        settings: Some(settings()),
        request_id: text(128, "r"),
        validate_only: true,
    };
    let update_network = pb::UpdateNetworkRequest {
        network: key(),
        labels: labels(),
        dns_servers: vec![V6.into(); MAX_DNS_SERVERS],
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["labels".into(), "dns_servers".into()],
        }),
        request_id: text(128, "r"),
    };
    let list_networks = pb::ListNetworksRequest {
        name: filter(),
        id: filter(),
        driver: filter(),
        label: filter(),
        scope: filter(),
        page_size: 1000,
        page_token: "0".repeat(PAGE_TOKEN),
    };
    let list_sandboxes = pb::ListSandboxesRequest {
        name: filter(),
        host: filter(),
        network: filter(),
        container_id: filter(),
        label: filter(),
        page_size: 1000,
        page_token: "0".repeat(PAGE_TOKEN),
    };
    let prune = pb::PruneNetworksRequest {
        label: filter(),
        label_not: filter(),
        until: Some(prost_types::Timestamp {
            seconds: i64::MAX,
            nanos: 999_999_999,
        }),
        validate_only: true,
    };
    let list_hosts = pb::ListHostsRequest {
        name: filter(),
        state: 1,
        page_size: 1000,
        page_token: "0".repeat(PAGE_TOKEN),
    };
    let register = pb::RegisterHostRequest {
        name: text(MAX_NAME, "h"),
        agent_address: text(MAX_HOST_TEXT, "a"),
        dns_address: text(MAX_HOST_TEXT, "d"),
        addresses: vec![V6.into(); MAX_HOST_ADDRESSES],
        capabilities: Some(pb::HostCapabilities {
            drivers: vec![text(MAX_NAME, "d"); MAX_HOST_DRIVERS],
            kernel_release: text(MAX_HOST_TEXT, "k"),
            ..Default::default()
        }),
        agent_version: text(MAX_HOST_TEXT, "v"),
    };
    vec![
        (CREATE_NETWORK, body_len(&create_network)),
        (
            "/weft.gateway.v1.NetworkService/UpdateNetwork",
            body_len(&update_network),
        ),
        (
            "/weft.gateway.v1.NetworkService/ListNetworks",
            body_len(&list_networks),
        ),
        (
            "/weft.gateway.v1.NetworkService/PruneNetworks",
            body_len(&prune),
        ),
        (
            "/weft.gateway.v1.SandboxService/CreateSandbox",
            body_len(&create_sandbox),
        ),
        (
            "/weft.gateway.v1.SandboxService/ListSandboxes",
            body_len(&list_sandboxes),
        ),
        (
            "/weft.gateway.v1.SandboxService/Connect",
            body_len(&connect),
        ),
        (
            "/weft.gateway.v1.HostService/ListHosts",
            body_len(&list_hosts),
        ),
        (
            "/weft.gateway.v1.AgentRegistryService/RegisterHost",
            body_len(&register),
        ),
    ]
}

#[test]
fn every_limit_is_above_the_largest_request_validation_lets_through() {
    for (method, largest) in largest_requests() {
        let limit = limit_of(method);
        println!("{method}: {largest} bytes at most, of {limit}");
        // Room for the request to grow a field or two before the limit needs raising.
        assert!(
            largest + largest / 4 < limit,
            "{method}: the largest valid request has {largest} bytes, the limit is {limit}"
        );
    }
}
