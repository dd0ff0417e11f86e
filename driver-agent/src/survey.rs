//! The host's links as reconciliation's survey needs them, fast: one `RTM_GETLINK` dump
//! without statistics on a netlink socket of its own, of which only each link's index, name,
//! alias, controller and up flag are read. (The general netlink client decodes every
//! attribute of every link; with thousands of veths on the host that is most of a pass with
//! nothing to change.)
//!
//! The encoding follows the kernel's uapi (`linux/rtnetlink.h`, `linux/if_link.h`): a
//! `nlmsghdr`, an `ifinfomsg`, and `IFLA_EXT_MASK` asking to skip the statistics.
//!
//! A second socket listens to the namespace's link notifications (`RTNLGRP_LINK`: every link
//! added, removed or changed, by anyone): after one dump, the table is kept by asking again for
//! each link a notification names (one request by index; notifications themselves may leave
//! out attributes, the alias among them), so a survey costs what changed since the last one,
//! not a dump of every link (which at thousands of links is mostly the kernel's own work of
//! describing each). Notifications lost to a full buffer mean a new dump.

use std::{collections::BTreeMap, io, sync::Arc};

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use crate::kernel::Link;

const NLMSG_HDRLEN: usize = 16;
const IFINFOMSG_LEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const IFLA_IFNAME: u16 = 3;
const IFLA_MASTER: u16 = 10;
const IFLA_IFALIAS: u16 = 20;
const IFLA_EXT_MASK: u16 = 29;
const NLA_TYPE_MASK: u16 = 0x3fff;
const RTEXT_FILTER_SKIP_STATS: u32 = 1 << 3;
const IFF_UP: u32 = 0x1;
/// `ifinfomsg.ifi_family` of the generic link messages.
const AF_UNSPEC: u8 = 0;
/// The most links asked for again one by one after notifications; more, and the next survey
/// dumps instead.
pub const REASK_MAX: usize = 256;

/// The receive buffers: a dump's datagrams are read one by one, each at most a page or two;
/// notifications wait between surveys (a few seconds of attaches).
const RECV_BUFFER: usize = 4 << 20;
const EVENTS_BUFFER: usize = 16 << 20;
/// `RTMGRP_LINK`: the link notifications' multicast group, as a bind mask.
const RTMGRP_LINK: u32 = 1;

/// A route netlink socket bound to the namespace it was opened in (open it on a thread inside
/// that namespace; use it from any thread afterwards).
#[derive(Debug)]
pub struct LinkSocket {
    socket: Socket,
    /// Subscribed to the link notifications; read without blocking.
    events: Socket,
    seq: u32,
    /// The links by index, as the last dump and the notifications since say; `None`: a dump
    /// is needed.
    table: Option<BTreeMap<u32, Link>>,
    /// The last answer, while nothing changed since.
    last: Option<Arc<Vec<Link>>>,
    dumps: u64,
}

impl LinkSocket {
    pub fn open() -> io::Result<Self> {
        // The listener first: a change during the first dump is then seen by the next survey.
        let mut events = Socket::new(NETLINK_ROUTE)?;
        events.bind(&SocketAddr::new(0, RTMGRP_LINK))?;
        events.set_non_blocking(true)?;
        events.set_rx_buf_sz(EVENTS_BUFFER)?;
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        socket.set_rx_buf_sz(RECV_BUFFER)?;
        Ok(Self {
            socket,
            events,
            seq: std::process::id().wrapping_mul(7907),
            table: None,
            last: None,
            dumps: 0,
        })
    }

    /// How many times the kernel was asked (the rest were answered from the last dump).
    pub fn dumps(&self) -> u64 {
        self.dumps
    }

