//! nf_tables over netlink, in-process: what the attach path needs, and no more. Set and map
//! elements added and removed in one batch (one atomic transaction: all of it or none of it), and
//! a dump of one set's elements for reconciliation to compare with. The ruleset's skeleton (table,
//! chains, rules, set declarations) is written rarely, whole, by other means; everything that
//! changes per endpoint or network is an element, so that an attach costs one `sendmsg` and no
//! process.
//!
//! The encoding follows the kernel's uapi (`linux/netfilter/nf_tables.h`, `nfnetlink.h`): a batch
//! is `NFNL_MSG_BATCH_BEGIN`, then `NFT_MSG_NEWSETELEM` / `NFT_MSG_DELSETELEM` messages, then
//! `NFNL_MSG_BATCH_END`; the kernel applies it whole or rejects it whole, and answers each message
//! that failed with an error (and the last one, which asks for an acknowledgement, with one).
//!
//! Keys are the kernel's data registers: concatenations (`ip daddr . th dport`) are their fields
//! one after the other, each padded to 4 bytes ([`Key`]); numbers are in network byte order.
//!
//! The file stays whole: it is one encoder and decoder of one wire format, whose message,
//! attribute and key layouts depend on each other, and its tests check the exact bytes.

use std::{
    io,
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::AsFd as _,
};

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};

const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_CREATE: u16 = 0x400;
const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_GETSETELEM: u16 = 13;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFT_MSG_NEWGEN: u16 = 15;
const NFT_MSG_GETGEN: u16 = 16;
const NFTA_GEN_ID: u16 = 1;
/// `NFPROTO_INET`: the family of the agent's table.
pub const FAMILY_INET: u8 = 1;

const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_SET_ELEM_FLAGS: u16 = 3;
const NFTA_SET_ELEM_USERDATA: u16 = 6;
const NFTA_SET_ELEM_KEY_END: u16 = 10;
/// The comment's type in an element's user data (libnftnl's `NFTNL_UDATA_SET_ELEM_COMMENT`),
/// which `nft` prints as the element's comment.
const UDATA_ELEM_COMMENT: u8 = 0;
/// The longest element comment kept (nft's own limit is 128 bytes with the NUL).
pub const COMMENT_MAX: usize = 127;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
const NFT_SET_ELEM_INTERVAL_END: u32 = 1;

const NF_DROP: i32 = 0;
const NF_ACCEPT: i32 = 1;
const NFT_JUMP: i32 = -3;
const NFT_GOTO: i32 = -4;

/// Elements per message: keeps each message well under a page's worth of attributes times a few,
/// as `nft` itself splits them.
const ELEMENTS_PER_MESSAGE: usize = 256;
/// The socket's send buffer: a reconciliation batch of thousands of elements goes in one
/// `sendmsg` (the kernel needs the whole batch at once to apply it atomically).
const SEND_BUFFER: usize = 8 << 20;
/// The longest set or table name the kernel takes (`NFT_NAME_MAXLEN` minus the NUL).
const NAME_MAX: usize = 255;
/// `IFNAMSIZ`: interface names in keys are this long, NUL-padded.
pub const IFNAMSIZ: usize = 16;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NfError {
    #[error("nf_tables netlink socket: {0}")]
    Socket(io::Error),
    #[error("nf_tables refused the change to set {set:?}: {source}")]
    Refused { set: String, source: io::Error },
    #[error("nf_tables refused the batch: {0}")]
    Batch(io::Error),
    #[error("nf_tables answered something unreadable: {0}")]
    Malformed(String),
    #[error("invalid nf_tables name {0:?}")]
    Name(String),
}

/// A data register's bytes: one value, or a concatenation of values each padded to 4 bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(pub Vec<u8>);

impl Key {
    pub fn new() -> Self {
        Self::default()
    }

    fn field(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(bytes);
        let pad = (4 - bytes.len() % 4) % 4;
        self.0.extend(std::iter::repeat_n(0, pad));
        self
    }

