//! The PKI without the network: bootstrap's files and modes, idempotence and refusals; CSRs
//! signed only for the identity the signer expects; size limits on PEM files.

use std::{
    fs,
    os::unix::fs::{PermissionsExt, symlink},
    path::Path,
};

use rustls::pki_types::{CertificateDer, pem::PemObject};
use weft_identity::{
    Error, Kind, ServerTls, TlsFiles, identity_of_cert,
    pki::{self, Ca, Validity},
};

use crate::support::id;

fn mode(path: &Path) -> u32 {
    fs::metadata(path).expect("stat").permissions().mode() & 0o7777
}

fn identity_in(pem: &str) -> weft_identity::Identity {
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).expect("pem");
    identity_of_cert(&der).expect("identity")
}

fn services() -> Vec<weft_identity::Identity> {
    vec![
        id(Kind::Gateway, "gateway"),
        id(Kind::Ipam, "ipam"),
        id(Kind::Agent, "h1"),
        id(Kind::Dns, "h1"),
        id(Kind::Admin, "admin"),
    ]
}

#[test]
fn bootstrap_creates_a_private_directory_with_usable_files() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("tls");
    let out = pki::bootstrap(&dir, "h1", &services()).expect("bootstrap");

    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&out.ca_cert), 0o644);
    assert_eq!(mode(&out.ca_key), 0o600);
    assert_eq!(out.services.len(), 5);
    for (identity, files) in &out.services {
        assert_eq!(mode(&files.cert), 0o644, "{}", files.cert.display());
        assert_eq!(mode(&files.key), 0o600, "{}", files.key.display());
        assert_eq!(files, &TlsFiles::in_dir(&dir, identity));
        let pem = fs::read_to_string(&files.cert).expect("read");
        assert_eq!(&identity_in(&pem), identity);
        ServerTls::new(files.clone()).expect("the files make a server configuration");
    }
    assert!(dir.join("dns-h1.crt").exists() && dir.join("agent-h1.key").exists());
    // No temporary file left behind.
    let names: Vec<_> = fs::read_dir(&dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
}

#[test]
fn bootstrap_twice_keeps_the_same_ca_and_certificates() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("tls");
    let first = pki::bootstrap(&dir, "h1", &services()).expect("bootstrap");
    let read = |p: &Path| fs::read(p).expect("read");
    let ca = (read(&first.ca_cert), read(&first.ca_key));
    let certs: Vec<_> = first.services.iter().map(|(_, f)| read(&f.cert)).collect();

    let second = pki::bootstrap(&dir, "h1", &services()).expect("bootstrap again");
    assert_eq!((read(&second.ca_cert), read(&second.ca_key)), ca);
    let again: Vec<_> = second.services.iter().map(|(_, f)| read(&f.cert)).collect();
    assert_eq!(again, certs);
}

#[test]
fn bootstrap_issues_again_a_certificate_whose_key_is_gone() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("tls");
    let first = pki::bootstrap(&dir, "h1", &services()).expect("bootstrap");
    let gateway = first
        .files(&id(Kind::Gateway, "gateway"))
        .expect("gateway files")
        .clone();
    let ca_before = fs::read(&first.ca_cert).expect("read");
    let cert_before = fs::read(&gateway.cert).expect("read");
    fs::remove_file(&gateway.key).expect("remove");

    pki::bootstrap(&dir, "h1", &services()).expect("bootstrap again");
    assert_eq!(fs::read(&first.ca_cert).expect("read"), ca_before);
    assert_ne!(fs::read(&gateway.cert).expect("read"), cert_before);
    ServerTls::new(gateway).expect("the new pair matches");
}

#[test]
fn bootstrap_refuses_a_symlinked_directory() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let real = tmp.path().join("real");
    fs::create_dir(&real).expect("mkdir");
    fs::set_permissions(&real, fs::Permissions::from_mode(0o700)).expect("chmod");
    let link = tmp.path().join("link");
    symlink(&real, &link).expect("symlink");

    let err = pki::bootstrap(&link, "h1", &services()).expect_err("symlink must be refused");
    assert!(matches!(err, Error::UnsafeDir { .. }), "{err}");
    assert!(err.to_string().contains("symbolic link"), "{err}");
    assert_eq!(fs::read_dir(&real).expect("read dir").count(), 0);
}

