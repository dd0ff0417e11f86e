//! Mutual TLS in tests: a throwaway CA with certificates written to files, the flags that give
//! them to a service, and the probes the access tests use (a call of any method with an empty
//! request, health over TLS, the certificate a server presents).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use tonic::{Code, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use weft_identity::{
    ClientTls, Identity, Kind, TlsFiles,
    pki::{Ca, IssuedCert, LeafOptions, Validity},
};

/// A CA and a temporary directory of certificates; removed on drop.
#[derive(Debug)]
pub struct TestPki {
    pub ca: Ca,
    pub dir: tempfile::TempDir,
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

impl TestPki {
    pub fn new() -> Self {
        let pki = Self {
            ca: Ca::generate().unwrap(),
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::write(pki.ca_path(), pki.ca.cert_pem()).unwrap();
        pki
    }

    /// This CA's certificate.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// A certificate of `kind`/`name` from this CA (valid for 127.0.0.1 and localhost, a year),
    /// written as `<label>.crt`/`.key`, trusting this CA.
    pub fn files(&self, label: &str, kind: Kind, name: &str) -> TlsFiles {
        self.files_with(label, kind, name, Validity::default())
    }

    /// [`TestPki::files`] with the given validity (tests make expired ones).
    pub fn files_with(&self, label: &str, kind: Kind, name: &str, validity: Validity) -> TlsFiles {
        let opts = LeafOptions {
            validity,
            ..LeafOptions::for_host("localhost")
        };
        let issued = self.ca.issue(&id(kind, name), &opts).unwrap();
        self.write(label, &issued)
    }

    /// `kind`/`name` issued by a CA of its own, but trusting this one (so that only the peer
    /// has a reason to refuse it).
    pub fn foreign(&self, label: &str, kind: Kind, name: &str) -> TlsFiles {
        let other = Ca::generate().unwrap();
        let issued = other
            .issue(&id(kind, name), &LeafOptions::for_host("localhost"))
            .unwrap();
        self.write(label, &issued)
    }

    /// Writes a certificate and its key (key first, each renamed into place, as a renewal
    /// does) next to this CA.
    pub fn write(&self, label: &str, issued: &IssuedCert) -> TlsFiles {
        let files = TlsFiles {
            cert: self.dir.path().join(format!("{label}.crt")),
            key: self.dir.path().join(format!("{label}.key")),
            ca: self.ca_path(),
        };
        replace(&files.key, &issued.key_pem);
        replace(&files.cert, &issued.cert_pem);
        files
    }
}

/// `identity` from the parts.
pub fn id(kind: Kind, name: &str) -> Identity {
    Identity::new(kind, name).unwrap()
}

/// A validity that ended yesterday.
pub fn expired() -> Validity {
    let now = SystemTime::now();
    Validity {
        not_before: now - Duration::from_secs(2 * 86400),
        not_after: now - Duration::from_secs(86400),
    }
}

fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The flags that give a service these files.
pub fn flags(files: &TlsFiles) -> Vec<String> {
    vec![
        "--tls-cert".into(),
        files.cert.display().to_string(),
        "--tls-key".into(),
        files.key.display().to_string(),
        "--tls-ca".into(),
        files.ca.display().to_string(),
    ]
}

/// A client without a certificate that trusts `ca` and expects a `kind` server.
pub fn anonymous(ca: &Path, kind: Kind) -> ClientTls {
    ClientTls::anonymous(ca.to_owned(), kind).unwrap()
}

/// A client with `files` that expects a `kind` server.
pub fn client(files: &TlsFiles, kind: Kind) -> ClientTls {
    ClientTls::new(files.clone(), kind).unwrap()
}

/// The server's overall health over TLS, or `None` when it cannot be reached.
pub async fn health(tls: &ClientTls, addr: SocketAddr) -> Option<ServingStatus> {
    let channel = tls.connect(&addr.to_string()).await.ok()?;
    let resp = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .ok()?;
    ServingStatus::try_from(resp.into_inner().status).ok()
}

/// Calls `path` (`/package.Service/Method`) with an empty request as a unary call; the code
/// of the answer (OK when it succeeded). An empty message is a valid encoding of every proto3
/// request, so any method can be called without its types; a server-streaming method's
/// refusal arrives the same way.
pub async fn call_empty(channel: Channel, path: &str) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(channel);
    if let Err(e) = grpc.ready().await {
        return tonic::Status::unavailable(e.to_string());
    }
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    let mut req = tonic::Request::new(());
    req.set_timeout(Duration::from_secs(10));
    match grpc.unary(req, path.parse().unwrap(), codec).await {
        Ok(_) => tonic::Status::ok(""),
        Err(status) => status,
    }
}

/// Every method of `service` (from the contracts' descriptors).
pub fn methods(service: &str) -> Vec<String> {
    let m = weft_runtime::access::methods_of(&[service], weft_proto::FILE_DESCRIPTOR_SET);
    assert!(!m.is_empty(), "{service} has no methods in the descriptors");
    m
}

/// Calls every method of `service` at `addr` over TLS without a client certificate: each
/// must be UNAUTHENTICATED, saying what it takes; health must be SERVING.
pub async fn assert_every_method_needs_a_certificate(
    addr: SocketAddr,
    ca: &Path,
    kind: Kind,
    service: &str,
) {
    let tls = anonymous(ca, kind);
    assert_eq!(
        health(&tls, addr).await,
        Some(ServingStatus::Serving),
        "health over TLS without a certificate"
    );
    let channel = tls.connect(&addr.to_string()).await.unwrap();
    for method in methods(service) {
        let st = call_empty(channel.clone(), &method).await;
        assert_eq!(st.code(), Code::Unauthenticated, "{method}: {st:?}");
        assert!(
            st.message().contains("certificate from the cluster's CA"),
            "{method}: {st:?}"
        );
    }
}

/// Whether the code says the access layer let the call through (whatever the handler made of
/// an empty request).
pub fn passed_access(code: Code) -> bool {
    !matches!(code, Code::Unauthenticated | Code::PermissionDenied)
}

/// Connects with `tls` and makes one call of `path`: the status, or the connection error
/// (a refused handshake) as text.
pub async fn try_call(tls: &ClientTls, addr: SocketAddr, path: &str) -> Result<Code, String> {
    let channel = tls
        .connect(&addr.to_string())
        .await
        .map_err(|e| e.to_string())?;
    let st = call_empty(channel, path).await;
    // A handshake the server refuses after the client's side is done (TLS 1.3) shows up as a
    // transport failure of the first call.
    if matches!(
        st.code(),
        Code::Unavailable | Code::Unknown | Code::Cancelled
    ) {
        return Err(weft_identity::client::error_chain(&st));
    }
    Ok(st.code())
}

/// A raw TLS connection to `addr` with `tls`, then a read: `Ok` once the server sends its
/// first bytes (HTTP/2 settings), else why not. In TLS 1.3 the server judges the client's
/// certificate after the client's side of the handshake is done, so only a read shows its
/// alert (`UnknownCA`, `CertificateExpired`) every time; a call may see just a closed
/// connection.
pub async fn handshake(tls: &ClientTls, addr: SocketAddr) -> Result<(), String> {
    use tokio::io::AsyncReadExt as _;
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut stream = tokio_rustls::TlsConnector::from(tls.config())
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 64];
    match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
        Ok(Ok(0)) => Err("closed by the server".into()),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer from the server".into()),
    }
}

/// The leaf certificate (DER) the server at `addr` presents to a new connection.
pub async fn server_certificate(addr: SocketAddr, ca: &Path, kind: Kind) -> Option<Vec<u8>> {
    let tls = anonymous(ca, kind);
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let stream = tokio_rustls::TlsConnector::from(tls.config())
        .connect(name, tcp)
        .await
        .ok()?;
    let cert = stream.get_ref().1.peer_certificates()?.first()?.to_vec();
    Some(cert)
}

/// The DER of a PEM certificate file.
pub fn der_of(path: &Path) -> Vec<u8> {
    use rustls::pki_types::{CertificateDer, pem::PemObject as _};
    CertificateDer::from_pem_file(path).unwrap().to_vec()
}
