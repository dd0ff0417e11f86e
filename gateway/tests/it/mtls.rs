//! The gateway's TLS listener (`--tls-listen`), the real binary: agents come with certificates
//! instead of tokens, and an agent's certificate speaks for its own host only; without a
//! certificate or token nothing but health is answered. And the plaintext listener stays on
//! loopback unless plaintext is asked for by name.

use tonic::Code;
use weft_identity::Kind;
use weft_proto::gateway::v1::{
    self as pb, agent_registry_service_client::AgentRegistryServiceClient,
};
use weft_testkit::{
    ServiceProcess, TestDb,
    mtls::{self, TestPki},
};

/// A gateway (the real binary) with `pki`'s gateway certificate and a TLS listener, and
/// `extra` flags.
pub(crate) async fn gateway_with_tls_listener(
    pki: &TestPki,
    db: &TestDb,
    extra: &[String],
) -> (ServiceProcess, std::net::SocketAddr) {
    let own = pki.files("gateway", Kind::Gateway, "gateway");
    let tls_addr: std::net::SocketAddr = format!("127.0.0.1:{}", weft_testkit::free_port())
        .parse()
        .unwrap();
    // ipam-svc and the agent are never reached here (nothing is placed or allocated).
    let mut args: Vec<String> = [
        "--database-url",
        &db.url,
        "--ipam",
        "127.0.0.1:9",
        "--agent",
        "127.0.0.1:9",
        "--host-name",
        "h-a",
        "--tls-listen",
        &tls_addr.to_string(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    args.extend(mtls::flags(&own));
    args.extend_from_slice(extra);
    let svc = ServiceProcess::start(env!("CARGO_BIN_EXE_gateway"), &args).await;
    (svc, tls_addr)
}

fn register(host: &str) -> pb::RegisterHostRequest {
    pb::RegisterHostRequest {
        name: host.into(),
        agent_address: "127.0.0.1:9".into(),
        agent_version: "test".into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_certificate_speaks_for_its_own_host_only() {
    let pki = TestPki::new();
    let db = TestDb::sqlite();
    let (_svc, tls_addr) = gateway_with_tls_listener(&pki, &db, &[]).await;
    let agent_a = mtls::client(&pki.files("agent-a", Kind::Agent, "h-a"), Kind::Gateway);
    let mut client =
        AgentRegistryServiceClient::new(agent_a.connect(&tls_addr.to_string()).await.unwrap());

    let other = client.register_host(register("h-b")).await.unwrap_err();
    assert_eq!(other.code(), Code::PermissionDenied, "{other:?}");
    assert!(
        other
            .message()
            .contains("agent:h-a may act for host \"h-a\" only"),
        "{other:?}"
    );
    let beat = client
        .heartbeat(pb::HeartbeatRequest {
            host: "h-b".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(beat.code(), Code::PermissionDenied, "{beat:?}");

    let own = client
        .register_host(register("h-a"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(own.host.unwrap().name, "h-a");
    client
        .heartbeat(pb::HeartbeatRequest {
            host: "h-a".into(),
            ..Default::default()
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tls_listener_needs_a_certificate_or_token_but_health_is_open() {
    let pki = TestPki::new();
    let db = TestDb::sqlite();
    let (_svc, tls_addr) = gateway_with_tls_listener(&pki, &db, &[]).await;
    let anonymous = mtls::anonymous(&pki.ca_path(), Kind::Gateway);
    assert_eq!(
        mtls::health(&anonymous, tls_addr).await,
        Some(tonic_health::pb::health_check_response::ServingStatus::Serving)
    );
    let list = "/weft.gateway.v1.NetworkService/ListNetworks";
    assert_eq!(
        mtls::try_call(&anonymous, tls_addr, list).await,
        Ok(Code::Unauthenticated)
    );
    // An administrator's certificate reads; dns-svc's may not; another CA's never connects.
    let admin = mtls::client(&pki.files("admin", Kind::Admin, "admin"), Kind::Gateway);
    assert_eq!(mtls::try_call(&admin, tls_addr, list).await, Ok(Code::Ok));
    let dns = mtls::client(&pki.files("dns", Kind::Dns, "h-a"), Kind::Gateway);
    assert_eq!(
        mtls::try_call(&dns, tls_addr, list).await,
        Ok(Code::PermissionDenied)
    );
    let foreign = mtls::client(&pki.foreign("foreign", Kind::Admin, "admin"), Kind::Gateway);
    let err = mtls::handshake(&foreign, tls_addr).await.unwrap_err();
    assert!(err.contains("UnknownCA"), "{err}");
}

#[test]
fn a_plaintext_listener_off_loopback_is_refused_naming_the_flag() {
    let db = TestDb::sqlite();
    // The check comes before any bind: the address need not be this machine's.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["--listen", "192.0.2.1:7700", "--database-url", &db.url])
        .env_remove("WEFT_INSECURE_PLAINTEXT")
        .output()
        .unwrap();
    weft_testkit::logs::keep_output("gateway", &out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("--insecure-plaintext") && err.contains("192.0.2.1:7700"),
        "{err}"
    );
}
