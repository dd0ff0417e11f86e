//! What the fuzz oracle (`services/fuzz-oracle`) drives, exactly as the gRPC handlers and the
//! sagas use it: the conversion of `weft.gateway.v1` requests into the domain's raw requests,
//! the `resolv.conf` and `hosts` renderers, and the translation into the agent's specs. Only
//! built with the `fuzzing` feature, which no production binary enables.

pub use crate::{
    desired::{agent_endpoint, agent_network, agent_sandbox},
    files::{DNS_ADDRESS, hosts, resolv_conf},
    from_pb::{network, sandbox, settings},
};
