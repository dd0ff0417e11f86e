//! The ipvlan driver (an ipvlan device on the network's parent per endpoint): not programmed
//! by this agent yet. A kernel without ipvlan (this project's CI kernel), or without 802.1Q
//! for a parent named like a VLAN sub-interface (`eth0.10`), is refused with
//! FAILED_PRECONDITION naming what is missing, before anything is sent; otherwise
//! UNIMPLEMENTED. Its attach (reached only by calling the driver directly until then) creates
//! the device born inside the sandbox with the message built (and unit tested) here, Docker's
//! default mode and flag (L2, bridge); the network's own mode and flag are not carried to the
//! agent's domain types yet.

use std::os::fd::AsRawFd as _;

use rtnetlink::{
    Handle, LinkIpVlan,
    packet_route::link::{InfoKind, IpVlanFlags, IpVlanMode, LinkMessage},
};
use weft_proto::agent::v1 as pb;

use super::{
    api::{
        Attached, NetworkDriver, NetworkSetup, SandboxNs, need, need_vlan_parent, unimplemented,
    },
    in_sandbox,
};
use crate::{
    capabilities::Features,
    error::AgentError,
    kernel, names,
    report::{Action, Kind, Report},
    spec::{Driver, Endpoint, Network},
};

#[derive(Debug, Clone, Copy)]
pub struct Ipvlan;

#[async_trait::async_trait]
impl NetworkDriver for Ipvlan {
    fn kind(&self) -> Driver {
        Driver::Ipvlan
    }

    fn require(&self, net: &Network, kernel: &Features) -> Result<(), AgentError> {
        need(self.kind(), kernel.ipvlan, "ipvlan devices")?;
        need_vlan_parent(self.kind(), net, kernel)?;
        Err(unimplemented(self.kind()))
    }

    fn usable(&self, _kernel: &Features) -> bool {
        false
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
        let created = create(host, sandbox, net, ep, report).await?;
        let res = in_sandbox::configure(sandbox, ep, net.mtu, created, report).await;
        if res.is_err() && created {
            remove(sandbox.handle, &ep.id, &mut Report::default()).await;
            report.changes.clear();
        }
        res
    }

    /// The device lives only in the sandbox: without it, it went with the namespace.
    async fn detach(
        &self,
        _host: &Handle,
        sandbox: Option<&Handle>,
        endpoint_id: &str,
        report: &mut Report,
    ) {
        if let Some(sandbox) = sandbox {
            remove(sandbox, endpoint_id, report).await;
        }
    }
}

/// Creates the endpoint's ipvlan device inside the sandbox unless it is there already (then it
/// must be Weft's, for this endpoint). Returns whether it was created.
async fn create(
    host: &Handle,
    sandbox: SandboxNs<'_>,
    net: &Network,
    ep: &Endpoint,
    report: &mut Report,
) -> Result<bool, AgentError> {
    let alias = names::endpoint_alias(&ep.id);
    if let Some(l) = kernel::link_by_name(sandbox.handle, &ep.ifname).await? {
        return if l.alias == alias {
            Ok(false)
        } else {
            Err(AgentError::NotOurs {
                name: format!("{} (in the sandbox)", l.name),
                alias: l.alias,
            })
        };
    }
    let parent = kernel::link_by_name(host, &net.parent)
        .await?
        .ok_or_else(|| AgentError::NoParent {
            name: net.parent.clone(),
        })?;
    let msg = new_link_message(
        &ep.ifname,
        parent.index,
        pb::IpvlanMode::Unspecified,
        pb::IpvlanFlag::Unspecified,
        net.mtu,
        sandbox.file.as_raw_fd(),
    );
    // (`sandbox.file` is borrowed: it stays open until the kernel has answered.)
    host.link()
        .add(msg)
        .execute()
        .await
        .map_err(AgentError::netlink("create ipvlan", &ep.ifname))?;
    tracing::info!(ipvlan = %ep.ifname, endpoint = %ep.id, parent = %net.parent, "ipvlan created");
    report.change(
        Action::Created,
        Kind::Link,
        format!("{} (in the sandbox)", ep.ifname),
        &ep.id,
    );
    Ok(true)
}

