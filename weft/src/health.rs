//! gRPC health checks of the services, also when they run inside a network namespace: then the
//! connection is dialled from a short-lived thread that has entered the namespace (a socket
//! belongs to the namespace it was made in for its whole life), and handed to tonic.

use std::{
    io,
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    time::Duration,
};

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Opens a channel to `addr`, in the namespace at `netns` when given (else in weft's own).
pub async fn channel(addr: SocketAddr, netns: Option<&Path>) -> io::Result<Channel> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(io::Error::other)?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(CALL_TIMEOUT);
    let connected = match netns {
        None => endpoint.connect().await,
        Some(ns) => {
            let ns = ns.to_owned();
            let connector = tower::service_fn(move |_: Uri| {
                let ns = ns.clone();
                async move {
                    let std = dial_in(ns, addr).await?;
                    Ok::<_, io::Error>(TokioIo::new(tokio::net::TcpStream::from_std(std)?))
                }
            });
            endpoint.connect_with_connector(connector).await
        }
    };
    connected.map_err(io::Error::other)
}

/// Whether the server at `addr` says SERVING for the whole server ("").
pub async fn serving(addr: SocketAddr, netns: Option<&Path>) -> bool {
    let Ok(channel) = channel(addr, netns).await else {
        return false;
    };
    let resp = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await;
    resp.is_ok_and(|r| r.into_inner().status == ServingStatus::Serving as i32)
}

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
