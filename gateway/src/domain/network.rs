//! Networks in the gateway's own terms: the validated request, and the record as stored.

use std::{collections::BTreeMap, net::IpAddr, str::FromStr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use weft_runtime::FieldViolation;

/// Drivers a user may create networks with (`host` and `none` are the predefined networks').
pub const USER_DRIVERS: &[&str] = &["bridge", "overlay", "macvlan", "ipvlan"];

/// Docker's option keys, per driver.
fn known_options(driver: &str) -> &'static [&'static str] {
    match driver {
        "bridge" => &[
            "com.docker.network.bridge.name",
            "com.docker.network.driver.mtu",
            "com.docker.network.bridge.enable_icc",
            "com.docker.network.bridge.enable_ip_masquerade",
            "com.docker.network.bridge.host_binding_ipv4",
            "com.docker.network.bridge.gateway_mode_ipv4",
            "com.docker.network.bridge.gateway_mode_ipv6",
            "com.docker.network.container_iface_prefix",
        ],
        "overlay" => &[
            "com.docker.network.driver.mtu",
            "com.docker.network.driver.overlay.vxlanid_list",
        ],
        "macvlan" => &["parent", "macvlan_mode", "com.docker.network.driver.mtu"],
        "ipvlan" => &[
            "parent",
            "ipvlan_mode",
            "ipvlan_flag",
            "com.docker.network.driver.mtu",
        ],
        _ => &[],
    }
}

/// One subnet as asked for: explicit, or "any free subnet of this size" (`0.0.0.0/24`); empty
/// means a subnet of the default pools' own size.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetSpec {
    pub subnet: String,
    pub ip_range: String,
    pub gateway: String,
    pub aux_addresses: BTreeMap<String, String>,
}

/// A validated CreateNetwork request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSpec {
    pub name: String,
    pub driver: String,
    pub subnets: Vec<SubnetSpec>,
    pub enable_ipv4: bool,
    pub enable_ipv6: bool,
    pub internal: bool,
    pub attachable: bool,
    pub labels: BTreeMap<String, String>,
    pub options: BTreeMap<String, String>,
    pub dns_servers: Vec<String>,
}

/// A subnet in use by a network, with the IPAM pool that holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetRecord {
    pub pool_id: String,
    pub subnet: String,
    pub ip_range: String,
    pub gateway: String,
    pub aux_addresses: BTreeMap<String, String>,
}

/// A network as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRecord {
    pub id: String,
    pub name: String,
    pub driver: String,
    pub scope: String,
    pub subnets: Vec<SubnetRecord>,
    pub enable_ipv4: bool,
    pub enable_ipv6: bool,
    pub internal: bool,
    pub attachable: bool,
    pub labels: BTreeMap<String, String>,
    pub options: BTreeMap<String, String>,
    pub dns_servers: Vec<String>,
    pub predefined: bool,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// Docker's network name rule: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, here at most 128 characters.
pub fn check_name(field: &str, name: &str) -> Result<(), FieldViolation> {
    let mut chars = name.chars();
    let ok_first = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    if name.is_empty() {
        return Err(FieldViolation::new(field, name, "must not be empty"));
    }
    if !ok_first || !chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)) {
        return Err(FieldViolation::new(
            field,
            name,
            "must match [a-zA-Z0-9][a-zA-Z0-9_.-]*",
        ));
    }
    if name.len() > 128 {
        return Err(FieldViolation::new(
            field,
            name,
            "longer than 128 characters",
        ));
    }
    Ok(())
}

fn family_of(subnet: &str) -> Option<bool> {
    IpNet::from_str(subnet)
        .ok()
        .map(|n| matches!(n, IpNet::V6(_)))
}

