//! Weft's shared contracts: the protobuf messages and gRPC services of every Weft service,
//! generated at build time from the `.proto` files beside this crate.
//!
//! Domain crates convert from these types at their edges; nothing beyond the edge should carry
//! a generated type around.

#![allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    unreachable_pub,
    missing_debug_implementations
)]

pub mod gateway {
    pub mod v1 {
        tonic::include_proto!("weft.gateway.v1");
    }
}

pub mod ipam {
    pub mod v1 {
        tonic::include_proto!("weft.ipam.v1");
    }
}

pub mod agent {
    pub mod v1 {
        tonic::include_proto!("weft.agent.v1");
    }
}

pub mod dns {
    pub mod v1 {
        tonic::include_proto!("weft.dns.v1");
    }
}

/// Endpoint driver option (`EndpointSettings.driver_options`): the endpoint's container end is
/// left in the host's (the agent's managed) namespace under this interface name, with its MAC
/// and MTU but no address or route, for a container runtime that moves it into the container
/// itself (Docker's remote network drivers: `Join` names it in `InterfaceName.SrcName`). The
/// agent then ensures only the host side; the container side is the runtime's.
pub const HANDOFF_OPTION: &str = "weft.endpoint.handoff";

/// The encoded `FileDescriptorSet` of every Weft `.proto`, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("weft_descriptor");

impl From<agent::v1::Capabilities> for gateway::v1::HostCapabilities {
    /// What an agent reports about its host, as the gateway's API shows it.
    fn from(c: agent::v1::Capabilities) -> Self {
        let f = c.features.unwrap_or_default();
        Self {
            drivers: c.drivers,
            bridge: f.bridge,
            veth: f.veth,
            vxlan: f.vxlan,
            macvlan: f.macvlan,
            ipvlan: f.ipvlan,
            vlan: f.vlan,
            ipv6: f.ipv6,
            nftables: f.nftables,
            nftables_nat: f.nftables_nat,
            kernel_release: c.kernel_release,
            ipsec: f.ipsec,
            ipsec_missing: f.ipsec_missing,
        }
    }
}
