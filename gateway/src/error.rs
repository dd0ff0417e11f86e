//! The gateway's one error type and its one mapping to gRPC statuses.

use tonic::{Code, Status};
use weft_runtime::FieldViolation;

use crate::store::GatewayStoreError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    #[error("invalid argument")]
    Invalid(Vec<FieldViolation>),
    #[error("network {0:?} not found")]
    NetworkNotFound(String),
    #[error("network name {0:?} is already taken")]
    NameTaken(String),
    #[error("sandbox {0:?} not found")]
    SandboxNotFound(String),
    #[error("host {0:?} is not registered")]
    HostNotFound(String),
    /// No free host port (or other resource) left.
    #[error("{0}")]
    Exhausted(String),
    /// A host port already published by another sandbox.
    #[error("{0}")]
    PortTaken(String),
    #[error("sandbox name {0:?} is already taken")]
    SandboxNameTaken(String),
    #[error("sandbox {sandbox:?} is already connected to network {network:?}")]
    AlreadyConnected { sandbox: String, network: String },
    #[error("sandbox {sandbox:?} is not connected to network {network:?}")]
    NotConnected { sandbox: String, network: String },
    /// An error from a host's driver-agent, passed on with its code (the step that failed) and
    /// the host it came from (a kernel that lacks a driver's feature is that host's).
    #[error("driver-agent of host {host:?}: {}", .status.message())]
    Agent { host: String, status: Status },
    #[error("{0}")]
    Precondition(String),
    #[error(
        "event revision {from} is no longer kept (oldest kept: {oldest}): list again, then watch from the list's revision"
    )]
    RevisionGone { from: u64, oldest: u64 },
    /// An error from ipam-svc, passed on with its code (the step that failed).
    #[error("ipam: {}", .0.message())]
    Ipam(Status),
    #[error("store: {0}")]
    Store(#[from] GatewayStoreError),
    /// A write of background work refused by its lease's fencing token: another replica took
    /// the lease over (see `leader`).
    #[error("refused by the fencing token: another gateway replica holds the lease {0:?} now")]
    Fenced(&'static str),
    /// Something else that is not there (a token).
    #[error("{0}")]
    NotFound(String),
    /// Something else that exists already (a token).
    #[error("{0}")]
    AlreadyExists(String),
    /// A credential that does not hold (a spent join token).
    #[error("{0}")]
    Unauthenticated(String),
    /// A credential that holds but not for this (a join token for another host).
    #[error("{0}")]
    Denied(String),
    #[error("{0}")]
    Internal(String),
    /// The same operation is running already (UNAVAILABLE: retry with the same request id).
    #[error("{0}")]
    Busy(String),
}

impl From<sqlx::Error> for GatewayError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(GatewayStoreError::Sql(e))
    }
}

impl GatewayError {
    /// The error of a call to `host`'s driver-agent.
    pub fn agent(host: &str) -> impl FnOnce(Status) -> Self {
        let host = host.to_owned();
        move |status| Self::Agent { host, status }
    }

    pub fn invalid(
        field: impl Into<String>,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Self::Invalid(vec![FieldViolation::new(field, value, reason)])
    }
}

impl From<GatewayError> for Status {
    fn from(e: GatewayError) -> Self {
        let msg = e.to_string();
        match e {
            GatewayError::Invalid(v) => weft_runtime::invalid_argument(&v),
            GatewayError::NetworkNotFound(_)
            | GatewayError::SandboxNotFound(_)
            | GatewayError::HostNotFound(_)
            | GatewayError::NotConnected { .. }
            | GatewayError::NotFound(_) => Status::not_found(msg),
            GatewayError::NameTaken(_)
            | GatewayError::SandboxNameTaken(_)
            | GatewayError::AlreadyConnected { .. }
            | GatewayError::PortTaken(_)
            | GatewayError::AlreadyExists(_) => Status::already_exists(msg),
            GatewayError::Exhausted(_) => Status::resource_exhausted(msg),
            GatewayError::Unauthenticated(_) => Status::unauthenticated(msg),
            GatewayError::Denied(_) => Status::permission_denied(msg),
            GatewayError::Precondition(_) => Status::failed_precondition(msg),
            GatewayError::RevisionGone { .. } => Status::out_of_range(msg),
            GatewayError::Busy(_) | GatewayError::Fenced(_) => Status::unavailable(msg),
            // IPAM's and the agent's own INVALID_ARGUMENT already name the field and value,
            // with details (the agent's: a netns_path it refuses).
            GatewayError::Ipam(st) | GatewayError::Agent { status: st, .. }
                if st.code() == Code::InvalidArgument =>
            {
                st
            }
            GatewayError::Ipam(st) | GatewayError::Agent { status: st, .. } => match st.code() {
                Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => {
                    tracing::warn!(error = %msg, "downstream unavailable");
                    Status::unavailable(msg)
                }
                Code::Internal => Status::internal(msg),
                code => Status::new(code, msg),
            },
            GatewayError::Store(GatewayStoreError::Sql(ref s)) if weft_store::is_unavailable(s) => {
                tracing::warn!(error = %s, "store unavailable");
                Status::unavailable("store unavailable")
            }
            GatewayError::Store(ref s) => weft_runtime::internal(s),
            GatewayError::Internal(_) => {
                tracing::error!(error = %msg, "internal error");
                Status::internal(msg)
            }
        }
    }
}
