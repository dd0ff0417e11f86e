//! dns-svc's admin API over mutual TLS, the real binary on loopback: every method refused
//! without a certificate while health stays open, the gateway's and an administrator's
//! certificates let through, the other services' refused, foreign ones refused at the
//! handshake.

use tonic::Code;
use weft_identity::Kind;
use weft_testkit::{
    ServiceProcess,
    mtls::{self, TestPki},
};

const SERVICE: &str = "weft.dns.v1.DnsService";
const STATS: &str = "/weft.dns.v1.DnsService/GetStats";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_the_gateway_and_admins_are_let_through_and_health_is_open() {
    let pki = TestPki::new();
    let own = pki.files("dns", Kind::Dns, "mtls-test");
    // Off the fixed default ports, away from the machine's resolv.conf; the gateway is never
    // reached (nothing here needs records).
    let mut args: Vec<String> = [
        "--operator-listen",
        "127.0.0.1:0",
        "--host",
        "mtls-test",
        "--upstream",
        "127.0.0.1:9",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    args.extend(mtls::flags(&own));
    let svc = ServiceProcess::start_tls(
        env!("CARGO_BIN_EXE_dns-svc"),
        &args,
        &pki.ca_path(),
        Kind::Dns,
    )
    .await;

    mtls::assert_every_method_needs_a_certificate(svc.addr, &pki.ca_path(), Kind::Dns, SERVICE)
        .await;
    let call = |files: weft_identity::TlsFiles| {
        let tls = mtls::client(&files, Kind::Dns);
        async move { mtls::try_call(&tls, svc.addr, STATS).await }
    };
    assert_eq!(
        call(pki.files("gw", Kind::Gateway, "gateway")).await,
        Ok(Code::Ok)
    );
    assert_eq!(
        call(pki.files("admin", Kind::Admin, "admin")).await,
        Ok(Code::Ok)
    );
    for (kind, name) in [
        (Kind::Operator, "op"),
        (Kind::Agent, "mtls-test"),
        (Kind::Dns, "other"),
    ] {
        let files = pki.files(kind.as_str(), kind, name);
        assert_eq!(call(files).await, Ok(Code::PermissionDenied), "{kind}");
    }
    let foreign = mtls::client(&pki.foreign("foreign", Kind::Admin, "admin"), Kind::Dns);
    let err = mtls::handshake(&foreign, svc.addr)
        .await
        .expect_err("a certificate from another CA");
    assert!(err.contains("UnknownCA"), "{err}");
}
