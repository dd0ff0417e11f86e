//! A host's TLS directory, made once and kept: `ca.crt` (0644), `ca.key` (0600) and a
//! `<kind>-<name>.crt`/`.key` pair per identity. A second run keeps every file that is still
//! good, so a restart keeps the same CA. Files are written to a temporary name, synced and
//! renamed, so a crash leaves either the old file or the new one, never half a key.

use std::{
    fs::{self, DirBuilder, File, OpenOptions, Permissions},
    io::{self, Write},
    os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use rcgen::{KeyPair, PublicKeyData};
use rustls::pki_types::{CertificateDer, pem::PemObject};

use super::{Ca, LeafOptions};
use crate::{
    Error, Identity,
    files::{TlsFiles, read_open},
    identity::{identity_of_cert, validate_name},
};

const DIR_MODE: u32 = 0o700;
const CERT_MODE: u32 = 0o644;
const KEY_MODE: u32 = 0o600;

/// What [`bootstrap`] laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bootstrapped {
    pub dir: PathBuf,
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    /// One entry per identity asked for, in the order given.
    pub services: Vec<(Identity, TlsFiles)>,
}

impl Bootstrapped {
    /// The files of `identity`, if it was asked for.
    pub fn files(&self, identity: &Identity) -> Option<&TlsFiles> {
        self.services
            .iter()
            .find(|(id, _)| id == identity)
            .map(|(_, f)| f)
    }
}

/// Lays out `dir` for a host named `host_name`: each identity's certificate is valid for the
/// names `host_name` and `localhost` and the addresses 127.0.0.1 and ::1, for a year.
pub fn bootstrap(
    dir: &Path,
    host_name: &str,
    identities: &[Identity],
) -> Result<Bootstrapped, Error> {
    validate_name(host_name)?;
    bootstrap_with(dir, identities, &LeafOptions::for_host(host_name))
}

/// [`bootstrap`] with the leaf certificates' names, addresses and validity given.
///
/// `dir` is created (0700) if missing. An existing `dir` must be a real directory (not a
/// symbolic link) owned by this user and closed to group and others. The CA is made only when
/// `ca.crt` is missing; an existing CA that is unusable (unreadable, expired, key not matching)
/// is an error, never silently replaced, because other hosts may trust it. A service
/// certificate is issued again when it is missing, unusable, not from this CA, for another
/// identity, or within the last third of its lifetime.
pub fn bootstrap_with(
    dir: &Path,
    identities: &[Identity],
    opts: &LeafOptions,
) -> Result<Bootstrapped, Error> {
    prepare_dir(dir)?;
    let ca_cert = dir.join("ca.crt");
    let ca_key = dir.join("ca.key");
    let ca = match read_nofollow(&ca_cert, CERT_MODE)? {
        None => {
            // No certificate means nothing was ever issued by a key that may be lying here
            // (a crash between the two writes): a fresh CA replaces it.
            let ca = Ca::generate()?;
            write_atomic(&ca_key, ca.key_pem().as_bytes(), KEY_MODE)?;
            write_atomic(&ca_cert, ca.cert_pem().as_bytes(), CERT_MODE)?;
            tracing::info!(dir = %dir.display(), "new CA created");
            ca
        }
        Some(cert_pem) => {
            let key_pem = read_nofollow(&ca_key, KEY_MODE)?.ok_or_else(|| {
                Error::Invalid(format!(
                    "{} exists but {} does not: restore the key, or remove both to make a new CA",
                    ca_cert.display(),
                    ca_key.display()
                ))
            })?;
            let ca = Ca::from_pem(&text(&cert_pem, &ca_cert)?, &text(&key_pem, &ca_key)?)
                .map_err(|e| Error::Invalid(format!("{}: {e}", ca_cert.display())))?;
            if let Some(reason) = unusable(ca.cert_pem().as_bytes(), |_, _| Ok(()))? {
                return Err(Error::Invalid(format!(
                    "{}: {reason}; remove ca.crt and ca.key to make a new CA",
                    ca_cert.display()
                )));
            }
            ca
        }
    };

    let ca_der = CertificateDer::from_pem_slice(ca.cert_pem().as_bytes())
        .map_err(|e| Error::Invalid(format!("CA certificate: {e}")))?;
    let (_, ca_x509) = x509_parser::parse_x509_certificate(&ca_der)
        .map_err(|e| Error::Invalid(format!("CA certificate: {e}")))?;

    let mut services = Vec::with_capacity(identities.len());
    for id in identities {
        let files = TlsFiles::in_dir(dir, id);
        let cert = read_nofollow(&files.cert, CERT_MODE)?;
        let key = read_nofollow(&files.key, KEY_MODE)?;
        let keep = match (&cert, &key) {
            (Some(cert), Some(key)) => {
                let reason = unusable(cert, |x509, der| {
                    if x509.verify_signature(Some(ca_x509.public_key())).is_err() {
                        return Err("it is not signed by this CA".to_owned());
                    }
                    match identity_of_cert(der) {
                        Ok(found) if found == *id => {}
                        Ok(found) => return Err(format!("it is for {found}")),
                        Err(e) => return Err(e.to_string()),
                    }
                    let key = text(key, &files.key)
                        .ok()
                        .and_then(|k| KeyPair::from_pem(&k).ok())
                        .ok_or("its key cannot be read")?;
                    if x509.public_key().subject_public_key.data.as_ref() != key.der_bytes() {
                        return Err("its key does not match it".to_owned());
                    }
                    names_all(x509, opts)
                })?;
                if let Some(reason) = &reason {
                    tracing::info!(identity = %id, %reason, "certificate issued again");
                }
                reason.is_none()
            }
            _ => false,
        };
        if !keep {
            let issued = ca.issue(id, opts)?;
            // Key first: a crash in between leaves a certificate that does not match its key,
            // which the next run notices and issues again.
            write_atomic(&files.key, issued.key_pem.as_bytes(), KEY_MODE)?;
            write_atomic(&files.cert, issued.cert_pem.as_bytes(), CERT_MODE)?;
        }
        services.push((id.clone(), files));
    }
    Ok(Bootstrapped {
        dir: dir.to_owned(),
        ca_cert,
        ca_key,
        services,
    })
}

