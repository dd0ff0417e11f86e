//! The fast path: a plain A or AAAA query for a name Weft decides itself, answered straight
//! from the records into the caller's buffer, with no message objects, no strings and no
//! allocation but the list of matches.
//!
//! Most of what containers ask is exactly that, and the general path ([`super::answer_general`]:
//! decode with hickory, resolve with explanations, encode with hickory) costs several times more
//! than the two system calls that carry the packet (`bench/dns.sh` measures both sides). Anything
//! this path does not fully understand goes to the general path, which stays the reference:
//! the fuzz oracle (`crate::offline::check_offline`, in test and fuzzing builds) asserts that
//! both give the same message for every input this path takes.
//!
//! Taken here: a query (QR=0, opcode QUERY) with one question, no answer or authority records,
//! at most one additional record which is an EDNS version 0 OPT (without the options hickory
//! interprets: NSID, DAU, client subnet); the question name uncompressed, in letters, digits,
//! `-` and `_`; type A or AAAA, class IN; nothing after the message; an answer that fits the
//! size allowed (else the general path truncates it). Forwarded names and PTR queries go to the
//! general path.

use hickory_server::net::xfer::Protocol;

use super::DnsHandler;
use crate::{
    records::Target,
    resolver::{Decision, LOCAL_TTL},
    wire::{advertised_payload, max_size},
};

const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const TYPE_OPT: u16 = 41;
const CLASS_IN: u16 = 1;
/// The longest name on the wire (RFC 1035 2.3.4), and so its dotted form.
const MAX_NAME: usize = 255;

/// A query the fast path takes.
#[derive(Debug)]
struct Plain<'a> {
    id: [u8; 2],
    recursion_desired: bool,
    checking_disabled: bool,
    /// The question section as received: name, type, class.
    question: &'a [u8],
    qtype: u16,
    /// The UDP payload size the client advertised in its OPT record, if it sent one.
    edns: Option<u16>,
}

fn u16_at(raw: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*raw.get(at)?, *raw.get(at + 1)?]))
}

/// Parses `raw` if the fast path takes it; the question name goes lowercase and dotted (no
/// trailing dot) into `name`, its length is returned.
fn parse<'a>(raw: &'a [u8], name: &mut [u8; MAX_NAME]) -> Option<(Plain<'a>, usize)> {
    let flags = u16_at(raw, 2)?;
    // QR=0 and opcode QUERY (0).
    if flags & 0xf800 != 0 {
        return None;
    }
    let counts = [
        u16_at(raw, 4)?,
        u16_at(raw, 6)?,
        u16_at(raw, 8)?,
        u16_at(raw, 10)?,
    ];
    if counts[..3] != [1, 0, 0] || counts[3] > 1 {
        return None;
    }
    let mut at = 12;
    let mut len = 0;
    loop {
        let label = usize::from(*raw.get(at)?);
        at += 1;
        if label == 0 {
            break;
        }
        // Compression pointers (0xC0) and the extended label types go to hickory.
        if label > 63 || at - 12 + label > MAX_NAME - 1 {
            return None;
        }
        let bytes = raw.get(at..at + label)?;
        if len > 0 {
            name[len] = b'.';
            len += 1;
        }
        for &b in bytes {
            if !(b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                return None;
            }
            name[len] = b.to_ascii_lowercase();
            len += 1;
        }
        at += label;
    }
    let qtype = u16_at(raw, at)?;
    if !matches!(qtype, TYPE_A | TYPE_AAAA) || u16_at(raw, at + 2)? != CLASS_IN {
        return None;
    }
    let question = &raw[12..at + 4];
    at += 4;
    let edns = if counts[3] == 1 {
        let (payload, end) = parse_opt(raw, at)?;
        at = end;
        Some(payload)
    } else {
        None
    };
    if at != raw.len() {
        return None;
    }
    let plain = Plain {
        id: [raw[0], raw[1]],
        recursion_desired: flags & 0x0100 != 0,
        checking_disabled: flags & 0x0010 != 0,
        question,
        qtype,
        edns,
    };
    Some((plain, len))
}

/// Parses the OPT record at `at` if the fast path takes it: the UDP payload size the client
/// advertised, and where the record ends.
fn parse_opt(raw: &[u8], mut at: usize) -> Option<(u16, usize)> {
    // OPT: root name, type, class = payload size, TTL = extended rcode, version, flags.
    if raw.get(at) != Some(&0) || u16_at(raw, at + 1)? != TYPE_OPT {
        return None;
    }
    let payload = u16_at(raw, at + 3)?;
    if *raw.get(at + 6)? != 0 {
        return None; // EDNS version above 0: BADVERS, from the general path.
    }
    let rdlen = usize::from(u16_at(raw, at + 9)?);
    at += 11;
    let end = at + rdlen;
    while at < end {
        let code = u16_at(raw, at)?;
        let olen = usize::from(u16_at(raw, at + 2)?);
        // NSID, DAU and client subnet are interpreted (and may be refused) by hickory.
        if matches!(code, 3 | 5 | 8) {
            return None;
        }
        at += 4 + olen;
    }
    if at != end {
        return None;
    }
    Some((payload, end))
}

