//! A throwaway PKI in a temporary directory, a real tonic health server behind `incoming` on
//! 127.0.0.1 that records who called, and the probes the tests use.

use std::{
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use rustls::pki_types::{CertificateDer, ServerName};
use tokio::{io::AsyncReadExt, net::TcpStream, sync::oneshot, task::JoinHandle};
use tonic::transport::{
    Channel, Server,
    server::{TcpConnectInfo, TlsConnectInfo},
};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use weft_identity::{
    Identity, Kind, ServerTls, TlsFiles,
    pki::{Ca, IssuedCert, LeafOptions, Validity},
};

pub fn id(kind: Kind, name: &str) -> Identity {
    Identity::new(kind, name).expect("valid test identity")
}

/// A CA and a temporary directory to write certificates in; removed on drop.
pub struct Pki {
    pub ca: Ca,
    pub dir: tempfile::TempDir,
}

impl Pki {
    pub fn new() -> Self {
        Self {
            ca: Ca::generate().expect("CA"),
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// A leaf valid for 127.0.0.1 and localhost.
    pub fn issue(&self, identity: &Identity) -> IssuedCert {
        self.issue_with(identity, Validity::default())
    }

    pub fn issue_with(&self, identity: &Identity, validity: Validity) -> IssuedCert {
        let opts = LeafOptions {
            validity,
            ..LeafOptions::for_host("testhost")
        };
        self.ca.issue(identity, &opts).expect("issue")
    }

    /// Writes `cert` under `label` with the CA certificate `trusted_ca_pem` next to it.
    pub fn write(&self, label: &str, cert: &IssuedCert, trusted_ca_pem: &str) -> TlsFiles {
        let files = TlsFiles {
            cert: self.path(&format!("{label}.crt")),
            key: self.path(&format!("{label}.key")),
            ca: self.path(&format!("{label}-ca.crt")),
        };
        replace(&files.key, &cert.key_pem);
        replace(&files.cert, &cert.cert_pem);
        replace(&files.ca, trusted_ca_pem);
        files
    }

    /// `identity`'s files from this CA, trusting this CA.
    pub fn files(&self, label: &str, identity: &Identity) -> TlsFiles {
        let cert = self.issue(identity);
        self.write(label, &cert, self.ca.cert_pem())
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Replaces a file the way a renewal should: a new file renamed over the old one.
pub fn replace(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, contents).expect("write");
    fs::rename(&tmp, path).expect("rename");
}

/// A certificate that expired yesterday.
pub fn expired() -> Validity {
    let now = SystemTime::now();
    Validity {
        not_before: now - Duration::from_secs(2 * 86400),
        not_after: now - Duration::from_secs(86400),
    }
}

/// What the server saw of one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub identity: Option<Identity>,
    pub serial: Option<Vec<u8>>,
}

/// The health service behind a tower layer that records `peer_identity` from the
/// `http::Request` extensions, served through `incoming`.
pub struct TestServer {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
}

impl TestServer {
    pub async fn start(tls: ServerTls) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let layer =
            tower::util::MapRequestLayer::new(move |req: http::Request<tonic::body::Body>| {
                let ext = req.extensions();
                let serial = ext
                    .get::<TlsConnectInfo<TcpConnectInfo>>()
                    .and_then(|i| i.peer_certs())
                    .and_then(|c| c.first().map(serial_of));
                record.lock().expect("lock").push(Seen {
                    identity: weft_identity::peer_identity(ext),
                    serial,
                });
                req
            });
        let (_reporter, health) = tonic_health::server::health_reporter();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(
            Server::builder()
                .layer(layer)
                .add_service(health)
                .serve_with_incoming_shutdown(weft_identity::incoming(listener, tls), async {
                    let _ = stopped.await;
                }),
        );
        Self {
            addr,
            seen,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task").expect("server");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// One health check over `channel`; the error with all its sources.
pub async fn check(channel: Channel) -> Result<(), String> {
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map(|_| ())
        .map_err(|status| weft_identity::client::error_chain(&status))
}

/// The serial number of a DER certificate.
pub fn serial_of(der: &CertificateDer<'_>) -> Vec<u8> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).expect("certificate");
    cert.raw_serial().to_vec()
}

pub fn serial_of_pem(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    serial_of(&CertificateDer::from_pem_slice(pem.as_bytes()).expect("pem"))
}

/// A raw TLS connection with `config` to 127.0.0.1 at `addr`: the server's leaf serial once
/// the server has sent its first bytes (HTTP/2 settings), or why it failed. In TLS 1.3 the
/// server judges the client's certificate after the client's handshake is done, so only a
/// read tells whether the server accepted it.
pub async fn probe(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> Result<Vec<u8>, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from("127.0.0.1").expect("name");
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let serial = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first().map(serial_of))
        .ok_or("no server certificate")?;
    let mut buf = [0u8; 64];
    match tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf)).await {
        Ok(Ok(0)) => Err("closed by the server".into()),
        Ok(Ok(_)) => Ok(serial),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer from the server".into()),
    }
}

/// Waits until `f` returns `Some`, for at most 15 s.
pub async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
