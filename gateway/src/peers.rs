//! How the gateway dials the services it calls: plaintext tonic channels, or mutual TLS with
//! the gateway's own certificate (`--tls-*`), each server verified as the kind of service it
//! should be (ipam-svc, a driver-agent, a dns-svc).
//!
//! Addresses are the gateway's flags and what agents register: `HOST:PORT`, `http://HOST:PORT`
//! or `https://HOST:PORT`. With TLS the scheme only says where to dial: an `http://` address is
//! dialled with TLS all the same (a gateway that has a certificate never calls a service in
//! plaintext; a service that does not speak TLS is then unreachable, not silently downgraded).

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use weft_identity::{ClientTls, Kind, TlsFiles};

/// The gateway's TLS clients for agents and dns-svc.
#[derive(Debug, Clone)]
pub struct PeerTls {
    pub ipam: ClientTls,
    pub agent: ClientTls,
    pub dns: ClientTls,
}

impl PeerTls {
    /// The clients of `files` (the gateway's certificate, key and the cluster's CA).
    pub fn new(files: &TlsFiles) -> Result<Self, weft_identity::Error> {
        Ok(Self {
            ipam: ClientTls::new(files.clone(), Kind::Ipam)?,
            agent: ClientTls::new(files.clone(), Kind::Agent)?,
            dns: ClientTls::new(files.clone(), Kind::Dns)?,
        })
    }
}

/// Why an address cannot be dialled.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadAddress(pub String);

/// A lazily connecting channel to `address` with these timeouts: through `tls` when given,
/// else plaintext (`address` a URL then, as `agent_url` makes it).
pub fn channel(
    tls: Option<&ClientTls>,
    address: &str,
    connect_timeout: Duration,
    timeout: Duration,
) -> Result<Channel, BadAddress> {
    match tls {
        None => Endpoint::from_shared(crate::domain::host::agent_url(address))
            .map(|e| {
                e.connect_timeout(connect_timeout)
                    .timeout(timeout)
                    .connect_lazy()
            })
            .map_err(|e| BadAddress(e.to_string())),
        Some(tls) => {
            let target = address.strip_prefix("http://").unwrap_or(address);
            tls.endpoint(target)
                .map(|e| {
                    e.connect_timeout(connect_timeout)
                        .timeout(timeout)
                        .connect_with_connector_lazy(tls.connector())
                })
                .map_err(|e| BadAddress(e.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn plaintext_takes_host_port_and_urls() {
        let t = Duration::from_secs(1);
        for ok in ["127.0.0.1:7702", "http://127.0.0.1:7702", "http://h1:7702"] {
            assert!(channel(None, ok, t, t).is_ok(), "{ok}");
        }
    }
}
