//! Renewed certificates are used by new connections without a restart; a broken replacement
//! is not.

use std::time::{Duration, Instant};

use weft_identity::{ClientTls, Kind, ServerTls};

use crate::support::{Pki, TestServer, check, id, probe, replace, serial_of_pem};

#[tokio::test]
async fn renewed_server_certificate_is_served_to_new_connections() {
    let pki = Pki::new();
    let gateway = id(Kind::Gateway, "gateway");
    let first = pki.issue(&gateway);
    let files = pki.write("gateway", &first, pki.ca.cert_pem());
    let server = TestServer::start(ServerTls::new(files.clone()).expect("server tls")).await;
    let client = ClientTls::new(pki.files("agent", &id(Kind::Agent, "h1")), Kind::Gateway)
        .expect("client tls");
    assert_eq!(
        probe(server.addr, client.config()).await,
        Ok(serial_of_pem(&first.cert_pem))
    );

    let renewed = pki.issue(&gateway);
    assert_ne!(
        serial_of_pem(&renewed.cert_pem),
        serial_of_pem(&first.cert_pem)
    );
    replace(&files.key, &renewed.key_pem);
    replace(&files.cert, &renewed.cert_pem);

    let want = serial_of_pem(&renewed.cert_pem);
    crate::support::eventually("the renewed server certificate", || {
        let client = client.clone();
        let want = want.clone();
        async move { (probe(server.addr, client.config()).await.ok()? == want).then_some(()) }
    })
    .await;
    // And tonic clients are served with it.
    let channel = client.connect(&server.url()).await.expect("connect");
    check(channel).await.expect("health check");
    server.stop().await;
}

#[tokio::test]
async fn renewed_client_certificate_is_used_by_new_connections() {
    let pki = Pki::new();
    let server = TestServer::start(
        ServerTls::new(pki.files("gateway", &id(Kind::Gateway, "gateway"))).expect("server tls"),
    )
    .await;
    let agent = id(Kind::Agent, "h1");
    let first = pki.issue(&agent);
    let files = pki.write("agent", &first, pki.ca.cert_pem());
    let client = ClientTls::new(files.clone(), Kind::Gateway).expect("client tls");
    check(client.connect(&server.url()).await.expect("connect"))
        .await
        .expect("health check");
    assert_eq!(
        server.seen().last().and_then(|s| s.serial.clone()),
        Some(serial_of_pem(&first.cert_pem))
    );

    let renewed = pki.issue(&agent);
    replace(&files.key, &renewed.key_pem);
    replace(&files.cert, &renewed.cert_pem);

    let want = serial_of_pem(&renewed.cert_pem);
    crate::support::eventually("the server to see the renewed client certificate", || {
        let (client, server, want, agent) = (&client, &server, want.clone(), &agent);
        async move {
            check(client.connect(&server.url()).await.ok()?)
                .await
                .ok()?;
            let last = server.seen().last()?.clone();
            assert_eq!(last.identity.as_ref(), Some(agent));
            (last.serial? == want).then_some(())
        }
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn broken_replacement_keeps_the_previous_certificate() {
    let pki = Pki::new();
    let gateway = id(Kind::Gateway, "gateway");
    let first = pki.issue(&gateway);
    let files = pki.write("gateway", &first, pki.ca.cert_pem());
    let server = TestServer::start(ServerTls::new(files.clone()).expect("server tls")).await;
    let client = ClientTls::new(pki.files("agent", &id(Kind::Agent, "h1")), Kind::Gateway)
        .expect("client tls");

    // A renewal caught half-way: the new certificate, the old key.
    let renewed = pki.issue(&gateway);
    replace(&files.cert, &renewed.cert_pem);
    // For longer than the reload check interval, every new connection still works and gets
    // the first certificate.
    let until = Instant::now() + weft_identity::CHECK_INTERVAL + Duration::from_millis(500);
    while Instant::now() < until {
        assert_eq!(
            probe(server.addr, client.config()).await,
            Ok(serial_of_pem(&first.cert_pem))
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The key arrives: the pair is complete and taken.
    replace(&files.key, &renewed.key_pem);
    let want = serial_of_pem(&renewed.cert_pem);
    crate::support::eventually("the completed renewal", || {
        let client = client.clone();
        let want = want.clone();
        async move { (probe(server.addr, client.config()).await.ok()? == want).then_some(()) }
    })
    .await;
    server.stop().await;
}
