//! The one mapping from domain errors to gRPC statuses that every service uses.
//!
//! Bad input becomes `INVALID_ARGUMENT` with `google.rpc.BadRequest` field violations and a
//! message naming each field and value; unexpected errors are logged with their cause and
//! returned as a generic `INTERNAL`, so internals never leak to callers.

use std::fmt;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// One offending field of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// The field path in the request, protobuf style (`configs[0].subnet`).
    pub field: String,
    /// The value as received.
    pub value: String,
    /// What is wrong with it, lowercase, no trailing punctuation.
    pub reason: String,
}

impl FieldViolation {
    pub fn new(
        field: impl Into<String>,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Self {
            field: field.into(),
            value: value.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for FieldViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}: {}", self.field, self.value, self.reason)
    }
}

/// `INVALID_ARGUMENT` naming every violation in the message and in `google.rpc.BadRequest`.
pub fn invalid_argument(violations: &[FieldViolation]) -> Status {
    let message = format!(
        "invalid argument: {}",
        violations
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    );
    let mut details = ErrorDetails::new();
    for v in violations {
        details.add_bad_request_violation(v.field.clone(), format!("{:?}: {}", v.value, v.reason));
    }
    Status::with_error_details(Code::InvalidArgument, message, details)
}

/// Logs `error` with its whole cause chain and returns a generic `INTERNAL`.
pub fn internal(error: &(dyn std::error::Error + 'static)) -> Status {
    let mut chain = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        chain.push_str(": ");
        chain.push_str(&s.to_string());
        source = s.source();
    }
    tracing::error!(error = %chain, "internal error");
    Status::internal("internal error")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_argument_names_fields_and_values_in_message_and_details() {
        let st = invalid_argument(&[
            FieldViolation::new("subnet", "10.0.0.0/33", "prefix length too long"),
            FieldViolation::new("gateway", "x", "not an IP address"),
        ]);
        assert_eq!(st.code(), Code::InvalidArgument);
        assert!(
            st.message().contains("subnet \"10.0.0.0/33\""),
            "{}",
            st.message()
        );
        assert!(st.message().contains("gateway \"x\""), "{}", st.message());
        let details = st.get_error_details();
        let bad = details.bad_request().expect("bad request details");
        assert_eq!(bad.field_violations.len(), 2);
        assert_eq!(bad.field_violations[0].field, "subnet");
        assert!(bad.field_violations[0].description.contains("10.0.0.0/33"));
    }

    #[test]
    fn internal_hides_the_cause() {
        let err = std::io::Error::other("disk on fire at /secret/path");
        let st = internal(&err);
        assert_eq!(st.code(), Code::Internal);
        assert!(!st.message().contains("secret"));
    }
}
