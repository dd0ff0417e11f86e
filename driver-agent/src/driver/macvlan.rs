//! The macvlan driver: a macvlan device per endpoint on the network's parent, born in the
//! sandbox with the network's mode and the endpoint's MAC (the path shared with ipvlan,
//! `on_parent.rs`). Sandboxes reach the parent's segment with their own addresses, and each
//! other in bridge mode; the host cannot reach them through the parent (the kernel does not
//! hand a parent's own frames to its macvlan devices). A kernel without macvlan, or without
//! 802.1Q for a parent named like a VLAN sub-interface (`eth0.10`, which the agent makes when
//! missing: `vlan.rs`), is refused with FAILED_PRECONDITION naming what is missing.

use std::os::fd::RawFd;

use rtnetlink::{
    Handle, LinkMacVlan,
    packet_route::link::{InfoKind, LinkMessage, MacVlanMode},
};

use super::{
    api::{Attached, NetworkDriver, NetworkSetup, SandboxNs, need, need_vlan_parent},
    on_parent::{self, Child},
};
use crate::{
    capabilities::Features,
    error::AgentError,
    report::Report,
    spec::{Driver, Endpoint, MacvlanMode, Network},
};

#[derive(Debug, Clone, Copy)]
pub struct Macvlan;

const CHILD: Child = Child {
    kind: InfoKind::MacVlan,
    create: "create macvlan",
    message: message_for,
};

fn message_for(net: &Network, ep: &Endpoint, parent_index: u32, netns_fd: RawFd) -> LinkMessage {
    new_link_message(
        &ep.ifname,
        parent_index,
        net.macvlan_mode,
        ep.mac,
        net.mtu,
        netns_fd,
    )
}

#[async_trait::async_trait]
impl NetworkDriver for Macvlan {
    fn kind(&self) -> Driver {
        Driver::Macvlan
    }

    fn require(&self, net: &Network, kernel: &Features) -> Result<(), AgentError> {
        need(self.kind(), kernel.macvlan, "macvlan devices")?;
        need_vlan_parent(self.kind(), net, kernel)
    }

    fn usable(&self, kernel: &Features) -> bool {
        kernel.macvlan
    }

    fn attaches(&self) -> bool {
        true
    }

    async fn attach(
        &self,
        host: &Handle,
        sandbox: SandboxNs<'_>,
        _setup: &NetworkSetup,
        net: &Network,
        ep: &Endpoint,
        report: &mut Report,
    ) -> Result<Attached, AgentError> {
        on_parent::attach(&CHILD, host, sandbox, net, ep, report).await
    }

    async fn detach(
        &self,
        _host: &Handle,
        sandbox: Option<&Handle>,
        endpoint_id: &str,
        report: &mut Report,
    ) {
        on_parent::detach(&CHILD, sandbox, endpoint_id, report).await;
    }
}

/// The RTM_NEWLINK message creating macvlan device `name` on parent `parent_index` in `mode`
/// with address `mac`, born in the sandbox namespace `netns_fd`. In passthru mode the device
/// takes the parent's own address (the kernel gives it; asking for another would change the
/// parent's), so none is set. MTU 0: the parent's.
pub fn new_link_message(
    name: &str,
    parent_index: u32,
    mode: MacvlanMode,
    mac: [u8; 6],
    mtu: u32,
    netns_fd: RawFd,
) -> LinkMessage {
    let kernel_mode = match mode {
        MacvlanMode::Bridge => MacVlanMode::Bridge,
        MacvlanMode::Private => MacVlanMode::Private,
        MacvlanMode::Vepa => MacVlanMode::Vepa,
        MacvlanMode::Passthru => MacVlanMode::Passthrough,
    };
    let mut b = LinkMacVlan::new(name, parent_index, kernel_mode);
    if mode != MacvlanMode::Passthru {
        b = b.address(mac.to_vec());
    }
    if mtu != 0 {
        b = b.mtu(mtu);
    }
    b.setns_by_fd(netns_fd).build()
}

#[cfg(test)]
mod tests {
    use rtnetlink::packet_route::link::{InfoData, InfoMacVlan, LinkAttribute, LinkInfo};

    use super::*;

    const MAC: [u8; 6] = [0x02, 0x42, 0x0a, 0, 0, 2];

