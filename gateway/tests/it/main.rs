//! gateway integration tests: the real gateway over loopback gRPC, with a real ipam-svc, on
//! SQLite and on a real Postgres.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod access;
mod bad_input;
mod crash;
mod feed;
mod grpcurl;
mod harness;
mod host_removal;
mod hosts;
mod join;
mod leader;
mod limits;
mod mtls;
mod networks;
mod overlay;
mod replicas;
mod retries;
mod sandboxes;
mod scope;
mod sizes;
mod watch;
