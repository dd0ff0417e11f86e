//! How a service's listener is protected: mutual TLS with the service's own certificate, or
//! plaintext (only where a flag or a loopback address allows it; see
//! [`crate::CommonArgs::internal_transport`]).

use weft_identity::TlsFiles;

/// What a listener serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// Mutual TLS with these files; calls are checked against the service's access table.
    Tls(TlsFiles),
    /// Plaintext, with no access table (`--insecure-plaintext`).
    Plaintext,
}
