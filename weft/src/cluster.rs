//! The steps a Kubernetes install runs (the Helm chart in `helm/weft`), each a short command
//! that does one thing and exits:
//! - `weft pki`: the cluster's CA and the control plane's certificates, in a directory (the
//!   chart's pre-install Job turns them into a Secret; an operator may run it by hand).
//! - `weft join`: a node's driver-agent and dns-svc certificates, signed by the gateway for a
//!   join token (what `weft up --join` does before it starts them), kept in the node's data
//!   directory so that later starts need no token.
//! - `weft probe`: one gRPC health check (`grpc.health.v1`), over TLS: the pods' liveness and
//!   readiness probe, since the kubelet's own gRPC probe speaks plaintext only and every Weft
//!   service in a cluster serves TLS.

use std::net::SocketAddr;

use weft_identity::{Identity, Kind, pki::LeafOptions};
use weft_runtime::access;

pub use crate::cli::{JoinArgs, MAX_SANS, PkiArgs, ProbeArgs};
use crate::{error::UpError, joined::JoinTo, user::Ids};

/// `weft pki`: lays out `dir`; returns the files made or kept, one per line.
pub fn pki(args: &PkiArgs) -> Result<String, UpError> {
    if args.dns_names.len() > MAX_SANS || args.ips.len() > MAX_SANS {
        return Err(UpError::Invalid(format!(
            "at most {MAX_SANS} --dns-name and {MAX_SANS} --ip"
        )));
    }
    let mut opts = LeafOptions::for_host("localhost");
    opts.dns_names.dedup();
    for name in &args.dns_names {
        // The same rule as the identities' names, plus dots: a DNS name.
        let ok = !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            });
        if !ok {
            return Err(UpError::Invalid(format!(
                "--dns-name {name:?}: expected a lower-case DNS name"
            )));
        }
        if !opts.dns_names.contains(name) {
            opts.dns_names.push(name.clone());
        }
    }
    for ip in &args.ips {
        if !opts.ip_addresses.contains(ip) {
            opts.ip_addresses.push(*ip);
        }
    }
    let id =
        |kind, name: &str| Identity::new(kind, name).map_err(|e| UpError::Invalid(format!("{e}")));
    let ids = [
        id(Kind::Gateway, "gateway")?,
        id(Kind::Ipam, "ipam")?,
        id(Kind::Admin, "admin")?,
    ];
    let made = weft_identity::pki::bootstrap_with(&args.dir, &ids, &opts).map_err(|e| {
        UpError::Invalid(format!(
            "cannot make the certificates in {}: {e}",
            args.dir.display()
        ))
    })?;
    let mut out = format!("{}\n{}\n", made.ca_cert.display(), made.ca_key.display());
    for i in &ids {
        if let Some(f) = made.files(i) {
            out.push_str(&format!("{}\n{}\n", f.cert.display(), f.key.display()));
        }
    }
    Ok(out)
}

/// Splits `HOST:PORT` into the address to dial and, for a DNS name, the name the server's
/// certificate must carry.
pub async fn resolve_join(join: &str) -> Result<(SocketAddr, Option<String>), UpError> {
    if let Ok(addr) = join.parse::<SocketAddr>() {
        return Ok((addr, None));
    }
    let bad = |why: &str| UpError::Invalid(format!("--join {join:?}: {why}"));
    let Some((host, port)) = join.rsplit_once(':') else {
        return Err(bad("expected HOST:PORT"));
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(bad("expected HOST:PORT"));
    }
    let addr = tokio::net::lookup_host(join)
        .await
        .map_err(|e| bad(&format!("cannot resolve it: {e}")))?
        .next()
        .ok_or_else(|| bad("it resolves to no address"))?;
    Ok((addr, Some(host.to_owned())))
}

/// `weft join`: makes sure the node's certificates are in the data directory (asking the
/// gateway with the join token when they are not); returns where they are.
pub async fn join(args: &JoinArgs) -> Result<String, UpError> {
    let token = match (&args.join_token, &args.join_token_file) {
        (Some(t), _) => Some(t.trim().to_owned()),
        (None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(t) => Some(t.trim().to_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(UpError::Invalid(format!(
                    "--join-token-file {}: {e}",
                    path.display()
                )));
            }
        },
        (None, None) => None,
    };
    if let Some(t) = &token
        && !access::looks_like_join_token(t)
    {
        return Err(UpError::Invalid(
            "the join token is not one (weftjoin_…, from `weftctl host join-token`)".into(),
        ));
    }
    let service = match (args.service_uid, args.service_gid) {
        (Some(uid), Some(gid)) => Some(Ids { uid, gid }),
        _ => None,
    };
    // A node that joined before starts on the certificates it kept: then the gateway's name
    // need not resolve (cluster DNS may be down while the node's pod restarts).
    let (to, unresolved) = match resolve_join(&args.join).await {
        Ok((gateway, server_name)) => (
            JoinTo {
                gateway,
                server_name,
                token,
                advertise: args.advertise,
            },
            None,
        ),
        Err(e) => (
            JoinTo {
                gateway: SocketAddr::from(([0, 0, 0, 0], 0)),
                server_name: None,
                token: None,
                advertise: args.advertise,
            },
            Some(e),
        ),
    };
    let tls = match crate::joined::ensure(&args.data_dir, &args.host_name, &to, None, service).await
    {
        Ok(tls) => tls,
        // Certificates were needed: the reason is the name that did not resolve.
        Err(e) => return Err(unresolved.unwrap_or(e)),
    };
    Ok(format!(
        "{}\n{}\n{}\n{}\n{}\n",
        tls.ca.display(),
        tls.agent.cert.display(),
        tls.agent.key.display(),
        tls.dns.cert.display(),
        tls.dns.key.display()
    ))
}

