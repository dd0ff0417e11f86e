//! Network drivers behind one trait, [`NetworkDriver`]: what each driver needs from the kernel
//! and what it programs there for a network and for an endpoint.
//!
//! The agent (`agent.rs`, which imports this module, never the reverse) runs what every driver shares (the refusal of a kernel that
//! lacks something, the sandbox's namespace, the firewall, undoing a failed attach, the default
//! routes) and calls the driver for the rest. [`of`] is the one place that names every driver:
//! a driver is one file here plus one line there.
//!
//! - [`bridge`]: a Linux bridge per network, a veth pair per endpoint.
//! - [`host`], [`none`]: nothing to program (the sandbox uses the host's stack, or loopback).
//! - [`overlay`], [`macvlan`], [`ipvlan`]: refused with FAILED_PRECONDITION when the kernel
//!   lacks what they need, otherwise with UNIMPLEMENTED (not programmed yet). [`ipvlan`] also
//!   holds the kernel message it will send.

pub mod bridge;
pub mod host;
pub mod ipvlan;
pub mod macvlan;
pub mod none;
pub mod overlay;

use rtnetlink::Handle;

use crate::{
    capabilities::Features,
    error::AgentError,
    kernel::Link,
    report::Report,
    spec::{Driver, Endpoint, Network},
};

/// What a network looks like on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkState {
    pub devices: Vec<String>,
    pub mtu: u32,
}

/// What [`NetworkDriver::ensure_network`] left on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSetup {
    pub state: NetworkState,
    /// The host device the network's endpoints join (the bridge). A network with one gets its
    /// firewall rules, which match on it; without one there is nothing to firewall.
    pub device: Option<Link>,
}

impl NetworkSetup {
    /// Nothing on the host: the network's MTU as given.
    pub fn nothing(net: &Network) -> Self {
        Self {
            state: NetworkState {
                devices: Vec::new(),
                mtu: net.mtu,
            },
            device: None,
        }
    }
}

/// The sandbox an endpoint goes into: its namespace file (checked by the netns policy and
/// open) and a netlink handle inside it.
#[derive(Debug, Clone, Copy)]
pub struct SandboxNs<'a> {
    pub handle: &'a Handle,
    pub file: &'a std::fs::File,
}

/// What an attach left in the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    pub ifname: String,
    pub index: u32,
    pub mac: [u8; 6],
    pub mtu: u32,
    pub addresses: Vec<ipnet::IpNet>,
    /// This attach created the interface: if what follows fails, [`NetworkDriver::detach`]
    /// removes it again.
    pub created: bool,
}

/// One network driver. The agent calls, in order: [`require`](Self::require) before anything
/// else; [`ensure_network`](Self::ensure_network) (under the agent's network lock); then, for an
/// endpoint of a driver that [`attaches`](Self::attaches), [`attach`](Self::attach). Removal
/// does not know the driver (only an id), so [`remove_network`](Self::remove_network) and
/// [`detach`](Self::detach) are asked of every driver and find their objects by alias.
/// The defaults are those of a driver with nothing on the host.
#[async_trait::async_trait]
pub trait NetworkDriver: Send + Sync + std::fmt::Debug {
    /// Which driver of the contract this is.
    fn kind(&self) -> Driver;

    /// Refuses `net` when this kernel lacks a feature it needs ([`AgentError::Unsupported`]:
    /// FAILED_PRECONDITION naming the feature), or when this agent does not program the driver
    /// yet ([`AgentError::Unimplemented`]).
    fn require(&self, net: &Network, kernel: &Features) -> Result<(), AgentError>;

    /// Whether this agent programs the driver on a kernel with `kernel` (GetCapabilities'
    /// list of drivers).
    fn usable(&self, kernel: &Features) -> bool;

    /// Whether its endpoints get an interface in the sandbox; if not, Attach programs nothing
    /// (and does not open the sandbox's namespace).
    fn attaches(&self) -> bool {
        false
    }

    /// Creates or updates the network's objects on the host. Runs under the agent's network
    /// lock, so two attaches racing on a new network do not both create its device.
    async fn ensure_network(
        &self,
        _host: &Handle,
        net: &Network,
        _report: &mut Report,
    ) -> Result<NetworkSetup, AgentError> {
        Ok(NetworkSetup::nothing(net))
    }

    /// Removes the device `setup` names, which this call's `ensure_network` created, unless an
    /// endpoint joined it meanwhile (a failed request leaves nothing behind). Runs under the
    /// network lock.
    async fn undo_network(&self, _host: &Handle, _setup: &NetworkSetup) {}

    /// Removes every host object of network `network_id`; keeps going past failures (each one
    /// reported).
    async fn remove_network(&self, _host: &Handle, _network_id: &str, _report: &mut Report) {}

    /// Creates (or completes) the endpoint's interface in the sandbox with its name, MAC,
    /// addresses and routes. On failure, an interface this call created is removed again.
    async fn attach(
        &self,
        _host: &Handle,
        _sandbox: SandboxNs<'_>,
        _setup: &NetworkSetup,
        _net: &Network,
        _ep: &Endpoint,
        _report: &mut Report,
    ) -> Result<Attached, AgentError> {
        Err(unimplemented(self.kind()))
    }

    /// Removes the endpoint's interface; the sandbox's namespace may be gone already, so only
    /// the host is at hand. Absent: nothing to do.
    async fn detach(&self, _host: &Handle, _endpoint_id: &str, _report: &mut Report) {}
}

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

/// FAILED_PRECONDITION naming `feature` unless the kernel has it (`ok`).
fn need(driver: Driver, ok: bool, feature: &'static str) -> Result<(), AgentError> {
    if ok {
        Ok(())
    } else {
        Err(AgentError::Unsupported {
            driver: driver.name(),
            feature,
        })
    }
}

/// A parent named like a VLAN sub-interface (`eth0.10`) needs 802.1Q (macvlan, ipvlan).
fn need_vlan_parent(driver: Driver, net: &Network, kernel: &Features) -> Result<(), AgentError> {
    need(
        driver,
        kernel.vlan || !net.parent.contains('.'),
        "802.1Q VLAN sub-interfaces",
    )
}

/// UNIMPLEMENTED: a driver this agent does not program yet.
fn unimplemented(driver: Driver) -> AgentError {
    AgentError::Unimplemented {
        what: format!("the {} driver", driver.name()),
    }
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
        assert_eq!(usable(&full), ["bridge", "host", "none"]);
        assert_eq!(usable(&Features::default()), ["host", "none"]);
    }
}
