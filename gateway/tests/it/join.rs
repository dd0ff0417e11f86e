//! A new host joins with a one-time join token (the real gateway binary, its TLS listener, real
//! certificates): its agent and dns-svc send certificate requests for their own keys, the
//! gateway signs them with the cluster's CA (whose key never leaves it), the token is spent,
//! and the certificates speak for that host only. A removed host's certificates are refused
//! until it joins again. The holder of a join token may do nothing else.

use std::time::Duration;

use rustls::pki_types::{CertificateDer, pem::PemObject};
use tonic::Code;
use weft_identity::{Identity, Kind, pki::IssuedCert};
use weft_proto::gateway::v1::{
    self as pb, agent_registry_service_client::AgentRegistryServiceClient,
    audit_service_client::AuditServiceClient, host_service_client::HostServiceClient,
    join_service_client::JoinServiceClient,
};
use weft_runtime::access::{Authed, Bearer};
use weft_testkit::{
    TestDb,
    mtls::{self, TestPki},
};

use crate::{access::call_empty, mtls::gateway_with_tls_listener};

/// The certificate requests of `host`'s agent and dns-svc (for `agent_for`'s identity, to
/// ask for another), and their keys.
fn ask(host: &str, agent_for: &str) -> (pb::JoinHostRequest, String, String) {
    let (agent_csr, agent_key) =
        weft_identity::pki::make_csr(&Identity::new(Kind::Agent, agent_for).unwrap()).unwrap();
    let (dns_csr, dns_key) =
        weft_identity::pki::make_csr(&Identity::new(Kind::Dns, host).unwrap()).unwrap();
    let req = pb::JoinHostRequest {
        host_name: host.into(),
        agent_csr_pem: agent_csr,
        dns_csr_pem: dns_csr,
        addresses: vec!["192.0.2.7".into()],
    };
    (req, agent_key, dns_key)
}

fn register(host: &str) -> pb::RegisterHostRequest {
    pb::RegisterHostRequest {
        name: host.into(),
        agent_address: "127.0.0.1:9".into(),
        agent_version: "test".into(),
        ..Default::default()
    }
}

struct Joinable {
    pki: TestPki,
    svc: weft_testkit::ServiceProcess,
    tls: std::net::SocketAddr,
    _db: TestDb,
}

