//! weftctl's errors: each one becomes a single `weftctl: <message>` line on stderr and a
//! documented exit code.

use tonic::{Code, Status};
use tonic_types::StatusExt;

/// Exit codes (also listed in `weftctl --help`).
pub mod exit {
    pub const API: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const NOT_FOUND: i32 = 3;
    pub const UNAVAILABLE: i32 = 4;
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// Bad command-line input found after parsing (flags that do not fit together).
    #[error("{0}")]
    Usage(String),
    /// The API answered NOT_FOUND.
    #[error("{0}")]
    NotFound(String),
    /// The gateway, or a service behind it, cannot be reached.
    #[error("{0}")]
    Unavailable(String),
    /// Any other refusal or failure of the API, or of the command itself.
    #[error("{0}")]
    Api(String),
    /// Writing the output failed.
    #[error("cannot write the output: {0}")]
    Io(#[from] std::io::Error),
    /// A failure with its own exit code (`sandbox exec`: 126 cannot execute, 127 not found).
    #[error("{0}")]
    Exit(String, i32),
    /// Errors already printed one per line (several objects failed); exits with this code.
    #[error("")]
    Reported(i32),
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Usage(_) => exit::USAGE,
            Self::NotFound(_) => exit::NOT_FOUND,
            Self::Unavailable(_) => exit::UNAVAILABLE,
            Self::Api(_) | Self::Io(_) => exit::API,
            Self::Reported(code) | Self::Exit(_, code) => *code,
        }
    }
}

impl From<Status> for CliError {
    fn from(st: Status) -> Self {
        let msg = describe(&st);
        match st.code() {
            Code::NotFound => Self::NotFound(msg),
            Code::Unavailable => Self::Unavailable(msg),
            _ => Self::Api(msg),
        }
    }
}

/// One line for a gRPC status: its message, plus every `google.rpc.BadRequest` field violation
/// the message does not already name; the code's name when the message is empty. A status made
/// on this side from a transport failure says that the connection was lost, and why.
pub fn describe(st: &Status) -> String {
    let mut msg = with_cause(st);
    if let Some(bad) = st.get_error_details().bad_request() {
        let extra: Vec<String> = bad
            .field_violations
            .iter()
            .filter(|v| !msg.contains(&v.field))
            .map(|v| format!("{}: {}", v.field, v.description))
            .collect();
        if !extra.is_empty() {
            msg = format!("{msg} ({})", extra.join("; "));
        }
    }
    if st.code() == Code::Unavailable && std::error::Error::source(st).is_some() {
        msg = format!("lost the connection to the server ({msg})");
    }
    // One line: messages from the server are not supposed to hold newlines, but never print two.
    msg.replace('\n', " ")
}

/// The status message (or the code's name), followed by the causes of a status made on this
/// side from a transport failure, each said once.
pub fn with_cause(st: &Status) -> String {
    let mut msg = st.message().trim().to_owned();
    if msg.is_empty() {
        msg = format!("{:?}", st.code()).to_lowercase();
    }
    let mut source = std::error::Error::source(st);
    while let Some(s) = source {
        let text = s.to_string();
        if text != "transport error" && !msg.contains(&text) {
            msg = format!("{msg}: {text}");
        }
        source = s.source();
    }
    msg
}

/// The text of `e` and its causes, joined by ": " (skipping repeats).
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use tonic_types::ErrorDetails;

    use super::*;

    #[test]
    fn status_codes_map_to_exit_codes() {
        assert_eq!(CliError::from(Status::not_found("x")).exit_code(), 3);
        assert_eq!(CliError::from(Status::unavailable("x")).exit_code(), 4);
        assert_eq!(
            CliError::from(Status::failed_precondition("x")).exit_code(),
            1
        );
        assert_eq!(CliError::from(Status::invalid_argument("x")).exit_code(), 1);
        assert_eq!(CliError::from(Status::already_exists("x")).exit_code(), 1);
    }

    #[test]
    fn describe_adds_field_violations_not_in_the_message() {
        let mut d = ErrorDetails::new();
        d.add_bad_request_violation("ipam.configs[0].subnet", "\"10.0.0.0/33\": bad prefix");
        d.add_bad_request_violation("name", "\"x y\": bad name");
        let st = Status::with_error_details(
            Code::InvalidArgument,
            "invalid argument: name \"x y\": bad name",
            d,
        );
        assert_eq!(
            describe(&st),
            "invalid argument: name \"x y\": bad name (ipam.configs[0].subnet: \"10.0.0.0/33\": bad prefix)"
        );
    }

    #[test]
    fn describe_names_the_code_of_an_empty_message_and_keeps_one_line() {
        assert_eq!(describe(&Status::new(Code::Internal, "")), "internal");
        assert_eq!(describe(&Status::internal("a\nb")), "a b");
    }
}
