//! New hosts: one-time join tokens (`HostService.CreateJoinToken`), with which a new host's
//! agent and dns-svc get certificates for their own keys (`JoinService.JoinHost`, signed by the
//! cluster's CA, whose key stays here).
//!
//! A join token is a bearer credential of its own shape (`weftjoin_…`, never an API token): the
//! access layer makes its holder the role `join` (`hostauth`), which may call `JoinHost` and
//! nothing else, and the first `JoinHost` that succeeds spends it. Only its SHA-256 is kept.

use std::{
    net::IpAddr,
    sync::Arc,
    time::{Duration, UNIX_EPOCH},
};

use weft_identity::{
    Identity, Kind,
    pki::{Ca, LeafOptions, Validity},
};
use weft_proto::gateway::v1 as pb;
use weft_runtime::{FieldViolation, access};

use crate::{
    engine::Gateway,
    error::GatewayError,
    store::{self, join_tokens::JoinTokenRow},
};

/// A join token's life when the request gives none.
pub const DEFAULT_JOIN_TTL: Duration = Duration::from_secs(3600);
/// The longest life a join token may have.
pub const MAX_JOIN_TTL: Duration = Duration::from_secs(24 * 3600);
/// Unspent, unexpired join tokens kept at most.
pub const MAX_JOIN_TOKENS: u64 = 1000;
/// The largest certificate request taken.
pub const MAX_CSR_BYTES: usize = 8 * 1024;
/// Addresses and names a joining host may ask for in its certificates.
pub const MAX_JOIN_ADDRESSES: usize = 16;
/// How long the certificates of a joined host are valid.
pub const JOINED_CERT_VALIDITY: Duration = weft_identity::pki::DEFAULT_LEAF_VALIDITY;

/// A checked JoinHost request.
struct JoinAsk {
    host: String,
    options: LeafOptions,
}

fn check_join(req: &pb::JoinHostRequest) -> Result<JoinAsk, GatewayError> {
    let mut bad = Vec::new();
    if let Err(e) = weft_identity::validate_name(&req.host_name) {
        bad.push(FieldViolation::new(
            "host_name",
            &req.host_name,
            e.to_string(),
        ));
    }
    for (field, csr) in [
        ("agent_csr_pem", &req.agent_csr_pem),
        ("dns_csr_pem", &req.dns_csr_pem),
    ] {
        if csr.is_empty() || csr.len() > MAX_CSR_BYTES {
            bad.push(FieldViolation::new(
                field,
                csr.get(..csr.len().min(32)).unwrap_or(""),
                format!("a PEM certificate request of 1 to {MAX_CSR_BYTES} bytes"),
            ));
        }
    }
    if req.addresses.len() > MAX_JOIN_ADDRESSES {
        bad.push(FieldViolation::new(
            "addresses",
            req.addresses.len().to_string(),
            format!("at most {MAX_JOIN_ADDRESSES}"),
        ));
    }
    let mut options = LeafOptions::for_host(&req.host_name);
    options.validity = Validity::for_duration(JOINED_CERT_VALIDITY);
    for (i, a) in req.addresses.iter().enumerate() {
        if let Ok(ip) = a.parse::<IpAddr>() {
            if !options.ip_addresses.contains(&ip) {
                options.ip_addresses.push(ip);
            }
        } else if is_dns_name(a) {
            let name = a.to_ascii_lowercase();
            if !options.dns_names.contains(&name) {
                options.dns_names.push(name);
            }
        } else {
            bad.push(FieldViolation::new(
                format!("addresses[{i}]"),
                a,
                "an IPv4 or IPv6 address, or a DNS name (labels of 1-63 letters, digits and '-', at most 253 characters)",
            ));
        }
    }
    if !bad.is_empty() {
        return Err(GatewayError::Invalid(bad));
    }
    Ok(JoinAsk {
        host: req.host_name.clone(),
        options,
    })
}

