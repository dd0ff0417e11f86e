//! Mutual TLS between Weft services, with service and user identities in the certificates.
//!
//! # Identity
//! Every certificate names exactly one identity as a URI SAN, `spiffe://weft/<kind>/<name>`,
//! kind one of `gateway ipam agent dns admin operator viewer`, name 1–63 characters of
//! `[a-z0-9.-]` starting and ending with a letter or digit (a host name for agents and dns,
//! an instance name for gateway and ipam, a user name for the user roles). A certificate with
//! no weft URI SAN, several, or a malformed one, has no identity.
//!
//! # Pieces
//! - [`pki`][]: a CA (ECDSA P-256, 10 years) that issues leaves for an identity (server and
//!   client auth, optional DNS names and IP addresses, 1 year by default), signs CSRs for an
//!   identity the signer chooses, and [`pki::bootstrap`] that lays out a host's directory.
//! - [`server`][]: [`ServerTls`] (client certificates from the CA, required or
//!   [`ClientAuth::Optional`] for servers whose health and reflection stay open; ALPN h2; TLS 1.3)
//!   and [`incoming`], a stream of handshaken connections for tonic's
//!   `serve_with_incoming_shutdown`; [`peer_identity`] reads the caller's identity from a
//!   request's extensions (in a handler, an interceptor or any tower layer of the server).
//! - [`client`][]: [`ClientTls`], which presents this party's certificate and accepts only a
//!   server from the CA, valid for the address dialled, with an identity of the expected kind;
//!   it gives tonic channels. [`ClientTls::anonymous`] verifies the server the same way and
//!   presents no certificate (health checks).
//!
//! # Reload
//! Certificate, key and CA files are watched lazily: when a new connection is made or
//! accepted, and at most once a second, their inode, size and mtime are compared with the last
//! look. On a change all three are read again; a set that does not load (a half-written
//! renewal, a key that does not match the certificate) keeps the previous configuration and
//! logs a warning, and is tried again at the next change. Connections already open keep the
//! certificates they were made with. Files should be replaced by rename, key first.
//!
//! # Limits
//! PEM files are read up to 1 MiB ([`files::MAX_PEM_BYTES`]). A server runs at most
//! [`server::MAX_HANDSHAKES`] handshakes at once, each within [`server::HANDSHAKE_TIMEOUT`].
//! Only the ring crypto provider is used. There is no revocation: a certificate is good until
//! it expires, so keep leaf validity short where that matters.

pub mod client;
mod crypto;
mod error;
pub mod files;
mod identity;
pub mod pki;
mod reload;
pub mod server;

pub use client::ClientTls;
pub use error::Error;
pub use files::TlsFiles;
pub use identity::{
    CertIdentityError, Identity, IdentityError, Kind, URI_PREFIX, identity_of_cert, validate_name,
};
pub use pki::issued_at_of_cert;
pub use reload::CHECK_INTERVAL;
pub use server::{
    ClientAuth, ServerTls, TlsIncoming, incoming, peer_identity, peer_issued_at, request_identity,
};
