//! A small PKI: one CA (ECDSA P-256, ten years) that issues leaf certificates naming a weft
//! identity, signs CSRs for an identity it chooses, and a `bootstrap` that lays out a host's
//! files once and keeps them on later runs.

mod bootstrap;

use std::{
    net::IpAddr,
    path::Path,
    time::{Duration, SystemTime},
};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
    SanType, SerialNumber,
};
use rustls::pki_types::{CertificateDer, pem::PemObject};

pub use bootstrap::{Bootstrapped, bootstrap, bootstrap_with};

use crate::{
    Error, Identity,
    identity::{URI_PREFIX, validate_name},
};

/// How long a CA made by [`Ca::generate`] is valid.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long a leaf certificate is valid unless told otherwise.
pub const DEFAULT_LEAF_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// Certificates start this long in the past, so that a peer whose clock is a little behind
/// does not see a certificate from the future.
pub const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// When a certificate is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl Validity {
    /// From [`BACKDATE`] ago until `duration` from now.
    pub fn for_duration(duration: Duration) -> Self {
        let now = SystemTime::now();
        Self {
            not_before: now - BACKDATE,
            not_after: now + duration,
        }
    }
}

impl Default for Validity {
    fn default() -> Self {
        Self::for_duration(DEFAULT_LEAF_VALIDITY)
    }
}

/// What a leaf certificate carries besides its identity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeafOptions {
    /// DNS names a client may dial this service by (e.g. `localhost`, the host name).
    pub dns_names: Vec<String>,
    /// Addresses a client may dial this service by (e.g. 127.0.0.1).
    pub ip_addresses: Vec<IpAddr>,
    pub validity: Validity,
}

impl LeafOptions {
    /// A service on `host`: dialled as `host`, `localhost`, 127.0.0.1 or ::1.
    pub fn for_host(host: &str) -> Self {
        Self {
            dns_names: vec![host.to_owned(), "localhost".to_owned()],
            ip_addresses: vec![
                IpAddr::from([127, 0, 0, 1]),
                IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
            ],
            validity: Validity::default(),
        }
    }
}

/// A certificate and its private key, both PEM. The key never reaches `Debug`.
#[derive(Clone)]
pub struct IssuedCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCert")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<secret>")
            .finish()
    }
}

/// The certificate authority: its certificate and signing key.
pub struct Ca {
    cert_pem: String,
    key: KeyPair,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

impl Ca {
    /// A new CA valid for [`CA_VALIDITY`].
    pub fn generate() -> Result<Self, Error> {
        Self::generate_with(Validity::for_duration(CA_VALIDITY))
    }

    /// A new CA with the given validity (tests make expired ones).
    pub fn generate_with(validity: Validity) -> Result<Self, Error> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        // A name of its own: verifiers find a certificate's issuer by name, and two CAs both
        // called "weft CA" would turn "unknown CA" into a baffling "bad signature".
        let mut tag = [0u8; 4];
        fill_random(&mut tag)?;
        let tag: String = tag.iter().map(|b| format!("{b:02x}")).collect();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("weft CA {tag}"));
        // Path length 0: this CA signs leaves only, never another CA.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = validity.not_before.into();
        params.not_after = validity.not_after.into();
        params.serial_number = Some(random_serial()?);
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            key,
        })
    }

    /// A CA from its PEM certificate and key; the key must belong to the certificate.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, Error> {
        let key = KeyPair::from_pem(key_pem)?;
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| Error::Invalid(format!("CA certificate: {e}")))?;
        // Refuse a mismatched pair now rather than issue certificates no one can verify.
        check_key_matches(&der, &key, "CA")?;
        let (_, cert) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| Error::Invalid(format!("CA certificate cannot be parsed: {e}")))?;
        if !cert.is_ca() {
            return Err(Error::Invalid(
                "the CA certificate is not a CA (basic constraints)".into(),
            ));
        }
        Ok(Self {
            cert_pem: cert_pem.to_owned(),
            key,
        })
    }

    /// A CA from its files (each at most [`crate::files::MAX_PEM_BYTES`]).
    pub fn load(cert: &Path, key: &Path) -> Result<Self, Error> {
        let cert_pem = crate::files::read_limited(cert)?;
        let key_pem = crate::files::read_limited(key)?;
        let text = |b: Vec<u8>, p: &Path| {
            String::from_utf8(b).map_err(|_| Error::Pem {
                path: p.to_owned(),
                reason: "not UTF-8 text".into(),
            })
        };
        Self::from_pem(&text(cert_pem, cert)?, &text(key_pem, key)?)
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's private key, PEM. Handle as a secret.
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// Issues a new key and certificate for `identity`, usable for both server and client
    /// authentication.
    pub fn issue(&self, identity: &Identity, opts: &LeafOptions) -> Result<IssuedCert, Error> {
        let key = KeyPair::generate()?;
        let cert_pem = self.sign_leaf(&key, identity, opts)?;
        Ok(IssuedCert {
            cert_pem,
            key_pem: key.serialize_pem(),
        })
    }

    /// Signs a CSR for `expected`, valid for `validity`. See [`Ca::sign_csr_with`].
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        expected: &Identity,
        validity: Validity,
    ) -> Result<String, Error> {
        self.sign_csr_with(
            csr_pem,
            expected,
            &LeafOptions {
                validity,
                ..LeafOptions::default()
            },
        )
    }

    /// Signs a CSR whose requested identity is `expected`; any other request is refused. The
    /// certificate is built from the CSR's public key and `expected` and `opts` alone: nothing
    /// else the requester asked for (names, addresses, usages, CA rights) is copied.
    pub fn sign_csr_with(
        &self,
        csr_pem: &str,
        expected: &Identity,
        opts: &LeafOptions,
    ) -> Result<String, Error> {
        // Parsing also checks the CSR's signature, i.e. that the requester holds the key.
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| Error::Csr(e.to_string()))?;
        let requested: Vec<&str> = csr
            .params
            .subject_alt_names
            .iter()
            .filter_map(|san| match san {
                SanType::URI(uri) if uri.as_str().starts_with(URI_PREFIX) => Some(uri.as_str()),
                _ => None,
            })
            .collect();
        let expected_uri = expected.uri();
        match requested.as_slice() {
            [uri] if *uri == expected_uri => {}
            other => {
                return Err(Error::CsrIdentityMismatch {
                    requested: if other.is_empty() {
                        "no weft identity".to_owned()
                    } else {
                        other.join(", ")
                    },
                    expected: expected.clone(),
                });
            }
        }
        self.sign_leaf(&csr.public_key, expected, opts)
    }

    fn sign_leaf(
        &self,
        public_key: &impl rcgen::PublicKeyData,
        identity: &Identity,
        opts: &LeafOptions,
    ) -> Result<String, Error> {
        let params = leaf_params(identity, opts)?;
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, &self.key)?;
        Ok(params.signed_by(public_key, &issuer)?.pem())
    }
}

