//! The server side: a reloading rustls configuration that requires (or, for services whose
//! health must stay open, allows) a client certificate from the CA, a stream of accepted TLS connections for tonic's `serve_with_incoming_shutdown`, and
//! the verified identity of the peer inside a request.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use rustls::{ServerConfig, server::WebPkiClientVerifier};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{Semaphore, mpsc},
    task::{JoinHandle, JoinSet},
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use crate::{
    Error, Identity,
    files::{TlsFiles, load_certs, load_key, load_roots},
    identity::identity_of_cert,
    reload::Reloading,
};

/// How long a client may take to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How many handshakes may be in progress at once; beyond that, new connections wait in the
/// listen backlog.
pub const MAX_HANDSHAKES: usize = 1024;

/// Whether a client must present a certificate at the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAuth {
    /// No certificate, no connection.
    #[default]
    Required,
    /// A client may come without a certificate (its calls then carry no [`peer_identity`], and
    /// the service's access layer decides: health and reflection stay open, the rest is
    /// UNAUTHENTICATED). A certificate that is presented is still verified in full: one from
    /// another CA, expired or not yet valid ends the handshake.
    Optional,
}

/// The server's TLS configuration: this service's certificate, and the CA every client's
/// certificate must chain to. Cheap to clone; clones share the reloads.
#[derive(Debug, Clone)]
pub struct ServerTls {
    config: Arc<Reloading<ServerConfig>>,
    files: TlsFiles,
    client_auth: ClientAuth,
}

impl ServerTls {
    /// Loads the files now (an error here is fatal to the caller); later changes to any of
    /// them are picked up by new connections. Clients must present a certificate.
    pub fn new(files: TlsFiles) -> Result<Self, Error> {
        Self::with_client_auth(files, ClientAuth::Required)
    }

    /// [`ServerTls::new`] with clients without a certificate let through the handshake.
    pub fn with_optional_client_auth(files: TlsFiles) -> Result<Self, Error> {
        Self::with_client_auth(files, ClientAuth::Optional)
    }

    /// [`ServerTls::new`] with the client certificate `Required` or `Optional`.
    pub fn with_client_auth(files: TlsFiles, client_auth: ClientAuth) -> Result<Self, Error> {
        let build = files.clone();
        let config = Reloading::new("server", files.all(), move || {
            server_config(&build, client_auth)
        })?;
        Ok(Self {
            config: Arc::new(config),
            files,
            client_auth,
        })
    }

    pub fn client_auth(&self) -> ClientAuth {
        self.client_auth
    }

    /// The configuration a new connection gets: reloaded first if the files changed.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.config.current()
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }
}

fn server_config(files: &TlsFiles, client_auth: ClientAuth) -> Result<ServerConfig, Error> {
    let provider = crate::crypto::provider();
    let roots = Arc::new(load_roots(&files.ca)?);
    let builder = WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
    // Required: every caller is a weft identity signed by the CA. Optional: a caller may also
    // be anonymous, but a certificate it does present must still verify.
    let builder = match client_auth {
        ClientAuth::Required => builder,
        ClientAuth::Optional => builder.allow_unauthenticated(),
    };
    let verifier = builder.build().map_err(|e| Error::Verifier {
        ca: files.ca.clone(),
        reason: e.to_string(),
    })?;
    let mut chain = load_certs(&files.cert)?;
    // The CA goes out with the chain (TLS allows the root in it): a client that knows only the
    // CA's fingerprint, a host joining with a join token, verifies the server by it.
    for ca in load_certs(&files.ca)? {
        if !chain.contains(&ca) {
            chain.push(ca);
        }
    }
    let key = load_key(&files.key)?;
    let tls_err = files.tls_config_error();
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .with_client_cert_verifier(verifier)
        // Also checks that the key belongs to the certificate: a renewal caught between its
        // two files is refused here and retried at the next change.
        .with_single_cert(chain, key)
        .map_err(tls_err)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Limits of [`incoming_with`].
#[derive(Debug, Clone, Copy)]
pub struct IncomingOptions {
    pub handshake_timeout: Duration,
    pub max_handshakes: usize,
}

impl Default for IncomingOptions {
    fn default() -> Self {
        Self {
            handshake_timeout: HANDSHAKE_TIMEOUT,
            max_handshakes: MAX_HANDSHAKES,
        }
    }
}

/// The connections accepted on `listener` that completed a mutual TLS handshake, for
/// `Server::builder()...serve_with_incoming_shutdown(incoming(listener, tls), signal)`.
pub fn incoming(listener: TcpListener, tls: ServerTls) -> TlsIncoming {
    incoming_with(listener, tls, IncomingOptions::default())
}

/// [`incoming`] with explicit limits.
///
/// Handshakes run concurrently in their own tasks, each under `handshake_timeout`, at most
/// `max_handshakes` at a time, so a slow or silent client holds one slot and nothing else. A
/// failed handshake is logged with the peer's address and dropped; the stream never ends
/// because of one. Dropping the stream stops accepting, closes the listener and abandons the
/// handshakes in progress.
pub fn incoming_with(listener: TcpListener, tls: ServerTls, opts: IncomingOptions) -> TlsIncoming {
    // Capacity 1: tonic polls the stream continuously, and a handshake that finished waits with
    // its permit held rather than pile up.
    let (tx, rx) = mpsc::channel(1);
    let task = tokio::spawn(accept_loop(listener, tls, opts, tx));
    TlsIncoming { rx, task }
}

/// The stream [`incoming`] returns.
#[derive(Debug)]
pub struct TlsIncoming {
    rx: mpsc::Receiver<TlsStream<TcpStream>>,
    task: JoinHandle<()>,
}

impl futures::Stream for TlsIncoming {
    type Item = Result<TlsStream<TcpStream>, io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|s| s.map(Ok))
    }
}

