//! Small rtnetlink building blocks shared by the drivers: look links up, and make links,
//! addresses and routes what they should be, treating "already so" as success.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt as _;
use ipnet::IpNet;
use nix::libc;
use rtnetlink::{
    Handle, LinkUnspec, RouteMessageBuilder,
    packet_route::{
        AddressFamily,
        address::{AddressAttribute, AddressFlags, AddressScope},
        link::{
            AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoKind, LinkAttribute, LinkFlags,
            LinkInfo, LinkMessage,
        },
        route::{RouteAttribute, RouteHeader, RouteMessage},
    },
};

use crate::error::{AgentError, errno};

/// The parts of a link the agent looks at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub alias: String,
    pub kind: Option<InfoKind>,
    pub controller: Option<u32>,
    pub mtu: u32,
    pub up: bool,
    pub mac: Vec<u8>,
}

impl From<LinkMessage> for Link {
    fn from(m: LinkMessage) -> Self {
        let mut l = Link {
            index: m.header.index,
            up: m.header.flags.contains(LinkFlags::Up),
            ..Link::default()
        };
        for a in m.attributes {
            match a {
                LinkAttribute::IfName(n) => l.name = n,
                LinkAttribute::IfAlias(s) => l.alias = s,
                LinkAttribute::Controller(c) => l.controller = Some(c),
                LinkAttribute::Mtu(v) => l.mtu = v,
                LinkAttribute::Address(mac) => l.mac = mac,
                LinkAttribute::LinkInfo(infos) => {
                    for i in infos {
                        if let LinkInfo::Kind(k) = i {
                            l.kind = Some(k);
                        }
                    }
                }
                _ => {}
            }
        }
        l
    }
}

/// The link called `name`, if any.
pub async fn link_by_name(handle: &Handle, name: &str) -> Result<Option<Link>, AgentError> {
    let mut s = handle.link().get().match_name(name).execute();
    match s.try_next().await {
        Ok(m) => Ok(m.map(Link::from)),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(AgentError::netlink("look up link", name)(e)),
    }
}

/// How many times a dump the kernel refuses with EBUSY is sent again (5 ms apart).
const DUMP_TRIES: u32 = 40;

/// Collects a netlink dump, sending it again when the kernel answers EBUSY: a netlink socket
/// runs one dump at a time, and the agent's tasks share one socket per namespace (its handle),
/// so a dump that meets another one in flight is refused, and is retried here.
pub async fn dump<T, S>(mut start: impl FnMut() -> S) -> Result<Vec<T>, rtnetlink::Error>
where
    S: futures::Stream<Item = Result<T, rtnetlink::Error>>,
{
    let mut tries = 0;
    loop {
        match start().try_collect::<Vec<T>>().await {
            Err(e) if crate::error::errno(&e) == Some(libc::EBUSY) && tries < DUMP_TRIES => {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            r => return r,
        }
    }
}

/// Every link of the namespace.
pub async fn links(handle: &Handle) -> Result<Vec<Link>, AgentError> {
    Ok(
        crate::metrics::timed("link_dump", dump(|| handle.link().get().execute()))
            .await
            .map_err(AgentError::netlink("list", "links"))?
            .into_iter()
            .map(Link::from)
            .collect(),
    )
}

/// Sets the alias and brings the link up.
pub async fn set_alias_up(handle: &Handle, link: &Link, alias: &str) -> Result<(), AgentError> {
    handle
        .link()
        .set(
            LinkUnspec::new_with_index(link.index)
                .alias(alias)
                .up()
                .build(),
        )
        .execute()
        .await
        .map_err(AgentError::netlink("configure link", &link.name))
}

/// A bridge port just made (named `name`): its alias set and no IPv6 address generated for it
/// (`addrgenmode none`: a port needs none, and without a link-local address it sends nothing
/// into the bridge, no duplicate address detection, MLD report or router solicitation, which
/// the bridge would flood to every other port), then up. Two requests: the kernel applies a
/// request's flags before its per-family settings, so one that also brought the port up would
/// make the address first.
pub async fn set_port_alias_up(handle: &Handle, name: &str, alias: &str) -> Result<(), AgentError> {
    let quiet = |v6: bool| {
        let mut m = LinkUnspec::new_with_name(name).alias(alias).build();
        if v6 {
            m.attributes
                .push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(
                    vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)],
                )]));
        }
        m
    };
    match handle.link().set(quiet(true)).execute().await {
        Ok(()) => {}
        // A kernel without IPv6 refuses the family's settings: the alias alone.
        Err(e) if errno(&e) == Some(libc::EAFNOSUPPORT) => handle
            .link()
            .set(quiet(false))
            .execute()
            .await
            .map_err(AgentError::netlink("configure link", name))?,
        Err(e) => return Err(AgentError::netlink("configure link", name)(e)),
    }
    handle
        .link()
        .set(LinkUnspec::new_with_name(name).up().build())
        .execute()
        .await
        .map_err(AgentError::netlink("bring up", name))
}

