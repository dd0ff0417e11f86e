//! Conversions between the gateway's records and `weft.gateway.v1` messages.

use weft_proto::gateway::v1 as pb;

use crate::network::{NetworkRecord, RawNetwork, SubnetSpec};

pub(crate) fn timestamp(ms: i64) -> Option<prost_types::Timestamp> {
    (ms > 0).then(|| prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    })
}

pub(crate) fn raw_network(r: pb::CreateNetworkRequest) -> RawNetwork {
    let ipam = r.ipam.unwrap_or_default();
    RawNetwork {
        name: r.name,
        driver: r.driver,
        ipam_driver: ipam.driver,
        ipam_options: ipam.options.into_iter().collect(),
        subnets: ipam
            .configs
            .into_iter()
            .map(|c| SubnetSpec {
                subnet: c.subnet,
                ip_range: c.ip_range,
                gateway: c.gateway,
                aux_addresses: c.aux_addresses.into_iter().collect(),
            })
            .collect(),
        enable_ipv4: r.enable_ipv4,
        enable_ipv6: r.enable_ipv6,
        internal: r.internal,
        attachable: r.attachable,
        labels: r.labels.into_iter().collect(),
        options: r.options.into_iter().collect(),
        dns_servers: r.dns_servers,
    }
}

pub(crate) fn network_to_pb(n: &NetworkRecord) -> pb::Network {
    pb::Network {
        id: n.id.clone(),
        name: n.name.clone(),
        driver: n.driver.clone(),
        scope: n.scope.clone(),
        ipam: Some(pb::Ipam {
            driver: "default".into(),
            configs: n
                .subnets
                .iter()
                .map(|s| pb::IpamConfig {
                    subnet: s.subnet.clone(),
                    ip_range: s.ip_range.clone(),
                    gateway: s.gateway.clone(),
                    aux_addresses: s.aux_addresses.clone().into_iter().collect(),
                })
                .collect(),
            options: Default::default(),
        }),
        enable_ipv4: n.enable_ipv4,
        enable_ipv6: n.enable_ipv6,
        internal: n.internal,
        attachable: n.attachable,
        labels: n.labels.clone().into_iter().collect(),
        options: n.options.clone().into_iter().collect(),
        created_at: timestamp(n.created_at_ms),
        // Endpoints come with the sandbox API (a later issue).
        endpoints: Vec::new(),
        dns_servers: n.dns_servers.clone(),
        updated_at: timestamp(n.updated_at_ms),
        predefined: n.predefined,
    }
}

pub(crate) fn event(revision: u64, kind: pb::EventKind, object: pb::event::Object) -> pb::Event {
    pb::Event {
        revision,
        time: timestamp(crate::networks::now_ms()),
        kind: kind as i32,
        object: Some(object),
        request_id: String::new(),
    }
}
