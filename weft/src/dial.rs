//! Channels to a service from the namespace a stack runs in (weft itself stays in its own:
//! each connection is made on a thread that enters the namespace and exits afterwards).

use std::{
    io,
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    time::Duration,
};

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tonic::transport::{Channel, Endpoint, Uri};
use weft_identity::ClientTls;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Opens a channel to `addr` from the namespace at `netns` when given (else from weft's own:
/// a stack in a namespace is never reached from outside it), over TLS with `client` when
/// given (the server's certificate must name `addr`'s IP); each call within `call_timeout`.
pub async fn dial(
    addr: SocketAddr,
    netns: Option<&Path>,
    client: Option<&ClientTls>,
    call_timeout: Duration,
) -> io::Result<Channel> {
    dial_named(addr, None, netns, client, call_timeout).await
}

/// [`dial`], where the server's certificate must name `server_name` (a DNS name, such as a
/// Kubernetes Service's) instead of `addr`'s IP when it is given.
pub async fn dial_named(
    addr: SocketAddr,
    server_name: Option<&str>,
    netns: Option<&Path>,
    client: Option<&ClientTls>,
    call_timeout: Duration,
) -> io::Result<Channel> {
    let name = match server_name {
        None => ServerName::IpAddress(addr.ip().into()),
        Some(n) => ServerName::try_from(n.to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{n:?}: {e}")))?,
    };
    let endpoint = match client {
        None => Endpoint::from_shared(format!("http://{addr}")).map_err(io::Error::other)?,
        Some(c) => c.endpoint(&addr.to_string()).map_err(io::Error::other)?,
    }
    .connect_timeout(CONNECT_TIMEOUT)
    .timeout(call_timeout);
    let ns = netns.map(Path::to_owned);
    let config = client.map(ClientTls::config);
    let connector = tower::service_fn(move |_: Uri| {
        let ns = ns.clone();
        let config = config.clone();
        let name = name.clone();
        async move {
            let tcp = match ns {
                None => tokio::net::TcpStream::connect(addr).await?,
                Some(ns) => tokio::net::TcpStream::from_std(dial_in(ns, addr).await?)?,
            };
            let io: Box<dyn Io> = match config {
                None => Box::new(tcp),
                Some(config) => Box::new(
                    tokio_rustls::TlsConnector::from(config)
                        .connect(name.clone(), tcp)
                        .await?,
                ),
            };
            Ok::<_, io::Error>(TokioIo::new(io))
        }
    });
    endpoint
        .connect_with_connector(connector)
        .await
        .map_err(|e| io::Error::other(weft_identity::client::error_chain(&e)))
}

/// A connection, plain or TLS.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Io for T {}

/// Connects to `addr` from inside the namespace at `ns`, on a dedicated thread that exits
/// afterwards (never a tokio worker: it would stay in the namespace).
async fn dial_in(ns: PathBuf, addr: SocketAddr) -> io::Result<TcpStream> {
    use weft_runtime::netns::{Target, run_in};
    run_in(Target::Path(ns), "weft-dial-netns", move || {
        TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
            .and_then(|s| s.set_nonblocking(true).map(|()| s))
    })
    .await
    .map_err(io::Error::other)?
}