pub async fn set_up(handle: &Handle, index: u32, name: &str) -> Result<(), AgentError> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(AgentError::netlink("bring up", name))
}

pub async fn set_mtu(handle: &Handle, link: &Link, mtu: u32) -> Result<(), AgentError> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(link.index).mtu(mtu).build())
        .execute()
        .await
        .map_err(AgentError::netlink("set MTU of", &link.name))
}

/// Takes the link out of its bridge (or other controller) and down. A link already gone is
/// fine: a veth goes with its peer's namespace, which can happen between the look and this.
pub async fn set_nocontroller_down(handle: &Handle, link: &Link) -> Result<(), AgentError> {
    match handle
        .link()
        .set(
            LinkUnspec::new_with_index(link.index)
                .nocontroller()
                .down()
                .build(),
        )
        .execute()
        .await
    {
        Err(e) if errno(&e) != Some(libc::ENODEV) => {
            Err(AgentError::netlink("take down", &link.name)(e))
        }
        _ => Ok(()),
    }
}

/// Deletes a link; a link already gone is fine. Returns whether it existed.
pub async fn delete_link(handle: &Handle, link: &Link) -> Result<bool, AgentError> {
    match crate::metrics::timed("link_delete", handle.link().del(link.index).execute()).await {
        Ok(()) => Ok(true),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(false),
        Err(e) => Err(AgentError::netlink("delete link", &link.name)(e)),
    }
}

