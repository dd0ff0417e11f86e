//! Networks in the gateway's own terms: the validated request, and the record as stored.

use std::{collections::BTreeMap, net::IpAddr, str::FromStr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use weft_runtime::FieldViolation;

use super::{
    check::{Violations, check_ifname, check_ifname_len, check_labels, check_name, check_text},
    limits::{
        ALLOW_WIDE_SUBNETS, MAX_AUX_ADDRESSES, MAX_DNS_SERVERS, MAX_IFNAME_PREFIX, MAX_LABEL_KEY,
        MAX_SUBNETS, MAX_VXLAN_IDS, MIN_IPV4_PREFIX, MIN_IPV6_PREFIX,
    },
};

/// Drivers a user may create networks with (`host` and `none` are the predefined networks').
pub const USER_DRIVERS: &[&str] = &["bridge", "overlay", "macvlan", "ipvlan"];

/// Docker's option keys, per driver (Weft's own [`ALLOW_WIDE_SUBNETS`] is known to every
/// driver).
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
            "encrypted",
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

/// Docker's option naming an overlay network's VXLAN id(s); Weft uses the first.
pub const VXLAN_IDS: &str = "com.docker.network.driver.overlay.vxlanid_list";

impl NetworkRecord {
    /// An overlay network's VXLAN id (the first of [`VXLAN_IDS`]).
    pub fn vni(&self) -> Option<u32> {
        if self.driver != "overlay" {
            return None;
        }
        self.options.get(VXLAN_IDS)?.split(',').next()?.parse().ok()
    }
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
        let mut errs = Violations::default();
        errs.check(check_name("name", &raw.name));
        let driver = if raw.driver.is_empty() {
            "bridge".to_owned()
        } else {
            raw.driver.clone()
        };
        check_driver(&driver, &raw.driver, &mut errs);
        check_ipam(&raw, &mut errs);
        check_options(&driver, &raw.options, &mut errs);
        let enable_ipv4 = raw.enable_ipv4.unwrap_or(true);
        if !enable_ipv4 && !raw.enable_ipv6 {
            errs.add(
                "enable_ipv4",
                "false",
                "a network needs IPv4 or IPv6 (set enable_ipv6)",
            );
        }
        let allow_wide = raw
            .options
            .get(ALLOW_WIDE_SUBNETS)
            .is_some_and(|v| v == "true");
        check_subnets(
            &raw.subnets,
            enable_ipv4,
            raw.enable_ipv6,
            allow_wide,
            &mut errs,
        );
        errs.extend(check_dns_servers(&raw.dns_servers));
        errs.extend(check_labels("labels", &raw.labels));
        errs.finish(())?;
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

fn check_driver(driver: &str, given: &str, errs: &mut Violations) {
    if !USER_DRIVERS.contains(&driver) {
        let reason = if driver == "host" || driver == "none" {
            format!("only the predefined network {driver:?} uses this driver")
        } else {
            format!("unknown driver (known: {})", USER_DRIVERS.join(", "))
        };
        errs.add("driver", given, reason);
    }
}

fn check_ipam(raw: &RawNetwork, errs: &mut Violations) {
    if !(raw.ipam_driver.is_empty() || raw.ipam_driver == "default") {
        errs.add(
            "ipam.driver",
            &raw.ipam_driver,
            "unknown IPAM driver (known: default)",
        );
    }
    for key in raw.ipam_options.keys() {
        errs.add(
            format!("ipam.options[{key}]"),
            key,
            "unknown IPAM option (none are known)",
        );
    }
}

fn check_options(driver: &str, options: &BTreeMap<String, String>, errs: &mut Violations) {
    let mut known = known_options(driver).to_vec();
    known.push(ALLOW_WIDE_SUBNETS);
    for (key, value) in options {
        if !known.contains(&key.as_str()) {
            errs.add(
                format!("options[{key}]"),
                key,
                format!(
                    "unknown option for driver {driver} (known: {})",
                    known.join(", ")
                ),
            );
            continue;
        }
        errs.check(check_option(key, value));
    }
}

/// At most [`MAX_SUBNETS`]; each subnet's family must be enabled, and it may not be wider than
/// /8 (IPv4) or /32 (IPv6) unless the network allows it ([`ALLOW_WIDE_SUBNETS`]): a subnet that
/// wide shadows the host's own routes. At most [`MAX_AUX_ADDRESSES`] reserved addresses each,
/// named without control characters. Malformed subnets and addresses are refused by IPAM,
/// which names the field.
fn check_subnets(
    subnets: &[SubnetSpec],
    v4: bool,
    v6: bool,
    allow_wide: bool,
    errs: &mut Violations,
) {
    if !errs.count("ipam.configs", subnets.len(), MAX_SUBNETS) {
        return;
    }
    for (i, s) in subnets.iter().enumerate() {
        let field = format!("ipam.configs[{i}].subnet");
        match IpNet::from_str(&s.subnet).ok() {
            Some(IpNet::V6(_)) if !v6 => {
                errs.add(field, &s.subnet, "an IPv6 subnet needs enable_ipv6");
            }
            Some(IpNet::V4(_)) if !v4 => {
                errs.add(field, &s.subnet, "an IPv4 subnet needs enable_ipv4");
            }
            Some(net) if !allow_wide => errs.check(check_width(&field, &s.subnet, net)),
            None if s.subnet.is_empty() => errs.add(field, "", "required in an IPAM config"),
            _ => {}
        }
        let aux = format!("ipam.configs[{i}].aux_addresses");
        if errs.count(&aux, s.aux_addresses.len(), MAX_AUX_ADDRESSES) {
            for name in s.aux_addresses.keys() {
                errs.check(check_text(&aux, name, MAX_LABEL_KEY));
            }
        }
    }
}

/// A subnet no wider than /8 (IPv4) or /32 (IPv6).
fn check_width(field: &str, subnet: &str, net: IpNet) -> Result<(), FieldViolation> {
    let (len, min) = match net {
        IpNet::V4(n) => (n.prefix_len(), MIN_IPV4_PREFIX),
        IpNet::V6(n) => (n.prefix_len(), MIN_IPV6_PREFIX),
    };
    if len < min {
        return Err(FieldViolation::new(
            field,
            subnet,
            format!(
                "wider than /{min}: it would shadow the host's routes (allowed with option {ALLOW_WIDE_SUBNETS}=true)"
            ),
        ));
    }
    Ok(())
}

/// A network's DNS upstreams: at most [`MAX_DNS_SERVERS`] IP addresses.
pub fn check_dns_servers(servers: &[String]) -> Vec<FieldViolation> {
    let mut errs = Violations::default();
    if errs.count("dns_servers", servers.len(), MAX_DNS_SERVERS) {
        for (i, d) in servers.iter().enumerate() {
            if IpAddr::from_str(d).is_err() {
                errs.add(format!("dns_servers[{i}]"), d, "not an IP address");
            }
        }
    }
    errs.finish(()).err().unwrap_or_default()
}

/// Checks the value of a known option: each is passed to the agent, and some end up in link
/// names, sysctl paths and nftables rules.
fn check_option(key: &str, value: &str) -> Result<(), FieldViolation> {
    let field = format!("options[{key}]");
    let one_of = |allowed: &[&str]| {
        if allowed.contains(&value) {
            Ok(())
        } else {
            Err(FieldViolation::new(
                &field,
                value,
                format!("one of {}", allowed.join(", ")),
            ))
        }
    };
    match key {
        "com.docker.network.driver.mtu" => {
            if value
                .parse::<u32>()
                .is_ok_and(|m| (68..=65535).contains(&m))
            {
                Ok(())
            } else {
                Err(FieldViolation::new(
                    &field,
                    value,
                    "MTU must be a number from 68 to 65535",
                ))
            }
        }
        "com.docker.network.bridge.enable_icc"
        | "com.docker.network.bridge.enable_ip_masquerade"
        | ALLOW_WIDE_SUBNETS => one_of(&["true", "false"]),
        "com.docker.network.bridge.host_binding_ipv4" => value
            .parse::<std::net::Ipv4Addr>()
            .map(drop)
            .map_err(|_| FieldViolation::new(&field, value, "not an IPv4 address")),
        "com.docker.network.bridge.name" => check_ifname(&field, value),
        // Docker's rule: a dotted parent is an 802.1Q sub-interface the agent may create.
        "parent" => check_ifname(&field, value).and_then(|()| {
            weft_runtime::vlan::parse(value)
                .map(drop)
                .map_err(|why| FieldViolation::new(&field, value, why))
        }),
        "com.docker.network.container_iface_prefix" => {
            check_ifname_len(&field, value, MAX_IFNAME_PREFIX)
        }
        "com.docker.network.bridge.gateway_mode_ipv4"
        | "com.docker.network.bridge.gateway_mode_ipv6" => {
            one_of(&["nat", "nat-unprotected", "routed", "isolated"])
        }
        "com.docker.network.driver.overlay.vxlanid_list" => check_vxlan_ids(&field, value),
        "macvlan_mode" => one_of(&["bridge", "private", "vepa", "passthru"]),
        // Docker's `--opt encrypted` (no value); refused when the network is created.
        "encrypted" => one_of(&["", "true", "false"]),
        "ipvlan_mode" => one_of(&["l2", "l3", "l3s"]),
        "ipvlan_flag" => one_of(&["bridge", "private", "vepa"]),
        _ => Ok(()),
    }
}

/// Comma-separated VXLAN ids (1 to 16777215), at most [`MAX_VXLAN_IDS`].
fn check_vxlan_ids(field: &str, value: &str) -> Result<(), FieldViolation> {
    let ids: Vec<&str> = value.split(',').collect();
    let ok = ids.len() <= MAX_VXLAN_IDS
        && ids.iter().all(|id| {
            id.len() <= 8
                && id.chars().all(|c| c.is_ascii_digit())
                && id
                    .parse::<u32>()
                    .is_ok_and(|n| (1..=16_777_215).contains(&n))
        });
    if !ok {
        return Err(FieldViolation::new(
            field,
            value,
            format!("at most {MAX_VXLAN_IDS} comma-separated VXLAN ids from 1 to 16777215"),
        ));
    }
    Ok(())
}

/// The raw fields of an UpdateNetwork request.
#[derive(Debug, Clone, Default)]
pub struct RawNetworkUpdate {
    pub network: String,
    pub labels: BTreeMap<String, String>,
    pub dns_servers: Vec<String>,
    /// The update mask's paths.
    pub paths: Vec<String>,
}

/// A validated UpdateNetwork request: the fields to replace, each only when the mask names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkUpdate {
    pub network: String,
    pub labels: Option<BTreeMap<String, String>>,
    pub dns_servers: Option<Vec<String>>,
}

impl NetworkUpdate {
    pub fn validate(raw: RawNetworkUpdate) -> Result<Self, Vec<FieldViolation>> {
        if raw.paths.is_empty() {
            return Err(vec![FieldViolation::new(
                "update_mask",
                "",
                "name the fields to change (labels, dns_servers)",
            )]);
        }
        if let Some(p) = raw
            .paths
            .iter()
            .find(|p| *p != "labels" && *p != "dns_servers")
        {
            return Err(vec![FieldViolation::new(
                "update_mask",
                p,
                "only labels and dns_servers can change",
            )]);
        }
        let named = |field: &str| raw.paths.iter().any(|p| p == field);
        let mut errs = Violations::default();
        errs.extend(check_dns_servers(&raw.dns_servers));
        if named("labels") {
            errs.extend(check_labels("labels", &raw.labels));
        }
        errs.finish(())?;
        Ok(Self {
            labels: named("labels").then(|| raw.labels.clone()),
            dns_servers: named("dns_servers").then(|| raw.dns_servers.clone()),
            network: raw.network,
        })
    }
}

/// A PruneNetworks request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneSpec {
    /// Every one must match.
    pub label: Vec<String>,
    /// A network matching any of these is kept.
    pub label_not: Vec<String>,
    /// Only networks created before this time.
    pub until_ms: Option<i64>,
    pub validate_only: bool,
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
    fn macvlan_and_ipvlan_modes_are_dockers_and_anything_else_is_named() {
        let with = |driver: &str, key: &str, value: &str| {
            let mut r = raw("n");
            r.driver = driver.into();
            r.options.insert(key.into(), value.into());
            NetworkSpec::validate(r)
        };
        for m in ["bridge", "private", "vepa", "passthru"] {
            assert!(with("macvlan", "macvlan_mode", m).is_ok(), "{m}");
        }
        for (driver, key, good, bad) in [
            ("macvlan", "macvlan_mode", "bridge", "l2"),
            ("ipvlan", "ipvlan_mode", "l3s", "l4"),
            ("ipvlan", "ipvlan_flag", "vepa", "passthru"),
        ] {
            assert!(with(driver, key, good).is_ok(), "{key}={good}");
            let errs = with(driver, key, bad).unwrap_err();
            assert_eq!(errs[0].field, format!("options[{key}]"), "{errs:?}");
            assert_eq!(errs[0].value, bad);
        }
        // A mode of the other driver is an unknown option.
        let errs = with("macvlan", "ipvlan_mode", "l2").unwrap_err();
        assert_eq!(errs[0].field, "options[ipvlan_mode]", "{errs:?}");
    }

    #[test]
    fn a_dotted_parent_is_an_802_1q_sub_interface_with_a_vlan_id_from_1_to_4094() {
        let with = |driver: &str, parent: &str| {
            let mut r = raw("n");
            r.driver = driver.into();
            r.options.insert("parent".into(), parent.into());
            NetworkSpec::validate(r)
        };
        for ok in [
            "eth0",
            "eth0.50",
            "bond0.4094",
            "enp3s0f1.1",
            "abcdefghij.4094",
        ] {
            assert!(with("macvlan", ok).is_ok(), "{ok}");
            assert!(with("ipvlan", ok).is_ok(), "{ok}");
        }
        for (bad, why) in [
            ("eth0.0", "from 1 to 4094"),
            ("eth0.4095", "from 1 to 4094"),
            ("eth0.050", "without leading"),
            ("eth0.5.1", "one dot"),
            ("eth0.", "BASE.VID"),
            (".50", "BASE.VID"),
            ("eth0.x", "BASE.VID"),
            // IFNAMSIZ: 16 bytes, VLAN or not.
            ("abcdefghijk.4094", "1 to 15 characters"),
            ("eth0.5 0", "a-z A-Z 0-9"),
        ] {
            let errs = with("macvlan", bad).unwrap_err();
            assert_eq!(errs[0].field, "options[parent]", "{errs:?}");
            assert_eq!(errs[0].value, bad);
            assert!(errs[0].reason.contains(why), "{bad}: {errs:?}");
        }
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
