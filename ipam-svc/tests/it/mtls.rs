//! ipam-svc over mutual TLS, the real binary on loopback: every method refused without a
//! certificate while health stays open, the gateway's certificate alone let through, foreign
//! and expired certificates refused at the handshake, a renewed certificate served without a
//! restart, and no start at all without TLS unless plaintext is asked for by name.

use std::time::Duration;

use tonic::Code;
use weft_identity::Kind;
use weft_testkit::{
    ServiceProcess, TestDb,
    mtls::{self, TestPki},
};

use crate::harness::ipam_bin;

const SERVICE: &str = "weft.ipam.v1.IpamService";
const LIST_SPACES: &str = "/weft.ipam.v1.IpamService/ListAddressSpaces";

async fn ipam_tls(pki: &TestPki, db: &TestDb) -> ServiceProcess {
    let own = pki.files("ipam", Kind::Ipam, "ipam");
    let mut args = vec!["--database-url".to_owned(), db.url.clone()];
    args.extend(mtls::flags(&own));
    ServiceProcess::start_tls(ipam_bin(), &args, &pki.ca_path(), Kind::Ipam).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_is_unauthenticated_without_a_certificate_and_health_is_open() {
    let pki = TestPki::new();
    let db = TestDb::sqlite();
    let svc = ipam_tls(&pki, &db).await;
    mtls::assert_every_method_needs_a_certificate(svc.addr, &pki.ca_path(), Kind::Ipam, SERVICE)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_gateway_certificate_is_let_through() {
    let pki = TestPki::new();
    let db = TestDb::sqlite();
    let svc = ipam_tls(&pki, &db).await;
    let call = |files: weft_identity::TlsFiles| {
        let tls = mtls::client(&files, Kind::Ipam);
        async move { mtls::try_call(&tls, svc.addr, LIST_SPACES).await }
    };

    let gateway = pki.files("gw", Kind::Gateway, "gateway");
    assert_eq!(call(gateway).await, Ok(Code::Ok));
    for (kind, name) in [
        (Kind::Dns, "h1"),
        (Kind::Agent, "h1"),
        (Kind::Admin, "admin"),
    ] {
        let files = pki.files(kind.as_str(), kind, name);
        assert_eq!(call(files).await, Ok(Code::PermissionDenied), "{kind}");
    }
    // ipam-svc's own identity never calls anyone.
    let ipam = pki.files("other-ipam", Kind::Ipam, "ipam2");
    assert_eq!(call(ipam).await, Ok(Code::Unauthenticated));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_and_expired_certificates_are_refused_at_the_handshake() {
    let pki = TestPki::new();
    let db = TestDb::sqlite();
    let svc = ipam_tls(&pki, &db).await;
    let foreign = pki.foreign("foreign", Kind::Gateway, "gateway");
    let err = mtls::handshake(&mtls::client(&foreign, Kind::Ipam), svc.addr)
        .await
        .expect_err("a certificate from another CA");
    assert!(err.contains("UnknownCA"), "{err}");
    let old = pki.files_with("old", Kind::Gateway, "gateway", mtls::expired());
    let err = mtls::handshake(&mtls::client(&old, Kind::Ipam), svc.addr)
        .await
        .expect_err("an expired certificate");
    assert!(err.contains("CertificateExpired"), "{err}");
    // The same with a call: refused before any method runs.
    let st = mtls::try_call(&mtls::client(&old, Kind::Ipam), svc.addr, LIST_SPACES).await;
    assert!(st.is_err(), "{st:?}");
    // A valid certificate on the same server still gets through the handshake.
    let gateway = mtls::client(&pki.files("gw", Kind::Gateway, "gateway"), Kind::Ipam);
    mtls::handshake(&gateway, svc.addr).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_served_to_new_connections_without_a_restart() {
    let pki = TestPki::new();
    let db = TestDb::sqlite();
    let svc = ipam_tls(&pki, &db).await;
    let ca = pki.ca_path();
    let first = mtls::server_certificate(svc.addr, &ca, Kind::Ipam)
        .await
        .unwrap();
    assert_eq!(first, mtls::der_of(&pki.dir.path().join("ipam.crt")));
    let gateway = mtls::client(&pki.files("gw", Kind::Gateway, "gateway"), Kind::Ipam);
    let before = gateway.connect(&svc.addr.to_string()).await.unwrap();

    // A renewal: a new key and certificate renamed over the old ones.
    let renewed = pki.files("ipam", Kind::Ipam, "ipam");
    let want = mtls::der_of(&renewed.cert);
    assert_ne!(want, first);
    weft_testkit::wait_for(Duration::from_secs(15), "the renewed certificate", || {
        let ca = ca.clone();
        let want = want.clone();
        async move {
            let now = mtls::server_certificate(svc.addr, &ca, Kind::Ipam).await?;
            (now == want).then_some(())
        }
    })
    .await;
    // The same process, and a connection made before the renewal still works.
    assert_eq!(mtls::call_empty(before, LIST_SPACES).await.code(), Code::Ok);
    assert_eq!(
        mtls::try_call(&gateway, svc.addr, LIST_SPACES).await,
        Ok(Code::Ok)
    );
}

#[test]
fn without_tls_it_refuses_to_start_naming_the_plaintext_flag() {
    let db = TestDb::sqlite();
    let out = std::process::Command::new(ipam_bin())
        .args(["--listen", "127.0.0.1:0", "--database-url", &db.url])
        .env_remove("WEFT_INSECURE_PLAINTEXT")
        .output()
        .unwrap();
    weft_testkit::logs::keep_output("ipam-svc", &out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("--insecure-plaintext") && err.contains("--tls-cert"),
        "{err}"
    );
}
