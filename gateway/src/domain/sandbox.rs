//! Sandboxes and endpoints in the gateway's own terms, and the rules decided here: interface
//! names, MAC addresses, and which endpoint provides the default route.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use weft_runtime::FieldViolation;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsRecord {
    pub servers: Vec<String>,
    pub search: Vec<String>,
    pub options: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRecord {
    pub protocol: i32,
    pub host_ip: String,
    pub host_port: u32,
    pub container_port: u32,
    pub range: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxRecord {
    pub id: String,
    pub name: String,
    pub container_id: String,
    pub host: String,
    pub netns_path: String,
    pub hostname: String,
    pub dns: DnsRecord,
    pub extra_hosts: Vec<(String, String)>,
    pub port_mappings: Vec<PortRecord>,
    pub network_mode: String,
    pub labels: BTreeMap<String, String>,
    pub created_at_ms: i64,
    /// The agent created the namespace (and deletes it with the sandbox).
    #[serde(default)]
    pub netns_managed: bool,
    /// Where the agent wrote the sandbox's resolv.conf and hosts files.
    #[serde(default)]
    pub resolv_conf_path: String,
    #[serde(default)]
    pub hosts_path: String,
}

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

/// The first `ethN` not used by the sandbox's endpoints.
pub fn next_interface(endpoints: &[EndpointRecord]) -> String {
    (0..)
        .map(|n| format!("eth{n}"))
        .find(|name| endpoints.iter().all(|e| &e.interface_name != name))
        .unwrap_or_else(|| "eth0".into())
}

/// A stable, locally administered MAC derived from the endpoint id (as Docker derives it from
/// the IPv4 address, but stable also for IPv6-only endpoints).
pub fn mac_for(endpoint_id: &str) -> String {
    let hex = endpoint_id.as_bytes();
    let byte = |i: usize| {
        hex.get(i * 2..i * 2 + 2)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .unwrap_or(0)
    };
    format!(
        "02:42:{:02x}:{:02x}:{:02x}:{:02x}",
        byte(0),
        byte(1),
        byte(2),
        byte(3)
    )
}

/// Checks an interface name: 1 to 15 characters, no `/`, space or `:`.
pub fn check_interface(field: &str, name: &str) -> Result<(), FieldViolation> {
    if name.is_empty()
        || name.len() > 15
        || name.contains(['/', ' ', ':'])
        || name == "."
        || name == ".."
    {
        return Err(FieldViolation::new(
            field,
            name,
            "an interface name: 1 to 15 characters, no / : or space",
        ));
    }
    Ok(())
}

/// Checks a DNS alias: dot-separated labels of letters, digits and `-`, at most 253 characters.
pub fn check_alias(field: &str, alias: &str) -> Result<(), FieldViolation> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if alias.is_empty() || alias.len() > 253 || !alias.split('.').all(label_ok) {
        return Err(FieldViolation::new(field, alias, "not a DNS name"));
    }
    Ok(())
}

/// Checks a MAC address (six colon-separated hex bytes, unicast).
pub fn check_mac(field: &str, mac: &str) -> Result<(), FieldViolation> {
    let parts: Vec<_> = mac.split(':').collect();
    let ok = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && u8::from_str_radix(p, 16).is_ok());
    if !ok {
        return Err(FieldViolation::new(
            field,
            mac,
            "not a MAC address (aa:bb:cc:dd:ee:ff)",
        ));
    }
    if u8::from_str_radix(parts[0], 16).is_ok_and(|b| b & 1 == 1) {
        return Err(FieldViolation::new(field, mac, "a multicast MAC address"));
    }
    Ok(())
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
        assert_eq!(mac_for("0a1b2c3d"), "02:42:0a:1b:2c:3d");
        assert!(check_mac("m", &mac_for("ffffffff")).is_ok());
        assert!(check_mac("m", "01:00:5e:00:00:01").is_err());
        assert!(check_alias("a", "web.local").is_ok());
        assert!(check_alias("a", "-bad").is_err());
    }
}
