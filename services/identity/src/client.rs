//! The client side: a reloading rustls configuration that presents this party's certificate
//! and accepts a server only if it chains to the CA, is valid for the address dialled, and
//! carries a weft identity of the expected kind; and tonic channels dialled through it.

use std::{
    future::Future,
    io,
    path::{Path, PathBuf},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use hyper_util::rt::TokioIo;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, OtherError, SignatureScheme,
    client::{
        WebPkiServerVerifier,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    pki_types::{CertificateDer, ServerName, UnixTime},
};
use tokio::net::TcpStream;
use tokio_rustls::{TlsConnector, client::TlsStream};
use tonic::transport::{Channel, Endpoint, Uri};

use crate::{
    Error, Kind,
    files::{TlsFiles, load_certs, load_key, load_roots},
    identity::identity_of_cert,
    reload::Reloading,
};

/// How long dialling and the TLS handshake may take, unless the endpoint says otherwise.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The client's TLS configuration. Cheap to clone; clones share the reloads.
#[derive(Debug, Clone)]
pub struct ClientTls {
    config: Arc<Reloading<ClientConfig>>,
    expected: Kind,
    /// None: an anonymous client (only the CA).
    files: Option<TlsFiles>,
    ca: PathBuf,
}

impl ClientTls {
    /// Loads the files now (an error here is fatal to the caller); later changes to any of
    /// them are used by new connections. Servers must present a `expected_server` identity.
    pub fn new(files: TlsFiles, expected_server: Kind) -> Result<Self, Error> {
        let build = files.clone();
        let config = Reloading::new("client", files.all(), move || {
            client_config(&build.ca, Some(&build), expected_server)
        })?;
        Ok(Self {
            config: Arc::new(config),
            expected: expected_server,
            ca: files.ca.clone(),
            files: Some(files),
        })
    }

    /// A client that verifies the server as [`ClientTls::new`] does but presents no
    /// certificate: for health checks and probes of servers whose client certificate is
    /// optional (any other call is refused there as UNAUTHENTICATED).
    pub fn anonymous(ca: PathBuf, expected_server: Kind) -> Result<Self, Error> {
        let build = ca.clone();
        let config = Reloading::new("anonymous client", vec![ca.clone()], move || {
            client_config(&build, None, expected_server)
        })?;
        Ok(Self {
            config: Arc::new(config),
            expected: expected_server,
            files: None,
            ca,
        })
    }

    /// A client that knows only the CA's fingerprint ([`crate::pki::ca_fingerprint`], from a
    /// join token) and presents no certificate: the server must send, in its chain, a CA
    /// certificate with that fingerprint (this crate's servers do), and chain to it, be valid
    /// for the address dialled and carry an `expected_server` identity. Reads no file.
    pub fn pinned(ca_fingerprint: &str, expected_server: Kind) -> Result<Self, Error> {
        let pin = ca_fingerprint.to_ascii_lowercase();
        if pin.len() != 64 || !pin.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::Invalid(
                "a CA fingerprint is a SHA-256 in 64 hex digits".into(),
            ));
        }
        let config = Reloading::new("pinned client", Vec::new(), move || {
            Ok(pinned_config(&pin, expected_server))
        })?;
        Ok(Self {
            config: Arc::new(config),
            expected: expected_server,
            files: None,
            ca: PathBuf::new(),
        })
    }

    /// The configuration a new connection gets: reloaded first if the files changed.
    pub fn config(&self) -> Arc<ClientConfig> {
        self.config.current()
    }

    pub fn expected_server(&self) -> Kind {
        self.expected
    }

    /// This client's certificate, key and CA; `None` for an anonymous client.
    pub fn files(&self) -> Option<&TlsFiles> {
        self.files.as_ref()
    }

    /// The CA servers must chain to.
    pub fn ca(&self) -> &Path {
        &self.ca
    }

    /// An endpoint for `addr` (`https://HOST:PORT` or `HOST:PORT`) with a
    /// [`CONNECT_TIMEOUT`]; dial it with [`ClientTls::connector`]. The server is verified
    /// against HOST, a DNS name or an IP address.
    pub fn endpoint(&self, addr: &str) -> Result<Endpoint, Error> {
        let bad = |reason: &str| Error::Address {
            addr: addr.to_owned(),
            reason: reason.to_owned(),
        };
        let authority = match addr.split_once("://") {
            None => addr,
            Some(("https", rest)) => rest.trim_end_matches('/'),
            Some((scheme, _)) => {
                return Err(bad(&format!("scheme {scheme}:// is not https://")));
            }
        };
        let uri: Uri = format!("https://{authority}")
            .parse()
            .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
        if uri.port_u16().is_none() {
            return Err(bad("no port"));
        }
        if uri.path() != "/" || uri.query().is_some() {
            return Err(bad("only HOST:PORT is allowed, no path or query"));
        }
        // tonic refuses an https:// URI it has no TLS settings for; the TLS is ours, in the
        // connector, so tonic dials an http:// URI while requests still say https.
        let dial = Endpoint::from_shared(format!("http://{authority}"))
            .map_err(|e| bad(&e.to_string()))?;
        Ok(dial.origin(uri).connect_timeout(CONNECT_TIMEOUT))
    }

    /// The connector that dials TCP and runs the TLS handshake with the current files, for
    /// `Endpoint::connect_with_connector(_lazy)`.
    pub fn connector(&self) -> TlsConnectorService {
        TlsConnectorService {
            config: self.config.clone(),
        }
    }

    /// A channel to `addr`, connected now: a refused server certificate is an error here, with
    /// the reason (unknown CA, expired, wrong identity kind) in the message.
    pub async fn connect(&self, addr: &str) -> Result<Channel, Error> {
        self.endpoint(addr)?
            .connect_with_connector(self.connector())
            .await
            .map_err(|e| Error::Connect {
                addr: addr.to_owned(),
                reason: error_chain(&e),
            })
    }

    /// A channel to `addr` that connects on first use (and again after a failure, with the
    /// files in force then).
    pub fn connect_lazy(&self, addr: &str) -> Result<Channel, Error> {
        Ok(self
            .endpoint(addr)?
            .connect_with_connector_lazy(self.connector()))
    }
}

