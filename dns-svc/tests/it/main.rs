//! dns-svc's integration tests: one binary, a module per topic.
//!
//! Tests that need namespaces create their own (`wft-d-*`, deleted by a Drop guard) and talk
//! only to loopback addresses and to those namespaces: the gateway and the upstream resolvers
//! are fakes the tests run themselves.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod admin;
mod events;
mod fuzz;
mod fuzz_inputs;
mod gateway;
mod harness;
mod heavy;
mod lifecycle;
mod mtls;
mod operator;
mod sandbox;
