//! The crate's one error type. Each variant names the file, address or identity involved, so
//! that the message alone says what to fix.

use std::path::PathBuf;

use crate::{Identity, IdentityError};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is larger than {limit} bytes: not a certificate or key file")]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("{path}: {reason}")]
    Pem { path: PathBuf, reason: String },
    #[error("refusing to use {path}: {reason}")]
    UnsafeDir { path: PathBuf, reason: String },
    #[error("{0}")]
    Invalid(String),
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("invalid certificate signing request: {0}")]
    Csr(String),
    #[error(
        "the certificate signing request asks for {requested}, but only {expected} may be issued here"
    )]
    CsrIdentityMismatch {
        requested: String,
        expected: Identity,
    },
    #[error("TLS configuration from {cert} and {key}: {source}")]
    TlsConfig {
        cert: PathBuf,
        key: PathBuf,
        source: Box<rustls::Error>,
    },
    #[error("cannot build the certificate verifier for CA {ca}: {reason}")]
    Verifier { ca: PathBuf, reason: String },
    #[error("invalid server address {addr:?}: {reason}")]
    Address { addr: String, reason: String },
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
}