/// The raw fields of a CreateNetwork request.
#[derive(Debug, Clone, Default)]
pub struct RawNetwork {
    pub name: String,
    pub driver: String,
    pub ipam_driver: String,
    pub ipam_options: BTreeMap<String, String>,
    pub subnets: Vec<SubnetSpec>,
    pub enable_ipv4: Option<bool>,
    pub enable_ipv6: bool,
    pub internal: bool,
    pub attachable: bool,
    pub labels: BTreeMap<String, String>,
    pub options: BTreeMap<String, String>,
    pub dns_servers: Vec<String>,
}

impl NetworkSpec {
    /// Checks everything that can be checked without other services; IPAM checks the subnets
    /// themselves (syntax, overlap) before anything is written.
    pub fn validate(raw: RawNetwork) -> Result<Self, Vec<FieldViolation>> {
        let mut errs = Vec::new();
        if let Err(v) = check_name("name", &raw.name) {
            errs.push(v);
        }
        let driver = if raw.driver.is_empty() {
            "bridge".to_owned()
        } else {
            raw.driver.clone()
        };
        if !USER_DRIVERS.contains(&driver.as_str()) {
            let reason = if driver == "host" || driver == "none" {
                format!("only the predefined network {driver:?} uses this driver")
            } else {
                format!("unknown driver (known: {})", USER_DRIVERS.join(", "))
            };
            errs.push(FieldViolation::new("driver", &raw.driver, reason));
        }
        if !(raw.ipam_driver.is_empty() || raw.ipam_driver == "default") {
            errs.push(FieldViolation::new(
                "ipam.driver",
                &raw.ipam_driver,
                "unknown IPAM driver (known: default)",
            ));
        }
        for key in raw.ipam_options.keys() {
            errs.push(FieldViolation::new(
                format!("ipam.options[{key}]"),
                key,
                "unknown IPAM option (none are known)",
            ));
        }
        let known = known_options(&driver);
        for (key, value) in &raw.options {
            if !known.contains(&key.as_str()) {
                errs.push(FieldViolation::new(
                    format!("options[{key}]"),
                    key,
                    format!(
                        "unknown option for driver {driver} (known: {})",
                        known.join(", ")
                    ),
                ));
                continue;
            }
            check_option(&driver, key, value, &mut errs);
        }
        let enable_ipv4 = raw.enable_ipv4.unwrap_or(true);
        if !enable_ipv4 && !raw.enable_ipv6 {
            errs.push(FieldViolation::new(
                "enable_ipv4",
                "false",
                "a network needs IPv4 or IPv6 (set enable_ipv6)",
            ));
        }
        for (i, s) in raw.subnets.iter().enumerate() {
            match family_of(&s.subnet) {
                Some(true) if !raw.enable_ipv6 => errs.push(FieldViolation::new(
                    format!("ipam.configs[{i}].subnet"),
                    &s.subnet,
                    "an IPv6 subnet needs enable_ipv6",
                )),
                Some(false) if !enable_ipv4 => errs.push(FieldViolation::new(
                    format!("ipam.configs[{i}].subnet"),
                    &s.subnet,
                    "an IPv4 subnet needs enable_ipv4",
                )),
                None if s.subnet.is_empty() => errs.push(FieldViolation::new(
                    format!("ipam.configs[{i}].subnet"),
                    "",
                    "required in an IPAM config",
                )),
                // Malformed subnets are refused by IPAM, which names the field.
                _ => {}
            }
        }
        for (i, d) in raw.dns_servers.iter().enumerate() {
            if IpAddr::from_str(d).is_err() {
                errs.push(FieldViolation::new(
                    format!("dns_servers[{i}]"),
                    d,
                    "not an IP address",
                ));
            }
        }
        for key in raw.labels.keys() {
            if key.is_empty() {
                errs.push(FieldViolation::new(
                    "labels",
                    key,
                    "label keys must not be empty",
                ));
            }
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        Ok(Self {
            name: raw.name,
            driver,
            subnets: raw.subnets,
            enable_ipv4,
            enable_ipv6: raw.enable_ipv6,
            internal: raw.internal,
            attachable: raw.attachable,
            labels: raw.labels,
            options: raw.options,
            dns_servers: raw.dns_servers,
        })
    }

    /// The subnets to ask IPAM for: those given, plus one of the default size for each enabled
    /// family that has none.
    pub fn subnet_requests(&self) -> Vec<SubnetSpec> {
        let mut out = self.subnets.clone();
        let has = |v6: bool| out.iter().any(|s| family_of(&s.subnet) == Some(v6));
        let (has4, has6) = (has(false), has(true));
        if self.enable_ipv4 && !has4 {
            out.push(SubnetSpec::default());
        }
        if self.enable_ipv6 && !has6 {
            out.push(SubnetSpec {
                subnet: "::/64".into(),
                ..SubnetSpec::default()
            });
        }
        out
    }
}

/// Checks the value of a known option; `driver` decides nothing yet but documents the scope.
fn check_option(_driver: &str, key: &str, value: &str, errs: &mut Vec<FieldViolation>) {
    let (ok, reason) = match key {
        "com.docker.network.driver.mtu" => (
            value
                .parse::<u32>()
                .is_ok_and(|m| (68..=65535).contains(&m)),
            "MTU must be a number from 68 to 65535",
        ),
        "com.docker.network.bridge.enable_icc"
        | "com.docker.network.bridge.enable_ip_masquerade" => {
            (value.parse::<bool>().is_ok(), "must be true or false")
        }
        "com.docker.network.bridge.host_binding_ipv4" => (
            value.parse::<std::net::Ipv4Addr>().is_ok(),
            "not an IPv4 address",
        ),
        "com.docker.network.bridge.name" => (
            !value.is_empty() && value.len() <= 15 && !value.contains(['/', ' ']),
            "an interface name: 1 to 15 characters, no / or space",
        ),
        "macvlan_mode" => (
            ["bridge", "private", "vepa", "passthru"].contains(&value),
            "one of bridge, private, vepa, passthru",
        ),
        "ipvlan_mode" => (["l2", "l3", "l3s"].contains(&value), "one of l2, l3, l3s"),
        _ => (true, ""),
    };
    if !ok {
        errs.push(FieldViolation::new(
            format!("options[{key}]"),
            value,
            reason,
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(name: &str) -> RawNetwork {
        RawNetwork {
            name: name.into(),
            ..Default::default()
        }
    }

    #[test]
    fn names_follow_dockers_rule() {
        for ok in ["my-net", "a", "net_1.x", "N9"] {
            assert!(check_name("name", ok).is_ok(), "{ok}");
        }
        for bad in ["", "-x", ".x", "a b", "ü", "a/b", &"x".repeat(129)] {
            assert!(check_name("name", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults_and_subnet_requests() {
        let s = NetworkSpec::validate(raw("n")).unwrap();
        assert_eq!(s.driver, "bridge");
        assert!(s.enable_ipv4 && !s.enable_ipv6);
        assert_eq!(s.subnet_requests().len(), 1);
        let s = NetworkSpec::validate(RawNetwork {
            enable_ipv6: true,
            ..raw("n")
        })
        .unwrap();
        let reqs = s.subnet_requests();
        assert_eq!(reqs.len(), 2);
        assert_eq!(reqs[1].subnet, "::/64");
    }

    #[test]
    fn unknown_options_list_the_known_ones() {
        let mut r = raw("n");
        r.options
            .insert("com.docker.network.bridge.nam".into(), "x".into());
        let errs = NetworkSpec::validate(r).unwrap_err();
        assert!(
            errs[0].reason.contains("com.docker.network.bridge.name"),
            "{errs:?}"
        );
        let mut r = raw("n");
        r.options
            .insert("com.docker.network.driver.mtu".into(), "67".into());
        assert!(NetworkSpec::validate(r).is_err());
    }
}
