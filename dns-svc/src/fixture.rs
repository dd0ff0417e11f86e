//! Gateway objects for the fixed worlds that tests and the fuzz oracle build their records from
//! (the record tests, [`crate::offline`]): a network with one subnet, a sandbox, an endpoint, and
//! the event that carries one of them.
//!
//! Only in test and fuzzing builds (`cfg(any(test, feature = "fuzzing"))`); it uses nothing of
//! the crate, so the tests of any module may use it.

use weft_proto::gateway::v1::{self as gw, EventKind, event::Object};

/// A network with one IPAM subnet.
pub fn network(id: &str, name: &str, subnet: &str, internal: bool) -> gw::Network {
    gw::Network {
        id: id.into(),
        name: name.into(),
        internal,
        ipam: Some(gw::Ipam {
            configs: vec![gw::IpamConfig {
                subnet: subnet.into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A sandbox on no host in particular.
pub fn sandbox(id: &str, name: &str, hostname: &str, container_id: &str) -> gw::Sandbox {
    gw::Sandbox {
        id: id.into(),
        name: name.into(),
        hostname: hostname.into(),
        container_id: container_id.into(),
        ..Default::default()
    }
}

/// An endpoint of sandbox `sandbox_id` on network `network_id` (addresses in CIDR form, empty
/// for none).
pub fn endpoint(
    id: &str,
    network_id: &str,
    sandbox_id: &str,
    ipv4: &str,
    ipv6: &str,
    aliases: &[&str],
) -> gw::Endpoint {
    gw::Endpoint {
        id: id.into(),
        network_id: network_id.into(),
        sandbox_id: sandbox_id.into(),
        ipv4_address: ipv4.into(),
        ipv6_address: ipv6.into(),
        aliases: aliases.iter().map(|a| (*a).to_owned()).collect(),
        ..Default::default()
    }
}

/// The event of `kind` carrying `object`, at revision 0.
pub fn event(kind: EventKind, object: Object) -> gw::Event {
    gw::Event {
        kind: kind as i32,
        object: Some(object),
        ..Default::default()
    }
}
