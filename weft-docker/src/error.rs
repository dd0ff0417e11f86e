//! The plugin's one error type; every variant ends up as the protocol's `{"Err": "..."}`, its
//! text naming what failed and Weft's own message.

use tonic::Status;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PluginError {
    /// A request field Docker (or whoever reached the socket) sent is not acceptable.
    #[error("{field} {value:?}: {reason}")]
    Invalid {
        field: String,
        value: String,
        reason: String,
    },
    /// The request body is not the JSON of this call.
    #[error("malformed request body: {0}")]
    Body(String),
    #[error("no endpoint {0} on this host")]
    Unknown(String),
    #[error("no free address left in {0}")]
    Exhausted(String),
    #[error("not supported by the Weft plugin: {0}")]
    Unsupported(String),
    /// A call to the gateway failed: what was being done and Weft's message.
    #[error("{what}: {code:?}: {message}")]
    Gateway {
        what: String,
        code: tonic::Code,
        message: String,
    },
    #[error("{0}")]
    Unavailable(String),
}

impl PluginError {
    pub fn invalid(field: &str, value: &str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.to_owned(),
            value: value.chars().take(256).collect(),
            reason: reason.into(),
        }
    }

    /// `what` failed at the gateway with `st`.
    pub fn gateway(what: impl Into<String>, st: &Status) -> Self {
        Self::Gateway {
            what: what.into(),
            code: st.code(),
            message: st.message().to_owned(),
        }
    }
}
