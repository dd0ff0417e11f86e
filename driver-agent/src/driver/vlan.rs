//! 802.1Q parents, as Docker's macvlan and ipvlan drivers make them: a network whose parent
//! is named `BASE.VID` (`eth0.50`, the rule in `weft_runtime::vlan`) when no link of that name
//! exists gets one, a VLAN sub-interface (kind vlan, id VID, on BASE, up) marked with
//! [`names::vlan_alias`]. A link of that name the agent did not mark is the admin's: used as
//! is, never deleted.
//!
//! Several networks may sit on one VLAN, so the link carries no network id; [`Users`] knows
//! which networks of this host use which VLAN the agent made, and the link goes when the last
//! of them goes from the host: at its RemoveNetwork, or when reconciliation no longer finds
//! any of them desired (an orphan). Until the agent's first reconciliation after a start has
//! told it every network of the host, a RemoveNetwork deletes nothing: an unknown network may
//! still use the link, and reconciliation removes it if not.

use std::{
    collections::BTreeMap,
    sync::{Mutex, PoisonError},
};

use nix::libc;
use rtnetlink::{Handle, LinkVlan, packet_route::link::LinkMessage};
use weft_runtime::vlan::VlanParent;

use crate::{
    error::{AgentError, errno},
    kernel::{self, Link},
    names,
    report::{Action, Kind, Report},
};

/// The RTM_NEWLINK message creating VLAN sub-interface `name` with id `vid` on the link with
/// index `base_index` (IFLA_IFNAME, IFLA_LINK, IFLA_LINKINFO { IFLA_INFO_KIND "vlan",
/// IFLA_INFO_DATA { IFLA_VLAN_ID } }). Down and unmarked: the alias and up follow in one
/// request (the kernel applies no alias at creation), so it is never up without the mark.
pub fn new_link_message(name: &str, base_index: u32, vid: u16) -> LinkMessage {
    LinkVlan::new(name, base_index, vid).build()
}

/// The RTM_DELLINK message deleting the link with index `index` (the kernel finds it by
/// `ifi_index` alone).
pub fn del_link_message(index: u32) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m
}

/// Makes sure the VLAN sub-interface `name` (`vlan`, parsed from it) is there for network
/// `owner`: one there is used (the agent's own brought up again if someone took it down);
/// a missing one is made on its base. Returns whether this call created it.
pub async fn ensure(
    host: &Handle,
    vlan: VlanParent<'_>,
    name: &str,
    owner: &str,
    report: &mut Report,
) -> Result<bool, AgentError> {
    let alias = names::vlan_alias(name);
    if let Some(link) = kernel::link_by_name(host, name).await? {
        if names::vlan_of_alias(&link.alias).is_some() && !link.up {
            kernel::set_alias_up(host, &link, &alias).await?;
            report.change(Action::Updated, Kind::Link, name, owner);
        }
        return Ok(false);
    }
    let base = kernel::link_by_name(host, vlan.base)
        .await?
        .ok_or_else(|| AgentError::NoVlanBase {
            name: name.to_owned(),
            base: vlan.base.to_owned(),
        })?;
    // Tagged frames on a network's bridge or an endpoint's veth would put the VLAN's sandboxes
    // on that segment, past its firewall rules.
    if names::is_weft_alias(&base.alias) {
        return Err(AgentError::ParentIsWefts {
            name: base.name,
            alias: base.alias,
        });
    }
    match host
        .link()
        .add(new_link_message(name, base.index, vlan.vid))
        .execute()
        .await
    {
        Ok(()) => {}
        // Someone else made it meanwhile (the agent's own requests hold the network lock):
        // theirs, used as is.
        Err(e) if errno(&e) == Some(libc::EEXIST) => return Ok(false),
        Err(e) => return Err(AgentError::netlink("create VLAN sub-interface", name)(e)),
    }
    let link = kernel::link_by_name(host, name)
        .await?
        .ok_or_else(|| AgentError::Vanished {
            name: name.to_owned(),
        })?;
    if let Err(e) = kernel::set_alias_up(host, &link, &alias).await {
        // Unmarked, it would pass for the admin's and stay for ever.
        let _ = delete(host, &link).await;
        return Err(e);
    }
    tracing::info!(vlan = %name, id = vlan.vid, base = %base.name, network = %owner, "VLAN sub-interface created");
    report.change(Action::Created, Kind::Link, name, owner);
    Ok(true)
}

/// Deletes the VLAN sub-interface `name` if it is there and the agent's (the admin's is never
/// touched). `owner` is the network the report names.
pub async fn remove(host: &Handle, name: &str, owner: &str, report: &mut Report) {
    match kernel::link_by_name(host, name).await {
        Ok(Some(link)) if names::vlan_of_alias(&link.alias).is_some() => {
            remove_link(host, &link, owner, report).await;
        }
        Ok(_) => {}
        Err(e) => report.fail(Kind::Link, name, owner, &e),
    }
}