    /// An interface name (`ifname`): 16 bytes, NUL-padded. Longer names are cut (the kernel's
    /// names are at most 15 bytes).
    pub fn ifname(self, name: &str) -> Self {
        let mut b = [0u8; IFNAMSIZ];
        let n = name.len().min(IFNAMSIZ - 1);
        b[..n].copy_from_slice(&name.as_bytes()[..n]);
        self.field(&b)
    }

    pub fn ipv4(self, a: Ipv4Addr) -> Self {
        self.field(&a.octets())
    }

    pub fn ipv6(self, a: Ipv6Addr) -> Self {
        self.field(&a.octets())
    }

    /// A layer-4 protocol number (`inet_proto`, `meta l4proto`).
    pub fn proto(self, p: u8) -> Self {
        self.field(&[p])
    }

    /// A port (`inet_service`), in network byte order.
    pub fn port(self, p: u16) -> Self {
        self.field(&p.to_be_bytes())
    }

    /// A port alone, unpadded: the data of a map whose values are `inet_service` (2 bytes).
    pub fn port_value(p: u16) -> Self {
        Self(p.to_be_bytes().to_vec())
    }
}

/// What a map element maps to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Data {
    Value(Key),
    Verdict(Verdict),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    Accept,
    Drop,
    Jump(String),
    Goto(String),
}

/// One set or map element.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Element {
    pub key: Key,
    /// The end of an interval in a concatenated interval set (`flags interval` with a
    /// concatenation); `None` elsewhere.
    pub key_end: Option<Key>,
    pub data: Option<Data>,
    /// Marks the end of an interval in a plain (not concatenated) interval set.
    pub interval_end: bool,
    /// A comment `nft` shows with the element (who it belongs to); cut to [`COMMENT_MAX`]
    /// bytes.
    pub comment: Option<String>,
}

impl Element {
    /// A set element.
    pub fn key(key: Key) -> Self {
        Self {
            key,
            key_end: None,
            data: None,
            interval_end: false,
            comment: None,
        }
    }

    /// The element with a comment (cut at a character boundary to [`COMMENT_MAX`] bytes, NULs
    /// dropped).
    #[must_use]
    pub fn with_comment(mut self, comment: &str) -> Self {
        let clean: String = comment.chars().filter(|c| *c != '\0').collect();
        let mut end = clean.len().min(COMMENT_MAX);
        while !clean.is_char_boundary(end) {
            end -= 1;
        }
        self.comment = Some(clean[..end].to_owned());
        self
    }

    /// A map element.
    pub fn map(key: Key, data: Data) -> Self {
        Self {
            data: Some(data),
            ..Self::key(key)
        }
    }
}

/// Add or remove.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Add,
    Delete,
}

/// Elements of one set to add or remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetChange {
    pub op: Op,
    pub set: String,
    pub elements: Vec<Element>,
}

/// Changes to the sets of one table, applied in one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub family: u8,
    pub table: String,
    pub changes: Vec<SetChange>,
}

impl Batch {
    pub fn new(family: u8, table: impl Into<String>) -> Self {
        Self {
            family,
            table: table.into(),
            changes: Vec::new(),
        }
    }

    /// Adds `elements` to `set` (an element already there is left as it is).
    pub fn add(&mut self, set: &str, elements: Vec<Element>) -> &mut Self {
        self.push(Op::Add, set, elements)
    }

    /// Removes `elements` from `set` (the whole batch fails if one is not there).
    pub fn delete(&mut self, set: &str, elements: Vec<Element>) -> &mut Self {
        self.push(Op::Delete, set, elements)
    }

