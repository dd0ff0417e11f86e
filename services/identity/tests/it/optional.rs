//! Servers whose client certificate is optional (health and reflection stay open to anyone who
//! trusts the CA): an anonymous client gets through the handshake with no identity, a valid
//! certificate still names its caller, and a certificate from another CA or an expired one is
//! still refused at the handshake. And the anonymous client itself.

use weft_identity::{ClientAuth, ClientTls, Kind, ServerTls, pki::Ca};

use crate::support::{Pki, TestServer, check, expired, id};

async fn optional_server(pki: &Pki) -> TestServer {
    let files = pki.files("ipam", &id(Kind::Ipam, "ipam"));
    let tls = ServerTls::with_optional_client_auth(files).expect("server tls");
    assert_eq!(tls.client_auth(), ClientAuth::Optional);
    TestServer::start(tls).await
}

#[tokio::test]
async fn anonymous_client_is_let_through_with_no_identity() {
    let pki = Pki::new();
    let server = optional_server(&pki).await;
    let client = ClientTls::anonymous(pki.path("ipam-ca.crt"), Kind::Ipam).expect("client tls");
    assert!(client.files().is_none());

    check(client.connect(&server.url()).await.expect("connect"))
        .await
        .expect("health check");
    let seen = server.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].identity, None);
    assert_eq!(seen[0].serial, None);
    server.stop().await;
}

#[tokio::test]
async fn a_presented_certificate_still_names_its_caller() {
    let pki = Pki::new();
    let server = optional_server(&pki).await;
    let gateway = id(Kind::Gateway, "gateway");
    let client = ClientTls::new(pki.files("gw", &gateway), Kind::Ipam).expect("client tls");

    check(client.connect(&server.url()).await.expect("connect"))
        .await
        .expect("health check");
    assert_eq!(server.seen()[0].identity.as_ref(), Some(&gateway));
    server.stop().await;
}

#[tokio::test]
async fn certificate_from_another_ca_is_still_refused() {
    let pki = Pki::new();
    let server = optional_server(&pki).await;
    let other = Ca::generate().expect("other CA");
    let stranger = other
        .issue(&id(Kind::Gateway, "gateway"), &Default::default())
        .expect("issue");
    let files = pki.write("stranger", &stranger, pki.ca.cert_pem());
    let client = ClientTls::new(files, Kind::Ipam).expect("client tls");

    let err = match client.connect(&server.url()).await {
        Ok(channel) => check(channel).await.expect_err("must be refused"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("UnknownCA"), "{err}");
    assert!(server.seen().is_empty(), "no call got through");
    server.stop().await;
}

#[tokio::test]
async fn expired_certificate_is_still_refused() {
    let pki = Pki::new();
    let server = optional_server(&pki).await;
    let old = pki.issue_with(&id(Kind::Gateway, "gateway"), expired());
    let files = pki.write("old", &old, pki.ca.cert_pem());
    let client = ClientTls::new(files, Kind::Ipam).expect("client tls");

    let err = match client.connect(&server.url()).await {
        Ok(channel) => check(channel).await.expect_err("must be refused"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("CertificateExpired"), "{err}");
    assert!(server.seen().is_empty(), "no call got through");
    server.stop().await;
}

#[tokio::test]
async fn anonymous_client_is_refused_by_a_server_that_requires_certificates() {
    let pki = Pki::new();
    let files = pki.files("gateway", &id(Kind::Gateway, "gateway"));
    let server = TestServer::start(ServerTls::new(files).expect("server tls")).await;
    let client =
        ClientTls::anonymous(pki.path("gateway-ca.crt"), Kind::Gateway).expect("client tls");

    let err = match client.connect(&server.url()).await {
        Ok(channel) => check(channel).await.expect_err("must be refused"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("CertificateRequired"), "{err}");
    assert!(server.seen().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn anonymous_client_still_verifies_the_server() {
    let pki = Pki::new();
    let server = optional_server(&pki).await;
    // Trusting another CA, or expecting another kind: the server is refused.
    let other = Pki::new();
    let stranger_ca = other.path("other-ca.crt");
    std::fs::write(&stranger_ca, other.ca.cert_pem()).expect("write");
    let err = ClientTls::anonymous(stranger_ca, Kind::Ipam)
        .expect("client tls")
        .connect(&server.url())
        .await
        .expect_err("unknown issuer")
        .to_string();
    assert!(err.contains("UnknownIssuer"), "{err}");
    let err = ClientTls::anonymous(pki.path("ipam-ca.crt"), Kind::Agent)
        .expect("client tls")
        .connect(&server.url())
        .await
        .expect_err("wrong kind")
        .to_string();
    assert!(err.contains("expected a agent certificate"), "{err}");
    server.stop().await;
}