/// Deletes `link`, one of the agent's VLAN sub-interfaces, reporting it.
pub async fn remove_link(host: &Handle, link: &Link, owner: &str, report: &mut Report) {
    match delete(host, link).await {
        Ok(true) => {
            tracing::info!(vlan = %link.name, network = %owner, "VLAN sub-interface removed");
            report.change(Action::Removed, Kind::Link, &link.name, owner);
        }
        Ok(false) => {}
        Err(e) => report.fail(Kind::Link, &link.name, owner, &e),
    }
}

/// Sends [`del_link_message`]; a link already gone is fine. Returns whether it existed.
async fn delete(host: &Handle, link: &Link) -> Result<bool, AgentError> {
    let req =
        rtnetlink::LinkDelRequest::new_with_message(host.clone(), del_link_message(link.index));
    match req.execute().await {
        Ok(()) => Ok(true),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(false),
        Err(e) => Err(AgentError::netlink("delete VLAN sub-interface", &link.name)(e)),
    }
}

/// Which networks of this host sit on which VLAN sub-interface the agent may have made.
#[derive(Debug, Default)]
pub struct Users {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// VLAN link name by network id.
    by_network: BTreeMap<String, String>,
    /// A reconciliation has told every network of the host since the agent started.
    synced: bool,
}

impl Users {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Network `network_id` sits on VLAN `name`.
    pub fn add(&self, network_id: &str, name: &str) {
        self.lock()
            .by_network
            .insert(network_id.to_owned(), name.to_owned());
    }

    /// Network `network_id` went from the host: the VLAN it sat on, when no other network
    /// uses it and every network of the host is known (the VLAN may go then).
    pub fn release(&self, network_id: &str) -> Option<String> {
        let mut inner = self.lock();
        let name = inner.by_network.remove(network_id)?;
        let used = inner.by_network.values().any(|n| *n == name);
        (inner.synced && !used).then_some(name)
    }

    /// The request of network `network_id` that made its VLAN failed: the VLAN may go unless
    /// another network came onto it since (none was on it before it was made, known or not).
    pub fn undo(&self, network_id: &str) -> Option<String> {
        let mut inner = self.lock();
        let name = inner.by_network.remove(network_id)?;
        (!inner.by_network.values().any(|n| *n == name)).then_some(name)
    }

    /// Whether some network uses VLAN `name`.
    pub fn in_use(&self, name: &str) -> bool {
        self.lock().by_network.values().any(|n| n == name)
    }

    /// Reconciliation's view: the desired networks on VLANs (`desired`, id and VLAN) and the
    /// ones already known that `keep` says to keep (made by the API lately); nothing else.
    pub fn sync<'a>(
        &self,
        desired: impl IntoIterator<Item = (&'a str, &'a str)>,
        keep: impl Fn(&str) -> bool,
    ) {
        let mut inner = self.lock();
        inner.by_network.retain(|id, _| keep(id));
        for (id, name) in desired {
            inner.by_network.insert(id.to_owned(), name.to_owned());
        }
        inner.synced = true;
    }
}

/// The agent's VLAN sub-interfaces among `links` that no network uses: orphans. A VLAN link
/// without the agent's mark is the admin's and never one.
pub fn orphans<'a>(links: impl IntoIterator<Item = &'a Link>, users: &Users) -> Vec<&'a Link> {
    links
        .into_iter()
        .filter(|l| names::vlan_of_alias(&l.alias).is_some() && !users.in_use(&l.name))
        .collect()
}

#[cfg(test)]
mod tests {
    use rtnetlink::{
        packet_core::{
            NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload,
        },
        packet_route::{
            RouteNetlinkMessage,
            link::{InfoData, InfoKind, InfoVlan, LinkAttribute, LinkInfo},
        },
    };

    use super::*;

