//! The agent's one error type, and its one mapping to gRPC statuses.

use std::path::PathBuf;

use tonic::Status;
use weft_runtime::FieldViolation;

use crate::netns::NetnsError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    #[error("invalid argument")]
    Invalid(Vec<FieldViolation>),
    #[error("network namespace {path} does not exist")]
    NetnsNotFound { path: PathBuf },
    #[error("driver {driver} needs {feature}, which this kernel lacks")]
    Unsupported {
        driver: &'static str,
        feature: &'static str,
    },
    #[error("{what} is not implemented yet")]
    Unimplemented { what: String },
    #[error("link {name} exists and is not Weft's (alias {alias:?})")]
    NotOurs { name: String, alias: String },
    /// Macvlan, ipvlan: the network's parent interface is not on this host.
    #[error("parent interface {name:?} does not exist on this host")]
    NoParent { name: String },
    /// Macvlan, ipvlan without a parent named: the host has no default route to take it from.
    #[error("no parent interface given, and this host has no default route to take one from")]
    NoDefaultParent,
    /// Macvlan, ipvlan: the parent named is one of Weft's own links (a network's bridge, an
    /// endpoint's veth).
    #[error("parent interface {name:?} is Weft's own link ({alias}); name one of the host's")]
    ParentIsWefts { name: String, alias: String },
    /// Macvlan, ipvlan: the parent is an 802.1Q sub-interface (`eth0.50`) that is not there,
    /// and neither is the link the agent would make it on.
    #[error(
        "parent interface {name:?} does not exist on this host, nor does {base:?}, the link its 802.1Q VLAN would be made on"
    )]
    NoVlanBase { name: String, base: String },
    /// Overlay: no address of the tunnel's family on this host to be its VXLAN endpoint.
    #[error("no {family} underlay address on this host for the VXLAN tunnel endpoint")]
    NoUnderlay { family: &'static str },
    /// A link the agent just created or configured disappeared under it.
    #[error("link {name} vanished while being set up")]
    Vanished { name: String },
    #[error("namespace {path}: {source}")]
    Netns {
        path: PathBuf,
        #[source]
        source: NetnsError,
    },
    #[error("cannot write {path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("host port {mapping} is already published by endpoint {holder}")]
    PortTaken { mapping: String, holder: String },
    #[error("cannot apply the nftables ruleset: {message}")]
    Nft { message: String },
    #[error("cannot set sysctl {name}: {source}")]
    Sysctl {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot {op} {object}: {source}")]
    Netlink {
        op: &'static str,
        object: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("cannot list the host's links: {source}")]
    LinkDump {
        #[source]
        source: std::io::Error,
    },
}

impl AgentError {
    pub fn netlink(
        op: &'static str,
        object: impl Into<String>,
    ) -> impl FnOnce(rtnetlink::Error) -> Self {
        let object = object.into();
        move |source| Self::Netlink { op, object, source }
    }

    pub fn netns(path: &std::path::Path) -> impl FnOnce(NetnsError) -> Self {
        let path = path.to_owned();
        move |source| match source {
            NetnsError::NotFound { path } => Self::NetnsNotFound { path },
            source => Self::Netns { path, source },
        }
    }
}

impl From<AgentError> for Status {
    fn from(e: AgentError) -> Self {
        let msg = e.to_string();
        match e {
            AgentError::Invalid(v) => weft_runtime::invalid_argument(&v),
            AgentError::NetnsNotFound { .. } => Status::not_found(msg),
            AgentError::Unsupported { .. }
            | AgentError::NoParent { .. }
            | AgentError::NoDefaultParent
            | AgentError::NoVlanBase { .. }
            | AgentError::ParentIsWefts { .. }
            | AgentError::NoUnderlay { .. } => Status::failed_precondition(msg),
            AgentError::Unimplemented { .. } => Status::unimplemented(msg),
            AgentError::NotOurs { .. } | AgentError::PortTaken { .. } => {
                Status::already_exists(msg)
            }
            AgentError::Netns { .. }
            | AgentError::Netlink { .. }
            | AgentError::Vanished { .. }
            | AgentError::File { .. }
            | AgentError::Nft { .. }
            | AgentError::Sysctl { .. }
            | AgentError::LinkDump { .. } => weft_runtime::internal(&e),
        }
    }
}

/// The errno of a netlink error reply, if it is one.
pub fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(m.raw_code().abs()),
        _ => None,
    }
}