/// Why a certificate should not be kept, if it should not: unparsable, outside its validity,
/// in the last third of its lifetime, or refused by `check`.
fn unusable(
    pem: &[u8],
    check: impl FnOnce(&x509_parser::certificate::X509Certificate<'_>, &[u8]) -> Result<(), String>,
) -> Result<Option<String>, Error> {
    let Ok(der) = CertificateDer::from_pem_slice(pem) else {
        return Ok(Some("it is not a PEM certificate".into()));
    };
    let Ok((_, x509)) = x509_parser::parse_x509_certificate(&der) else {
        return Ok(Some("it cannot be parsed".into()));
    };
    let validity = x509.validity();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs() as i64;
    let (start, end) = (
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    );
    if now < start {
        return Ok(Some("it is not valid yet".into()));
    }
    if now >= end {
        return Ok(Some("it has expired".into()));
    }
    if end - now < (end - start) / 3 {
        return Ok(Some("it is in the last third of its lifetime".into()));
    }
    Ok(check(&x509, &der).err())
}

/// Whether a certificate names every DNS name and address `opts` asks for (a host given a new
/// address gets a certificate for it).
fn names_all(
    x509: &x509_parser::certificate::X509Certificate<'_>,
    opts: &LeafOptions,
) -> Result<(), String> {
    use x509_parser::extensions::GeneralName;
    let san = x509.subject_alternative_name().map_err(|e| e.to_string())?;
    let names: Vec<&GeneralName<'_>> = san
        .iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .collect();
    for dns in &opts.dns_names {
        if !names
            .iter()
            .any(|n| matches!(n, GeneralName::DNSName(d) if d.eq_ignore_ascii_case(dns)))
        {
            return Err(format!("it does not name {dns}"));
        }
    }
    for ip in &opts.ip_addresses {
        let want: Vec<u8> = match ip {
            std::net::IpAddr::V4(v4) => v4.octets().to_vec(),
            std::net::IpAddr::V6(v6) => v6.octets().to_vec(),
        };
        if !names
            .iter()
            .any(|n| matches!(n, GeneralName::IPAddress(b) if *b == want.as_slice()))
        {
            return Err(format!("it does not name {ip}"));
        }
    }
    Ok(())
}

fn text(bytes: &[u8], path: &Path) -> Result<String, Error> {
    String::from_utf8(bytes.to_vec()).map_err(|_| Error::Pem {
        path: path.to_owned(),
        reason: "not UTF-8 text".into(),
    })
}

/// Creates `dir` (0700) if missing; refuses one that is a symbolic link, not a directory,
/// someone else's, or open to group or others.
fn prepare_dir(dir: &Path) -> Result<(), Error> {
    let unsafe_dir = |reason: String| Error::UnsafeDir {
        path: dir.to_owned(),
        reason,
    };
    match fs::symlink_metadata(dir) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
            .map_err(|source| Error::Write {
                path: dir.to_owned(),
                source,
            })?,
        Err(source) => {
            return Err(Error::Read {
                path: dir.to_owned(),
                source,
            });
        }
    }
    // Checked after creating too: someone may have put a link there in between.
    let meta = fs::symlink_metadata(dir).map_err(|source| Error::Read {
        path: dir.to_owned(),
        source,
    })?;
    if meta.file_type().is_symlink() {
        return Err(unsafe_dir("it is a symbolic link".into()));
    }
    if !meta.is_dir() {
        return Err(unsafe_dir("it is not a directory".into()));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(unsafe_dir(format!(
            "it is owned by uid {}, not by this user (uid {me})",
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(unsafe_dir(format!(
            "its mode {:o} lets group or others in; it must be 700",
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

fn nofollow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

/// The content of `path` (at most 1 MiB), `None` if it does not exist. A symbolic link is an
/// error (O_NOFOLLOW). The file's mode is set to `mode` if it differs.
fn read_nofollow(path: &Path, mode: u32) -> Result<Option<Vec<u8>>, Error> {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(nofollow())
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    let meta = file.metadata().map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })?;
    if !meta.is_file() {
        return Err(Error::Invalid(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    if meta.mode() & 0o7777 != mode {
        tracing::warn!(path = %path.display(), mode = format!("{:o}", meta.mode() & 0o7777), "file mode corrected to {mode:o}");
        file.set_permissions(Permissions::from_mode(mode))
            .map_err(|source| Error::Write {
                path: path.to_owned(),
                source,
            })?;
    }
    read_open(file, path).map(Some)
}

/// Writes `path` whole or not at all: a new temporary file in the same directory (created
/// exclusively, never through a link), synced, renamed over `path`, and the directory synced.
fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), Error> {
    let write_err = |source| Error::Write {
        path: path.to_owned(),
        source,
    };
    let dir = path
        .parent()
        .ok_or_else(|| write_err(io::Error::other("no parent directory")))?;
    let name = path
        .file_name()
        .ok_or_else(|| write_err(io::Error::other("no file name")))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    // A leftover of an earlier run that had the same process id.
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(nofollow())
            .open(&tmp)?;
        // The umask may have taken bits away from `mode`; the mode is meant exactly.
        file.set_permissions(Permissions::from_mode(mode))?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(write_err)
}
