//! The Docker plugin against the real thing: `weft up` in a namespace playing the host, a real
//! dockerd 20.10 in the same namespace (data and exec roots of the test's own,
//! `--iptables=false --bridge=none`), the plugin registered under a socket name of the test's
//! own, and the real `docker` CLI replaying Docker's networking overview.
//!
//! Needs root, Debian's `docker.io` and `busybox-static` (scripts/setup.sh installs them), and
//! the workspace's binaries built next to the plugin (`cargo build --workspace --bins`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod dockerd;
mod dualstack;
mod managed;
mod overview;
mod swarm;
mod sweep;
mod world;

use std::path::{Path, PathBuf};

/// The plugin under test.
pub const PLUGIN: &str = env!("CARGO_BIN_EXE_weft-docker-plugin");

/// Where the workspace's binaries are: next to the plugin.
pub fn bins() -> PathBuf {
    weft_testkit::built_bins(Path::new(PLUGIN).parent().unwrap().to_owned())
}

pub use weft_testkit::wait_until;
