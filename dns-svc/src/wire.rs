//! Wire-format helpers shared by both request paths ([`crate::handler`]): the encoded
//! [`Answer`], the size an answer may take over UDP ([`max_size`], [`DEFAULT_UDP_MAX`]), the
//! OPT record's advertised size, the echoed question, and encoding with truncation.
//!
//! Nothing here knows about records, resolvers or listeners: every module of the DNS side may
//! use it, and it uses none of them.

use hickory_proto::{
    op::{Header, HeaderCounts, MessageType, Metadata, ResponseCode},
    rr::Record,
    serialize::binary::{BinDecoder, BinEncodable, BinEncoder},
};
use hickory_server::{
    net::xfer::Protocol,
    zone_handler::{MessageResponse, Queries},
};

/// An encoded answer, ready to send (without the TCP length prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub bytes: Vec<u8>,
    /// The answer was cut to fit the UDP size and carries TC.
    pub truncated: bool,
}

/// The question section an answer echoes: the request's one question, encoded afresh, or none
/// when it had several. hickory would echo the request's raw question bytes, and a compression
/// pointer in them points into the request, not into the answer: the answer would not decode
/// (found by the fuzz target).
pub fn echo_question(queries: &Queries) -> Option<Queries> {
    let mut buf = Vec::new();
    let n = match queries.queries() {
        [one] => {
            one.original().emit(&mut BinEncoder::new(&mut buf)).ok()?;
            1
        }
        _ => 0,
    };
    Queries::read(&mut BinDecoder::new(&buf), n).ok()
}

/// A bare SERVFAIL header answering `request`: for what cannot be answered otherwise.
pub fn servfail(request: &Metadata) -> Answer {
    let mut metadata = Metadata::new(request.id, MessageType::Response, request.op_code);
    metadata.response_code = ResponseCode::ServFail;
    let header = Header {
        metadata,
        counts: HeaderCounts::default(),
    };
    Answer {
        bytes: header.to_bytes().unwrap_or_default(),
        truncated: false,
    }
}

/// The default cap on UDP answers, whatever EDNS size a client advertises: 1232 bytes, the
/// size DNS Flag Day 2020 settled on (an IPv6 packet that fits a 1280-byte MTU without
/// fragmentation). Bigger answers are truncated (TC) and the client asks again over TCP, as
/// with any resolver (BIND, Unbound, Knot and PowerDNS default to it too). A small cap also
/// keeps a spoofed query from being amplified into a large answer.
pub const DEFAULT_UDP_MAX: u16 = 1232;

/// The smallest cap allowed: every DNS client takes 512 bytes over UDP (RFC 1035 4.2.1).
pub const MIN_UDP_MAX: u16 = 512;

/// The most a UDP answer may take: 512 bytes without EDNS (RFC 1035 4.2.1), else the size the
/// client advertised (never below 512), but never more than `cap` (see [`DEFAULT_UDP_MAX`]);
/// TCP answers only have the length prefix's limit.
pub fn max_size(protocol: Protocol, edns_payload: Option<u16>, cap: u16) -> u16 {
    match protocol {
        Protocol::Udp => edns_payload.map_or(512, |p| p.max(512).min(cap.max(MIN_UDP_MAX))),
        _ => u16::MAX,
    }
}

/// The UDP payload size our answers' OPT record advertises: what we take from the client,
/// within the same cap.
pub fn advertised_payload(edns_payload: u16, cap: u16) -> u16 {
    edns_payload.max(512).min(cap.max(MIN_UDP_MAX))
}

/// Encodes a response within `max` bytes, truncating (with TC) what does not fit. A response
/// that cannot be encoded at all becomes a bare SERVFAIL header.
pub fn encode<'a>(
    response: MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    max: u16,
) -> Answer {
    let request = *response.metadata();
    let mut bytes = Vec::with_capacity(512);
    let mut encoder = BinEncoder::new(&mut bytes);
    encoder.set_max_size(max);
    match response.destructive_emit(&mut encoder) {
        Ok(info) => Answer {
            bytes,
            truncated: info.truncation,
        },
        Err(error) => {
            tracing::warn!(%error, "cannot encode a DNS response");
            servfail(&request)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use hickory_proto::{
        op::{Edns, Message, Query},
        rr::{Name, RecordType},
        serialize::binary::BinDecodable as _,
    };
    use hickory_server::{server::Request, zone_handler::MessageResponseBuilder};

    use super::*;

    #[test]
    fn udp_answers_are_capped_at_1232_whatever_edns_size_is_asked() {
        let cap = DEFAULT_UDP_MAX;
        assert_eq!(max_size(Protocol::Udp, Some(4096), cap), 1232);
        assert_eq!(max_size(Protocol::Udp, Some(65535), cap), 1232);
        assert_eq!(max_size(Protocol::Udp, Some(1000), cap), 1000);
        assert_eq!(max_size(Protocol::Udp, Some(100), cap), 512);
        assert_eq!(max_size(Protocol::Udp, None, cap), 512);
        assert_eq!(max_size(Protocol::Tcp, Some(4096), cap), u16::MAX);
        assert_eq!(max_size(Protocol::Udp, Some(4096), 4096), 4096);
        assert_eq!(advertised_payload(4096, cap), 1232);

        // 200 A records (about 3 kB) asked with EDNS 4096: cut to 1232 bytes, TC set.
        use hickory_proto::rr::{RData, rdata::A};
        let name = Name::from_ascii("many.example.").unwrap();
        let records: Vec<Record> = (0..200u32)
            .map(|i| {
                Record::from_rdata(
                    name.clone(),
                    60,
                    RData::A(A(std::net::Ipv4Addr::from(0x0a00_0000 + i))),
                )
            })
            .collect();
        let raw = {
            let mut q = Message::query();
            q.add_query(Query::query(name.clone(), RecordType::A));
            let mut e = Edns::new();
            e.set_max_payload(4096);
            q.set_edns(e);
            q.to_vec().unwrap()
        };
        let req = Request::from_bytes(raw, ([127, 0, 0, 1], 1000).into(), Protocol::Udp).unwrap();
        let echo = echo_question(&req.queries).unwrap();
        let mut edns = Edns::new();
        edns.set_max_payload(advertised_payload(4096, cap));
        let md = Metadata::response_from_request(&req.metadata);
        let resp = MessageResponseBuilder::new(&echo, Some(&edns)).build(
            md,
            records.iter(),
            std::iter::empty(),
            std::iter::empty(),
            std::iter::empty(),
        );
        let a = encode(resp, max_size(Protocol::Udp, Some(4096), cap));
        assert!(a.truncated);
        assert!(a.bytes.len() <= 1232, "{}", a.bytes.len());
        let m = Message::from_bytes(&a.bytes).unwrap();
        assert!(m.metadata.truncation, "TC is set");
        assert!(m.answers.len() < 200);
    }
}
