//! Network drivers behind one trait, [`NetworkDriver`]: what each driver needs from the kernel
//! and what it programs there for a network and for an endpoint.
//!
//! The agent (`agent.rs`, which imports this module, never the reverse) runs what every
//! driver shares (the refusal of a kernel that lacks something, the sandbox's namespace, the
//! firewall, undoing a failed attach, the default routes) and calls the driver for the rest.
//! [`of`] is the one place that names every driver: a driver is one file here plus one line
//! there.
//!
//! - `api.rs`: the trait and what drivers share (drivers import it, it imports no driver).
//! - `in_sandbox.rs`: the endpoint's interface once in the sandbox (addresses, routes), shared.
//! - `on_parent.rs`: a device on the network's parent, born in the sandbox (macvlan, ipvlan).
//! - [`bridge`]: a Linux bridge per network, a veth pair per endpoint.
//! - [`overlay`]: the bridge driver's bridge and veths plus a VXLAN device, with static FDB and
//!   neighbour entries for the network's endpoints on other hosts.
//! - [`macvlan`]: a macvlan device per endpoint on the network's parent.
//! - [`host`], [`none`]: nothing to program (the sandbox uses the host's stack, or loopback).
//! - [`ipvlan`]: refused with FAILED_PRECONDITION when the kernel lacks what it needs,
//!   otherwise with UNIMPLEMENTED (not enabled yet); its attach is macvlan's path with its own
//!   kernel message.
//! - [`vlan`]: the 802.1Q sub-interface a macvlan or ipvlan network's parent names
//!   (`eth0.50`), made when missing and removed with the last network on it; the agent runs it
//!   (it knows which networks share one), not a driver.

mod api;
pub mod bridge;
pub mod host;
mod in_sandbox;
pub mod ipvlan;
pub mod macvlan;
pub mod none;
mod on_parent;
pub mod overlay;
pub mod vlan;

pub use api::{Attached, NetworkDriver, NetworkSetup, NetworkState, SandboxNs};

use crate::{capabilities::Features, spec::Driver};

/// The driver of `kind`: the registry, the one place that names every driver.
pub fn of(kind: Driver) -> &'static dyn NetworkDriver {
    match kind {
        Driver::Bridge => &bridge::Bridge,
        Driver::Host => &host::Host,
        Driver::None => &none::NoNetwork,
        Driver::Overlay => &overlay::Overlay,
        Driver::Macvlan => &macvlan::Macvlan,
        Driver::Ipvlan => &ipvlan::Ipvlan,
    }
}

/// Every driver of the contract, in its order.
const KINDS: [Driver; 6] = [
    Driver::Bridge,
    Driver::Host,
    Driver::None,
    Driver::Overlay,
    Driver::Macvlan,
    Driver::Ipvlan,
];

/// Every driver, for removals (which know only an id).
pub fn all() -> impl Iterator<Item = &'static dyn NetworkDriver> {
    KINDS.into_iter().map(of)
}

/// The drivers usable on a kernel with `kernel`, in the contract's spelling.
pub fn usable(kernel: &Features) -> Vec<&'static str> {
    all()
        .filter(|d| d.usable(kernel))
        .map(|d| d.kind().name())
        .collect()
}

#[cfg(test)]
mod tests {
    use weft_proto::agent::v1 as pb;

    use super::*;

    #[test]
    fn every_driver_of_the_contract_is_registered_once_under_its_own_kind() {
        let contract: Vec<&str> = (0..=16)
            .filter_map(|n| pb::Driver::try_from(n).ok())
            .filter(|d| *d != pb::Driver::Unspecified)
            .map(|d| d.as_str_name().trim_start_matches("DRIVER_"))
            .map(str::to_ascii_lowercase)
            .map(|s| of_name(&s))
            .collect();
        let registered: Vec<&str> = all().map(|d| d.kind().name()).collect();
        assert_eq!(registered, contract);
        for kind in KINDS {
            assert_eq!(of(kind).kind(), kind);
        }
    }

