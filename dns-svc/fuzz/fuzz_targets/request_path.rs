//! The request path of dns-svc, message parse → resolve → encode, with no network: any bytes a
//! client may send, to the operator listener and to a sandbox listener, over UDP and TCP.
//! `dns_svc::offline::check_offline` panics when an answer is not a decodable response with the
//! query's id within the allowed size.
#![no_main]

use std::sync::OnceLock;

use dns_svc::handler::DnsHandler;
use libfuzzer_sys::fuzz_target;

static HANDLERS: OnceLock<(DnsHandler, DnsHandler)> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let handlers = HANDLERS.get_or_init(dns_svc::offline::offline_handlers);
    dns_svc::offline::check_offline(handlers, data);
});