impl Joinable {
    async fn start() -> Self {
        let pki = TestPki::new();
        let key = pki.dir.path().join("ca.key");
        {
            use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&key)
                .unwrap();
            f.write_all(pki.ca.key_pem().as_bytes()).unwrap();
        }
        let db = TestDb::sqlite();
        let extra = ["--tls-ca-key".to_owned(), key.display().to_string()];
        let (svc, tls) = gateway_with_tls_listener(&pki, &db, &extra).await;
        Self {
            pki,
            svc,
            tls,
            _db: db,
        }
    }

    async fn admin(&self) -> tonic::transport::Channel {
        mtls::client(
            &self.pki.files("admin", Kind::Admin, "admin"),
            Kind::Gateway,
        )
        .connect(&self.tls.to_string())
        .await
        .unwrap()
    }

    async fn hosts(&self) -> HostServiceClient<tonic::transport::Channel> {
        HostServiceClient::new(self.admin().await)
    }

    async fn join_token(&self, host: &str, ttl_seconds: u32) -> String {
        self.hosts()
            .await
            .create_join_token(pb::CreateJoinTokenRequest {
                ttl_seconds,
                host_name: host.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .token
    }

    /// A channel that presents `token` and no certificate, and knows the gateway as a joining
    /// host does: by the CA fingerprint in a join token.
    async fn with_token(&self, token: &str) -> Authed {
        let pin = weft_runtime::access::join_token_fingerprint(token)
            .map_or_else(|| self.fingerprint(), str::to_owned);
        let channel = weft_identity::ClientTls::pinned(&pin, Kind::Gateway)
            .unwrap()
            .connect(&self.tls.to_string())
            .await
            .unwrap();
        Bearer::new(token).unwrap().on(channel)
    }

    fn fingerprint(&self) -> String {
        weft_identity::pki::ca_fingerprint(self.pki.ca.cert_pem()).unwrap()
    }

    async fn join(
        &self,
        token: &str,
        req: pb::JoinHostRequest,
    ) -> Result<pb::JoinHostResponse, tonic::Status> {
        JoinServiceClient::new(self.with_token(token).await)
            .join_host(req)
            .await
            .map(tonic::Response::into_inner)
    }

    /// The agent registry as the holder of `cert`/`key`.
    async fn registry_as(
        &self,
        label: &str,
        cert: &str,
        key: &str,
    ) -> AgentRegistryServiceClient<tonic::transport::Channel> {
        let files = self.pki.write(
            label,
            &IssuedCert {
                cert_pem: cert.to_owned(),
                key_pem: key.to_owned(),
            },
        );
        AgentRegistryServiceClient::new(
            mtls::client(&files, Kind::Gateway)
                .connect(&self.tls.to_string())
                .await
                .unwrap(),
        )
    }
}

fn identity_of(pem: &str) -> Identity {
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
    weft_identity::identity_of_cert(&der).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_joins_once_with_a_join_token_and_gets_certificates_for_itself_only() {
    let g = Joinable::start().await;
    let token = g.join_token("", 0).await;
    assert!(
        token.starts_with("weftjoin_"),
        "a join token has its own prefix"
    );
    // It carries the CA's fingerprint: a joining host dials the gateway knowing only that,
    // and a server with another CA is refused.
    assert_eq!(
        weft_runtime::access::join_token_fingerprint(&token),
        Some(g.fingerprint().as_str())
    );
    let other = TestPki::new();
    let wrong = weft_identity::pki::ca_fingerprint(other.ca.cert_pem()).unwrap();
    let err = weft_identity::ClientTls::pinned(&wrong, Kind::Gateway)
        .unwrap()
        .connect(&g.tls.to_string())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("fingerprint"), "{err}");

    // Without a token, nothing; a request for another identity is refused and spends nothing.
    let anonymous = JoinServiceClient::new(
        Bearer::none().on(mtls::anonymous(&g.pki.ca_path(), Kind::Gateway)
            .connect(&g.tls.to_string())
            .await
            .unwrap()),
    )
    .join_host(ask("h-b", "h-b").0)
    .await
    .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated, "{anonymous:?}");
    let wrong = g.join(&token, ask("h-b", "h-other").0).await.unwrap_err();
    assert_eq!(wrong.code(), Code::InvalidArgument, "{wrong:?}");
    assert!(wrong.message().contains("agent_csr_pem"), "{wrong:?}");

    let (req, agent_key, _dns_key) = ask("h-b", "h-b");
    let joined = g.join(&token, req).await.unwrap();
    assert_eq!(joined.ca_cert_pem, g.pki.ca.cert_pem());
    assert_eq!(
        identity_of(&joined.agent_cert_pem),
        Identity::new(Kind::Agent, "h-b").unwrap()
    );
    assert_eq!(
        identity_of(&joined.dns_cert_pem),
        Identity::new(Kind::Dns, "h-b").unwrap()
    );
    assert!(joined.not_after.is_some());
    // Spent: a second use is refused.
    let again = g.join(&token, ask("h-c", "h-c").0).await.unwrap_err();
    assert_eq!(again.code(), Code::Unauthenticated, "{again:?}");

    // The agent's new certificate registers its own host, and no other.
    let mut agent = g
        .registry_as("agent-h-b", &joined.agent_cert_pem, &agent_key)
        .await;
    agent.register_host(register("h-b")).await.unwrap();
    let other = agent.register_host(register("h-a")).await.unwrap_err();
    assert_eq!(other.code(), Code::PermissionDenied, "{other:?}");

    // A registered name cannot be joined again; a token for one name joins no other; an
    // expired token joins nothing.
    let taken = g
        .join(&g.join_token("", 0).await, ask("h-b", "h-b").0)
        .await
        .unwrap_err();
    assert_eq!(taken.code(), Code::AlreadyExists, "{taken:?}");
    let bound = g.join_token("h-c", 0).await;
    let elsewhere = g.join(&bound, ask("h-d", "h-d").0).await.unwrap_err();
    assert_eq!(elsewhere.code(), Code::PermissionDenied, "{elsewhere:?}");
    assert!(elsewhere.message().contains("\"h-c\""), "{elsewhere:?}");
    g.join(&bound, ask("h-c", "h-c").0).await.unwrap();
    let short = g.join_token("", 1).await;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let late = g.join(&short, ask("h-e", "h-e").0).await.unwrap_err();
    assert_eq!(late.code(), Code::Unauthenticated, "{late:?}");
    let long = g
        .hosts()
        .await
        .create_join_token(pb::CreateJoinTokenRequest {
            ttl_seconds: 86_401,
            host_name: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(long.code(), Code::InvalidArgument, "{long:?}");

    // The holder of a join token may call nothing but JoinHost.
    let holder = g.join_token("", 0).await;
    for rule in gateway::access::RULES {
        if rule.method.ends_with("/JoinHost") {
            continue;
        }
        let st = call_empty(g.with_token(&holder).await, rule.method).await;
        assert_eq!(st.code(), Code::PermissionDenied, "{}: {st:?}", rule.method);
    }

    // Audited with the token's identity (never the token), and kept out of the logs.
    let audit = AuditServiceClient::new(g.admin().await)
        .list_audit(pb::ListAuditRequest::default())
        .await
        .unwrap()
        .into_inner()
        .entries;
    let joins: Vec<&pb::AuditEntry> = audit
        .iter()
        .filter(|e| e.rpc == "weft.gateway.v1.JoinService/JoinHost")
        .collect();
    assert!(
        joins
            .iter()
            .any(|e| e.outcome == "OK" && e.identity.starts_with("join:") && e.object == "h-b"),
        "{joins:?}"
    );
    assert!(
        joins.iter().any(|e| e.outcome == "InvalidArgument"),
        "{joins:?}"
    );
    let log = std::fs::read_to_string(&g.svc.log).unwrap();
    for secret in [&token, &bound, &holder] {
        assert!(
            !log.contains(&secret["weftjoin_".len().."weftjoin_".len() + 64]),
            "a join token in the log"
        );
        assert!(audit.iter().all(|e| !e.message.contains(secret.as_str())));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_hosts_certificates_are_refused_until_it_joins_again() {
    let g = Joinable::start().await;
    let (req, agent_key, _) = ask("h-b", "h-b");
    let first = g.join(&g.join_token("h-b", 0).await, req).await.unwrap();
    let mut agent = g
        .registry_as("agent-1", &first.agent_cert_pem, &agent_key)
        .await;
    agent.register_host(register("h-b")).await.unwrap();
    // Removal times count by the second (a certificate's notBefore): the removal comes in a
    // later second than the first certificate.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    g.hosts()
        .await
        .remove_host(pb::RemoveHostRequest {
            name: "h-b".into(),
            force: true,
        })
        .await
        .unwrap();
    let refused = agent.register_host(register("h-b")).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert!(refused.message().contains("was removed"), "{refused:?}");

    // Joined again: new certificates, which work.
    let (req, agent_key, _) = ask("h-b", "h-b");
    let second = g.join(&g.join_token("h-b", 0).await, req).await.unwrap();
    let mut agent = g
        .registry_as("agent-2", &second.agent_cert_pem, &agent_key)
        .await;
    agent.register_host(register("h-b")).await.unwrap();
}