    fn of_name(name: &str) -> &'static str {
        KINDS
            .into_iter()
            .map(Driver::name)
            .find(|n| *n == name)
            .unwrap_or("unregistered")
    }

    fn network(driver: Driver, parent: &str) -> crate::spec::Network {
        crate::spec::Network {
            id: "n".into(),
            name: "n".into(),
            driver,
            bridge: String::new(),
            mtu: 0,
            gateways: Vec::new(),
            parent: parent.into(),
            macvlan_mode: crate::spec::MacvlanMode::Bridge,
            ipvlan_mode: crate::spec::IpvlanMode::L2,
            ipvlan_flag: crate::spec::IpvlanFlag::Bridge,
            subnets: Vec::new(),
            internal: false,
            icc: true,
            masquerade: true,
            host_binding_ipv4: None,
            overlay: None,
        }
    }

    /// The refusal of `kind` on `kernel` as the client sees it: (code, message).
    fn refusal(kind: Driver, parent: &str, kernel: &Features) -> Option<(tonic::Code, String)> {
        of(kind)
            .require(&network(kind, parent), kernel)
            .err()
            .map(|e| {
                let s = tonic::Status::from(e);
                (s.code(), s.message().to_owned())
            })
    }

    #[test]
    fn each_driver_refuses_what_the_kernel_lacks_first_then_what_is_not_programmed() {
        use tonic::Code::{FailedPrecondition, Unimplemented};
        let full = Features {
            bridge: true,
            veth: true,
            vxlan: true,
            macvlan: true,
            ipvlan: true,
            vlan: true,
            ..Features::default()
        };
        let none = Features::default();
        for kind in [Driver::Bridge, Driver::Host, Driver::None, Driver::Macvlan] {
            assert_eq!(refusal(kind, "", &full), None, "{kind:?}");
        }
        for kind in [Driver::Host, Driver::None] {
            assert_eq!(refusal(kind, "", &none), None, "{kind:?}");
        }
        let lacks = |driver: &str, feature: &str| {
            Some((
                FailedPrecondition,
                format!("driver {driver} needs {feature}, which this kernel lacks"),
            ))
        };
        let todo = |driver: &str| {
            Some((
                Unimplemented,
                format!("the {driver} driver is not implemented yet"),
            ))
        };
        assert_eq!(
            refusal(Driver::Bridge, "", &none),
            lacks("bridge", "Linux bridges")
        );
        let no_veth = Features {
            veth: false,
            ..full
        };
        assert_eq!(
            refusal(Driver::Bridge, "", &no_veth),
            lacks("bridge", "veth pairs")
        );
        assert_eq!(
            refusal(Driver::Overlay, "", &none),
            lacks("overlay", "VXLAN devices")
        );
        assert_eq!(
            refusal(Driver::Overlay, "", &no_veth),
            lacks("overlay", "veth pairs")
        );
        assert_eq!(refusal(Driver::Overlay, "", &full), None);
        assert_eq!(
            refusal(Driver::Macvlan, "eth0", &none),
            lacks("macvlan", "macvlan devices")
        );
        assert_eq!(
            refusal(Driver::Ipvlan, "eth0", &none),
            lacks("ipvlan", "ipvlan devices")
        );
        let no_vlan = Features {
            vlan: false,
            ..full
        };
        for (kind, name) in [(Driver::Macvlan, "macvlan"), (Driver::Ipvlan, "ipvlan")] {
            assert_eq!(
                refusal(kind, "eth0.10", &no_vlan),
                lacks(name, "802.1Q VLAN sub-interfaces")
            );
        }
        assert_eq!(refusal(Driver::Macvlan, "eth0", &no_vlan), None);
        assert_eq!(refusal(Driver::Macvlan, "eth0.10", &full), None);
        assert_eq!(refusal(Driver::Ipvlan, "eth0", &no_vlan), todo("ipvlan"));
        assert_eq!(refusal(Driver::Ipvlan, "eth0.10", &full), todo("ipvlan"));
    }

    #[test]
    fn usable_drivers_follow_the_kernel() {
        let full = Features {
            bridge: true,
            veth: true,
            vxlan: true,
            macvlan: true,
            ipvlan: true,
            vlan: true,
            ..Features::default()
        };
        assert_eq!(
            usable(&full),
            ["bridge", "host", "none", "overlay", "macvlan"]
        );
        assert_eq!(usable(&Features::default()), ["host", "none"]);
        let macvlan_only = Features {
            macvlan: true,
            ..Features::default()
        };
        assert_eq!(usable(&macvlan_only), ["host", "none", "macvlan"]);
        let no_vxlan = Features {
            vxlan: false,
            ..full
        };
        assert_eq!(usable(&no_vxlan), ["bridge", "host", "none", "macvlan"]);
    }
}