    /// Every link of the namespace: the table kept from the notifications since the last
    /// dump, or a new dump when some were lost (blocking: a dump of thousands of links takes
    /// a few hundred milliseconds of the kernel's time).
    pub fn links(&mut self) -> io::Result<Arc<Vec<Link>>> {
        let changed = self.apply_events();
        if let (Some(last), false) = (&self.last, changed) {
            return Ok(last.clone());
        }
        self.last = None;
        if self.table.is_none() {
            // Notifications from before the dump are in it already.
            while self.apply_events() {}
            let links = self.dump()?;
            self.dumps += 1;
            self.table = Some(links.into_iter().map(|l| (l.index, l)).collect());
        }
        let links: Arc<Vec<Link>> = Arc::new(
            self.table
                .iter()
                .flat_map(|t| t.values().cloned())
                .collect(),
        );
        self.last = Some(links.clone());
        Ok(links)
    }

    /// Brings the table up to date with every pending notification, the last one of each link
    /// deciding: a link removed goes; a link described with its alias is taken as described;
    /// any other link is asked for again (a link gets no notification when its alias is set
    /// while it is down: the one of its creation, without the alias, may be its last). Only the
    /// generic link messages count (`AF_UNSPEC`): a bridge's `AF_BRIDGE` ones describe its
    /// ports' bridging, and its `RTM_DELLINK` there is a port leaving, not a link going.
    /// Whether anything came (a loss, or a notification or answer that cannot be read, drops
    /// the table: the next survey dumps).
    fn apply_events(&mut self) -> bool {
        let mut any = false;
        let mut latest: BTreeMap<u32, Option<Link>> = BTreeMap::new();
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match self.events.recv(&mut &mut buf[..], 0) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // ENOBUFS: notifications were dropped; anything else: trust nothing kept.
                Err(_) => {
                    self.table = None;
                    return true;
                }
            };
            any = true;
            match messages(&buf[..n.min(buf.len())]) {
                Ok(msgs) => {
                    for (kind, _, payload) in msgs {
                        if payload.first().is_some_and(|family| *family != AF_UNSPEC) {
                            continue;
                        }
                        match (kind, link(payload)) {
                            (RTM_NEWLINK, Ok(l)) => {
                                latest.insert(l.index, Some(l));
                            }
                            (RTM_DELLINK, Ok(l)) => {
                                latest.insert(l.index, None);
                            }
                            (RTM_NEWLINK | RTM_DELLINK, Err(_)) => self.table = None,
                            _ => {}
                        }
                    }
                }
                Err(_) => self.table = None,
            }
        }
        if let Some(t) = self.table.as_mut() {
            latest.retain(|index, l| match l.take() {
                None => {
                    t.remove(index);
                    false
                }
                Some(l) if !l.alias.is_empty() => {
                    t.insert(*index, l);
                    false
                }
                // Asked for again, below.
                Some(_) => true,
            });
        }
        // Past this many, one dump is cheaper than asking link by link (at 5,000 new veths, a
        // dump took 0.25 s where asking for each took 1.2 s).
        if latest.len() > REASK_MAX {
            self.table = None;
        }
        if self.table.is_some() {
            for index in latest.into_keys() {
                match self.get(index) {
                    Ok(found) => {
                        if let Some(t) = self.table.as_mut() {
                            match found {
                                Some(l) => t.insert(index, l),
                                None => t.remove(&index),
                            };
                        }
                    }
                    Err(_) => {
                        self.table = None;
                        break;
                    }
                }
            }
        }
        any
    }

    /// The link with `index` now (`None`: there is none).
    fn get(&mut self, index: u32) -> io::Result<Option<Link>> {
        Ok(self.ask(Some(index))?.into_iter().next())
    }

    fn dump(&mut self) -> io::Result<Vec<Link>> {
        self.ask(None)
    }

    /// Every link (`index` `None`: a dump), or the one with `index` (none when it is gone).
    fn ask(&mut self, index: Option<u32>) -> io::Result<Vec<Link>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        self.socket.send(&request(seq, index), 0)?;
        let mut out = Vec::new();
        loop {
            let (buf, _) = self.socket.recv_from_full()?;
            for (kind, msg_seq, payload) in messages(&buf)? {
                if msg_seq != seq {
                    continue;
                }
                match kind {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => {
                        let code = error_code(payload)?;
                        if index.is_some() && -code == nix::libc::ENODEV {
                            return Ok(out);
                        }
                        return Err(io::Error::from_raw_os_error(-code));
                    }
                    RTM_NEWLINK => {
                        out.push(link(payload)?);
                        if index.is_some() {
                            return Ok(out);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Brings loopback up in the namespace of the calling thread, one that was just made (its
/// `lo` is the first link, index 1), with one synchronous request on a route netlink socket
/// of its own: for a thread that must have the loopback addresses local before it binds.
pub(crate) fn loopback_up_here() -> io::Result<()> {
    const RTM_SETLINK: u16 = 19;
    const NLM_F_ACK: u16 = 0x4;
    const LOOPBACK_INDEX: u32 = 1;
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let len = NLMSG_HDRLEN + IFINFOMSG_LEN;
    let mut b = Vec::with_capacity(len);
    b.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_ne_bytes());
    b.extend_from_slice(&RTM_SETLINK.to_ne_bytes());
    b.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    b.extend_from_slice(&1u32.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    // ifinfomsg: AF_UNSPEC, the index, IFF_UP in the flags and in the change mask.
    b.extend_from_slice(&[0; 4]);
    b.extend_from_slice(&LOOPBACK_INDEX.to_ne_bytes());
    b.extend_from_slice(&IFF_UP.to_ne_bytes());
    b.extend_from_slice(&IFF_UP.to_ne_bytes());
    socket.send(&b, 0)?;
    acked(&socket, 1)
}

/// The kernel's answer to request `seq` (sent with `NLM_F_ACK`) on `socket`, a netlink socket
/// of any protocol: done, or the errno it refused with.
pub(crate) fn acked(socket: &Socket, seq: u32) -> io::Result<()> {
    loop {
        let (buf, _) = socket.recv_from_full()?;
        for (kind, s, payload) in messages(&buf)? {
            if kind == NLMSG_ERROR && s == seq {
                return match error_code(payload)? {
                    0 => Ok(()),
                    code => Err(io::Error::from_raw_os_error(-code)),
                };
            }
        }
    }
}

/// The request: every link (a dump), or the one with `index`; no statistics.
fn request(seq: u32, index: Option<u32>) -> Vec<u8> {
    let len = NLMSG_HDRLEN + IFINFOMSG_LEN + 8;
    let mut b = Vec::with_capacity(len);
    let flags = match index {
        None => NLM_F_REQUEST | NLM_F_DUMP,
        Some(_) => NLM_F_REQUEST,
    };
    b.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_ne_bytes());
    b.extend_from_slice(&RTM_GETLINK.to_ne_bytes());
    b.extend_from_slice(&flags.to_ne_bytes());
    b.extend_from_slice(&seq.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    // ifinfomsg: AF_UNSPEC, every type, the index (0: any), flags.
    b.extend_from_slice(&[0; 4]);
    b.extend_from_slice(&index.unwrap_or(0).to_ne_bytes());
    b.extend_from_slice(&[0; 8]);
    b.extend_from_slice(&8u16.to_ne_bytes());
    b.extend_from_slice(&IFLA_EXT_MASK.to_ne_bytes());
    b.extend_from_slice(&RTEXT_FILTER_SKIP_STATS.to_ne_bytes());
    b
}

/// The (negative) errno of an `NLMSG_ERROR`.
fn error_code(payload: &[u8]) -> io::Result<i32> {
    payload
        .get(..4)
        .map(|c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
        .ok_or_else(|| malformed("a short error"))
}

fn malformed(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("netlink: {what}"))
}

/// The messages in one datagram: (type, sequence number, payload after the header).
fn messages(mut b: &[u8]) -> io::Result<Vec<(u16, u32, &[u8])>> {
    let mut out = Vec::new();
    while b.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
        if len < NLMSG_HDRLEN || len > b.len() {
            return Err(malformed("a message length past the datagram"));
        }
        let kind = u16::from_ne_bytes([b[4], b[5]]);
        let seq = u32::from_ne_bytes([b[8], b[9], b[10], b[11]]);
        out.push((kind, seq, &b[NLMSG_HDRLEN..len]));
        b = &b[align4(len).min(b.len())..];
    }
    Ok(out)
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// One `RTM_NEWLINK`: what the survey reads of it.
fn link(payload: &[u8]) -> io::Result<Link> {
    let head = payload
        .get(..IFINFOMSG_LEN)
        .ok_or_else(|| malformed("a short ifinfomsg"))?;
    let index = u32::from_ne_bytes([head[4], head[5], head[6], head[7]]);
    let flags = u32::from_ne_bytes([head[8], head[9], head[10], head[11]]);
    let mut l = Link {
        index,
        up: flags & IFF_UP != 0,
        ..Link::default()
    };
    let mut b = &payload[IFINFOMSG_LEN..];
    while b.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([b[0], b[1]]));
        let kind = u16::from_ne_bytes([b[2], b[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > b.len() {
            return Err(malformed("an attribute length past the message"));
        }
        let value = &b[4..len];
        match kind {
            IFLA_IFNAME => l.name = text(value),
            IFLA_IFALIAS => l.alias = text(value),
            IFLA_MASTER => {
                if let Ok(v) = <[u8; 4]>::try_from(value) {
                    l.controller = Some(u32::from_ne_bytes(v));
                }
            }
            _ => {}
        }
        b = &b[align4(len).min(b.len())..];
    }
    Ok(l)
}

/// A NUL-terminated string attribute.
fn text(value: &[u8]) -> String {
    let end = value.iter().position(|&c| c == 0).unwrap_or(value.len());
    String::from_utf8_lossy(&value[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&u16::try_from(4 + value.len()).unwrap().to_ne_bytes());
        b.extend_from_slice(&kind.to_ne_bytes());
        b.extend_from_slice(value);
        b.resize(align4(b.len()), 0);
        b
    }

    #[test]
    fn a_link_message_gives_index_name_alias_controller_and_up() {
        let mut p = vec![0u8; IFINFOMSG_LEN];
        p[4..8].copy_from_slice(&7u32.to_ne_bytes());
        p[8..12].copy_from_slice(&(IFF_UP | 0x1000).to_ne_bytes());
        p.extend(attr(IFLA_IFNAME, b"wv0123\0"));
        p.extend(attr(IFLA_MASTER, &3u32.to_ne_bytes()));
        p.extend(attr(IFLA_IFALIAS, b"weft:endpoint:e1\0"));
        p.extend(attr(1, &[1, 2, 3, 4, 5, 6]));
        let l = link(&p).unwrap();
        assert_eq!((l.index, l.up, l.controller), (7, true, Some(3)));
        assert_eq!(
            (l.name.as_str(), l.alias.as_str()),
            ("wv0123", "weft:endpoint:e1")
        );
    }

    #[test]
    fn hostile_lengths_are_errors_not_panics() {
        assert!(link(&[0; 3]).is_err());
        let mut p = vec![0u8; IFINFOMSG_LEN];
        p.extend_from_slice(&200u16.to_ne_bytes());
        p.extend_from_slice(&IFLA_IFNAME.to_ne_bytes());
        assert!(link(&p).is_err());
        let mut p = vec![0u8; IFINFOMSG_LEN];
        p.extend_from_slice(&2u16.to_ne_bytes());
        p.extend_from_slice(&IFLA_IFNAME.to_ne_bytes());
        assert!(link(&p).is_err());
        assert!(messages(&[0xff; 20]).is_err());
        assert!(messages(&[0x05, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn the_request_asks_for_a_dump_without_statistics() {
        let r = request(9, None);
        assert_eq!(r.len(), NLMSG_HDRLEN + IFINFOMSG_LEN + 8);
        assert_eq!(u16::from_ne_bytes([r[4], r[5]]), RTM_GETLINK);
        assert_eq!(u16::from_ne_bytes([r[6], r[7]]), NLM_F_REQUEST | NLM_F_DUMP);
        assert_eq!(u32::from_ne_bytes([r[8], r[9], r[10], r[11]]), 9);
        assert_eq!(&r[r.len() - 4..], &RTEXT_FILTER_SKIP_STATS.to_ne_bytes());
    }
}