/// An error and its sources, joined with ": " (tonic's own message is only "transport
/// error"). A certificate refused by this crate's verifier shows its own message, which
/// rustls would print as a debug structure.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = String::new();
    let mut next = Some(error);
    while let Some(e) = next {
        let part = describe(e);
        if !msg.ends_with(&part) {
            if !msg.is_empty() {
                msg.push_str(": ");
            }
            msg.push_str(&part);
        }
        next = e.source();
    }
    msg
}

fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    // tokio-rustls wraps rustls errors in an io::Error, whose source() skips them.
    let tls = e.downcast_ref::<rustls::Error>().or_else(|| {
        e.downcast_ref::<io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    });
    match tls {
        Some(rustls::Error::InvalidCertificate(CertificateError::Other(other))) => {
            format!("invalid peer certificate: {}", other.0)
        }
        _ => e.to_string(),
    }
}

/// `own`: this party's certificate and key; `None` presents none.
fn client_config(ca: &Path, own: Option<&TlsFiles>, expected: Kind) -> Result<ClientConfig, Error> {
    let provider = crate::crypto::provider();
    let roots = Arc::new(load_roots(ca)?);
    let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| Error::Verifier {
            ca: ca.to_owned(),
            reason: e.to_string(),
        })?;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|source| Error::TlsConfig {
            cert: ca.to_owned(),
            key: ca.to_owned(),
            source: Box::new(source),
        })?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(IdentityVerifier { webpki, expected }));
    let mut config = match own {
        Some(files) => {
            let chain = load_certs(&files.cert)?;
            let key = load_key(&files.key)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(files.tls_config_error())?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

fn pinned_config(pin: &str, expected: Kind) -> ClientConfig {
    let provider = crate::crypto::provider();
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap_or_else(|_| unreachable!("the ring provider supports TLS 1.3"))
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedVerifier {
            pin: pin.to_owned(),
            expected,
            provider,
        }))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    config
}

/// [`IdentityVerifier`] with, for its CA, the certificate of the server's chain whose
/// fingerprint is the pin.
#[derive(Debug)]
struct PinnedVerifier {
    pin: String,
    expected: Kind,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        use sha2::Digest as _;
        let fingerprint = |c: &CertificateDer<'_>| -> String {
            sha2::Sha256::digest(c.as_ref())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        };
        let Some(ca) = intermediates.iter().find(|c| fingerprint(c) == self.pin) else {
            return Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(PinRefused)),
            )));
        };
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let webpki =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        IdentityVerifier {
            webpki,
            expected: self.expected,
        }
        .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A server whose chain holds no CA with the pinned fingerprint.
#[derive(Debug, thiserror::Error)]
#[error("the server's CA is not the one whose fingerprint the join token carries")]
struct PinRefused;

/// The standard WebPKI checks (chain to the CA, validity, the dialled name), then the weft
/// identity: a certificate the CA issued to a different kind of service is refused.
#[derive(Debug)]
struct IdentityVerifier {
    webpki: Arc<WebPkiServerVerifier>,
    expected: Kind,
}

/// Why a server certificate that chains to the CA is still refused.
#[derive(Debug, thiserror::Error)]
enum IdentityRefused {
    #[error("server presented {found}, expected a {expected} certificate")]
    WrongKind {
        found: crate::Identity,
        expected: Kind,
    },
    #[error("server certificate: {reason}, expected a {expected} certificate")]
    NoIdentity {
        reason: crate::identity::CertIdentityError,
        expected: Kind,
    },
}

impl ServerCertVerifier for IdentityVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The chain first: an identity in a certificate no one vouches for means nothing.
        self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        let refused = match identity_of_cert(end_entity) {
            Ok(id) if id.kind == self.expected => return Ok(ServerCertVerified::assertion()),
            Ok(found) => IdentityRefused::WrongKind {
                found,
                expected: self.expected,
            },
            Err(reason) => IdentityRefused::NoIdentity {
                reason,
                expected: self.expected,
            },
        };
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(
            OtherError(Arc::new(refused)),
        )))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// A tower service from `Uri` to a TLS connection, for tonic's `connect_with_connector`.
#[derive(Debug, Clone)]
pub struct TlsConnectorService {
    config: Arc<Reloading<ClientConfig>>,
}

type ConnectFuture =
    Pin<Box<dyn Future<Output = io::Result<TokioIo<TlsStream<TcpStream>>>> + Send>>;

impl tower::Service<Uri> for TlsConnectorService {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = ConnectFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let config = self.config.clone();
        Box::pin(async move {
            let invalid = |msg: String| io::Error::new(io::ErrorKind::InvalidInput, msg);
            let host = uri
                .host()
                .ok_or_else(|| invalid(format!("{uri}: no host")))?;
            // An IPv6 literal comes bracketed out of a URI.
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri
                .port_u16()
                .ok_or_else(|| invalid(format!("{uri}: no port")))?;
            let name = ServerName::try_from(host.clone())
                .map_err(|e| invalid(format!("{host}: not a DNS name or IP address: {e}")))?;
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let tls = TlsConnector::from(config.current())
                .connect(name, tcp)
                .await?;
            Ok(TokioIo::new(tls))
        })
    }
}