/// A DNS name a certificate may carry: at most 253 characters, dot-separated labels of 1–63
/// ASCII letters, digits and hyphens, none starting or ending with a hyphen.
fn is_dns_name(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

impl Gateway {
    /// The CA to sign with, or why there is none.
    fn signer(&self) -> Result<&Arc<Ca>, GatewayError> {
        self.signer.as_ref().ok_or_else(|| {
            GatewayError::Precondition(
                "this gateway holds no CA key to sign new hosts' certificates with: start it with --tls-ca-key (weft up: --advertise)".into(),
            )
        })
    }

    /// Makes a join token (`HostService.CreateJoinToken`): the stored row and the secret.
    pub async fn create_join_token(
        &self,
        ttl_seconds: u32,
        host_name: &str,
        by: &str,
    ) -> Result<(JoinTokenRow, String), GatewayError> {
        let fingerprint = weft_identity::pki::ca_fingerprint(self.signer()?.cert_pem())
            .map_err(|e| GatewayError::Internal(e.to_string()))?;
        let ttl = match ttl_seconds {
            0 => DEFAULT_JOIN_TTL,
            s if u64::from(s) <= MAX_JOIN_TTL.as_secs() => Duration::from_secs(s.into()),
            s => {
                return Err(GatewayError::invalid(
                    "ttl_seconds",
                    s.to_string(),
                    format!("at most {} (a day)", MAX_JOIN_TTL.as_secs()),
                ));
            }
        };
        if !host_name.is_empty()
            && let Err(e) = weft_identity::validate_name(host_name)
        {
            return Err(GatewayError::invalid("host_name", host_name, e.to_string()));
        }
        let secret = access::new_join_token(&fingerprint)
            .map_err(|e| GatewayError::Internal(e.to_string()))?;
        let now = self.clock.now_ms();
        let row = JoinTokenRow {
            hash: access::token_hash(&secret),
            host_name: host_name.to_owned(),
            created_at_ms: now,
            created_by: by.to_owned(),
            expires_at_ms: now + i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2),
            used_at_ms: None,
        };
        let mut tx = store::write_transaction(&self.db).await?;
        if store::join_tokens::trim(&mut tx, now).await? >= MAX_JOIN_TOKENS {
            return Err(GatewayError::Exhausted(format!(
                "the gateway holds {MAX_JOIN_TOKENS} unused join tokens, the most it keeps: let some expire"
            )));
        }
        store::join_tokens::insert(&mut tx, &row).await?;
        tx.commit().await?;
        Ok((row, secret))
    }

    /// Signs a new host's certificate requests and spends the join token (`token_hash`) that
    /// the access layer took (`JoinService.JoinHost`).
    pub async fn join_host(
        &self,
        token_hash: &str,
        req: &pb::JoinHostRequest,
    ) -> Result<pb::JoinHostResponse, GatewayError> {
        let ca = self.signer()?.clone();
        let ask = check_join(req)?;
        let spent =
            || GatewayError::Unauthenticated("the join token is spent or has expired".to_owned());
        let row = {
            let mut conn = self.db.read().acquire().await?;
            store::join_tokens::usable(&mut conn, token_hash, self.clock.now_ms()).await?
        }
        .ok_or_else(spent)?;
        if !row.host_name.is_empty() && row.host_name != ask.host {
            return Err(GatewayError::Denied(format!(
                "this join token is for host {:?}, not {:?}",
                row.host_name, ask.host
            )));
        }
        self.check_name_free(&ask.host).await?;
        let sign = |kind: Kind, field: &str, csr: &str| {
            let id = Identity::new(kind, &ask.host)
                .map_err(|e| GatewayError::invalid("host_name", &ask.host, e.to_string()))?;
            ca.sign_csr_with(csr, &id, &ask.options)
                .map_err(|e| GatewayError::invalid(field, "(certificate request)", e.to_string()))
        };
        let agent_cert_pem = sign(Kind::Agent, "agent_csr_pem", &req.agent_csr_pem)?;
        let dns_cert_pem = sign(Kind::Dns, "dns_csr_pem", &req.dns_csr_pem)?;
        // Signed first, spent last: a bad request does not burn the token, and of two calls
        // with one token only the one that spends it gets its certificates out.
        let now = self.clock.now_ms();
        let mut tx = store::write_transaction(&self.db).await?;
        if !store::join_tokens::spend(&mut tx, token_hash, &ask.host, now).await? {
            return Err(spent());
        }
        tx.commit().await?;
        tracing::info!(host = %ask.host, token = %crate::hostauth::join_id(token_hash), "host joined: certificates issued");
        Ok(pb::JoinHostResponse {
            ca_cert_pem: ca.cert_pem().to_owned(),
            agent_cert_pem,
            dns_cert_pem,
            not_after: crate::to_pb::timestamp(
                ask.options
                    .validity
                    .not_after
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            ),
        })
    }

    /// A joining host may not take the name of a host that is registered (or this gateway's).
    async fn check_name_free(&self, host: &str) -> Result<(), GatewayError> {
        let registered = {
            let mut conn = self.db.read().acquire().await?;
            store::hosts::get(&mut conn, host).await?.is_some()
        };
        if registered || host == self.host {
            return Err(GatewayError::AlreadyExists(format!(
                "a host named {host:?} is registered: remove it first (weftctl host rm {host})"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(host: &str, addresses: &[&str]) -> pb::JoinHostRequest {
        pb::JoinHostRequest {
            host_name: host.into(),
            agent_csr_pem: "x".into(),
            dns_csr_pem: "x".into(),
            addresses: addresses.iter().map(|a| (*a).to_owned()).collect(),
        }
    }

    #[test]
    fn a_join_request_is_checked_before_anything_is_signed() {
        let ok = check_join(&ask(
            "node-2",
            &["10.0.0.5", "fd00::5", "node-2.example.org"],
        ))
        .unwrap();
        assert_eq!(ok.host, "node-2");
        assert!(
            ok.options
                .ip_addresses
                .contains(&"10.0.0.5".parse().unwrap())
        );
        assert!(
            ok.options
                .dns_names
                .contains(&"node-2.example.org".to_owned())
        );
        for (host, addrs) in [
            ("Node_2", vec![]),
            ("", vec![]),
            ("n", vec!["-bad.example"]),
            ("n", vec!["a..b"]),
            ("n", vec!["has space"]),
        ] {
            let e = check_join(&ask(host, &addrs)).err().unwrap();
            assert!(matches!(e, GatewayError::Invalid(_)), "{host} {addrs:?}");
        }
        let many: Vec<String> = (0..=MAX_JOIN_ADDRESSES)
            .map(|i| format!("10.0.0.{i}"))
            .collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(check_join(&ask("n", &many)).is_err());
        let mut big = ask("n", &[]);
        big.agent_csr_pem = "x".repeat(MAX_CSR_BYTES + 1);
        assert!(check_join(&big).is_err());
    }
}