    fn push(&mut self, op: Op, set: &str, elements: Vec<Element>) -> &mut Self {
        if !elements.is_empty() {
            self.changes.push(SetChange {
                op,
                set: set.to_owned(),
                elements,
            });
        }
        self
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// The messages of the batch, numbered from `seq`.
    pub fn encode(&self, seq: u32) -> Result<Encoded, NfError> {
        check_name(&self.table)?;
        let mut out = Vec::new();
        let mut seq = seq;
        let mut sets = Vec::new();
        push_msg(
            &mut out,
            NFNL_MSG_BATCH_BEGIN,
            NLM_F_REQUEST,
            seq,
            0,
            NFNL_SUBSYS_NFTABLES,
            |_| {},
        );
        let chunks: Vec<(&SetChange, &[Element])> = self
            .changes
            .iter()
            .flat_map(|c| c.elements.chunks(ELEMENTS_PER_MESSAGE).map(move |e| (c, e)))
            .collect();
        for (i, (change, elements)) in chunks.iter().enumerate() {
            check_name(&change.set)?;
            seq = seq.wrapping_add(1);
            let (kind, mut flags) = match change.op {
                Op::Add => (NFT_MSG_NEWSETELEM, NLM_F_REQUEST | NLM_F_CREATE),
                Op::Delete => (NFT_MSG_DELSETELEM, NLM_F_REQUEST),
            };
            if i + 1 == chunks.len() {
                flags |= NLM_F_ACK;
            }
            push_msg(
                &mut out,
                (NFNL_SUBSYS_NFTABLES << 8) | kind,
                flags,
                seq,
                self.family,
                0,
                |b| {
                    attr_str(b, NFTA_SET_ELEM_LIST_TABLE, &self.table);
                    attr_str(b, NFTA_SET_ELEM_LIST_SET, &change.set);
                    nested(b, NFTA_SET_ELEM_LIST_ELEMENTS, |b| {
                        for e in *elements {
                            nested(b, NFTA_LIST_ELEM, |b| encode_element(b, e));
                        }
                    });
                },
            );
            sets.push((seq, change.set.clone()));
        }
        let last = seq;
        seq = seq.wrapping_add(1);
        push_msg(
            &mut out,
            NFNL_MSG_BATCH_END,
            NLM_F_REQUEST,
            seq,
            0,
            NFNL_SUBSYS_NFTABLES,
            |_| {},
        );
        Ok(Encoded {
            bytes: out,
            sets,
            last,
        })
    }
}

/// A batch as sent.
#[derive(Debug)]
pub struct Encoded {
    pub bytes: Vec<u8>,
    /// Per element message: its sequence number and the set it changes (to name in an error).
    pub sets: Vec<(u32, String)>,
    /// The sequence number of the last element message (the one acknowledged).
    pub last: u32,
}

/// One netlink message received.
struct Msg<'a> {
    kind: u16,
    seq: u32,
    payload: &'a [u8],
}

fn check_name(name: &str) -> Result<(), NfError> {
    if name.is_empty() || name.len() > NAME_MAX || name.bytes().any(|b| b == 0) {
        return Err(NfError::Name(name.to_owned()));
    }
    Ok(())
}

fn encode_element(b: &mut Vec<u8>, e: &Element) {
    nested(b, NFTA_SET_ELEM_KEY, |b| attr(b, NFTA_DATA_VALUE, &e.key.0));
    if let Some(end) = &e.key_end {
        nested(b, NFTA_SET_ELEM_KEY_END, |b| {
            attr(b, NFTA_DATA_VALUE, &end.0);
        });
    }
    if let Some(c) = &e.comment {
        let mut u = vec![UDATA_ELEM_COMMENT, 0];
        u.extend_from_slice(c.as_bytes());
        u.push(0);
        u[1] = u8::try_from(u.len() - 2).unwrap_or(u8::MAX);
        attr(b, NFTA_SET_ELEM_USERDATA, &u);
    }
    if e.interval_end {
        attr(
            b,
            NFTA_SET_ELEM_FLAGS,
            &NFT_SET_ELEM_INTERVAL_END.to_be_bytes(),
        );
    }
    match &e.data {
        None => {}
        Some(Data::Value(v)) => nested(b, NFTA_SET_ELEM_DATA, |b| attr(b, NFTA_DATA_VALUE, &v.0)),
        Some(Data::Verdict(v)) => nested(b, NFTA_SET_ELEM_DATA, |b| {
            nested(b, NFTA_DATA_VERDICT, |b| {
                let (code, chain) = match v {
                    Verdict::Accept => (NF_ACCEPT, None),
                    Verdict::Drop => (NF_DROP, None),
                    Verdict::Jump(c) => (NFT_JUMP, Some(c)),
                    Verdict::Goto(c) => (NFT_GOTO, Some(c)),
                };
                attr(b, NFTA_VERDICT_CODE, &code.to_be_bytes());
                if let Some(c) = chain {
                    attr_str(b, NFTA_VERDICT_CHAIN, c);
                }
            });
        }),
    }
}

