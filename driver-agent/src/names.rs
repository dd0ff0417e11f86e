//! How the agent names and marks what it creates, so that it can find its own objects again
//! (and only its own): a name prefix plus a link alias carrying the owner's id.

use weft_runtime::names::compact;
pub use weft_runtime::names::{IFNAME_MAX, VETH_PREFIX, veth_host_name};

/// Docker's option that names a bridge network's bridge.
pub const BRIDGE_NAME_OPTION: &str = "com.docker.network.bridge.name";

const BRIDGE_PREFIX: &str = "wft-";
/// Overlay networks' VXLAN devices: the dash keeps them apart from veths (`wv` and the
/// alphanumeric characters of an id) and from bridges (`wft-`).
pub const VXLAN_PREFIX: &str = "wfx-";
const NETWORK_ALIAS: &str = "weft:network:";
const ENDPOINT_ALIAS: &str = "weft:endpoint:";
/// An overlay network's VXLAN device: the network's, but not its bridge (reconciliation
/// finds a network's bridge by [`network_alias`]).
const VXLAN_ALIAS: &str = "weft:vxlan:";
/// An 802.1Q sub-interface the agent created as a macvlan or ipvlan network's parent
/// (`parent=eth0.50` with no such link): shared by every network on it, so it carries its own
/// name, not a network's id. A VLAN link without it is the admin's, used as is, never deleted.
const VLAN_ALIAS: &str = "weft:vlan:";

/// The bridge name derived from a network id when none is given.
pub fn bridge_name(network_id: &str) -> String {
    let mut s = format!("{BRIDGE_PREFIX}{}", compact(network_id));
    s.truncate(IFNAME_MAX);
    s
}

/// The VXLAN device name derived from a network id when none is given.
pub fn vxlan_name(network_id: &str) -> String {
    let mut s = format!("{VXLAN_PREFIX}{}", compact(network_id));
    s.truncate(IFNAME_MAX);
    s
}

/// Whether `name` is one the agent derives for the host end of a veth (`wv` and an id's
/// characters). Such a link without an alias was made by an attach killed before it marked it
/// (the alias is set in a second request): half made, and the agent's.
pub fn is_veth_host_name(name: &str) -> bool {
    name.strip_prefix(VETH_PREFIX)
        .is_some_and(|rest| !rest.is_empty() && rest.chars().all(|c| c.is_ascii_alphanumeric()))
}

/// The alias marking a network's host devices.
pub fn network_alias(network_id: &str) -> String {
    format!("{NETWORK_ALIAS}{network_id}")
}

/// The alias marking both ends of an endpoint's veth pair.
pub fn endpoint_alias(endpoint_id: &str) -> String {
    format!("{ENDPOINT_ALIAS}{endpoint_id}")
}

/// The alias marking an overlay network's VXLAN device.
pub fn vxlan_alias(network_id: &str) -> String {
    format!("{VXLAN_ALIAS}{network_id}")
}

/// The alias marking the VLAN sub-interface `name` as made by the agent.
pub fn vlan_alias(name: &str) -> String {
    format!("{VLAN_ALIAS}{name}")
}

/// The link name a VLAN sub-interface's alias carries, if it is one the agent made.
pub fn vlan_of_alias(alias: &str) -> Option<&str> {
    alias.strip_prefix(VLAN_ALIAS)
}

/// Whether a link alias marks the link as Weft's.
pub fn is_weft_alias(alias: &str) -> bool {
    alias.starts_with(NETWORK_ALIAS)
        || alias.starts_with(ENDPOINT_ALIAS)
        || alias.starts_with(VXLAN_ALIAS)
        || alias.starts_with(VLAN_ALIAS)
}

/// The endpoint id an alias carries, if it is an endpoint alias.
pub fn endpoint_of_alias(alias: &str) -> Option<&str> {
    alias.strip_prefix(ENDPOINT_ALIAS)
}

/// The network id an alias carries, if it is a network alias.
pub fn network_of_alias(alias: &str) -> Option<&str> {
    alias.strip_prefix(NETWORK_ALIAS)
}

/// The network id a VXLAN device's alias carries.
pub fn network_of_vxlan_alias(alias: &str) -> Option<&str> {
    alias.strip_prefix(VXLAN_ALIAS)
}

/// Whether `name` is a usable Linux interface name.
pub fn valid_ifname(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("must not be empty");
    }
    if name.len() > IFNAME_MAX {
        return Err("longer than 15 bytes");
    }
    if name == "." || name == ".." {
        return Err("reserved name");
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err("contains '/', ':', whitespace or control characters");
    }
    Ok(())
}

/// MAC addresses: derived by the one rule the gateway uses too, parsed and formatted.
pub use weft_runtime::mac::{derive as derived_mac, format as format_mac, parse as parse_mac};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_names_fit_ifnamsiz_and_carry_the_prefix() {
        let id = "3f2a9c1e-7b4d-4e2a-9f00-123456789abc";
        assert_eq!(bridge_name(id), "wft-3f2a9c1e7b4");
        assert_eq!(veth_host_name(id), "wv3f2a9c1e7b4d4");
        // A veth's host end is known by its name alone (when an interrupted attach left it
        // unmarked); no other derived name passes for one.
        assert!(is_veth_host_name(&veth_host_name(id)));
        for other in [bridge_name(id), vxlan_name(id), "wv".into(), "eth0".into()] {
            assert!(!is_veth_host_name(&other), "{other}");
        }
        assert_eq!(vxlan_name(id), "wfx-3f2a9c1e7b4");
        assert!(valid_ifname(&vxlan_name(id)).is_ok());
        // A VXLAN device, a bridge and a veth never share a name, whatever the ids.
        assert_ne!(vxlan_name("x"), veth_host_name("x-"));
        assert!(is_weft_alias(&vxlan_alias(id)));
        assert_eq!(network_of_vxlan_alias(&vxlan_alias(id)), Some(id));
        assert_eq!(network_of_alias(&vxlan_alias(id)), None);
        assert!(valid_ifname(&bridge_name(id)).is_ok());
        assert!(is_weft_alias(&vlan_alias("eth0.50")));
        assert_eq!(vlan_of_alias(&vlan_alias("eth0.50")), Some("eth0.50"));
        assert_eq!(vlan_of_alias(&network_alias("eth0.50")), None);
        assert_eq!(network_of_alias(&vlan_alias("x")), None);
    }

    #[test]
    fn derived_mac_is_stable_unicast_and_locally_administered() {
        let a = derived_mac("ep-1");
        assert_eq!(a, derived_mac("ep-1"));
        assert_ne!(a, derived_mac("ep-2"));
        assert_eq!(a[0] & 0x03, 0x02);
    }

    #[test]
    fn mac_round_trips_and_rejects_garbage() {
        let m = [0x02, 0x42, 0xac, 0x11, 0x00, 0x02];
        assert_eq!(parse_mac(&format_mac(&m)), Some(m));
        for bad in [
            "",
            "02:42",
            "02:42:ac:11:00:02:03",
            "zz:42:ac:11:00:02",
            "2:42:ac:11:0:2",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }

    #[test]
    fn interface_names_are_checked_like_the_kernel_does() {
        assert!(valid_ifname("eth0").is_ok());
        for bad in ["", "a-very-long-name-x", "a/b", "a b", ".."] {
            assert!(valid_ifname(bad).is_err(), "{bad}");
        }
    }
}
