//! Kernel tests of the agent: each test makes its own namespaces (one plays the host, others the
//! sandboxes), asserts with the kernel's own view (`ip -j`) and with real TCP traffic between
//! them, and deletes the namespaces when it ends, also when it fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bridge;
mod broker;
mod capabilities;
mod changes;
mod create_attached;
mod firewall;
mod grpc;
mod handoff;
mod ipv6_off;
mod ipvlan;
mod macvlan;
mod mtls;
mod namespaces;
mod netns_paths;
mod nfnl;
mod overlay;
mod sandbox;
mod support;