// Netlink framing.

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn push_msg(
    out: &mut Vec<u8>,
    kind: u16,
    flags: u16,
    seq: u32,
    family: u8,
    res_id: u16,
    body: impl FnOnce(&mut Vec<u8>),
) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]); // length, set below
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
    out.extend_from_slice(&[family, 0]);
    out.extend_from_slice(&res_id.to_be_bytes());
    body(out);
    let len = u32::try_from(out.len() - start).unwrap_or(u32::MAX);
    out[start..start + 4].copy_from_slice(&len.to_ne_bytes());
}

fn attr(b: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = u16::try_from(4 + payload.len()).unwrap_or(u16::MAX);
    b.extend_from_slice(&len.to_ne_bytes());
    b.extend_from_slice(&kind.to_ne_bytes());
    b.extend_from_slice(payload);
    b.resize(align4(b.len()), 0);
}

fn attr_str(b: &mut Vec<u8>, kind: u16, s: &str) {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    attr(b, kind, &v);
}

fn nested(b: &mut Vec<u8>, kind: u16, body: impl FnOnce(&mut Vec<u8>)) {
    let start = b.len();
    b.extend_from_slice(&[0; 2]);
    b.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
    body(b);
    let len = u16::try_from(b.len() - start).unwrap_or(u16::MAX);
    b[start..start + 2].copy_from_slice(&len.to_ne_bytes());
}

