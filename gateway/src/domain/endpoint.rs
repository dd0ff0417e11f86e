//! Endpoints (one attachment of a sandbox to a network): the settings a caller asks for, the
//! record as stored, and the rules decided here: interface names, MAC addresses, and which
//! endpoint provides the default route.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use weft_runtime::FieldViolation;

use super::{
    check::{
        Violations, check_dns_name, check_endpoint_sysctls, check_ifname, check_key,
        check_link_local, check_mac, parse_ip,
    },
    limits::{MAX_ALIASES, MAX_LINK_LOCAL_IPS},
};

/// Endpoint driver options (Docker's `--driver-opt`) known here.
pub const ENDPOINT_OPTIONS: &[&str] = &[SYSCTLS_OPTION, HANDOFF_OPTION];
/// Per-interface sysctls, applied to the endpoint's interface (`IFNAME`).
const SYSCTLS_OPTION: &str = "com.docker.network.endpoint.sysctls";
/// The container end stays in the host's namespace under this name, for a runtime that moves
/// it itself (`weft_proto::HANDOFF_OPTION`, which the agent reads; the same text).
pub const HANDOFF_OPTION: &str = "weft.endpoint.handoff";

/// The raw settings of one attachment (Connect's `settings`, or an initial network of
/// CreateSandbox).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawSettings {
    pub ipv4_address: String,
    pub ipv6_address: String,
    pub mac_address: String,
    pub aliases: Vec<String>,
    pub gw_priority: i64,
    pub driver_options: BTreeMap<String, String>,
    pub link_local_ips: Vec<String>,
    pub interface_name: String,
}

/// Validated settings of one attachment; empty strings mean "choose one".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointSpec {
    pub ipv4_address: String,
    pub ipv6_address: String,
    pub mac_address: String,
    pub aliases: Vec<String>,
    pub gw_priority: i64,
    pub driver_options: BTreeMap<String, String>,
    pub link_local_ips: Vec<String>,
    pub interface_name: String,
}

impl EndpointSpec {
    /// Checks the settings; `prefix` is their field path (`settings.`, `networks[0].settings.`).
    pub fn validate(prefix: &str, s: RawSettings) -> Result<Self, Vec<FieldViolation>> {
        let mut errs = Violations::default();
        let f = |name: &str| format!("{prefix}{name}");
        if !s.ipv4_address.is_empty() {
            match parse_ip(&f("ipv4_address"), &s.ipv4_address) {
                Ok(ip) if ip.is_ipv6() => {
                    errs.add(f("ipv4_address"), &s.ipv4_address, "not an IPv4 address");
                }
                Ok(_) => {}
                Err(v) => errs.check(Err(v)),
            }
        }
        if !s.ipv6_address.is_empty() {
            match parse_ip(&f("ipv6_address"), &s.ipv6_address) {
                Ok(ip) if ip.is_ipv4() => {
                    errs.add(f("ipv6_address"), &s.ipv6_address, "not an IPv6 address");
                }
                Ok(_) => {}
                Err(v) => errs.check(Err(v)),
            }
        }
        if !s.mac_address.is_empty() {
            errs.check(check_mac(&f("mac_address"), &s.mac_address));
        }
        if !s.interface_name.is_empty() {
            errs.check(check_ifname(&f("interface_name"), &s.interface_name));
        }
        if errs.count(&f("aliases"), s.aliases.len(), MAX_ALIASES) {
            for (i, a) in s.aliases.iter().enumerate() {
                errs.check(check_dns_name(&f(&format!("aliases[{i}]")), a));
            }
        }
        let link_local = f("link_local_ips");
        if errs.count(&link_local, s.link_local_ips.len(), MAX_LINK_LOCAL_IPS) {
            for (i, l) in s.link_local_ips.iter().enumerate() {
                errs.check(check_link_local(&format!("{link_local}[{i}]"), l));
            }
        }
        for (key, value) in &s.driver_options {
            let field = f(&format!("driver_options[{key}]"));
            if key == SYSCTLS_OPTION {
                errs.check(check_endpoint_sysctls(&field, value));
            } else if key == HANDOFF_OPTION {
                // An interface name in the host's namespace (see the constant).
                errs.check(check_ifname(&field, value));
            } else {
                errs.add(
                    field,
                    key,
                    format!(
                        "unknown endpoint option (known: {})",
                        ENDPOINT_OPTIONS.join(", ")
                    ),
                );
            }
        }
        errs.finish(Self {
            ipv4_address: s.ipv4_address,
            ipv6_address: s.ipv6_address,
            mac_address: s.mac_address,
            aliases: s.aliases,
            gw_priority: s.gw_priority,
            driver_options: s.driver_options,
            link_local_ips: s.link_local_ips,
            interface_name: s.interface_name,
        })
    }

    /// The address asked for in one family (empty: automatic).
    pub fn address(&self, v6: bool) -> &str {
        if v6 {
            &self.ipv6_address
        } else {
            &self.ipv4_address
        }
    }
}

/// A validated Connect request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectSpec {
    pub sandbox: String,
    pub network: String,
    pub settings: EndpointSpec,
}

