//! Who a caller is and why one was turned away: the vocabulary of [`crate::access`] and
//! [`crate::limits`].

use std::fmt;

use tonic::{Code, Status};

/// What a caller may do. `Viewer` < `Operator` < `Admin` for people and tools; `Agent`, `Dns`
/// and `Gateway` are the services' own roles; `Join` is the holder of a one-time join token,
/// which may only ask for a new host's certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Viewer,
    Operator,
    Admin,
    Agent,
    Dns,
    Gateway,
    Join,
}

impl Role {
    pub const ALL: [Role; 7] = [
        Role::Viewer,
        Role::Operator,
        Role::Admin,
        Role::Agent,
        Role::Dns,
        Role::Gateway,
        Role::Join,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
            Role::Agent => "agent",
            Role::Dns => "dns",
            Role::Gateway => "gateway",
            Role::Join => "join",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!("unknown role {s:?} (viewer, operator, admin, agent, dns, gateway or join)")
            })
    }
}

/// Readers: every person role.
pub const READ: &[Role] = &[Role::Viewer, Role::Operator, Role::Admin];
/// Writers of networks, sandboxes and endpoints.
pub const WRITE: &[Role] = &[Role::Operator, Role::Admin];
/// Tokens, audit, host removal.
pub const ADMIN: &[Role] = &[Role::Admin];

/// How a caller proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    Token,
    Certificate,
}

/// An authenticated caller, put in the request's extensions for the handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's or the certificate's name (for the agent and dns roles: the host).
    pub name: String,
    pub role: Role,
    pub credential: Credential,
}

impl Principal {
    /// `role:name`, as audit records and events show the caller.
    pub fn label(&self) -> String {
        format!("{}:{}", self.role, self.name)
    }
}

/// Why a caller was turned away, as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: Code,
    pub message: String,
    /// When to try again (sent as `google.rpc.RetryInfo`).
    pub retry_after: Option<std::time::Duration>,
}

impl Refusal {
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self {
            code: Code::Unauthenticated,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn denied(message: impl Into<String>) -> Self {
        Self {
            code: Code::PermissionDenied,
            message: message.into(),
            retry_after: None,
        }
    }

    /// Over a limit: try again after `retry_after`.
    pub fn exhausted(message: impl Into<String>, retry_after: std::time::Duration) -> Self {
        Self {
            code: Code::ResourceExhausted,
            message: message.into(),
            retry_after: Some(retry_after),
        }
    }

    /// A request larger than its method takes ([`crate::size`]). Without a time to retry: the
    /// same request is refused every time, so none would help.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self {
            code: Code::ResourceExhausted,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn status(&self) -> Status {
        use tonic_types::StatusExt as _;
        match self.retry_after {
            Some(after) => Status::with_error_details(
                self.code,
                self.message.clone(),
                tonic_types::ErrorDetails::with_retry_info(Some(after)),
            ),
            None => Status::new(self.code, self.message.clone()),
        }
    }
}
