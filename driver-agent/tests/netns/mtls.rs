//! The driver-agent binary over mutual TLS, managing a namespace this test makes: every method
//! refused without a certificate while health stays open, the gateway's certificate let
//! through and dns-svc's refused, a certificate from another CA refused at the handshake.

use tonic::Code;
use weft_identity::Kind;
use weft_testkit::{
    ServiceProcess,
    mtls::{self, TestPki},
};

use crate::support::TestNs;

const SERVICE: &str = "weft.agent.v1.AgentService";
const CAPABILITIES: &str = "/weft.agent.v1.AgentService/GetCapabilities";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: namespaces, links, nftables")]
async fn over_tls_only_the_gateway_certificate_is_let_through_and_health_is_open() {
    let host = TestNs::new();
    let data = tempfile::tempdir().unwrap();
    let pki = TestPki::new();
    let own = pki.files("agent", Kind::Agent, "h1");
    let mut args = vec![
        "--netns".to_owned(),
        host.path.display().to_string(),
        "--data-dir".to_owned(),
        data.path().display().to_string(),
        "--broker-socket".to_owned(),
        data.path().join("broker.sock").display().to_string(),
    ];
    args.extend(mtls::flags(&own));
    let svc = ServiceProcess::start_tls(
        env!("CARGO_BIN_EXE_driver-agent"),
        &args,
        &pki.ca_path(),
        Kind::Agent,
    )
    .await;

    mtls::assert_every_method_needs_a_certificate(svc.addr, &pki.ca_path(), Kind::Agent, SERVICE)
        .await;

    let call = |files: weft_identity::TlsFiles| {
        let tls = mtls::client(&files, Kind::Agent);
        async move { mtls::try_call(&tls, svc.addr, CAPABILITIES).await }
    };
    let gateway = call(pki.files("gw", Kind::Gateway, "gateway")).await;
    assert!(
        gateway.as_ref().is_ok_and(|c| mtls::passed_access(*c)),
        "{gateway:?}"
    );
    assert_eq!(
        call(pki.files("dns", Kind::Dns, "h1")).await,
        Ok(Code::PermissionDenied)
    );
    assert_eq!(
        call(pki.files("other-agent", Kind::Agent, "h2")).await,
        Ok(Code::PermissionDenied)
    );
    let foreign = mtls::client(
        &pki.foreign("foreign", Kind::Gateway, "gateway"),
        Kind::Agent,
    );
    let err = mtls::handshake(&foreign, svc.addr)
        .await
        .expect_err("a certificate from another CA");
    assert!(err.contains("UnknownCA"), "{err}");
    drop(svc);
}
