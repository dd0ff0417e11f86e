//! Networks on a parent interface of the host (macvlan, ipvlan): what a new one may not share
//! with those already there.

use std::{collections::BTreeMap, str::FromStr};

use ipnet::IpNet;

use super::network::{NetworkRecord, NetworkSpec};

/// Drivers whose networks sit on a parent interface of the host (option `parent`).
pub const ON_PARENT: &[&str] = &["macvlan", "ipvlan"];

/// Why a new macvlan or ipvlan network cannot have its subnets: one overlaps a subnet of
/// another such network on the same parent among `existing` (its sandboxes would claim the
/// same addresses on one segment; Docker refuses it too). No parent given means the host's
/// default-route interface, the same for both. Other overlaps are IPAM's to refuse.
pub fn parent_conflict(spec: &NetworkSpec, existing: &[NetworkRecord]) -> Option<String> {
    if !ON_PARENT.contains(&spec.driver.as_str()) {
        return None;
    }
    let parent = |o: &BTreeMap<String, String>| o.get("parent").cloned().unwrap_or_default();
    let mine = parent(&spec.options);
    // ("0.0.0.0/24" asks for any free subnet: IPAM picks one that overlaps nothing.)
    let asked: Vec<IpNet> = spec
        .subnets
        .iter()
        .filter_map(|s| IpNet::from_str(&s.subnet).ok())
        .filter(|n| !n.addr().is_unspecified())
        .collect();
    let overlap = |a: &IpNet, b: &IpNet| a.contains(&b.network()) || b.contains(&a.network());
    for other in existing
        .iter()
        .filter(|o| ON_PARENT.contains(&o.driver.as_str()) && parent(&o.options) == mine)
    {
        for theirs in other
            .subnets
            .iter()
            .filter_map(|s| IpNet::from_str(&s.subnet).ok())
        {
            if let Some(a) = asked.iter().find(|a| overlap(a, &theirs)) {
                let on = if mine.is_empty() {
                    "the host's default-route interface".to_owned()
                } else {
                    format!("parent {mine:?}")
                };
                return Some(format!(
                    "subnet {a} overlaps subnet {theirs} of {} network {:?} on {on}",
                    other.driver, other.name
                ));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::network::{RawNetwork, SubnetRecord, SubnetSpec};

    fn raw(name: &str) -> RawNetwork {
        RawNetwork {
            name: name.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_macvlan_subnet_overlapping_another_on_the_same_parent_is_refused_naming_it() {
        let spec = |driver: &str, parent: Option<&str>, subnet: &str| {
            let mut r = raw("new");
            r.driver = driver.into();
            if let Some(p) = parent {
                r.options.insert("parent".into(), p.into());
            }
            r.subnets = vec![SubnetSpec {
                subnet: subnet.into(),
                ..Default::default()
            }];
            NetworkSpec::validate(r).unwrap()
        };
        let record = |name: &str, driver: &str, parent: Option<&str>, subnet: &str| {
            let s = spec(driver, parent, subnet);
            NetworkRecord {
                id: name.into(),
                name: name.into(),
                driver: s.driver,
                scope: "local".into(),
                subnets: vec![SubnetRecord {
                    pool_id: format!("{name}/0"),
                    subnet: subnet.into(),
                    ip_range: String::new(),
                    gateway: String::new(),
                    aux_addresses: BTreeMap::new(),
                }],
                enable_ipv4: true,
                enable_ipv6: false,
                internal: false,
                attachable: false,
                labels: BTreeMap::new(),
                options: s.options,
                dns_servers: Vec::new(),
                predefined: false,
                created_at_ms: 0,
                updated_at_ms: 0,
            }
        };
        let existing = [
            record("lan-a", "macvlan", Some("eth1"), "192.168.50.0/24"),
            record("dflt", "macvlan", None, "192.168.60.0/24"),
            record("br", "bridge", None, "192.168.70.0/24"),
        ];
        let refused = parent_conflict(
            &spec("macvlan", Some("eth1"), "192.168.50.128/25"),
            &existing,
        )
        .unwrap();
        assert_eq!(
            refused,
            "subnet 192.168.50.128/25 overlaps subnet 192.168.50.0/24 of macvlan network \"lan-a\" on parent \"eth1\""
        );
        // ipvlan on the same parent claims the same segment.
        assert!(
            parent_conflict(&spec("ipvlan", Some("eth1"), "192.168.0.0/16"), &existing).is_some()
        );
        // No parent: the default-route interface, shared with "dflt".
        let refused =
            parent_conflict(&spec("macvlan", None, "192.168.60.0/24"), &existing).unwrap();
        assert!(
            refused.ends_with("network \"dflt\" on the host's default-route interface"),
            "{refused}"
        );
        // Another parent, a free subnet, a size to pick, or a bridge's subnet: not this check's.
        for ok in [
            spec("macvlan", Some("eth2"), "192.168.50.0/24"),
            spec("macvlan", Some("eth1"), "192.168.51.0/24"),
            spec("macvlan", Some("eth1"), "0.0.0.0/24"),
            spec("macvlan", None, "192.168.70.0/24"),
            spec("bridge", None, "192.168.60.0/24"),
        ] {
            assert_eq!(parent_conflict(&ok, &existing), None, "{ok:?}");
        }
    }
}