impl DnsHandler {
    /// Answers `raw` into `out` (cleared first) when the fast path takes it: `true`, and `out`
    /// holds the whole response; `false`: nothing was decided or counted, take the general path.
    pub fn answer_fast(&self, raw: &[u8], protocol: Protocol, out: &mut Vec<u8>) -> bool {
        let mut name = [0u8; MAX_NAME];
        let Some((q, len)) = parse(raw, &mut name) else {
            return false;
        };
        let Ok(qname) = std::str::from_utf8(&name[..len]) else {
            return false;
        };
        let resolver = &self.resolver;
        let snap = resolver.snapshot_ref();
        let decision = resolver.decide(&snap, self.sandbox_id.as_deref(), qname, None);
        if decision == Decision::Forward {
            return false;
        }
        let rdata_len: u16 = if q.qtype == TYPE_A { 4 } else { 16 };
        let rdata = |t: &Target| -> Option<[u8; 16]> {
            let mut b = [0u8; 16];
            match q.qtype {
                TYPE_A => b[..4].copy_from_slice(&t.v4?.octets()),
                _ => b = t.v6?.octets(),
            }
            Some(b)
        };
        let targets: &[&Target] = match &decision {
            Decision::Found(t) => t,
            _ => &[],
        };
        let answers = targets.iter().filter_map(|t| rdata(t));
        let ancount = answers.clone().count();
        let Ok(ancount) = u16::try_from(ancount) else {
            return false;
        };

        out.clear();
        self.header(out, &q, &decision, ancount);
        for data in answers {
            // The owner is the question's name: a pointer to it (offset 12).
            out.extend_from_slice(&[0xc0, 0x0c]);
            out.extend_from_slice(&q.qtype.to_be_bytes());
            out.extend_from_slice(&CLASS_IN.to_be_bytes());
            out.extend_from_slice(&LOCAL_TTL.to_be_bytes());
            out.extend_from_slice(&rdata_len.to_be_bytes());
            out.extend_from_slice(&data[..usize::from(rdata_len)]);
        }
        if let Some(payload) = q.edns {
            out.push(0);
            out.extend_from_slice(&TYPE_OPT.to_be_bytes());
            out.extend_from_slice(&advertised_payload(payload, resolver.udp_max()).to_be_bytes());
            // Extended rcode, version 0, no flags; no options.
            out.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        }
        if out.len() > usize::from(max_size(protocol, q.edns, resolver.udp_max())) {
            // Too big: the general path truncates.
            out.clear();
            return false;
        }
        resolver.count(
            self.sandbox_id.as_deref(),
            protocol == Protocol::Tcp,
            &decision,
        );
        true
    }

    /// Writes the header and the question section of the answer to `q` into `out`.
    fn header(&self, out: &mut Vec<u8>, q: &Plain<'_>, decision: &Decision<'_>, ancount: u16) {
        out.extend_from_slice(&q.id);
        let mut flags1 = 0x80; // QR, opcode QUERY
        if decision.authoritative() {
            flags1 |= 0x04;
        }
        if q.recursion_desired {
            flags1 |= 0x01;
        }
        let mut flags2 = (u16::from(decision.rcode()) & 0x0f) as u8;
        if self.sandbox_id.is_some() {
            flags2 |= 0x80; // RA: sandbox listeners forward
        }
        if q.checking_disabled {
            flags2 |= 0x10;
        }
        out.extend_from_slice(&[flags1, flags2]);
        for count in [1, ancount, 0, u16::from(q.edns.is_some())] {
            out.extend_from_slice(&count.to_be_bytes());
        }
        out.extend_from_slice(q.question);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use hickory_proto::{
        op::{Edns, Message, Query},
        rr::{Name, RecordType},
    };

    use super::*;

    fn query(name: &str, qtype: RecordType, edns: bool) -> Vec<u8> {
        let mut q = Message::query();
        q.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        if edns {
            q.set_edns(Edns::new());
        }
        q.to_vec().unwrap()
    }

    #[test]
    fn plain_queries_are_taken_and_the_rest_left_to_hickory() {
        let mut name = [0u8; MAX_NAME];
        let raw = query("Web.Backend.weft.", RecordType::A, true);
        let (q, len) = parse(&raw, &mut name).unwrap();
        assert_eq!(&name[..len], b"web.backend.weft");
        assert_eq!((q.qtype, q.edns), (TYPE_A, Some(512)));
        for raw in [
            query("3.1.89.10.in-addr.arpa.", RecordType::PTR, false),
            query("web.", RecordType::TXT, false),
            {
                // A space in a label: hickory escapes it, the fast path does not bother.
                let mut raw = query("wxb.", RecordType::A, false);
                raw[14] = b' ';
                raw
            },
        ] {
            assert!(parse(&raw, &mut name).is_none());
        }
        let mut trailing = query("web.", RecordType::A, false);
        trailing.push(0);
        assert!(parse(&trailing, &mut name).is_none());
        let mut pointer = query("web.", RecordType::A, false);
        pointer.truncate(12);
        pointer.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
        assert!(parse(&pointer, &mut name).is_none());
    }
}
