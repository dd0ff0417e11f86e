//! The request path of one DNS message, bytes in and bytes out, with no network: what both
//! listeners ([`crate::listen`]) run for every packet they get, and what the fuzz target drives.
//!
//! The wire rules live here: a packet shorter than a header, or a response (QR=1), gets no
//! answer at all (answering responses would make us a reflector); a packet that does not decode
//! (bad names, a second OPT record, counts that lie) gets FORMERR carrying only its header; the
//! rest goes to [`DnsHandler::respond`], which answers FORMERR to anything but one question,
//! BADVERS to EDNS versions above 0, and sizes UDP answers to 512 bytes or the EDNS size.

use std::net::SocketAddr;

use hickory_proto::{
    op::{Header, HeaderCounts, MessageType, Metadata, ResponseCode},
    rr::Record,
    serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder},
};
use hickory_server::{
    net::xfer::Protocol,
    server::Request,
    zone_handler::{MessageResponse, MessageResponseBuilder, Queries},
};

use crate::server::DnsHandler;

/// An encoded answer, ready to send (without the TCP length prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub bytes: Vec<u8>,
    /// The answer was cut to fit the UDP size and carries TC.
    pub truncated: bool,
}

/// The whole request path: `raw` as it came off the socket from `src`, the answer to send back
/// (`None`: send nothing). The fast path ([`crate::fast`]) first, then the general one.
pub async fn answer(
    handler: &DnsHandler,
    raw: Vec<u8>,
    src: SocketAddr,
    protocol: Protocol,
) -> Option<Answer> {
    let mut bytes = Vec::with_capacity(512);
    if handler.answer_fast(&raw, protocol, &mut bytes) {
        return Some(Answer {
            bytes,
            truncated: false,
        });
    }
    answer_general(handler, raw, src, protocol).await
}