/// Deletes the endpoint's ipvlan device in the sandbox, found by its alias (only an ipvlan:
/// every driver is asked to detach every endpoint, and another driver's interface is not this
/// one's to remove).
async fn remove(sandbox: &Handle, endpoint_id: &str, report: &mut Report) {
    let links = match kernel::links(sandbox).await {
        Ok(l) => l,
        Err(e) => {
            report.fail(Kind::Link, "links (in the sandbox)", endpoint_id, &e);
            return;
        }
    };
    let alias = names::endpoint_alias(endpoint_id);
    let ours = |l: &&kernel::Link| l.alias == alias && l.kind == Some(InfoKind::IpVlan);
    for l in links.iter().filter(ours) {
        match kernel::delete_link(sandbox, l).await {
            Ok(true) => report.change(
                Action::Removed,
                Kind::Link,
                format!("{} (in the sandbox)", l.name),
                endpoint_id,
            ),
            Ok(false) => {}
            Err(e) => report.fail(Kind::Link, &l.name, endpoint_id, &e),
        }
    }
}

/// The RTM_NEWLINK message creating ipvlan device `name` on parent `parent_index`, born in the
/// sandbox namespace `netns_fd` with the endpoint's name.
pub fn new_link_message(
    name: &str,
    parent_index: u32,
    mode: pb::IpvlanMode,
    flag: pb::IpvlanFlag,
    mtu: u32,
    netns_fd: std::os::fd::RawFd,
) -> LinkMessage {
    let mode = match mode {
        pb::IpvlanMode::L3 => IpVlanMode::L3,
        pb::IpvlanMode::L3s => IpVlanMode::L3S,
        // L2 is Docker's default.
        pb::IpvlanMode::L2 | pb::IpvlanMode::Unspecified => IpVlanMode::L2,
    };
    let flags = match flag {
        pb::IpvlanFlag::Private => IpVlanFlags::Private,
        pb::IpvlanFlag::Vepa => IpVlanFlags::Vepa,
        // Bridge (Docker's default) is the absence of the other two.
        pb::IpvlanFlag::Bridge | pb::IpvlanFlag::Unspecified => IpVlanFlags::empty(),
    };
    let mut b = LinkIpVlan::new(name, parent_index, mode).flag(flags);
    if mtu != 0 {
        b = b.mtu(mtu);
    }
    b.setns_by_fd(netns_fd).build()
}

#[cfg(test)]
mod tests {
    use rtnetlink::packet_route::link::{InfoData, InfoIpVlan, InfoKind, LinkAttribute, LinkInfo};

    use super::*;

    #[test]
    fn ipvlan_message_names_parent_mode_flags_mtu_and_target_namespace() {
        let m = new_link_message(
            "eth1",
            7,
            pb::IpvlanMode::L3,
            pb::IpvlanFlag::Private,
            1400,
            42,
        );
        let a = &m.attributes;
        assert!(a.contains(&LinkAttribute::IfName("eth1".into())), "{a:?}");
        assert!(a.contains(&LinkAttribute::Link(7)), "{a:?}");
        assert!(a.contains(&LinkAttribute::Mtu(1400)), "{a:?}");
        assert!(a.contains(&LinkAttribute::NetNsFd(42)), "{a:?}");
        let info = a
            .iter()
            .find_map(|x| match x {
                LinkAttribute::LinkInfo(i) => Some(i),
                _ => None,
            })
            .expect("IFLA_LINKINFO");
        assert!(info.contains(&LinkInfo::Kind(InfoKind::IpVlan)), "{info:?}");
        assert!(
            info.contains(&LinkInfo::Data(InfoData::IpVlan(vec![
                InfoIpVlan::Mode(IpVlanMode::L3),
                InfoIpVlan::Flags(IpVlanFlags::Private),
            ]))),
            "{info:?}"
        );
    }

    #[test]
    fn ipvlan_request_survives_the_wire_format() {
        use rtnetlink::{
            packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NetlinkMessage},
            packet_route::RouteNetlinkMessage,
        };
        let m = new_link_message(
            "eth1",
            7,
            pb::IpvlanMode::L3s,
            pb::IpvlanFlag::Vepa,
            9000,
            42,
        );
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
    }

    #[test]
    fn ipvlan_defaults_are_dockers_l2_bridge() {
        let m = new_link_message(
            "eth0",
            3,
            pb::IpvlanMode::Unspecified,
            pb::IpvlanFlag::Unspecified,
            0,
            9,
        );
        assert!(
            !m.attributes
                .iter()
                .any(|a| matches!(a, LinkAttribute::Mtu(_)))
        );
        let info = m
            .attributes
            .iter()
            .find_map(|x| match x {
                LinkAttribute::LinkInfo(i) => Some(i),
                _ => None,
            })
            .expect("IFLA_LINKINFO");
        assert!(info.contains(&LinkInfo::Data(InfoData::IpVlan(vec![
            InfoIpVlan::Mode(IpVlanMode::L2),
            InfoIpVlan::Flags(IpVlanFlags::empty()),
        ]))));
    }
}