/// Adds `addr` to the link; an address already there is fine. Returns whether it was added.
pub async fn add_address(
    handle: &Handle,
    index: u32,
    ifname: &str,
    addr: IpNet,
) -> Result<bool, AgentError> {
    let mut req = handle.address().add(index, addr.addr(), addr.prefix_len());
    if addr.addr().is_ipv6() {
        // IPAM already guarantees uniqueness; duplicate address detection would only keep the
        // address unusable ("tentative") for a second or two after attach, as Docker avoids too.
        req.message_mut()
            .attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    match crate::metrics::timed("address_add", req.execute()).await {
        Ok(()) => Ok(true),
        Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(false),
        Err(e) => Err(AgentError::netlink(
            "add address to",
            format!("{ifname} {addr}"),
        )(e)),
    }
}

fn default_route(family: AddressFamily) -> RouteMessageBuilder<IpAddr> {
    let mut b = RouteMessageBuilder::<IpAddr>::new();
    b.get_mut().header.address_family = family;
    b
}

/// Installs (or replaces) the default route of `gateway`'s family via `gateway` on `index`.
pub async fn replace_default_route(
    handle: &Handle,
    index: u32,
    gateway: IpAddr,
) -> Result<(), AgentError> {
    let msg = match gateway {
        IpAddr::V4(gw) => RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(gw)
            .output_interface(index)
            .build(),
        IpAddr::V6(gw) => RouteMessageBuilder::<Ipv6Addr>::new()
            .gateway(gw)
            .output_interface(index)
            .build(),
    };
    crate::metrics::timed("route_replace", handle.route().add(msg).replace().execute())
        .await
        .map_err(AgentError::netlink(
            "install default route via",
            gateway.to_string(),
        ))
}

/// The interface index the default route of `family` goes through, if any (main table).
pub async fn default_route_oif(
    handle: &Handle,
    family: AddressFamily,
) -> Result<Option<u32>, AgentError> {
    let routes: Vec<RouteMessage> =
        dump(|| handle.route().get(default_route(family).build()).execute())
            .await
            .map_err(AgentError::netlink("list", "routes"))?;
    Ok(routes
        .into_iter()
        .filter(|r| {
            r.header.address_family == family
                && r.header.destination_prefix_length == 0
                && r.header.table == RouteHeader::RT_TABLE_MAIN
        })
        .find_map(|r| {
            r.attributes.iter().find_map(|a| match a {
                RouteAttribute::Oif(i) => Some(*i),
                _ => None,
            })
        }))
}

/// Removes the default route of `family` through `index`, if there is one. Returns whether
/// one was removed.
pub async fn remove_default_route_via(
    handle: &Handle,
    family: AddressFamily,
    index: u32,
) -> Result<bool, AgentError> {
    let msg = default_route(family).output_interface(index).build();
    match handle.route().del(msg).execute().await {
        Ok(()) => Ok(true),
        Err(e) if errno(&e) == Some(libc::ESRCH) => Ok(false),
        Err(e) => Err(AgentError::netlink(
            "remove default route from",
            index.to_string(),
        )(e)),
    }
}

/// The link with index `index`, if any.
pub async fn link_by_index(handle: &Handle, index: u32) -> Result<Option<Link>, AgentError> {
    let mut s = handle.link().get().match_index(index).execute();
    match s.try_next().await {
        Ok(m) => Ok(m.map(Link::from)),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(AgentError::netlink("look up link", index.to_string())(e)),
    }
}

/// Global-scope addresses of the namespace with the index of the link they sit on.
pub async fn global_addresses(handle: &Handle) -> Result<Vec<(u32, IpAddr)>, AgentError> {
    let msgs: Vec<_> = dump(|| handle.address().get().execute())
        .await
        .map_err(AgentError::netlink("list", "addresses"))?;
    Ok(msgs
        .into_iter()
        .filter(|m| m.header.scope == AddressScope::Universe)
        .filter_map(|m| {
            let index = m.header.index;
            m.attributes.into_iter().find_map(|a| match a {
                AddressAttribute::Address(ip) => Some((index, ip)),
                _ => None,
            })
        })
        .collect())
}

/// The first of the namespace's own (underlay) addresses of one family (`v6`), in the order
/// [`global_addresses`] gives them, with the link it is on: addresses on Weft's links (a
/// bridge's gateway) do not count. The order is the one `GetCapabilities` reports, whose first
/// address of a family the gateway takes as this host's VXLAN tunnel endpoint.
pub async fn first_underlay_address(
    handle: &Handle,
    v6: bool,
) -> Result<Option<(IpAddr, Link)>, AgentError> {
    for (index, ip) in global_addresses(handle).await? {
        if ip.is_ipv6() != v6 {
            continue;
        }
        if let Some(link) = link_by_index(handle, index).await?
            && !crate::names::is_weft_alias(&link.alias)
        {
            return Ok(Some((ip, link)));
        }
    }
    Ok(None)
}

/// Removes the global-scope addresses of link `index` that are not in `keep` (link-local
/// addresses the kernel made are left alone). Returns the removed ones.
pub async fn remove_other_addresses(
    handle: &Handle,
    index: u32,
    ifname: &str,
    keep: &[IpNet],
) -> Result<Vec<IpNet>, AgentError> {
    let msgs: Vec<_> = dump(|| {
        handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
    })
    .await
    .map_err(AgentError::netlink("list addresses of", ifname))?;
    let mut removed = Vec::new();
    for m in msgs {
        if m.header.scope != AddressScope::Universe {
            continue;
        }
        let Some(ip) = m.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        }) else {
            continue;
        };
        let Ok(net) = IpNet::new(ip, m.header.prefix_len) else {
            continue;
        };
        if keep.contains(&net) {
            continue;
        }
        match handle.address().del(m).execute().await {
            Ok(()) => removed.push(net),
            Err(e) if errno(&e) == Some(libc::EADDRNOTAVAIL) => {}
            Err(e) => {
                return Err(AgentError::netlink(
                    "remove address from",
                    format!("{ifname} {net}"),
                )(e));
            }
        }
    }
    Ok(removed)
}