    /// `msg` serialised as a request with `flags`, as rtnetlink sends it, and parsed back.
    fn wire(msg: RouteNetlinkMessage, flags: u16) -> Vec<u8> {
        let mut req = NetlinkMessage::from(msg.clone());
        req.header.flags = flags;
        req.finalize();
        let mut bytes = vec![0u8; req.buffer_len()];
        req.serialize(&mut bytes);
        let back = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes).unwrap();
        assert_eq!(back.payload, NetlinkPayload::InnerMessage(msg));
        bytes
    }

    fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let len = u16::try_from(4 + value.len()).unwrap();
        let mut a = [&len.to_ne_bytes()[..], &kind.to_ne_bytes(), value].concat();
        a.resize(a.len().next_multiple_of(4), 0);
        a
    }

    #[test]
    fn vlan_message_names_the_link_its_base_and_the_vlan_id_as_the_kernel_reads_them() {
        let m = new_link_message("eth0.50", 7, 50);
        let a = &m.attributes;
        assert!(
            a.contains(&LinkAttribute::IfName("eth0.50".into())),
            "{a:?}"
        );
        assert!(a.contains(&LinkAttribute::Link(7)), "{a:?}");
        assert!(
            a.contains(&LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Vlan),
                LinkInfo::Data(InfoData::Vlan(vec![InfoVlan::Id(50)])),
            ])),
            "{a:?}"
        );
        let bytes = wire(
            RouteNetlinkMessage::NewLink(m),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        );
        // linux/netlink.h, linux/rtnetlink.h and linux/if_link.h, native byte order: the
        // header's type RTM_NEWLINK (16) and flags (0x605); IFLA_IFNAME (3) "eth0.50\0";
        // IFLA_LINK (5) 7; IFLA_LINKINFO (18) holding IFLA_INFO_KIND (1) "vlan\0" then
        // IFLA_INFO_DATA (2) holding IFLA_VLAN_ID (1) as a u16, padded.
        assert_eq!(&bytes[4..6], &16u16.to_ne_bytes());
        assert_eq!(&bytes[6..8], &0x605u16.to_ne_bytes());
        let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
        assert!(has(&attr(3, b"eth0.50\0")), "IFLA_IFNAME");
        assert!(has(&attr(5, &7u32.to_ne_bytes())), "IFLA_LINK");
        let data = attr(2, &attr(1, &50u16.to_ne_bytes()));
        let info = attr(18, &[attr(1, b"vlan\0"), data].concat());
        assert!(
            has(&info),
            "IFLA_LINKINFO {{ kind vlan, data {{ id 50 }} }}: {bytes:?}"
        );
    }

    #[test]
    fn deletion_names_the_link_by_index_alone() {
        let m = del_link_message(42);
        assert!(m.attributes.is_empty());
        let bytes = wire(RouteNetlinkMessage::DelLink(m), NLM_F_REQUEST | NLM_F_ACK);
        // nlmsghdr (16 bytes) with RTM_DELLINK (17), then ifinfomsg: family 0, pad, type 0,
        // ifi_index 42, flags 0, change 0; nothing more.
        assert_eq!(bytes.len(), 32);
        assert_eq!(&bytes[4..6], &17u16.to_ne_bytes());
        assert_eq!(&bytes[16..20], &[0, 0, 0, 0]);
        assert_eq!(&bytes[20..24], &42i32.to_ne_bytes());
        assert_eq!(&bytes[24..32], &[0; 8]);
    }

    fn link(name: &str, alias: &str) -> Link {
        Link {
            name: name.into(),
            alias: alias.into(),
            ..Link::default()
        }
    }

    #[test]
    fn the_vlan_goes_with_its_last_network_and_only_once_every_network_is_known() {
        let u = Users::default();
        u.add("a", "eth0.50");
        u.add("b", "eth0.50");
        // Before a reconciliation told every network: another may use it.
        assert_eq!(u.release("a"), None);
        u.sync(
            [("a", "eth0.50"), ("b", "eth0.50"), ("c", "eth0.60")],
            |_| false,
        );
        assert_eq!(u.release("a"), None, "b still uses it");
        assert_eq!(u.release("b"), Some("eth0.50".into()));
        assert_eq!(u.release("b"), None, "released once");
        // A request that made its VLAN and failed undoes it whether or not all is known, unless
        // another network came onto it meanwhile.
        let fresh = Users::default();
        fresh.add("x", "eth0.90");
        assert_eq!(fresh.undo("x"), Some("eth0.90".into()));
        fresh.add("x", "eth0.90");
        fresh.add("y", "eth0.90");
        assert_eq!(fresh.undo("x"), None);
        assert!(u.in_use("eth0.60"));
        // A sync forgets what is neither desired nor kept (made by the API lately).
        u.add("api", "eth0.70");
        u.add("old", "eth0.80");
        u.sync([("c", "eth0.60")], |id| id == "api");
        assert!(u.in_use("eth0.70") && u.in_use("eth0.60") && !u.in_use("eth0.80"));
    }

    #[test]
    fn orphans_are_the_agents_vlans_no_network_uses_never_the_admins() {
        let u = Users::default();
        u.sync([("a", "eth0.50")], |_| false);
        let links = [
            link("eth0.50", &names::vlan_alias("eth0.50")),
            link("eth0.60", &names::vlan_alias("eth0.60")),
            link("eth0.70", ""),
            link("eth0.80", "uplink to the lab"),
            link("wft-x", &names::network_alias("x")),
        ];
        let found: Vec<&str> = orphans(&links, &u)
            .iter()
            .map(|l| l.name.as_str())
            .collect();
        assert_eq!(found, ["eth0.60"]);
    }
}
