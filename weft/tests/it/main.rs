//! `weft`'s integration tests: the real binary, with the real service binaries next to it.
//!
//! The service binaries must be built in the same target directory as `weft` (`cargo build
//! --bins`; `cargo nextest run --workspace` builds every binary of the workspace).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod chaos;
mod heal;
mod helm;
mod join;
mod refusals;
mod systemd;
mod up;
mod world;

use std::path::PathBuf;

/// The `weft` binary under test.
pub const WEFT: &str = env!("CARGO_BIN_EXE_weft");

/// Where the service binaries are: next to `weft`.
pub fn bin_dir() -> PathBuf {
    weft_testkit::built_bins(PathBuf::from(WEFT).parent().unwrap().to_owned())
}

/// Polls `f` until it returns `Some`; panics naming what after `timeout`.
pub use weft_testkit::wait_until;

pub use weft_testkit::netns::TestNs;
