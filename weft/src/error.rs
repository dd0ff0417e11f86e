//! Why `weft up` stopped, and its exit code.

use std::{path::PathBuf, time::Duration};

/// A reason `weft up` could not start or keep running the stack.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpError {
    #[error("{0}")]
    Invalid(String),
    /// Not privileged enough for the driver-agent; the text says how to fix it.
    #[error("{0}")]
    Privileges(String),
    /// The service user cannot be found, created or used.
    #[error("{0}")]
    User(String),
    #[error(
        "network namespace {name:?} does not exist ({path}): create it with `ip netns add {name}`"
    )]
    NoNetns { name: String, path: PathBuf },
    #[error("cannot bring up the loopback of network namespace {name:?}: {detail}")]
    Loopback { name: String, detail: String },
    #[error(
        "{service} not found at {path}: build it (`cargo build --bins`) or point --bin-dir at it"
    )]
    MissingBinary {
        service: &'static str,
        path: PathBuf,
    },
    #[error("cannot prepare {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start {service}: {source}")]
    Spawn {
        service: &'static str,
        source: std::io::Error,
    },
    #[error("cannot listen for signals: {0}")]
    Signals(std::io::Error),
    #[error(
        "{service} did not become healthy within {}; last lines of {log}:\n{tail}",
        humantime::format_duration(*timeout)
    )]
    Unhealthy {
        service: &'static str,
        timeout: Duration,
        log: PathBuf,
        tail: String,
    },
    #[error(
        "{service} keeps exiting: {exits} exits in a row without staying healthy for {} (the \
         last: {status}); gave up and stopped the other services; last lines of {log}:\n{tail}",
        humantime::format_duration(*stable)
    )]
    CrashLoop {
        service: &'static str,
        exits: u32,
        stable: Duration,
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error("stopped, but not cleanly: {0}")]
    UncleanStop(String),
    #[error("cannot join the cluster of {gateway}: {reason}")]
    Join { gateway: String, reason: String },
}

impl UpError {
    /// The process exit code: 64 for bad usage, 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Invalid(_) => 64,
            _ => 1,
        }
    }
}
