//! Reading certificates, keys and CA bundles from PEM files, with a size limit and errors that
//! name the file; and the fingerprint that tells a reload whether a file changed.

use std::{
    fs,
    io::Read,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use rustls::{
    RootCertStore,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
};

use crate::{Error, Identity};

/// The largest PEM file read: a chain or bundle is a few KiB; anything near this is not one.
pub const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// Where one party's TLS material lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// This party's certificate (then any intermediates), PEM.
    pub cert: PathBuf,
    /// Its private key (PKCS#8, SEC1 or PKCS#1), PEM.
    pub key: PathBuf,
    /// The CA certificate(s) the peer must chain to, PEM.
    pub ca: PathBuf,
}

impl TlsFiles {
    /// The files [`crate::pki::bootstrap`] writes for `identity` in `dir`:
    /// `<kind>-<name>.crt`, `<kind>-<name>.key` and `ca.crt`.
    pub fn in_dir(dir: &Path, identity: &Identity) -> Self {
        Self {
            cert: dir.join(format!("{}-{}.crt", identity.kind, identity.name)),
            key: dir.join(format!("{}-{}.key", identity.kind, identity.name)),
            ca: dir.join("ca.crt"),
        }
    }

    /// A rustls error building a configuration from these files, as the crate's error.
    pub(crate) fn tls_config_error(&self) -> impl Fn(rustls::Error) -> Error + Copy + '_ {
        |source| Error::TlsConfig {
            cert: self.cert.clone(),
            key: self.key.clone(),
            source: Box::new(source),
        }
    }

    pub(crate) fn all(&self) -> Vec<PathBuf> {
        vec![self.cert.clone(), self.key.clone(), self.ca.clone()]
    }
}

/// Reads at most [`MAX_PEM_BYTES`] of `path`; a bigger file is an error, not a truncation.
pub fn read_limited(path: &Path) -> Result<Vec<u8>, Error> {
    let file = fs::File::open(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })?;
    read_open(file, path)
}

/// Reads at most [`MAX_PEM_BYTES`] of an open file.
pub(crate) fn read_open(file: fs::File, path: &Path) -> Result<Vec<u8>, Error> {
    let mut buf = Vec::new();
    // One byte more than allowed tells "exactly at the limit" from "over it", also for files
    // that grow while being read.
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
    if buf.len() as u64 > MAX_PEM_BYTES {
        return Err(Error::TooLarge {
            path: path.to_owned(),
            limit: MAX_PEM_BYTES,
        });
    }
    Ok(buf)
}

fn pem_error(path: &Path, reason: impl Into<String>) -> Error {
    Error::Pem {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// Every certificate in a PEM file (at least one).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let pem = read_limited(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(pem_error(path, "no CERTIFICATE block found"));
    }
    Ok(certs)
}

/// The private key in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    let pem = read_limited(path)?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| pem_error(path, format!("no usable private key: {e}")))
}

/// The CA certificates of a PEM bundle as trust anchors.
pub fn load_roots(path: &Path) -> Result<RootCertStore, Error> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots
            .add(cert)
            .map_err(|e| pem_error(path, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(roots)
}

/// What identifies a file's content cheaply: replaced (inode), rewritten (mtime) or resized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
}

/// `None` for a file that cannot be stat'ed (missing during a rename, say): that is a state
/// too, and its disappearance or return is a change.
pub(crate) fn fingerprint(path: &Path) -> Option<Fingerprint> {
    let m = fs::metadata(path).ok()?;
    Some(Fingerprint {
        dev: m.dev(),
        ino: m.ino(),
        size: m.size(),
        mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
    })
}
