//! The CNI error object: every failure of the plugin becomes one `{cniVersion, code, msg,
//! details}` on stdout and a non-zero exit, with the spec's codes (1-7, 11, 50, 51) and Weft's
//! own from 100.

use serde_json::{Value, json};
use tonic::{Code, Status};

/// The spec's error codes and Weft's own (100 and up).
pub mod code {
    /// The config's `cniVersion` is not one this plugin speaks.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// A field the plugin does not support (a runtimeConfig value it cannot honour).
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// CHECK or DEL for a container Weft has no sandbox for.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// A missing or malformed `CNI_*` variable.
    pub const INVALID_ENV: u32 = 4;
    /// Reading stdin, a token file or the kernel failed.
    pub const IO: u32 = 5;
    /// stdin is not JSON of the expected shape.
    pub const DECODE: u32 = 6;
    /// A config value that is refused (bad network name, gateway address, …).
    pub const INVALID_CONFIG: u32 = 7;
    /// A transient failure: the gateway or a service behind it is unreachable.
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// STATUS: the plugin cannot serve ADD (the gateway is unreachable).
    pub const NOT_AVAILABLE: u32 = 50;
    /// STATUS: not available, and existing containers may be affected (the host's agent is down).
    pub const NOT_AVAILABLE_AFFECTED: u32 = 51;
    /// The gateway refused the request (its message says why).
    pub const REFUSED: u32 = 100;
    /// The gateway refused the credentials (`tokenFile`).
    pub const UNAUTHORISED: u32 = 101;
    /// The network has no free address (or no free host port).
    pub const EXHAUSTED: u32 = 102;
    /// ADD: `CNI_IFNAME` already exists in the container's namespace.
    pub const INTERFACE_EXISTS: u32 = 103;
    /// CHECK: the kernel or Weft's record differs from `prevResult`.
    pub const CHECK_FAILED: u32 = 104;
}

/// A failure, as the runtime will see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    #[must_use]
    pub fn details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// A gRPC status from the gateway while doing `what`.
    pub fn from_status(what: &str, st: &Status) -> Self {
        let code = match st.code() {
            Code::Unavailable | Code::DeadlineExceeded | Code::Aborted => code::TRY_AGAIN_LATER,
            Code::Unauthenticated | Code::PermissionDenied => code::UNAUTHORISED,
            Code::ResourceExhausted => code::EXHAUSTED,
            _ => code::REFUSED,
        };
        Self::new(code, format!("{what}: {}", weftctl::error::describe(st)))
    }

    /// The error object the spec defines, for a config of `cni_version` (the plugin's newest
    /// when the config could not be read).
    pub fn to_json(&self, cni_version: &str) -> Value {
        let mut v = json!({
            "cniVersion": cni_version,
            "code": self.code,
            "msg": self.msg,
        });
        if !self.details.is_empty() {
            v["details"] = Value::String(self.details.clone());
        }
        v
    }
}

impl std::fmt::Display for CniError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (code {})", self.msg, self.code)
    }
}

impl std::error::Error for CniError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_statuses_map_to_cni_codes() {
        let c = |st: Status| CniError::from_status("x", &st).code;
        assert_eq!(c(Status::unavailable("down")), code::TRY_AGAIN_LATER);
        assert_eq!(c(Status::unauthenticated("no")), code::UNAUTHORISED);
        assert_eq!(c(Status::resource_exhausted("full")), code::EXHAUSTED);
        assert_eq!(c(Status::invalid_argument("bad")), code::REFUSED);
    }

    #[test]
    fn the_error_object_has_the_spec_keys() {
        let e = CniError::new(code::INVALID_ENV, "CNI_IFNAME is missing").details("set it");
        assert_eq!(
            e.to_json("1.0.0"),
            json!({"cniVersion": "1.0.0", "code": 4, "msg": "CNI_IFNAME is missing", "details": "set it"})
        );
    }
}
