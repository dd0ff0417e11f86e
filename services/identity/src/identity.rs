//! Who a certificate speaks for: `spiffe://weft/<kind>/<name>`, carried as the certificate's
//! only weft URI SAN.

use std::{fmt, str::FromStr};

/// The URI prefix of every weft identity.
pub const URI_PREFIX: &str = "spiffe://weft/";

/// The longest allowed name (a DNS label's limit).
pub const MAX_NAME_LEN: usize = 63;

/// What an identity is: a service, or a user with a role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Gateway,
    Ipam,
    Agent,
    Dns,
    Admin,
    Operator,
    Viewer,
}

impl Kind {
    /// Every kind, in declaration order.
    pub const ALL: [Kind; 7] = [
        Kind::Gateway,
        Kind::Ipam,
        Kind::Agent,
        Kind::Dns,
        Kind::Admin,
        Kind::Operator,
        Kind::Viewer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Gateway => "gateway",
            Kind::Ipam => "ipam",
            Kind::Agent => "agent",
            Kind::Dns => "dns",
            Kind::Admin => "admin",
            Kind::Operator => "operator",
            Kind::Viewer => "viewer",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, IdentityError> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| IdentityError::UnknownKind(s.to_owned()))
    }
}

/// A service or user identity. The name is validated on construction, so an `Identity` always
/// renders to a well-formed URI.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    pub kind: Kind,
    pub name: String,
}

/// An identity, kind or name that is not well formed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    #[error("invalid identity name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error(
        "unknown identity kind {0:?} (expected one of gateway, ipam, agent, dns, admin, operator, viewer)"
    )]
    UnknownKind(String),
    #[error("{uri:?} is not a weft identity URI (spiffe://weft/<kind>/<name>): {reason}")]
    NotWeftUri { uri: String, reason: &'static str },
}

impl Identity {
    /// An identity of `kind` named `name`, after checking the name (see [`validate_name`]).
    pub fn new(kind: Kind, name: impl Into<String>) -> Result<Self, IdentityError> {
        let name = name.into();
        validate_name(&name)?;
        Ok(Self { kind, name })
    }

    /// `spiffe://weft/<kind>/<name>`.
    pub fn uri(&self) -> String {
        format!("{URI_PREFIX}{}/{}", self.kind, self.name)
    }

    /// Parses `spiffe://weft/<kind>/<name>` exactly: no other trust domain, no extra path
    /// segment, query or fragment.
    pub fn from_uri(uri: &str) -> Result<Self, IdentityError> {
        let bad = |reason| IdentityError::NotWeftUri {
            uri: uri.to_owned(),
            reason,
        };
        let rest = uri
            .strip_prefix(URI_PREFIX)
            .ok_or_else(|| bad("it does not start with spiffe://weft/"))?;
        let (kind, name) = rest
            .split_once('/')
            .ok_or_else(|| bad("it has no name after the kind"))?;
        let kind = kind.parse::<Kind>()?;
        Identity::new(kind, name)
    }

    /// Whether this identity is a service's (not a user's).
    pub fn is_service(&self) -> bool {
        matches!(
            self.kind,
            Kind::Gateway | Kind::Ipam | Kind::Agent | Kind::Dns
        )
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{URI_PREFIX}{}/{}", self.kind, self.name)
    }
}

impl FromStr for Identity {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, IdentityError> {
        Identity::from_uri(s)
    }
}

/// Checks a name: 1 to 63 characters of `a-z`, `0-9`, `.` and `-`, starting and ending with a
/// letter or digit (a lower-case host name). Anything else could smuggle a second path segment
/// or a look-alike into the URI, so it is refused.
pub fn validate_name(name: &str) -> Result<(), IdentityError> {
    let bad = |reason| {
        Err(IdentityError::InvalidName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("it is longer than 63 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        return bad("only lower-case letters a-z, digits, '.' and '-' are allowed");
    }
    let edge = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !edge(name.bytes().next()) || !edge(name.bytes().last()) {
        return bad("it must start and end with a lower-case letter or a digit");
    }
    Ok(())
}

/// Why a certificate does not name exactly one weft identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertIdentityError {
    #[error("the certificate cannot be parsed")]
    Unparsable,
    #[error("the certificate carries no weft identity (URI SAN spiffe://weft/...)")]
    None,
    #[error("the certificate carries {0} weft identities; exactly one is allowed")]
    Several(usize),
    #[error(transparent)]
    Invalid(#[from] IdentityError),
}

/// The weft identity of a DER certificate: its only URI SAN that starts with `spiffe://weft/`.
/// Zero or several such SANs, or a malformed one, is an error: a certificate must not be able
/// to speak for two identities.
pub fn identity_of_cert(der: &[u8]) -> Result<Identity, CertIdentityError> {
    use x509_parser::extensions::GeneralName;

    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|_| CertIdentityError::Unparsable)?;
    let san = cert
        .subject_alternative_name()
        .map_err(|_| CertIdentityError::Unparsable)?;
    let weft: Vec<&str> = san
        .iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .filter_map(|n| match n {
            GeneralName::URI(uri) if uri.starts_with(URI_PREFIX) => Some(*uri),
            _ => None,
        })
        .collect();
    match weft.as_slice() {
        [] => Err(CertIdentityError::None),
        [uri] => Ok(Identity::from_uri(uri)?),
        several => Err(CertIdentityError::Several(several.len())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_names_are_accepted() {
        for name in [
            "a",
            "h1",
            "node-1.example",
            "0",
            "a-b",
            "a.b",
            &"x".repeat(63),
        ] {
            assert!(validate_name(name).is_ok(), "{name:?}");
        }
    }

    #[test]
    fn invalid_names_are_refused_with_a_reason() {
        let cases = [
            ("", "empty"),
            (&*"x".repeat(64), "longer than 63"),
            ("Host", "lower-case"),
            ("a_b", "lower-case"),
            ("a/b", "lower-case"),
            ("a b", "lower-case"),
            ("é", "lower-case"),
            ("-a", "start and end"),
            ("a-", "start and end"),
            (".a", "start and end"),
            ("a.", "start and end"),
            ("a\n", "lower-case"),
        ];
        for (name, reason) in cases {
            let err = validate_name(name).expect_err(name);
            assert!(err.to_string().contains(reason), "{name:?}: {err}");
        }
    }

    #[test]
    fn uri_round_trips_for_every_kind() {
        for kind in Kind::ALL {
            let id = Identity::new(kind, "h1").expect("valid");
            assert_eq!(id.uri(), format!("spiffe://weft/{}/h1", kind.as_str()));
            assert_eq!(id.to_string(), id.uri());
            assert_eq!(Identity::from_uri(&id.uri()), Ok(id.clone()));
            assert_eq!(kind.as_str().parse::<Kind>(), Ok(kind));
        }
    }

    #[test]
    fn malformed_uris_are_refused() {
        for uri in [
            "spiffe://other/gateway/g",
            "spiffe://weft/gateway",
            "spiffe://weft/gateway/",
            "spiffe://weft/gateway/g/extra",
            "spiffe://weft/king/g",
            "spiffe://weft/Gateway/g",
            "spiffe://weft/gateway/g?x=1",
            "https://weft/gateway/g",
            "SPIFFE://weft/gateway/g",
        ] {
            assert!(Identity::from_uri(uri).is_err(), "{uri}");
        }
    }

    #[test]
    fn unknown_kind_lists_the_known_ones() {
        let err = "root".parse::<Kind>().expect_err("unknown");
        assert!(err.to_string().contains("gateway, ipam"), "{err}");
    }
}