/// The attributes in `b`: (type without flags, payload).
fn attrs(mut b: &[u8]) -> Result<Vec<(u16, &[u8])>, NfError> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([b[0], b[1]]));
        let kind = u16::from_ne_bytes([b[2], b[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > b.len() {
            return Err(NfError::Malformed(format!("attribute length {len}")));
        }
        out.push((kind, &b[4..len]));
        b = &b[align4(len).min(b.len())..];
    }
    Ok(out)
}

fn decode_data(b: &[u8]) -> Result<Data, NfError> {
    for (kind, p) in attrs(b)? {
        match kind {
            NFTA_DATA_VALUE => return Ok(Data::Value(Key(p.to_vec()))),
            NFTA_DATA_VERDICT => {
                let mut code = None;
                let mut chain = None;
                for (k, v) in attrs(p)? {
                    match k {
                        NFTA_VERDICT_CODE if v.len() == 4 => {
                            code = Some(i32::from_be_bytes([v[0], v[1], v[2], v[3]]));
                        }
                        NFTA_VERDICT_CHAIN => {
                            chain = Some(
                                String::from_utf8_lossy(v.strip_suffix(&[0]).unwrap_or(v))
                                    .into_owned(),
                            );
                        }
                        _ => {}
                    }
                }
                let verdict = match (code, chain) {
                    (Some(NF_ACCEPT), _) => Verdict::Accept,
                    (Some(NF_DROP), _) => Verdict::Drop,
                    (Some(NFT_JUMP), Some(c)) => Verdict::Jump(c),
                    (Some(NFT_GOTO), Some(c)) => Verdict::Goto(c),
                    (c, _) => return Err(NfError::Malformed(format!("verdict {c:?}"))),
                };
                return Ok(Data::Verdict(verdict));
            }
            _ => {}
        }
    }
    Err(NfError::Malformed("data without a value".into()))
}

fn decode_value(b: &[u8]) -> Result<Key, NfError> {
    match decode_data(b)? {
        Data::Value(k) => Ok(k),
        Data::Verdict(_) => Err(NfError::Malformed("a key that is a verdict".into())),
    }
}

fn decode_element(b: &[u8]) -> Result<Element, NfError> {
    let mut e = Element::key(Key::new());
    for (kind, p) in attrs(b)? {
        match kind {
            NFTA_SET_ELEM_KEY => e.key = decode_value(p)?,
            NFTA_SET_ELEM_KEY_END => e.key_end = Some(decode_value(p)?),
            NFTA_SET_ELEM_DATA => e.data = Some(decode_data(p)?),
            NFTA_SET_ELEM_USERDATA => e.comment = decode_comment(p),
            NFTA_SET_ELEM_FLAGS if p.len() == 4 => {
                let f = u32::from_be_bytes([p[0], p[1], p[2], p[3]]);
                e.interval_end = f & NFT_SET_ELEM_INTERVAL_END != 0;
            }
            _ => {}
        }
    }
    Ok(e)
}

/// The comment in an element's user data (type-length-value records), if any.
fn decode_comment(mut u: &[u8]) -> Option<String> {
    while u.len() >= 2 {
        let (kind, len) = (u[0], usize::from(u[1]));
        let value = u.get(2..2 + len)?;
        if kind == UDATA_ELEM_COMMENT {
            let value = value.strip_suffix(&[0]).unwrap_or(value);
            return Some(String::from_utf8_lossy(value).into_owned());
        }
        u = &u[2 + len..];
    }
    None
}

/// One nf_tables netlink socket, bound to the network namespace it was made in (make it on a
/// thread inside the managed namespace; it can be used from any thread afterwards).
#[derive(Debug)]
pub struct NfSocket {
    socket: Socket,
    seq: u32,
}

impl NfSocket {
    pub fn open() -> Result<Self, NfError> {
        let mut socket = Socket::new(NETLINK_NETFILTER).map_err(NfError::Socket)?;
        socket.bind_auto().map_err(NfError::Socket)?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(NfError::Socket)?;
        // Past net.core.wmem_max, which the agent (CAP_NET_ADMIN) may do; the plain option, capped
        // by wmem_max, where it may not.
        let fd = socket.as_fd();
        nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::SndBufForce, &SEND_BUFFER)
            .or_else(|_| {
                nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::SndBuf, &SEND_BUFFER)
            })
            .map_err(|e| NfError::Socket(e.into()))?;
        socket.set_rx_buf_sz(SEND_BUFFER).map_err(NfError::Socket)?;
        Ok(Self {
            socket,
            seq: std::process::id().wrapping_mul(7919),
        })
    }

    fn next_seq(&mut self, n: usize) -> u32 {
        let seq = self.seq;
        self.seq = self
            .seq
            .wrapping_add(u32::try_from(n).unwrap_or(u32::MAX))
            .wrapping_add(2);
        seq
    }

    /// Applies `batch` in one transaction. Blocking (a few microseconds for an attach).
    pub fn apply(&mut self, batch: &Batch) -> Result<(), NfError> {
        if batch.is_empty() {
            return Ok(());
        }
        let seq = self.next_seq(batch.changes.iter().map(|c| c.elements.len()).sum());
        let Encoded { bytes, sets, last } = batch.encode(seq)?;
        self.socket.send(&bytes, 0).map_err(NfError::Socket)?;
        let mut first_error = None;
        loop {
            let (buf, _) = self.socket.recv_from_full().map_err(NfError::Socket)?;
            for Msg { kind, seq, payload } in messages(&buf)? {
                if kind != NLMSG_ERROR {
                    continue;
                }
                let code = error_code(payload)?;
                if code != 0 && first_error.is_none() {
                    let source = io::Error::from_raw_os_error(-code);
                    first_error = Some(match sets.iter().find(|(s, _)| *s == seq) {
                        Some((_, set)) => NfError::Refused {
                            set: set.clone(),
                            source,
                        },
                        None => NfError::Batch(source),
                    });
                }
                if seq == last {
                    return first_error.map_or(Ok(()), Err);
                }
            }
        }
    }

    /// The ruleset's generation in this namespace: the kernel bumps it with every committed
    /// nf_tables transaction, whoever sends it (`nft`, a firewall manager, this agent).
    pub fn generation(&mut self) -> Result<u32, NfError> {
        let seq = self.next_seq(1);
        let mut req = Vec::new();
        push_msg(
            &mut req,
            (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN,
            NLM_F_REQUEST,
            seq,
            0,
            0,
            |_| {},
        );
        self.socket.send(&req, 0).map_err(NfError::Socket)?;
        loop {
            let (buf, _) = self.socket.recv_from_full().map_err(NfError::Socket)?;
            for Msg {
                kind,
                seq: msg_seq,
                payload,
            } in messages(&buf)?
            {
                if msg_seq != seq {
                    continue;
                }
                if kind == NLMSG_ERROR {
                    let code = error_code(payload)?;
                    return Err(NfError::Batch(io::Error::from_raw_os_error(-code)));
                }
                if kind != (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN {
                    continue;
                }
                let body = payload.get(NFGENMSG_LEN..).unwrap_or_default();
                for (k, p) in attrs(body)? {
                    if k == NFTA_GEN_ID
                        && let Ok(id) = <[u8; 4]>::try_from(p)
                    {
                        return Ok(u32::from_be_bytes(id));
                    }
                }
                return Err(NfError::Malformed("a generation without its id".into()));
            }
        }
    }

    /// Every element of `set` in `table`, as the kernel holds them now.
    pub fn elements(
        &mut self,
        family: u8,
        table: &str,
        set: &str,
    ) -> Result<Vec<Element>, NfError> {
        check_name(table)?;
        check_name(set)?;
        let seq = self.next_seq(1);
        let mut req = Vec::new();
        push_msg(
            &mut req,
            (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETSETELEM,
            NLM_F_REQUEST | NLM_F_DUMP | NLM_F_ACK,
            seq,
            family,
            0,
            |b| {
                attr_str(b, NFTA_SET_ELEM_LIST_TABLE, table);
                attr_str(b, NFTA_SET_ELEM_LIST_SET, set);
            },
        );
        self.socket.send(&req, 0).map_err(NfError::Socket)?;
        let mut out = Vec::new();
        loop {
            let (buf, _) = self.socket.recv_from_full().map_err(NfError::Socket)?;
            for Msg {
                kind,
                seq: msg_seq,
                payload,
            } in messages(&buf)?
            {
                if msg_seq != seq {
                    continue;
                }
                match kind {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => {
                        let code = error_code(payload)?;
                        if code != 0 {
                            return Err(NfError::Refused {
                                set: set.to_owned(),
                                source: io::Error::from_raw_os_error(-code),
                            });
                        }
                        return Ok(out);
                    }
                    _ => {
                        let body = payload.get(NFGENMSG_LEN..).unwrap_or_default();
                        for (k, p) in attrs(body)? {
                            if k != NFTA_SET_ELEM_LIST_ELEMENTS {
                                continue;
                            }
                            for (ek, ep) in attrs(p)? {
                                if ek == NFTA_LIST_ELEM {
                                    out.push(decode_element(ep)?);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The messages in one datagram: (type, sequence number, payload after the header).
fn messages(mut b: &[u8]) -> Result<Vec<Msg<'_>>, NfError> {
    let mut out = Vec::new();
    while b.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
        if len < NLMSG_HDRLEN || len > b.len() {
            return Err(NfError::Malformed(format!("message length {len}")));
        }
        let kind = u16::from_ne_bytes([b[4], b[5]]);
        let seq = u32::from_ne_bytes([b[8], b[9], b[10], b[11]]);
        out.push(Msg {
            kind,
            seq,
            payload: &b[NLMSG_HDRLEN..len],
        });
        b = &b[align4(len).min(b.len())..];
    }
    Ok(out)
}

/// The (negative) errno of an `NLMSG_ERROR`, 0 for an acknowledgement.
fn error_code(payload: &[u8]) -> Result<i32, NfError> {
    payload
        .get(..4)
        .map(|c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
        .ok_or_else(|| NfError::Malformed("short error message".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concatenated_keys_pad_each_field_to_four_bytes() {
        let k = Key::new()
            .ipv4(Ipv4Addr::new(10, 0, 0, 2))
            .proto(6)
            .port(8080);
        assert_eq!(k.0, [10, 0, 0, 2, 6, 0, 0, 0, 0x1f, 0x90, 0, 0]);
        let k = Key::new().ifname("br-abc");
        assert_eq!(k.0.len(), 16);
        assert_eq!(&k.0[..7], b"br-abc\0");
    }

    #[test]
    fn a_batch_is_framed_by_begin_and_end_and_only_the_last_message_asks_for_an_ack() {
        let mut b = Batch::new(FAMILY_INET, "weft");
        b.add(
            "ports4",
            (0..300)
                .map(|i| {
                    Element::map(
                        Key::new().proto(6).port(i),
                        Data::Value(Key::new().ipv4(Ipv4Addr::LOCALHOST).port(80)),
                    )
                })
                .collect(),
        );
        b.delete("bridges", vec![Element::key(Key::new().ifname("br1"))]);
        let Encoded { bytes, sets, last } = b.encode(100).unwrap();
        let msgs = messages(&bytes).unwrap();
        let kinds: Vec<u16> = msgs.iter().map(|m| m.kind).collect();
        assert_eq!(
            kinds,
            [
                NFNL_MSG_BATCH_BEGIN,
                (10 << 8) | NFT_MSG_NEWSETELEM,
                (10 << 8) | NFT_MSG_NEWSETELEM,
                (10 << 8) | NFT_MSG_DELSETELEM,
                NFNL_MSG_BATCH_END
            ]
        );
        assert_eq!(
            sets,
            [
                (101, "ports4".to_owned()),
                (102, "ports4".to_owned()),
                (103, "bridges".to_owned())
            ]
        );
        assert_eq!(last, 103);
        let flags = |i: usize| {
            let start = msgs[..i]
                .iter()
                .map(|m| align4(m.payload.len() + NLMSG_HDRLEN))
                .sum::<usize>();
            u16::from_ne_bytes([bytes[start + 6], bytes[start + 7]])
        };
        assert_eq!(flags(1) & NLM_F_ACK, 0);
        assert_eq!(flags(3) & NLM_F_ACK, NLM_F_ACK);
        // The batch messages name the nf_tables subsystem.
        assert_eq!(&msgs[0].payload[2..4], &10u16.to_be_bytes());
    }

    #[test]
    fn elements_decode_to_what_was_encoded() {
        let elements = [
            Element::map(
                Key::new().proto(17).port(53),
                Data::Verdict(Verdict::Jump("ports".into())),
            ),
            Element::map(
                Key::new().ipv6(Ipv6Addr::LOCALHOST),
                Data::Value(Key::new().port(1)),
            ),
            Element {
                interval_end: true,
                ..Element::key(Key::new().ipv4(Ipv4Addr::new(10, 0, 1, 0)))
            },
            Element {
                key_end: Some(Key::new().ipv4(Ipv4Addr::new(10, 0, 0, 255)).port(9)),
                ..Element::key(Key::new().ipv4(Ipv4Addr::new(10, 0, 0, 0)).port(1))
            },
            Element::map(
                Key::new().proto(6).port(80),
                Data::Value(Key::port_value(8080)),
            )
            .with_comment("weft:endpoint:e1"),
        ];
        for e in elements {
            let mut b = Vec::new();
            encode_element(&mut b, &e);
            assert_eq!(decode_element(&b).unwrap(), e);
        }
    }

    #[test]
    fn names_the_kernel_would_refuse_are_refused_before_sending() {
        let mut b = Batch::new(FAMILY_INET, "weft");
        b.add("bad\0name", vec![Element::key(Key::new().port(1))]);
        assert!(matches!(b.encode(1), Err(NfError::Name(_))));
        assert!(matches!(
            Batch::new(FAMILY_INET, "").encode(1),
            Err(NfError::Name(_))
        ));
    }
}
