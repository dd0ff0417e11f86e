//! A host that joins another's cluster (`weft up --join GATEWAY_ADDR:7700 --join-token T
//! --host-name NAME --advertise ADDR`): it runs only its driver-agent and dns-svc, which listen
//! on ADDR (mutual TLS) for the gateway and call the gateway's TLS listener with their own
//! certificates.
//!
//! Certificates: at the first start this host makes its agent's and dns-svc's keys, sends
//! certificate requests with the join token (`JoinService.JoinHost`), and keeps what the
//! gateway signed in `<data-dir>/pki/` (root's, 0700): `ca.crt`, `agent-NAME` and `dns-NAME`
//! `.crt`/`.key`. It never sees the CA key. The gateway is recognised by the CA fingerprint
//! the token carries before anything is sent. Later starts reuse the files (no token needed);
//! dns-svc, unprivileged, reads copies in `run/tls/`.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use weft_identity::{Identity, Kind, TlsFiles, pki::make_csr};
use weft_proto::gateway::v1::{self as pb, join_service_client::JoinServiceClient};
use weft_runtime::access::{self, Bearer};

use crate::{
    error::UpError,
    pki::{copy, write_file},
    user::Ids,
};

/// The driver-agent's port on a joined host's advertised address.
pub const AGENT_PORT: u16 = 7702;
/// dns-svc's admin port on a joined host's advertised address.
pub const DNS_PORT: u16 = 7703;
/// How long the join call may take.
const JOIN_TIMEOUT: Duration = Duration::from_secs(20);

/// Where to join, and with what.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinTo {
    /// The gateway's TLS listener (its --advertise address and port 7700).
    pub gateway: std::net::SocketAddr,
    /// The DNS name the gateway's certificate must carry, when it was dialled by name (a
    /// Kubernetes Service, `weft join`); `None`: its IP address.
    pub server_name: Option<String>,
    /// The join token (needed only until the certificates are made).
    pub token: Option<String>,
    pub advertise: IpAddr,
}

impl std::fmt::Debug for JoinTo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("JoinTo")
            .field("gateway", &self.gateway)
            .field("advertise", &self.advertise)
            .finish_non_exhaustive()
    }
}

/// A joined host's certificates: the agent's in `pki/`, dns-svc's copies in `run/tls/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedTls {
    pub ca: PathBuf,
    pub agent: TlsFiles,
    pub dns: TlsFiles,
}

/// Checks `--join`'s companions: a token of the right shape, an advertised address, and a host
/// name of its own.
pub fn check(
    join: &str,
    token: Option<&str>,
    advertise: Option<IpAddr>,
    host: &str,
) -> Result<JoinTo, UpError> {
    let bad = |m: String| Err(UpError::Invalid(m));
    let Ok(gateway) = join.parse::<std::net::SocketAddr>() else {
        return bad(format!(
            "--join {join:?}: expected the gateway's GATEWAY_ADDR:7700 (an IP address and port)"
        ));
    };
    let Some(advertise) = advertise else {
        return bad("--join needs --advertise ADDR: where the gateway reaches this host".into());
    };
    if host == crate::cli::DEFAULT_HOST_NAME {
        return bad(format!(
            "--join needs --host-name NAME: this host's own name in the cluster ({:?} is the first host's)",
            crate::cli::DEFAULT_HOST_NAME
        ));
    }
    if let Some(t) = token
        && !access::looks_like_join_token(t)
    {
        return bad(
            "--join-token is not a join token (weftjoin_…, from `weftctl host join-token`)".into(),
        );
    }
    Ok(JoinTo {
        gateway,
        server_name: None,
        token: token.map(str::to_owned),
        advertise,
    })
}

