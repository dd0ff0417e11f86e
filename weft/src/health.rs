//! gRPC health checks of the services, also when they run inside a network namespace: then the
//! connection is dialled from a short-lived thread that has entered the namespace (a socket
//! belongs to the namespace it was made in for its whole life), and handed to tonic. Services
//! that serve TLS are checked over TLS by a client that verifies them against the stack's CA
//! and presents no certificate (their health is open to anyone).

use std::{io, net::SocketAddr, path::Path, time::Duration};

use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use weft_identity::ClientTls;

use crate::plan::HealthTls;

const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Opens a channel to `addr`, in the namespace at `netns` when given (else in weft's own),
/// over TLS with `tls` when given.
pub async fn channel(
    addr: SocketAddr,
    netns: Option<&Path>,
    tls: Option<&HealthTls>,
) -> io::Result<Channel> {
    let client = tls
        .map(|t| ClientTls::anonymous(t.ca.clone(), t.kind))
        .transpose()
        .map_err(io::Error::other)?;
    crate::dial::dial(addr, netns, client.as_ref(), CALL_TIMEOUT).await
}

/// Whether the server at `addr` says SERVING for the whole server ("").
pub async fn serving(addr: SocketAddr, netns: Option<&Path>, tls: Option<&HealthTls>) -> bool {
    let Ok(channel) = channel(addr, netns, tls).await else {
        return false;
    };
    let resp = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await;
    resp.is_ok_and(|r| r.into_inner().status == ServingStatus::Serving as i32)
}
