//! The service's errors, and their one mapping to gRPC statuses.

use std::net::SocketAddr;

use tonic::Status;
use weft_runtime::FieldViolation;

/// Errors of the admin API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DnsError {
    #[error("invalid argument")]
    Invalid(Vec<FieldViolation>),
    #[error("sandbox {0:?} is not on this host")]
    SandboxNotFound(String),
    #[error("sandbox {0:?} is an ambiguous id prefix")]
    AmbiguousSandbox(String),
    #[error("not yet synchronised with the gateway")]
    NotSynced,
}

impl DnsError {
    pub fn invalid(field: &str, value: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid(vec![FieldViolation::new(field, value, reason)])
    }
}

impl From<DnsError> for Status {
    fn from(e: DnsError) -> Self {
        let msg = e.to_string();
        match e {
            DnsError::Invalid(v) => weft_runtime::invalid_argument(&v),
            DnsError::AmbiguousSandbox(ref s) => {
                weft_runtime::invalid_argument(&[FieldViolation::new(
                    "sandbox",
                    s.clone(),
                    "ambiguous id prefix",
                )])
            }
            DnsError::SandboxNotFound(_) => Status::not_found(msg),
            DnsError::NotSynced => Status::unavailable(msg),
        }
    }
}

/// Why a DNS listener could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ListenError {
    #[error("cannot open network namespace {path}: {source}")]
    OpenNetns {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot enter network namespace {path}: {source}")]
    Setns {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot bind {proto} {addr}: {source}")]
    Bind {
        proto: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the namespace thread: {0}")]
    Thread(std::io::Error),
    #[error("{0}")]
    Broker(#[from] weft_runtime::broker::BrokerError),
}
