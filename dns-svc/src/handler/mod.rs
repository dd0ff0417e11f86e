//! The request path of one DNS message, bytes in and bytes out, with no network: what every
//! listener ([`crate::listen`]) runs for each packet it gets, and what the fuzz oracle drives.
//!
//! [`DnsHandler`] answers for one listener (a sandbox's or the operator's). A packet goes to the
//! fast path first ([`DnsHandler::answer_fast`], in `fast.rs`: a plain A or AAAA query for a
//! Weft name, answered straight into a buffer), else to the general path ([`answer_general`]: hickory decodes, the resolver decides,
//! hickory encodes), which stays the reference for both.
//!
//! The wire rules live here: a packet shorter than a header, or a response (QR=1), gets no
//! answer at all (answering responses would make us a reflector); a packet that does not decode
//! (bad names, a second OPT record, counts that lie) gets FORMERR carrying only its header; the
//! rest goes to [`DnsHandler::respond`], which answers FORMERR to anything but one question,
//! BADVERS to EDNS versions above 0, and sizes UDP answers to 512 bytes or the EDNS size
//! (the sizes and the encoding: [`crate::wire`]).

mod fast;

use std::{net::SocketAddr, sync::Arc};

use hickory_proto::{
    op::{Edns, Header, MessageType, Metadata, OpCode, ResponseCode},
    rr::Name,
    serialize::binary::{BinDecodable, BinDecoder},
};
use hickory_server::{
    net::xfer::Protocol,
    server::Request,
    zone_handler::{MessageResponseBuilder, Queries},
};

use crate::{
    resolver::{Query, Resolver},
    wire::{self, Answer},
};

/// Answers the queries of one listener: a sandbox's, or the operator's (`sandbox_id` `None`).
#[derive(Debug, Clone)]
pub struct DnsHandler {
    pub(crate) resolver: Arc<Resolver>,
    pub(crate) sandbox_id: Option<Arc<str>>,
}

/// The whole request path: `raw` as it came off the socket from `src`, the answer to send back
/// (`None`: send nothing). The fast path ([`DnsHandler::answer_fast`]) first, then the general
/// one.
pub async fn answer(
    handler: &DnsHandler,
    raw: Vec<u8>,
    src: SocketAddr,
    protocol: Protocol,
) -> Option<Answer> {
    let started = crate::metrics::query_started();
    let mut bytes = Vec::with_capacity(512);
    let answer = if handler.answer_fast(&raw, protocol, &mut bytes) {
        Some(Answer {
            bytes,
            truncated: false,
        })
    } else {
        answer_general(handler, raw, src, protocol).await
    };
    crate::metrics::query_done(handler.sandbox_id.is_some(), started);
    answer
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
            Some(wire::encode(resp, 512))
        }
    }
}

impl DnsHandler {
    pub fn new(resolver: Arc<Resolver>, sandbox_id: Option<&str>) -> Self {
        Self {
            resolver,
            sandbox_id: sandbox_id.map(Arc::from),
        }
    }

    /// The encoded answer to a decoded request (see [`answer_general`] for what comes before).
    pub async fn respond(&self, request: &Request) -> Answer {
        let req_edns = request.edns.as_ref();
        let cap = self.resolver.udp_max();
        let edns = req_edns.map(|req| {
            let mut e = Edns::new();
            e.set_max_payload(wire::advertised_payload(req.max_payload(), cap));
            e.set_version(0);
            e
        });
        let max = wire::max_size(request.protocol(), req_edns.map(Edns::max_payload), cap);
        let Some(echo) = wire::echo_question(&request.queries) else {
            return wire::servfail(&request.metadata);
        };
        let error = match (request.metadata.op_code, request.queries.len()) {
            // RFC 6891 6.1.3: we speak EDNS version 0 only.
            _ if req_edns.is_some_and(|e| e.version() > 0) => Some(ResponseCode::BADVERS),
            (OpCode::Query, 1) => None,
            (OpCode::Query, _) => Some(ResponseCode::FormErr),
            _ => Some(ResponseCode::NotImp),
        };
        let answer = if let Some(code) = error {
            let builder = MessageResponseBuilder::new(&echo, edns.as_ref());
            wire::encode(builder.error_msg(&request.metadata, code), max)
        } else {
            self.resolve(request, &echo, edns.as_ref(), max).await
        };
        if answer.truncated {
            self.resolver
                .stats
                .total
                .truncated
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        answer
    }

    /// The answer to a well-formed request of one question, echoing `echo` and carrying `edns`,
    /// within `max` bytes.
    async fn resolve(
        &self,
        request: &Request,
        echo: &Queries,
        edns: Option<&Edns>,
        max: u16,
    ) -> Answer {
        let query = &request.queries.queries()[0];
        let name: Name = query.original().name().clone();
        let outcome = self
            .resolver
            .resolve(Query {
                sandbox_id: self.sandbox_id.as_deref(),
                name: &name,
                qtype: query.query_type(),
                local_only: false,
                tcp: request.protocol() == Protocol::Tcp,
            })
            .await;
        let mut md = Metadata::response_from_request(&request.metadata);
        md.authoritative = outcome.authoritative;
        md.recursion_available = self.sandbox_id.is_some();
        md.response_code = outcome.rcode;
        let full = wire::encode(
            MessageResponseBuilder::new(echo, edns).build(
                md,
                outcome.answers.iter(),
                outcome.authorities.iter(),
                std::iter::empty(),
                outcome.additionals.iter(),
            ),
            max,
        );
        if !full.truncated {
            return full;
        }
        // What does not fit is sent as the header, the question and our OPT record with TC
        // set, and no records: hickory cuts the sections where the size runs out and can leave
        // part of the OPT record behind (a message that does not parse cleanly), and a
        // truncated answer is only a signal to ask over TCP (RFC 2181 9, RFC 7766 5).
        md.truncation = true;
        wire::encode(
            MessageResponseBuilder::new(echo, edns).build(
                md,
                std::iter::empty(),
                std::iter::empty(),
                std::iter::empty(),
                std::iter::empty(),
            ),
            max,
        )
    }
}
