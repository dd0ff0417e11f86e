//! How a service's listener is protected: mutual TLS with the service's own certificate, or
//! plaintext (only where a flag or a loopback address allows it; see
//! [`crate::CommonArgs::internal_transport`]).

pub use weft_identity::TlsFiles;

/// What a listener serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// Mutual TLS with these files; calls are checked against the service's access table.
    Tls(TlsFiles),
    /// Plaintext, with no access table (`--insecure-plaintext`).
    Plaintext,
}

/// A lazy channel to the gateway at `url`. `https://HOST:PORT` dials TLS with `tls` (the
/// calling service's own certificate, which is then its credential at the gateway's TLS
/// listener) and takes only a server with a gateway certificate from the CA; `http://HOST:PORT`
/// dials plaintext (the caller then presents a token). `timeout` bounds each call (never give
/// one to a channel that carries a long stream).
pub fn gateway_channel(
    url: &str,
    tls: Option<&TlsFiles>,
    connect_timeout: std::time::Duration,
    timeout: Option<std::time::Duration>,
) -> Result<tonic::transport::Channel, String> {
    let bounded = |e: tonic::transport::Endpoint| {
        let e = e.connect_timeout(connect_timeout);
        match timeout {
            Some(t) => e.timeout(t),
            None => e,
        }
    };
    if let Some(target) = url.strip_prefix("https://") {
        let Some(files) = tls else {
            return Err(format!(
                "gateway {url:?} is https: give this service's certificate (--tls-cert, --tls-key, --tls-ca)"
            ));
        };
        let client = weft_identity::ClientTls::new(files.clone(), weft_identity::Kind::Gateway)
            .map_err(|e| e.to_string())?;
        let endpoint = client.endpoint(target).map_err(|e| e.to_string())?;
        return Ok(bounded(endpoint).connect_with_connector_lazy(client.connector()));
    }
    tonic::transport::Endpoint::from_shared(url.to_owned())
        .map(|e| bounded(e).connect_lazy())
        .map_err(|e| format!("invalid gateway URL {url:?}: {e}"))
}