#[test]
fn bootstrap_refuses_a_directory_open_to_others() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("tls");
    fs::create_dir(&dir).expect("mkdir");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod");

    let err = pki::bootstrap(&dir, "h1", &services()).expect_err("mode 755 must be refused");
    assert!(err.to_string().contains("755"), "{err}");
}

#[test]
fn bootstrap_refuses_a_symlinked_key() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("tls");
    pki::bootstrap(&dir, "h1", &services()).expect("bootstrap");
    let elsewhere = tmp.path().join("elsewhere.key");
    fs::write(&elsewhere, "not a key").expect("write");
    fs::remove_file(dir.join("ca.key")).expect("remove");
    symlink(&elsewhere, dir.join("ca.key")).expect("symlink");

    let err = pki::bootstrap(&dir, "h1", &services()).expect_err("symlinked key must be refused");
    assert!(err.to_string().contains("ca.key"), "{err}");
}

#[test]
fn signed_csr_carries_the_expected_identity() {
    let ca = Ca::generate().expect("CA");
    let agent = id(Kind::Agent, "h2");
    let (csr, _key) = pki::make_csr(&agent).expect("csr");
    let cert = ca
        .sign_csr(&csr, &agent, Validity::default())
        .expect("signed");
    assert_eq!(identity_in(&cert), agent);
}

#[test]
fn csr_for_another_identity_is_refused() {
    let ca = Ca::generate().expect("CA");
    let (csr, _key) = pki::make_csr(&id(Kind::Admin, "h2")).expect("csr");
    let err = ca
        .sign_csr(&csr, &id(Kind::Agent, "h2"), Validity::default())
        .expect_err("an agent join must not yield an admin certificate");
    assert!(matches!(err, Error::CsrIdentityMismatch { .. }), "{err}");
    assert!(
        err.to_string().contains("spiffe://weft/admin/h2")
            && err.to_string().contains("spiffe://weft/agent/h2"),
        "{err}"
    );
}

#[test]
fn garbage_csr_is_refused() {
    let ca = Ca::generate().expect("CA");
    let err = ca
        .sign_csr("not a csr", &id(Kind::Agent, "h2"), Validity::default())
        .expect_err("garbage");
    assert!(matches!(err, Error::Csr(_)), "{err}");
}

#[test]
fn oversized_pem_file_is_refused_naming_the_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let big = tmp.path().join("big.crt");
    fs::write(&big, vec![b'A'; 2 * 1024 * 1024]).expect("write");
    let files = TlsFiles {
        cert: big.clone(),
        key: big.clone(),
        ca: big,
    };
    let err = ServerTls::new(files).expect_err("too large");
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains("big.crt"), "{err}");
}

#[test]
fn missing_file_error_names_the_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let files = TlsFiles::in_dir(tmp.path(), &id(Kind::Gateway, "gateway"));
    let err = ServerTls::new(files).expect_err("missing");
    assert!(err.to_string().contains("ca.crt"), "{err}");
}

#[test]
fn the_issue_time_is_read_back_from_a_certificate() {
    let ca = weft_identity::pki::Ca::generate().unwrap();
    let before = std::time::SystemTime::now() - std::time::Duration::from_secs(1);
    let leaf = ca
        .issue(
            &id(weft_identity::Kind::Agent, "h1"),
            &weft_identity::pki::LeafOptions::for_host("h1"),
        )
        .unwrap();
    let after = std::time::SystemTime::now() + std::time::Duration::from_secs(1);
    let der = CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).unwrap();
    let at = weft_identity::issued_at_of_cert(&der).unwrap();
    assert!(before <= at && at <= after, "{at:?}");
    assert_eq!(weft_identity::issued_at_of_cert(b"not a certificate"), None);
}

#[test]
fn bootstrap_issues_again_a_certificate_that_lacks_a_new_address() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("tls");
    let gateway = [id(Kind::Gateway, "gateway")];
    let first = pki::bootstrap(&dir, "h1", &gateway).expect("bootstrap");
    let files = first.services[0].1.clone();
    let before = fs::read(&files.cert).expect("read");
    let mut opts = pki::LeafOptions::for_host("h1");
    opts.ip_addresses.push("192.0.2.9".parse().expect("ip"));
    pki::bootstrap_with(&dir, &gateway, &opts).expect("with the address");
    let after = fs::read(&files.cert).expect("read");
    assert_ne!(after, before, "issued again for the new address");
    // Kept from then on.
    pki::bootstrap_with(&dir, &gateway, &opts).expect("again");
    assert_eq!(fs::read(&files.cert).expect("read"), after);
}