impl ConnectSpec {
    pub fn validate(
        sandbox: String,
        network: String,
        settings: RawSettings,
    ) -> Result<Self, Vec<FieldViolation>> {
        let settings = EndpointSpec::validate("settings.", settings)?;
        let mut errs = Violations::default();
        errs.check(check_key("sandbox", &sandbox, "sandbox"));
        errs.check(check_key("network", &network, "network"));
        errs.finish(Self {
            sandbox,
            network,
            settings,
        })
    }
}

/// An endpoint as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    pub id: String,
    pub network_id: String,
    pub network_name: String,
    pub sandbox_id: String,
    pub sandbox_name: String,
    pub host: String,
    pub interface_name: String,
    pub mac_address: String,
    /// CIDR form, empty when the network has no IPv4.
    pub ipv4_address: String,
    pub ipv6_address: String,
    pub gateway: String,
    pub ipv6_gateway: String,
    pub aliases: Vec<String>,
    pub gw_priority: i64,
    pub link_local_ips: Vec<String>,
    pub driver_options: BTreeMap<String, String>,
    /// Internal networks offer no default route.
    pub internal: bool,
    pub created_at_ms: i64,
    /// Its host has been down past the grace period (see `hosts`).
    #[serde(default)]
    pub host_down: bool,
    /// On a network that spans hosts (overlay): its changes concern every host of the network.
    #[serde(default)]
    pub global: bool,
    /// The host end of its veth pair, for drivers that make one (empty in records from before
    /// it was kept, and for macvlan and ipvlan).
    #[serde(default)]
    pub host_interface: String,
}

/// The endpoint that provides the default route of one family, among a sandbox's endpoints
/// that offer one (not internal, with a gateway of that family): the highest gw_priority wins;
/// on a tie, the network whose name sorts first wins, as Docker (28) decides it.
pub fn default_route(endpoints: &[EndpointRecord], v6: bool) -> Option<&EndpointRecord> {
    endpoints
        .iter()
        .filter(|e| !e.internal && !(if v6 { &e.ipv6_gateway } else { &e.gateway }).is_empty())
        .min_by(|a, b| {
            b.gw_priority
                .cmp(&a.gw_priority)
                .then_with(|| a.network_name.cmp(&b.network_name))
        })
}

/// The endpoint that carries the sandbox's published ports: the one with the IPv4 default
/// route, else the one with the IPv6 default route.
pub fn port_carrier(endpoints: &[EndpointRecord]) -> Option<&EndpointRecord> {
    default_route(endpoints, false).or_else(|| default_route(endpoints, true))
}

/// The first `ethN` not used by the sandbox's endpoints.
pub fn next_interface(endpoints: &[EndpointRecord]) -> String {
    (0..)
        .map(|n| format!("eth{n}"))
        .find(|name| endpoints.iter().all(|e| &e.interface_name != name))
        .unwrap_or_else(|| "eth0".into())
}

/// A stable, locally administered MAC derived from the endpoint id, by the rule the agent
/// applies too ([`weft_runtime::mac`]).
pub fn mac_for(endpoint_id: &str) -> String {
    weft_runtime::mac::format(&weft_runtime::mac::derive(endpoint_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(net: &str, prio: i64, internal: bool) -> EndpointRecord {
        EndpointRecord {
            id: net.into(),
            network_id: net.into(),
            network_name: net.into(),
            sandbox_id: String::new(),
            sandbox_name: String::new(),
            host: String::new(),
            interface_name: String::new(),
            mac_address: String::new(),
            ipv4_address: "10.0.0.2/24".into(),
            ipv6_address: String::new(),
            gateway: "10.0.0.1".into(),
            ipv6_gateway: String::new(),
            aliases: vec![],
            gw_priority: prio,
            link_local_ips: vec![],
            driver_options: BTreeMap::new(),
            internal,
            created_at_ms: 0,
            host_down: false,
            global: false,
            host_interface: String::new(),
        }
    }

    #[test]
    fn highest_priority_wins_then_first_name_and_internal_never() {
        let eps = [ep("b", 0, false), ep("a", 0, false), ep("c", -1, false)];
        assert_eq!(default_route(&eps, false).unwrap().network_name, "a");
        let eps = [ep("b", 10, false), ep("a", 0, false), ep("z", 100, true)];
        assert_eq!(default_route(&eps, false).unwrap().network_name, "b");
        assert!(default_route(&eps, true).is_none());
        assert!(default_route(&[ep("x", 5, true)], false).is_none());
    }

    #[test]
    fn interfaces_fill_the_first_gap_and_macs_are_stable() {
        let mut a = ep("a", 0, false);
        a.interface_name = "eth0".into();
        let mut c = ep("c", 0, false);
        c.interface_name = "eth2".into();
        assert_eq!(next_interface(&[a, c]), "eth1");
        assert_eq!(mac_for("0a1b2c3d"), mac_for("0a1b2c3d"));
        assert!(mac_for("0a1b2c3d").starts_with("02:42:"));
        assert_ne!(mac_for("0a1b2c3d"), mac_for("0a1b2c3e"));
        assert!(check_mac("m", &mac_for("ffffffff")).is_ok());
    }
}
