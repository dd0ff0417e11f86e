//! The one rule that names the host end of an endpoint's veth pair: the agent creates it under
//! this name and the gateway shows it (`Endpoint.host_interface_name`), so both always agree.

/// Linux interface names are at most 15 bytes (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;

/// The prefix of the names of veths' host ends.
pub const VETH_PREFIX: &str = "wv";

/// Alphanumeric characters of an id: UUID dashes would waste scarce name bytes.
pub fn compact(id: &str) -> String {
    id.chars().filter(char::is_ascii_alphanumeric).collect()
}

/// The host end of endpoint `endpoint_id`'s veth pair.
pub fn veth_host_name(endpoint_id: &str) -> String {
    let mut s = format!("{VETH_PREFIX}{}", compact(endpoint_id));
    s.truncate(IFNAME_MAX);
    s
}

/// Whether endpoints of networks of `driver` have a host-side veth (macvlan and ipvlan
/// interfaces hang off a parent instead; host and none have no interface of their own).
pub fn driver_has_host_veth(driver: &str) -> bool {
    matches!(driver, "bridge" | "overlay")
}
