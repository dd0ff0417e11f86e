//! The request path with no gateway and no network: a fixed world of records
//! ([`offline_handlers`]) and the oracle the fuzz target, the fuzz inputs test and the
//! `fuzz_loop` example run every input through ([`check_offline`]).
//!
//! Only in test and fuzzing builds (`cfg(any(test, feature = "fuzzing"))`): the production
//! build has none of it. It sits above the handler ([`crate::handler`]) and the records, and
//! nothing of the service uses it.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use hickory_proto::{
    op::{Message, MessageType},
    serialize::binary::BinDecodable as _,
};
use hickory_server::{net::xfer::Protocol, server::Request};
use weft_proto::gateway::v1::{self as gw, EventKind, event::Object};

use crate::{
    fixture,
    forward::Forwarder,
    handler::{DnsHandler, answer, answer_general},
    records::{Snapshot, State},
    resolver::Resolver,
    sockets::SocketSource,
    wire::max_size,
};

/// A fixed world for driving the request path with no gateway and no network (the fuzz target
/// and the tests use it): networks `backend` and `secret` (internal), sandboxes `client` and
/// `web` on `backend` (`web` with alias `api`, IPv4 and IPv6), `hidden` on `secret`, and no
/// upstreams, so nothing is ever forwarded. Returns the operator handler (zone `weft.`) and
/// the handler of `client`'s sandbox listener.
pub fn offline_handlers() -> (DnsHandler, DnsHandler) {
    let snapshot = Arc::new(ArcSwap::from_pointee(Snapshot::build(
        &offline_state(),
        true,
    )));
    let resolver = Arc::new(Resolver::new(
        snapshot,
        Forwarder {
            timeout: Duration::from_millis(1),
            sockets: SocketSource::Setns,
        },
        Vec::new(),
        "weft",
    ));
    (
        DnsHandler::new(resolver.clone(), None),
        DnsHandler::new(resolver, Some("sclient")),
    )
}

/// The records of [`offline_handlers`]' world, one gateway revision per object.
fn offline_state() -> State {
    let sandbox = |id: &str, name: &str| gw::Sandbox {
        host: "offline".into(),
        ..fixture::sandbox(
            id,
            name,
            &format!("{name}-host"),
            &format!("{id}0000000000"),
        )
    };
    let mut events = vec![
        (
            EventKind::NetworkCreated,
            Object::Network(fixture::network(
                "nbackend",
                "backend",
                "10.89.1.0/24",
                false,
            )),
        ),
        (
            EventKind::NetworkCreated,
            Object::Network(fixture::network("nsecret", "secret", "10.89.2.0/24", true)),
        ),
    ];
    for (id, name) in [
        ("sclient", "client"),
        ("sweb", "web"),
        ("shidden", "hidden"),
    ] {
        events.push((
            EventKind::SandboxCreated,
            Object::Sandbox(sandbox(id, name)),
        ));
    }
    for e in [
        fixture::endpoint("e1", "nbackend", "sclient", "10.89.1.2/24", "", &[]),
        fixture::endpoint(
            "e2",
            "nbackend",
            "sweb",
            "10.89.1.3/24",
            "fd89:1::3/64",
            &["api"],
        ),
        fixture::endpoint("e3", "nsecret", "shidden", "10.89.2.5/24", "", &[]),
    ] {
        events.push((EventKind::EndpointConnected, Object::Endpoint(e)));
    }
    let mut state = State::default();
    let mut rev = 0;
    for (kind, object) in events {
        rev += 1;
        state.apply(&gw::Event {
            revision: rev,
            ..fixture::event(kind, object)
        });
    }
    state.revision = rev;
    state
}

/// Runs `raw` through the whole request path of both [`offline_handlers`], over UDP and TCP,
/// on the calling thread, and checks what must hold for any input: an answer is a decodable
/// response to the same id, within the size allowed; and when the fast path takes the input,
/// its answer is the general path's message (answers compared as a set: they rotate). Panics
/// otherwise (the fuzz target's oracle).
pub fn check_offline(handlers: &(DnsHandler, DnsHandler), raw: &[u8]) {
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
        op::{Edns, Query, ResponseCode},
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

    /// A query as the fast path's tests ask it: with or without an EDNS version 0 OPT record.
    fn query(name: &str, qtype: RecordType, edns: bool) -> Vec<u8> {
        ask(name, qtype, edns.then_some(0))
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
    fn the_answer_decodes_to_what_the_records_say() {
        let (operator, sandbox) = offline_handlers();
        let mut out = Vec::new();
        let raw = query("API.", RecordType::AAAA, true);
        assert!(sandbox.answer_fast(&raw, Protocol::Udp, &mut out));
        let m = Message::from_bytes(&out).unwrap();
        assert_eq!(
            m.metadata.id,
            Message::from_bytes(&raw).unwrap().metadata.id
        );
        assert!(m.metadata.authoritative && m.metadata.recursion_available);
        assert_eq!(m.answers.len(), 1);
        assert_eq!(m.answers[0].data.to_string(), "fd89:1::3");
        assert_eq!(m.answers[0].name.to_string(), "API.");
        assert_eq!(m.edns.unwrap().max_payload(), 512);

        let raw = query("nobody.backend.weft.", RecordType::A, false);
        assert!(operator.answer_fast(&raw, Protocol::Udp, &mut out));
        let m = Message::from_bytes(&out).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert!(!m.metadata.recursion_available);
        // Not Weft's: forwarding is the general path's.
        let raw = query("example.com.", RecordType::A, false);
        assert!(!sandbox.answer_fast(&raw, Protocol::Udp, &mut out));
    }
}