fn leaf_params(identity: &Identity, opts: &LeafOptions) -> Result<CertificateParams, Error> {
    // The fields are public, so the name may not have been checked on the way in.
    validate_name(&identity.name)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, identity.name.as_str());
    params
        .distinguished_name
        .push(DnType::OrganizationalUnitName, identity.kind.as_str());
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // Every service both serves and calls others.
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.subject_alt_names = vec![SanType::URI(identity.uri().try_into()?)];
    for name in &opts.dns_names {
        params
            .subject_alt_names
            .push(SanType::DnsName(name.as_str().try_into()?));
    }
    params
        .subject_alt_names
        .extend(opts.ip_addresses.iter().copied().map(SanType::IpAddress));
    params.not_before = opts.validity.not_before.into();
    params.not_after = opts.validity.not_after.into();
    // A fresh random serial for every issue: a renewal is told apart from its predecessor by
    // it, whatever rcgen's default would derive it from.
    params.serial_number = Some(random_serial()?);
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// A CSR for `identity` and its new private key: `(csr_pem, key_pem)`. The key stays with the
/// requester; only the CSR travels.
pub fn make_csr(identity: &Identity) -> Result<(String, String), Error> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, identity.name.as_str());
    params.subject_alt_names = vec![SanType::URI(identity.uri().try_into()?)];
    let csr = params.serialize_request(&key)?;
    Ok((csr.pem()?, key.serialize_pem()))
}

/// A certificate's `notBefore` plus [`BACKDATE`]: when this PKI issued it.
/// `None` when it does not parse.
pub fn issued_at_of_cert(der: &[u8]) -> Option<std::time::SystemTime> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let secs = u64::try_from(cert.validity().not_before.timestamp()).ok()?;
    Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs) + BACKDATE)
}

/// The fingerprint of a CA certificate (the first in `cert_pem`): the SHA-256 of its DER, in
/// lower-case hex. A join token carries it, so that a joining host can tell the cluster's
/// gateway from any other server before it trusts anything else.
pub fn ca_fingerprint(cert_pem: &str) -> Result<String, Error> {
    use sha2::Digest as _;
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|e| Error::Invalid(format!("CA certificate: {e}")))?;
    Ok(sha2::Sha256::digest(der.as_ref())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// 16 random bytes, the top bit clear so that the serial stays a positive INTEGER.
fn random_serial() -> Result<SerialNumber, Error> {
    let mut bytes = [0u8; 16];
    fill_random(&mut bytes)?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x40; // never a leading zero byte, so the encoding is always 16 bytes
    Ok(SerialNumber::from_slice(&bytes))
}

fn fill_random(buf: &mut [u8]) -> Result<(), Error> {
    crate::crypto::provider()
        .secure_random
        .fill(buf)
        .map_err(|_| Error::Invalid("no secure random numbers".into()))
}

/// Whether `key` is the private half of the certificate's public key.
pub(crate) fn check_key_matches(cert_der: &[u8], key: &KeyPair, what: &str) -> Result<(), Error> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| Error::Invalid(format!("{what} certificate cannot be parsed: {e}")))?;
    if cert.public_key().subject_public_key.data.as_ref() != key.der_bytes() {
        return Err(Error::Invalid(format!(
            "the {what} key does not belong to the {what} certificate"
        )));
    }
    Ok(())
}