/// The general request path: hickory decodes, [`DnsHandler::respond`] resolves (forwarding if
/// need be), hickory encodes.
pub async fn answer_general(
    handler: &DnsHandler,
    raw: Vec<u8>,
    src: SocketAddr,
    protocol: Protocol,
) -> Option<Answer> {
    let header = Header::read(&mut BinDecoder::new(&raw)).ok()?;
    if header.metadata.message_type == MessageType::Response {
        return None;
    }
    match Request::from_bytes(raw, src, protocol) {
        Ok(request) => Some(handler.respond(&request).await),
        Err(error) => {
            tracing::debug!(%src, %error, "undecodable query");
            // The question is not echoed: it may be what did not decode.
            let Ok(queries) = Queries::read(&mut BinDecoder::new(&[]), 0) else {
                return None;
            };
            let resp = MessageResponseBuilder::new(&queries, None)
                .error_msg(&header.metadata, ResponseCode::FormErr);
            Some(encode(resp, 512))
        }
    }
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

/// A fixed world for driving the request path with no gateway and no network (the fuzz target
/// and the tests use it): networks `backend` and `secret` (internal), sandboxes `client` and
/// `web` on `backend` (`web` with alias `api`, IPv4 and IPv6), `hidden` on `secret`, and no
/// upstreams, so nothing is ever forwarded. Returns the operator handler (zone `weft.`) and
/// the handler of `client`'s sandbox listener.
pub fn offline_handlers() -> (DnsHandler, DnsHandler) {
    use std::sync::Arc;

    use arc_swap::ArcSwap;
    use weft_proto::gateway::v1::{self as gw, EventKind, event::Object};

    use crate::{
        forward::Forwarder,
        records::{Snapshot, State},
        resolver::Resolver,
    };

    let network = |id: &str, name: &str, subnet: &str, internal: bool| gw::Network {
        id: id.into(),
        name: name.into(),
        internal,
        ipam: Some(gw::Ipam {
            configs: vec![gw::IpamConfig {
                subnet: subnet.into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let sandbox = |id: &str, name: &str| gw::Sandbox {
        id: id.into(),
        name: name.into(),
        host: "offline".into(),
        hostname: format!("{name}-host"),
        container_id: format!("{id}0000000000"),
        ..Default::default()
    };
    let endpoint =
        |id: &str, net: &str, sb: &str, v4: &str, v6: &str, aliases: &[&str]| gw::Endpoint {
            id: id.into(),
            network_id: net.into(),
            sandbox_id: sb.into(),
            ipv4_address: v4.into(),
            ipv6_address: v6.into(),
            aliases: aliases.iter().map(|a| (*a).to_owned()).collect(),
            ..Default::default()
        };
    let mut state = State::default();
    let mut rev = 0;
    let mut apply = |kind: EventKind, object: Object| {
        rev += 1;
        state.apply(&gw::Event {
            revision: rev,
            kind: kind as i32,
            object: Some(object),
            ..Default::default()
        });
    };
    apply(
        EventKind::NetworkCreated,
        Object::Network(network("nbackend", "backend", "10.89.1.0/24", false)),
    );
    apply(
        EventKind::NetworkCreated,
        Object::Network(network("nsecret", "secret", "10.89.2.0/24", true)),
    );
    for (id, name) in [
        ("sclient", "client"),
        ("sweb", "web"),
        ("shidden", "hidden"),
    ] {
        apply(
            EventKind::SandboxCreated,
            Object::Sandbox(sandbox(id, name)),
        );
    }
    for e in [
        endpoint("e1", "nbackend", "sclient", "10.89.1.2/24", "", &[]),
        endpoint(
            "e2",
            "nbackend",
            "sweb",
            "10.89.1.3/24",
            "fd89:1::3/64",
            &["api"],
        ),
        endpoint("e3", "nsecret", "shidden", "10.89.2.5/24", "", &[]),
    ] {
        apply(EventKind::EndpointConnected, Object::Endpoint(e));
    }
    state.revision = rev;
    let snapshot = Arc::new(ArcSwap::from_pointee(Snapshot::build(&state, true)));
    let resolver = Arc::new(Resolver::new(
        snapshot,
        Forwarder {
            timeout: std::time::Duration::from_millis(1),
            sockets: crate::sockets::SocketSource::Setns,
        },
        Vec::new(),
        "weft",
    ));
    (
        DnsHandler::new(resolver.clone(), None),
        DnsHandler::new(resolver, Some("sclient")),
    )
}

/// Runs `raw` through the whole request path of both [`offline_handlers`], over UDP and TCP,
/// on the calling thread, and checks what must hold for any input: an answer is a decodable
/// response to the same id, within the size allowed; and when the fast path takes the input,
/// its answer is the general path's message (answers compared as a set: they rotate). Panics
/// otherwise (the fuzz target's oracle).
pub fn check_offline(handlers: &(DnsHandler, DnsHandler), raw: &[u8]) {
    use hickory_proto::op::Message;

    let src: SocketAddr = ([127, 0, 0, 1], 40000).into();
    let normalized = |bytes: &[u8]| {
        let mut m = Message::from_bytes(bytes)
            .unwrap_or_else(|e| panic!("our answer does not decode: {e}: {bytes:?}"));
        m.answers.sort_by_key(|r| r.data.to_string());
        m
    };
    for handler in [&handlers.0, &handlers.1] {
        for protocol in [Protocol::Udp, Protocol::Tcp] {
            let mut fast = Vec::new();
            if handler.answer_fast(raw, protocol, &mut fast) {
                let general = futures::executor::block_on(answer_general(
                    handler,
                    raw.to_vec(),
                    src,
                    protocol,
                ))
                .unwrap_or_else(|| panic!("the general path drops {raw:?}"));
                assert_eq!(
                    normalized(&fast),
                    normalized(&general.bytes),
                    "the fast path differs from the general one on {raw:?}"
                );
            }
            let Some(a) = futures::executor::block_on(answer(handler, raw.to_vec(), src, protocol))
            else {
                continue;
            };
            let msg = Message::from_bytes(&a.bytes)
                .unwrap_or_else(|e| panic!("our answer does not decode: {e}: {:?}", a.bytes));
            assert_eq!(msg.metadata.message_type, MessageType::Response);
            assert_eq!(&a.bytes[..2], &raw[..2], "the answer keeps the query's id");
            if protocol == Protocol::Udp {
                let edns = Request::from_bytes(raw.to_vec(), src, protocol)
                    .ok()
                    .and_then(|r| r.edns.as_ref().map(|e| e.max_payload()));
                let max = usize::from(max_size(protocol, edns, handler.resolver.udp_max()));
                assert!(a.bytes.len() <= max, "{} > {max}", a.bytes.len());
            }
        }
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

    fn ask(name: &str, qtype: RecordType, edns: Option<u8>) -> Vec<u8> {
        let mut q = Message::query();
        q.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        if let Some(v) = edns {
            let mut e = Edns::new();
            e.set_version(v);
            q.set_edns(e);
        }
        q.to_vec().unwrap()
    }

    fn run(h: &DnsHandler, raw: Vec<u8>) -> Option<Message> {
        let src = ([127, 0, 0, 1], 1000).into();
        futures::executor::block_on(answer(h, raw, src, Protocol::Udp))
            .map(|a| Message::from_bytes(&a.bytes).unwrap())
    }

    #[test]
    fn the_offline_world_answers_and_the_wire_rules_hold() {
        let hs = offline_handlers();
        let m = run(&hs.0, ask("web.backend.weft.", RecordType::A, None)).unwrap();
        assert_eq!(m.answers.len(), 1);
        let m = run(&hs.1, ask("api.", RecordType::AAAA, None)).unwrap();
        assert_eq!(m.answers.len(), 1);
        let m = run(&hs.1, ask("hidden.", RecordType::A, None)).unwrap();
        assert_ne!(m.metadata.response_code, ResponseCode::NoError);
        let m = run(&hs.0, ask("web.backend.weft.", RecordType::A, Some(1))).unwrap();
        // 16 decodes as BADSIG, its other name.
        assert_eq!(u16::from(m.metadata.response_code), 16, "BADVERS");
        assert!(m.answers.is_empty());
        let mut resp = ask("web.backend.weft.", RecordType::A, None);
        resp[2] |= 0x80;
        assert!(run(&hs.0, resp).is_none(), "a response gets no answer");
        assert!(run(&hs.0, vec![1, 2, 3]).is_none(), "less than a header");
        let mut bad = ask("web.backend.weft.", RecordType::A, None);
        bad[5] = 3; // three questions announced, one present
        let m = run(&hs.0, bad).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
        // The first fuzz find: a question whose name ends in a compression pointer into the
        // request's header.
        let pointer_in_question = [
            0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0, 0, 0,
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0x52, 0xcc, 0x7e, 0xc0, 0x02, 0x38, 0xaf, 0x00, 0x00,
            0x0c, 0x00, 0x01,
        ];
        for raw in [
            &b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01"[..],
            &[0; 12],
            &pointer_in_question,
        ] {
            check_offline(&hs, raw);
        }
    }

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
