//! Connections to the gateway and to ipam-svc.

use std::time::Duration;

use std::path::Path;

use tonic::transport::{Channel, Endpoint};
use weft_runtime::access::{Authed, Bearer};

use crate::error::{CliError, chain};

/// Who is being called, for error messages.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// "the gateway", "ipam-svc".
    pub what: &'a str,
    /// How to fix an unreachable address.
    pub hint: &'a str,
}

/// The gateway, started by `weft up`.
pub const GATEWAY: Target<'static> = Target {
    what: "the gateway",
    hint: "is `weft up` running? (address from --gateway or WEFT_GATEWAY)",
};

/// ipam-svc, started by `weft up`.
pub const IPAM: Target<'static> = Target {
    what: "ipam-svc",
    hint: "is `weft up` running? (address from --ipam or WEFT_IPAM)",
};

/// `url` with `http://` added when no scheme is given (`127.0.0.1:7700`).
pub fn normalize(url: &str) -> String {
    if url.contains("://") {
        url.to_owned()
    } else {
        format!("http://{url}")
    }
}

/// Connects to `url` now, so that an unreachable server is one clear error (exit code 4)
/// instead of a transport error on the first call.
pub async fn connect(url: &str, target: Target<'_>) -> Result<Channel, CliError> {
    let url = normalize(url);
    let endpoint = Endpoint::from_shared(url.clone())
        .map_err(|_| {
            CliError::Usage(format!(
                "invalid address {url:?}: expected http://HOST:PORT"
            ))
        })?
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true);
    endpoint.connect().await.map_err(|e| {
        let cause = chain(&e);
        let cause = cause
            .strip_prefix("transport error: ")
            .unwrap_or(&cause)
            .to_owned();
        CliError::Unavailable(format!(
            "cannot reach {} at {url} ({cause}): {}",
            target.what, target.hint
        ))
    })
}

/// Where `weft up` run from this directory writes its admin token.
pub const DEFAULT_TOKEN_FILE: &str = "weft-data/admin.token";

/// The caller's credentials: WEFT_TOKEN, else `token_file`, else [`DEFAULT_TOKEN_FILE`] when
/// it exists; none otherwise (the gateway then says what it needs).
pub fn credentials(token_file: Option<&Path>) -> Result<Bearer, CliError> {
    let bad = |e: weft_runtime::access::TokenFileError| CliError::Usage(e.to_string());
    if let Ok(token) = std::env::var("WEFT_TOKEN") {
        return Bearer::new(token.trim()).map_err(|e| CliError::Usage(format!("WEFT_TOKEN: {e}")));
    }
    if let Some(path) = token_file {
        return Bearer::from_file(path).map_err(bad);
    }
    let default = Path::new(DEFAULT_TOKEN_FILE);
    if default.symlink_metadata().is_ok() {
        return Bearer::from_file(default).map_err(bad);
    }
    Ok(Bearer::none())
}

/// [`connect`], with the caller's credentials on every call.
pub async fn connect_authed(
    url: &str,
    target: Target<'_>,
    bearer: &Bearer,
) -> Result<Authed, CliError> {
    Ok(bearer.on(connect(url, target).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_addresses_get_the_http_scheme() {
        assert_eq!(normalize("127.0.0.1:7700"), "http://127.0.0.1:7700");
        assert_eq!(normalize("http://[::1]:7700"), "http://[::1]:7700");
    }
}
