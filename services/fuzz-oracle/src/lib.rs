//! The fuzz oracle of the gateway's request validation and of everything it renders from an
//! accepted request: arbitrary bytes become a `CreateSandbox`, `CreateNetwork` or `Connect`
//! request ([`input`]), which goes through the same conversion and validation the gRPC
//! handlers run (`from_pb`, then `SandboxSpec`/`NetworkSpec`/`ConnectSpec::validate`).
//!
//! - Refused: every violation names a field of that request.
//! - Accepted: the records the sagas would make are built (the state-dependent steps
//!   mirrored in [`records`]), `resolv.conf` and `hosts` are rendered by the gateway's own
//!   renderers and read back ([`files`]): every nameserver, search domain, option, hostname,
//!   extra host and address comes back exactly, one per word or line, and nothing else does.
//!   The agent's specs are made by the gateway's own translation and must be accepted by the
//!   agent's own validation; the agent's nftables ruleset for them is read back ([`nft`]): each
//!   published port as asked, each bridge name exactly as given.
//!
//! Nothing may panic. A failed check panics with what went wrong, which is how the cargo-fuzz
//! target (`gateway/fuzz`), the bounded test and the `fuzz_requests` example see a failure.
//!
//! A crate of its own rather than a module of the gateway: the oracle needs the agent's
//! validation and firewall renderer, and the gateway must not link the agent (which already
//! depends on the gateway for its tests). The gateway exposes what is driven here only with its
//! `fuzzing` feature.

pub mod files;
pub mod input;
pub mod nft;
mod records;

use gateway::domain::{endpoint::ConnectSpec, network::NetworkSpec, sandbox::SandboxSpec};
use weft_runtime::FieldViolation;

pub use input::Input;

/// Which request an input became.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Request {
    CreateSandbox,
    CreateNetwork,
    Connect,
}

/// What became of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// Refused by validation, naming the field(s).
    Refused,
    /// Accepted, rendered and read back.
    Accepted,
    /// Accepted by validation, then refused by a step that depends on state (ports clashing
    /// within the request, an interface name used twice, a subnet IPAM refuses): the files and
    /// rules of the rest were still checked where they could be.
    RefusedLater,
}

/// Runs one input through the oracle; panics on any failed check.
pub fn check(data: &[u8]) -> (Request, Outcome) {
    let mut input = Input::new(data);
    match input.below(3) {
        0 => (Request::CreateSandbox, sandbox(input.create_sandbox())),
        1 => (Request::CreateNetwork, network(input.create_network())),
        _ => (Request::Connect, connect(input.connect())),
    }
}

const SANDBOX_FIELDS: &[&str] = &[
    "name",
    "container_id",
    "host",
    "netns_path",
    "hostname",
    "dns",
    "extra_hosts",
    "port_mappings",
    "networks",
    "network_mode",
    "labels",
];
const NETWORK_FIELDS: &[&str] = &[
    "name",
    "driver",
    "ipam",
    "enable_ipv4",
    "enable_ipv6",
    "internal",
    "attachable",
    "labels",
    "options",
    "dns_servers",
];
const CONNECT_FIELDS: &[&str] = &["sandbox", "network", "settings"];

/// A refusal names at least one field, each a field of the request.
fn named(violations: &[FieldViolation], fields: &[&str]) {
    assert!(!violations.is_empty(), "refused without a violation");
    for v in violations {
        let root = v.field.split(['.', '[']).next().unwrap_or_default();
        assert!(
            fields.contains(&root),
            "violation names no field of the request: {v:?}"
        );
        assert!(!v.reason.is_empty(), "violation without a reason: {v:?}");
    }
}

pub fn sandbox(req: weft_proto::gateway::v1::CreateSandboxRequest) -> Outcome {
    match SandboxSpec::validate(gateway::fuzzing::sandbox(req.clone())) {
        Err(v) => {
            named(&v, SANDBOX_FIELDS);
            Outcome::Refused
        }
        Ok(spec) => records::sandbox(&req, spec),
    }
}

pub fn network(req: weft_proto::gateway::v1::CreateNetworkRequest) -> Outcome {
    match NetworkSpec::validate(gateway::fuzzing::network(req)) {
        Err(v) => {
            named(&v, NETWORK_FIELDS);
            Outcome::Refused
        }
        Ok(spec) => records::network(spec),
    }
}

pub fn connect(req: weft_proto::gateway::v1::ConnectRequest) -> Outcome {
    let settings = gateway::fuzzing::settings(req.settings.clone());
    match ConnectSpec::validate(req.sandbox.clone(), req.network.clone(), settings) {
        Err(v) => {
            named(&v, CONNECT_FIELDS);
            Outcome::Refused
        }
        Ok(spec) => records::connect(&req, spec),
    }
}