    fn info(m: &LinkMessage) -> &Vec<LinkInfo> {
        m.attributes
            .iter()
            .find_map(|x| match x {
                LinkAttribute::LinkInfo(i) => Some(i),
                _ => None,
            })
            .expect("IFLA_LINKINFO")
    }

    #[test]
    fn macvlan_message_names_parent_mode_mac_mtu_and_target_namespace() {
        let m = new_link_message("eth1", 7, MacvlanMode::Private, MAC, 1400, 42);
        let a = &m.attributes;
        assert!(a.contains(&LinkAttribute::IfName("eth1".into())), "{a:?}");
        assert!(a.contains(&LinkAttribute::Link(7)), "{a:?}");
        assert!(a.contains(&LinkAttribute::Mtu(1400)), "{a:?}");
        assert!(a.contains(&LinkAttribute::NetNsFd(42)), "{a:?}");
        assert!(a.contains(&LinkAttribute::Address(MAC.to_vec())), "{a:?}");
        let info = info(&m);
        assert!(
            info.contains(&LinkInfo::Kind(InfoKind::MacVlan)),
            "{info:?}"
        );
        assert!(
            info.contains(&LinkInfo::Data(InfoData::MacVlan(vec![InfoMacVlan::Mode(
                MacVlanMode::Private
            )]))),
            "{info:?}"
        );
    }

    #[test]
    fn each_mode_is_the_kernels_and_passthru_keeps_the_parents_address() {
        for (mode, kernel) in [
            (MacvlanMode::Bridge, MacVlanMode::Bridge),
            (MacvlanMode::Private, MacVlanMode::Private),
            (MacvlanMode::Vepa, MacVlanMode::Vepa),
            (MacvlanMode::Passthru, MacVlanMode::Passthrough),
        ] {
            let m = new_link_message("eth0", 3, mode, MAC, 0, 9);
            assert!(
                info(&m).contains(&LinkInfo::Data(InfoData::MacVlan(vec![InfoMacVlan::Mode(
                    kernel
                )]))),
                "{mode:?}"
            );
            let has_mac = m
                .attributes
                .iter()
                .any(|a| matches!(a, LinkAttribute::Address(_)));
            assert_eq!(has_mac, mode != MacvlanMode::Passthru, "{mode:?}");
            // MTU 0: none asked for, the parent's.
            assert!(
                !m.attributes
                    .iter()
                    .any(|a| matches!(a, LinkAttribute::Mtu(_)))
            );
        }
    }

    #[test]
    fn macvlan_request_survives_the_wire_format_with_the_kernels_mode_numbers() {
        use rtnetlink::{
            packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NetlinkMessage},
            packet_route::RouteNetlinkMessage,
        };
        let m = new_link_message("eth1", 7, MacvlanMode::Vepa, MAC, 9000, 42);
        // The RTM_NEWLINK request exactly as `handle.link().add(m)` would send it.
        let mut req = NetlinkMessage::from(RouteNetlinkMessage::NewLink(m.clone()));
        req.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
        req.finalize();
        let mut bytes = vec![0u8; req.buffer_len()];
        req.serialize(&mut bytes);
        let back = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes).unwrap();
        assert_eq!(back.header.flags, req.header.flags);
        assert_eq!(
            back.payload,
            rtnetlink::packet_core::NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(m))
        );
        // linux/if_link.h, as the kernel reads them (native byte order): IFLA_MACVLAN_MODE (1)
        // as a u32 with MACVLAN_MODE_VEPA (2); the kind "macvlan"; IFLA_LINK (5) = 7;
        // IFLA_NET_NS_FD (28) = 42.
        let u32_attr = |kind: u16, value: u32| -> Vec<u8> {
            [
                &8u16.to_ne_bytes()[..],
                &kind.to_ne_bytes(),
                &value.to_ne_bytes(),
            ]
            .concat()
        };
        let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
        assert!(has(&u32_attr(1, 2)), "IFLA_MACVLAN_MODE vepa");
        assert!(has(b"macvlan\0"), "IFLA_INFO_KIND");
        assert!(has(&u32_attr(5, 7)), "IFLA_LINK");
        assert!(has(&u32_attr(28, 42)), "IFLA_NET_NS_FD");
    }
}