/// `weft probe`: whether the service answers SERVING, with the reason when it does not.
pub async fn probe(args: &ProbeArgs) -> Result<(), String> {
    let tls = match (&args.tls_ca, args.kind) {
        (Some(ca), Some(kind)) => Some(crate::plan::HealthTls {
            ca: ca.clone(),
            kind,
        }),
        _ => None,
    };
    if crate::health::serving(args.addr, None, tls.as_ref()).await {
        Ok(())
    } else {
        Err(format!("{} is not SERVING (or does not answer)", args.addr))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn pki_makes_the_control_planes_certificates_for_the_names_given_and_keeps_them() {
        let dir = tempfile::tempdir().unwrap();
        let pki_dir = dir.path().join("pki");
        let args = PkiArgs {
            dir: pki_dir.clone(),
            dns_names: vec!["weft-gateway.ns.svc".into(), "weft-ipam.ns.svc".into()],
            ips: vec![],
        };
        let out = pki(&args).unwrap();
        for f in [
            "ca.crt",
            "ca.key",
            "gateway-gateway.crt",
            "gateway-gateway.key",
            "ipam-ipam.crt",
            "ipam-ipam.key",
            "admin-admin.crt",
            "admin-admin.key",
        ] {
            assert!(pki_dir.join(f).is_file(), "{f} missing: {out}");
            assert!(out.contains(f), "{out}");
        }
        // The gateway's certificate serves for the Service's name (a client dialling by it
        // accepts it: see the identity crate's tests for the name check itself).
        let files = weft_identity::TlsFiles::in_dir(
            &pki_dir,
            &Identity::new(Kind::Gateway, "gateway").unwrap(),
        );
        assert!(weft_identity::ServerTls::new(files).is_ok());
        let ca = std::fs::read(pki_dir.join("ca.crt")).unwrap();
        pki(&args).unwrap();
        assert_eq!(std::fs::read(pki_dir.join("ca.crt")).unwrap(), ca);
    }

    #[test]
    fn pki_refuses_names_that_are_not_dns_names() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["Weft.svc", "a..b", "-a.b", "a b", ""] {
            let e = pki(&PkiArgs {
                dir: dir.path().join("p"),
                dns_names: vec![bad.into()],
                ips: vec![],
            })
            .unwrap_err()
            .to_string();
            assert!(e.contains("--dns-name"), "{e}");
        }
    }

    #[tokio::test]
    async fn a_probe_of_a_port_where_nothing_serves_fails_naming_it() {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let e = probe(&ProbeArgs {
            addr,
            tls_ca: None,
            kind: None,
        })
        .await
        .unwrap_err();
        assert!(e.contains(&addr.to_string()), "{e}");
    }

    #[tokio::test]
    #[cfg_attr(weft_no_root, ignore = "needs root: the node's pki/ is root's")]
    async fn a_node_that_joined_before_starts_on_its_certificates_without_the_gateway() {
        let dir = tempfile::tempdir().unwrap();
        let args = JoinArgs {
            data_dir: dir.path().to_owned(),
            // Refused before any lookup: no name is sent to a resolver.
            join: "weft-gateway:http".into(),
            join_token: None,
            join_token_file: Some(dir.path().join("no-token")),
            host_name: "node-a".into(),
            advertise: "192.0.2.10".parse().unwrap(),
            service_uid: None,
            service_gid: None,
        };
        // Not joined yet: the address is what is wrong.
        let e = join(&args).await.unwrap_err().to_string();
        assert!(e.contains("--join"), "{e}");
        // Joined before (the files `weft join` keeps): no gateway needed.
        let ids = [
            Identity::new(Kind::Agent, "node-a").unwrap(),
            Identity::new(Kind::Dns, "node-a").unwrap(),
        ];
        weft_identity::pki::bootstrap(&dir.path().join("pki"), "node-a", &ids).unwrap();
        let out = join(&args).await.unwrap();
        assert!(
            out.contains("agent-node-a.crt") && out.contains("dns-node-a.crt"),
            "{out}"
        );
    }

    #[tokio::test]
    async fn join_addresses_are_ip_and_port_or_a_name_that_resolves() {
        let (a, n) = resolve_join("192.0.2.1:7700").await.unwrap();
        assert_eq!((a.to_string(), n), ("192.0.2.1:7700".into(), None));
        let (a, n) = resolve_join("localhost:7700").await.unwrap();
        assert!(a.ip().is_loopback() && a.port() == 7700);
        assert_eq!(n.as_deref(), Some("localhost"));
        for bad in ["localhost", ":7700", "localhost:http", "localhost:70000"] {
            let e = resolve_join(bad).await.unwrap_err().to_string();
            assert!(e.contains("--join"), "{e}");
        }
    }
}