/// The certificates of a joined host: those kept from an earlier start, else new ones for a
/// join token.
pub async fn ensure(
    data_dir: &Path,
    host: &str,
    join: &JoinTo,
    netns: Option<&Path>,
    service: Option<Ids>,
) -> Result<JoinedTls, UpError> {
    let pki = data_dir.join("pki");
    crate::user::own_dir(&pki, 0o700, None)?;
    let id =
        |kind| Identity::new(kind, host).map_err(|e| UpError::Invalid(format!("--host-name: {e}")));
    let (agent_id, dns_id) = (id(Kind::Agent)?, id(Kind::Dns)?);
    let agent = TlsFiles::in_dir(&pki, &agent_id);
    let dns = TlsFiles::in_dir(&pki, &dns_id);
    let kept = [&agent.cert, &agent.key, &dns.cert, &dns.key, &agent.ca]
        .iter()
        .all(|p| p.is_file())
        && weft_identity::ServerTls::new(agent.clone()).is_ok()
        && weft_identity::ServerTls::new(dns.clone()).is_ok();
    if !kept {
        let Some(token) = &join.token else {
            return Err(UpError::Invalid(format!(
                "{} holds no certificates of this host yet: give --join-token",
                pki.display()
            )));
        };
        join_now(
            host,
            join,
            token,
            netns,
            (&agent_id, &agent),
            (&dns_id, &dns),
        )
        .await?;
    }
    let run_tls = data_dir.join("run").join("tls");
    crate::user::own_dir(&run_tls, 0o700, service)?;
    let ca = copy(&agent.ca, &run_tls, service)?;
    let dns_copy = TlsFiles {
        key: copy(&dns.key, &run_tls, service)?,
        cert: copy(&dns.cert, &run_tls, service)?,
        ca,
    };
    Ok(JoinedTls {
        ca: agent.ca.clone(),
        agent,
        dns: dns_copy,
    })
}

/// Asks the gateway to sign this host's two certificate requests, and writes the keys, the
/// certificates and the CA.
async fn join_now(
    host: &str,
    join: &JoinTo,
    token: &str,
    netns: Option<&Path>,
    (agent_id, agent): (&Identity, &TlsFiles),
    (dns_id, dns): (&Identity, &TlsFiles),
) -> Result<(), UpError> {
    let failed = |m: String| UpError::Join {
        gateway: join.gateway.to_string(),
        reason: m,
    };
    let (agent_csr, agent_key) = make_csr(agent_id).map_err(|e| failed(e.to_string()))?;
    let (dns_csr, dns_key) = make_csr(dns_id).map_err(|e| failed(e.to_string()))?;
    let fingerprint =
        access::join_token_fingerprint(token).ok_or_else(|| failed("not a join token".into()))?;
    let tls = weft_identity::ClientTls::pinned(fingerprint, Kind::Gateway)
        .map_err(|e| failed(e.to_string()))?;
    let answer = tokio::time::timeout(JOIN_TIMEOUT, async {
        // From this host's namespace (the stack's, with --netns), as its services will.
        let channel = crate::dial::dial_named(
            join.gateway,
            join.server_name.as_deref(),
            netns,
            Some(&tls),
            JOIN_TIMEOUT,
        )
        .await
        .map_err(|e| failed(format!("cannot reach the gateway: {e}")))?;
        let bearer = Bearer::new(token).map_err(|e| failed(e.to_string()))?;
        JoinServiceClient::new(bearer.on(channel))
            .join_host(pb::JoinHostRequest {
                host_name: host.to_owned(),
                agent_csr_pem: agent_csr,
                dns_csr_pem: dns_csr,
                addresses: vec![join.advertise.to_string()],
            })
            .await
            .map(tonic::Response::into_inner)
            .map_err(|st| failed(format!("{:?}: {}", st.code(), st.message())))
    })
    .await
    .map_err(|_| failed(format!("no answer within {JOIN_TIMEOUT:?}")))??;
    // Keys first: a crash in between leaves a certificate without its key, which the next
    // start does not keep.
    write_file(&agent.key, agent_key.as_bytes(), 0o600, None)?;
    write_file(&dns.key, dns_key.as_bytes(), 0o600, None)?;
    write_file(&agent.ca, answer.ca_cert_pem.as_bytes(), 0o644, None)?;
    write_file(&agent.cert, answer.agent_cert_pem.as_bytes(), 0o644, None)?;
    write_file(&dns.cert, answer.dns_cert_pem.as_bytes(), 0o644, None)?;
    Ok(())
}