impl Drop for TlsIncoming {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: ServerTls,
    opts: IncomingOptions,
    tx: mpsc::Sender<TlsStream<TcpStream>>,
) {
    let slots = Arc::new(Semaphore::new(opts.max_handshakes.max(1)));
    // Owned here, so that ending this task (the stream was dropped) aborts every handshake.
    let mut handshakes = JoinSet::new();
    loop {
        while handshakes.try_join_next().is_some() {}
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => return,
            },
            () = tx.closed() => return,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_failed(&error, &tx).await;
                    continue;
                }
            },
            () = tx.closed() => return,
        };
        let tls = tls.clone();
        let tx = tx.clone();
        handshakes.spawn(async move {
            let _slot = slot;
            if let Err(error) = tcp.set_nodelay(true) {
                tracing::debug!(%peer, %error, "cannot set TCP_NODELAY");
            }
            let acceptor = TlsAcceptor::from(tls.config());
            match tokio::time::timeout(opts.handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    // An error means the server is gone; the connection just closes.
                    let _ = tx.send(stream).await;
                }
                Ok(Err(error)) => handshake_failed(peer, &error),
                Err(_) => tracing::debug!(%peer, timeout = ?opts.handshake_timeout, "tls handshake timed out"),
            }
        });
    }
}

/// Errors that concern one connection are skipped; others (out of file descriptors, say) are
/// logged and retried after a pause rather than spun on.
async fn accept_failed(error: &io::Error, tx: &mpsc::Sender<TlsStream<TcpStream>>) {
    use io::ErrorKind::*;
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted | WouldBlock
    ) {
        tracing::debug!(%error, "accept failed");
        return;
    }
    tracing::warn!(%error, "accept failed; retrying in 100 ms");
    tokio::select! {
        () = tokio::time::sleep(Duration::from_millis(100)) => {}
        () = tx.closed() => {}
    }
}

/// A certificate problem is worth a warning (a misconfigured or foreign client); anything
/// else (a port scan, a plain-text client, a reset) is noise at debug level.
fn handshake_failed(peer: SocketAddr, error: &io::Error) {
    let tls = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>());
    match tls {
        Some(
            e @ (rustls::Error::InvalidCertificate(_)
            | rustls::Error::NoCertificatesPresented
            | rustls::Error::AlertReceived(_)),
        ) => tracing::warn!(%peer, error = %e, "tls handshake refused"),
        _ => tracing::debug!(%peer, %error, "tls handshake failed"),
    }
}

/// The verified weft identity of the client of the connection a request arrived on, from the
/// request's extensions (tonic puts the connection's [`TlsConnectInfo`] there before any
/// layer runs). `None` without TLS, without a client certificate, or when the certificate
/// carries zero, several or a malformed weft identity.
pub fn peer_identity(extensions: &http::Extensions) -> Option<Identity> {
    let certs = extensions
        .get::<TlsConnectInfo<TcpConnectInfo>>()?
        .peer_certs()?;
    identity_of_cert(certs.first()?).ok()
}

/// When the client certificate of the connection a request arrived on was issued: its
/// `notBefore` plus [`crate::pki::BACKDATE`] (this PKI backdates every certificate by that
/// much). `None` without a client certificate. A service that must refuse certificates issued
/// before some event (a host's removal) compares with this.
pub fn peer_issued_at(extensions: &http::Extensions) -> Option<std::time::SystemTime> {
    let certs = extensions
        .get::<TlsConnectInfo<TcpConnectInfo>>()?
        .peer_certs()?;
    crate::pki::issued_at_of_cert(certs.first()?)
}

/// [`peer_identity`] for a tonic request (in a handler or an interceptor).
pub fn request_identity<T>(request: &tonic::Request<T>) -> Option<Identity> {
    peer_identity(request.extensions())
}
