//! Who may talk to whom: real handshakes between a tonic server behind `incoming` and real
//! clients, each refused for its own reason.

use std::sync::Arc;

use tokio::{io::AsyncWriteExt, net::TcpStream};

use weft_identity::{ClientTls, Kind, ServerTls, pki::Ca};

use crate::support::{Pki, TestServer, check, expired, id, probe};

async fn gateway(pki: &Pki) -> TestServer {
    let files = pki.files("gateway", &id(Kind::Gateway, "gateway"));
    TestServer::start(ServerTls::new(files).expect("server tls")).await
}

#[tokio::test]
async fn valid_client_is_served_and_the_layer_sees_its_identity() {
    let pki = Pki::new();
    let server = gateway(&pki).await;
    let agent = id(Kind::Agent, "h1");
    let client = ClientTls::new(pki.files("agent", &agent), Kind::Gateway).expect("client tls");

    let channel = client.connect(&server.url()).await.expect("connect");
    check(channel).await.expect("health check");
    // The same through a plain HOST:PORT address.
    let channel = client
        .connect(&server.addr.to_string())
        .await
        .expect("connect");
    check(channel).await.expect("health check");

    let seen = server.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(
        seen.iter().all(|s| s.identity.as_ref() == Some(&agent)),
        "{seen:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn client_without_certificate_is_refused() {
    let pki = Pki::new();
    let server = gateway(&pki).await;
    let agent = ClientTls::new(pki.files("agent", &id(Kind::Agent, "h1")), Kind::Gateway)
        .expect("client tls");
    // The agent's configuration minus its certificate: same CA trust, same ALPN.
    let mut anonymous = rustls::ClientConfig::clone(&agent.config());
    anonymous.client_auth_cert_resolver = Arc::new(NoCert);

    let err = probe(server.addr, Arc::new(anonymous))
        .await
        .expect_err("a client without a certificate must be refused");
    assert!(err.contains("CertificateRequired"), "{err}");
    assert!(server.seen().is_empty());
    server.stop().await;
}

#[derive(Debug)]
struct NoCert;

impl rustls::client::ResolvesClientCert for NoCert {
    fn resolve(
        &self,
        _hints: &[&[u8]],
        _schemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        None
    }

    fn has_certs(&self) -> bool {
        false
    }
}

#[tokio::test]
async fn client_certificate_from_another_ca_is_refused() {
    let pki = Pki::new();
    let server = gateway(&pki).await;
    let other = Ca::generate().expect("other CA");
    let stranger = other
        .issue(&id(Kind::Admin, "admin"), &Default::default())
        .expect("issue");
    // It trusts the right CA, so only the server has a reason to refuse.
    let files = pki.write("stranger", &stranger, pki.ca.cert_pem());
    let client = ClientTls::new(files, Kind::Gateway).expect("client tls");

    let err = match client.connect(&server.url()).await {
        Ok(channel) => check(channel).await.expect_err("must be refused"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("UnknownCA"), "{err}");
    assert!(server.seen().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn server_certificate_from_another_ca_is_refused_by_the_client() {
    let pki = Pki::new();
    let other = Ca::generate().expect("other CA");
    let impostor = other
        .issue(
            &id(Kind::Gateway, "gateway"),
            &weft_identity::pki::LeafOptions::for_host("testhost"),
        )
        .expect("issue");
    let files = pki.write("impostor", &impostor, pki.ca.cert_pem());
    let server = TestServer::start(ServerTls::new(files).expect("server tls")).await;
    let client = ClientTls::new(pki.files("agent", &id(Kind::Agent, "h1")), Kind::Gateway)
        .expect("client tls");

    let err = client
        .connect(&server.url())
        .await
        .expect_err("the client must refuse")
        .to_string();
    assert!(
        err.contains("invalid peer certificate: UnknownIssuer"),
        "{err}"
    );
    server.stop().await;
}

#[tokio::test]
async fn expired_client_certificate_is_refused() {
    let pki = Pki::new();
    let server = gateway(&pki).await;
    let old = pki.issue_with(&id(Kind::Agent, "h1"), expired());
    let files = pki.write("old-agent", &old, pki.ca.cert_pem());
    let client = ClientTls::new(files, Kind::Gateway).expect("client tls");

    let err = match client.connect(&server.url()).await {
        Ok(channel) => check(channel).await.expect_err("must be refused"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("CertificateExpired"), "{err}");
    assert!(server.seen().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn expired_server_certificate_is_refused_by_the_client() {
    let pki = Pki::new();
    let old = pki.issue_with(&id(Kind::Gateway, "gateway"), expired());
    let files = pki.write("old-gateway", &old, pki.ca.cert_pem());
    let server = TestServer::start(ServerTls::new(files).expect("server tls")).await;
    let client = ClientTls::new(pki.files("agent", &id(Kind::Agent, "h1")), Kind::Gateway)
        .expect("client tls");

    let err = client
        .connect(&server.url())
        .await
        .expect_err("the client must refuse")
        .to_string();
    assert!(err.contains("certificate expired"), "{err}");
    server.stop().await;
}

#[tokio::test]
async fn server_of_the_wrong_kind_is_refused_by_the_client() {
    let pki = Pki::new();
    let dns = pki.files("dns", &id(Kind::Dns, "h1"));
    let server = TestServer::start(ServerTls::new(dns).expect("server tls")).await;
    let client = ClientTls::new(pki.files("agent", &id(Kind::Agent, "h1")), Kind::Gateway)
        .expect("client tls");

    let err = client
        .connect(&server.url())
        .await
        .expect_err("the client must refuse")
        .to_string();
    assert!(
        err.contains("server presented spiffe://weft/dns/h1, expected a gateway certificate"),
        "{err}"
    );
    assert!(server.seen().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn server_not_valid_for_the_dialled_address_is_refused() {
    let pki = Pki::new();
    let opts = weft_identity::pki::LeafOptions {
        dns_names: vec!["testhost".into()],
        ..Default::default()
    };
    let named_only = pki
        .ca
        .issue(&id(Kind::Gateway, "gateway"), &opts)
        .expect("issue");
    let files = pki.write("named-only", &named_only, pki.ca.cert_pem());
    let server = TestServer::start(ServerTls::new(files).expect("server tls")).await;
    let client = ClientTls::new(pki.files("agent", &id(Kind::Agent, "h1")), Kind::Gateway)
        .expect("client tls");

    let err = client
        .connect(&server.url())
        .await
        .expect_err("a certificate without 127.0.0.1 must be refused for 127.0.0.1")
        .to_string();
    assert!(err.contains("certificate not valid for name"), "{err}");
    server.stop().await;
}

#[tokio::test]
async fn silent_client_does_not_hold_up_others() {
    let pki = Pki::new();
    let server = gateway(&pki).await;
    // Connected, never says a word: its handshake waits out the 10 s handshake timeout in a
    // task of its own. Were handshakes done one after the other, the next client's 5 s
    // connect timeout would expire behind it.
    let _silent = TcpStream::connect(server.addr).await.expect("connect");
    let client = ClientTls::new(pki.files("agent", &id(Kind::Agent, "h1")), Kind::Gateway)
        .expect("client tls");

    check(client.connect(&server.url()).await.expect("connect"))
        .await
        .expect("health check");
    server.stop().await;
}

#[tokio::test]
async fn failed_handshakes_do_not_end_the_stream() {
    let pki = Pki::new();
    let server = gateway(&pki).await;
    for _ in 0..3 {
        let mut plain = TcpStream::connect(server.addr).await.expect("connect");
        plain
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .expect("write");
    }
    let client = ClientTls::new(pki.files("agent", &id(Kind::Agent, "h1")), Kind::Gateway)
        .expect("client tls");

    check(client.connect(&server.url()).await.expect("connect"))
        .await
        .expect("health check");
    server.stop().await;
}
