//! weftctl against a real gateway and ipam-svc (in process, SQLite) with a fake driver-agent:
//! the built binary is run as users run it, and its output and exit codes are checked.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod errors;
mod events;
mod exec;
mod harness;
mod networks;
mod pages;
mod sandboxes;
