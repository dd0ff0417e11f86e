//! Hosts (machines running a driver-agent) in the gateway's own terms: a registration as asked,
//! validated, and the host as stored.

use weft_runtime::FieldViolation;

use super::check::{Violations, check_name, parse_ip};

/// What a host's kernel and agent can do, as its agent reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostCapabilities {
    pub drivers: Vec<String>,
    pub bridge: bool,
    pub veth: bool,
    pub vxlan: bool,
    pub macvlan: bool,
    pub ipvlan: bool,
    pub vlan: bool,
    pub ipv6: bool,
    pub nftables: bool,
    pub nftables_nat: bool,
    pub kernel_release: String,
}

/// A registered host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRecord {
    pub name: String,
    /// Where the gateway reaches the host's driver-agent (`HOST:PORT` or a URL).
    pub agent_address: String,
    /// The host's dns-svc admin API; empty when it has none.
    pub dns_address: String,
    pub addresses: Vec<String>,
    pub capabilities: Option<HostCapabilities>,
    pub agent_version: String,
    /// 0 when unknown.
    pub registered_at_ms: i64,
    pub up: bool,
    pub last_heartbeat_ms: i64,
}

/// The raw fields of a RegisterHost request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawHost {
    pub name: String,
    pub agent_address: String,
    pub dns_address: String,
    pub addresses: Vec<String>,
    pub capabilities: Option<HostCapabilities>,
    pub agent_version: String,
}

/// A validated registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSpec(pub RawHost);

impl HostSpec {
    pub fn validate(raw: RawHost) -> Result<Self, Vec<FieldViolation>> {
        let mut errs = Violations::default();
        errs.check(check_name("name", &raw.name));
        if raw.agent_address.is_empty() {
            errs.add(
                "agent_address",
                "",
                "required: where the gateway reaches the host's driver-agent (HOST:PORT)",
            );
        } else if tonic::transport::Endpoint::from_shared(agent_url(&raw.agent_address)).is_err() {
            errs.add(
                "agent_address",
                &raw.agent_address,
                "expected HOST:PORT or http://HOST:PORT",
            );
        }
        for (i, a) in raw.addresses.iter().enumerate() {
            errs.check(parse_ip(&format!("addresses[{i}]"), a).map(drop));
        }
        errs.finish(Self(raw))
    }
}

/// `host:port` or a URL: a URL that can be dialled.
pub fn agent_url(address: &str) -> String {
    if address.contains("://") {
        address.to_owned()
    } else {
        format!("http://{address}")
    }
}
