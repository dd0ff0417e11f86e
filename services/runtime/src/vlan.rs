//! Parent interfaces named like 802.1Q VLAN sub-interfaces, Docker's `parent=eth0.50`: the
//! one rule the gateway validates a macvlan or ipvlan network's `parent` option with and the
//! agent reads it by, so both agree on what is a VLAN (and which) and what is a plain link.
//!
//! As Docker's macvlan and ipvlan drivers: a name with a dot is `BASE.VID`, one dot, BASE a
//! non-empty interface name, VID a VLAN id from [`MIN_VID`] to [`MAX_VID`] (0 and 4095 are
//! reserved by 802.1Q), written without leading zeros (so that one VLAN has one name).
//! Whether the whole name fits IFNAMSIZ is the interface-name rule's (each side's own).

/// The lowest VLAN id a sub-interface may carry.
pub const MIN_VID: u16 = 1;
/// The highest VLAN id a sub-interface may carry.
pub const MAX_VID: u16 = 4094;

/// A parent named `BASE.VID`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VlanParent<'a> {
    /// The link the sub-interface tags its frames on.
    pub base: &'a str,
    pub vid: u16,
}

/// `parent` as a VLAN sub-interface: `Ok(None)` for a name without a dot (a plain link),
/// `Ok(Some(_))` for `BASE.VID`, `Err(why)` for any other name with a dot.
pub fn parse(parent: &str) -> Result<Option<VlanParent<'_>>, String> {
    let Some((base, vid)) = parent.split_once('.') else {
        return Ok(None);
    };
    let rule = || {
        format!(
            "a parent with a dot names an 802.1Q sub-interface BASE.VID (as eth0.50): one dot, \
             an interface name before it, a VLAN id from {MIN_VID} to {MAX_VID} without leading \
             zeros after it"
        )
    };
    if base.is_empty() || vid.contains('.') {
        return Err(rule());
    }
    let digits = !vid.is_empty() && vid.len() <= 4 && vid.bytes().all(|b| b.is_ascii_digit());
    match vid.parse::<u16>() {
        Ok(n) if digits && !vid.starts_with('0') && (MIN_VID..=MAX_VID).contains(&n) => {
            Ok(Some(VlanParent { base, vid: n }))
        }
        _ => Err(rule()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dotted_parent_is_base_and_vlan_id_within_802_1q_range() {
        assert_eq!(parse("eth0"), Ok(None));
        assert_eq!(
            parse("eth0.50"),
            Ok(Some(VlanParent {
                base: "eth0",
                vid: 50
            }))
        );
        assert_eq!(parse("bond0.4094").unwrap().map(|p| p.vid), Some(MAX_VID));
        assert_eq!(parse("e.1").unwrap().map(|p| p.vid), Some(MIN_VID));
        for bad in [
            "eth0.",
            ".50",
            "eth0.0",
            "eth0.4095",
            "eth0.65536",
            "eth0.050",
            "eth0.5.1",
            "eth0.x",
            "eth0.+5",
            "eth0.-1",
            "eth0.99999",
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains("1 to 4094"), "{bad}: {err}");
        }
    }
}
