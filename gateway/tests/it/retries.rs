//! A client whose call died with the gateway retries it with the same request id, and gets the
//! call's answer (found by the chaos run of `weft up`, weft/tests/it/chaos):
//!
//! - killed right after a saga's last commit, the retry gets the answer recorded in that
//!   commit (not ALREADY_EXISTS or NOT_FOUND for what the first call did);
//! - killed in the middle of a removal (Disconnect, DeleteSandbox), the retry takes the removal
//!   over and completes it at once (not INTERNAL until the sweep completes it, a minute later);
//! - a pool reserved for a network that no network has (a DeleteNetwork whose release IPAM
//!   did not answer, a CreateNetwork killed before its record) is reported by the consistency
//!   check and released by the sweep.

use std::time::Duration;

use clap::Parser as _;
use tonic::Code;
use weft_proto::{
    gateway::v1::{
        self as pb, network_service_client::NetworkServiceClient,
        sandbox_service_client::SandboxServiceClient,
    },
    ipam::v1::{self as ipb, ipam_service_client::IpamServiceClient},
};
use weft_testkit::{
    Backend, ServiceProcess,
    stack::{GatewayDeps, StackOptions},
};

use crate::harness::with_subnet;

/// The gateway's flags: no sweep while the test runs (what is left is the retry's to finish).
fn args(deps: &GatewayDeps, fault: Option<&str>) -> Vec<String> {
    let mut args = deps.gateway_args();
    args.extend(["--operation-timeout", "1h", "--sweep-interval", "1h"].map(str::to_owned));
    if let Some(step) = fault {
        args.extend(["--fault".to_owned(), step.to_owned()]);
    }
    args
}

const BIN: &str = env!("CARGO_BIN_EXE_gateway");

fn on_a(name: &str, request_id: &str) -> pb::CreateSandboxRequest {
    pb::CreateSandboxRequest {
        name: name.into(),
        networks: vec![pb::NetworkAttachment {
            network: "a".into(),
            settings: None,
        }],
        request_id: request_id.into(),
        ..Default::default()
    }
}

/// Runs `call` on a gateway that dies at `step`, checks that it died, then runs `call` again
/// (same request id) on a gateway started anew: its answer.
async fn killed_then_retried<T>(
    deps: &GatewayDeps,
    step: &str,
    call: impl AsyncFn(SandboxServiceClient<weft_runtime::access::Authed>) -> Result<T, tonic::Status>,
) -> Result<T, tonic::Status> {
    let mut dying = ServiceProcess::start(BIN, &args(deps, Some(step))).await;
    let first = call(SandboxServiceClient::new(deps.admin_channel(dying.addr))).await;
    assert!(
        first.is_err(),
        "{step}: the gateway should have died mid-call"
    );
    assert!(!dying.wait_exit(Duration::from_secs(10)).await.success());
    let again = ServiceProcess::start(BIN, &args(deps, None)).await;
    let answer = call(SandboxServiceClient::new(deps.admin_channel(again.addr))).await;
    drop(again);
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_a_crash_gets_the_answer_of_what_the_first_call_did() {
    let deps = StackOptions::new(Backend::Sqlite).start_deps().await;
    let gw = ServiceProcess::start(BIN, &args(&deps, None)).await;
    let mut nets = NetworkServiceClient::new(deps.admin_channel(gw.addr));
    nets.create_network(with_subnet("a", "10.113.0.0/24"))
        .await
        .unwrap();
    nets.create_network(with_subnet("b", "10.114.0.0/24"))
        .await
        .unwrap();
    let mut sb = SandboxServiceClient::new(deps.admin_channel(gw.addr));
    sb.create_sandbox(on_a("kept", "")).await.unwrap();
    drop(gw);

    // Killed after the commit that recorded it: the retry is answered, nothing done twice.
    let created = killed_then_retried(&deps, "create-sandbox:committed", async |mut c| {
        c.create_sandbox(on_a("s1", "r-create")).await
    })
    .await
    .expect("CreateSandbox's retry gets the sandbox")
    .into_inner();
    assert_eq!(created.name, "s1");
    let connected = killed_then_retried(&deps, "connect:committed", async |mut c| {
        c.connect(pb::ConnectRequest {
            sandbox: "s1".into(),
            network: "b".into(),
            request_id: "r-connect".into(),
            ..Default::default()
        })
        .await
    })
    .await
    .expect("Connect's retry gets the endpoint")
    .into_inner();
    assert_eq!(connected.network_name, "b");
    let disconnected = killed_then_retried(&deps, "disconnect:committed", async |mut c| {
        c.disconnect(pb::DisconnectRequest {
            sandbox: "s1".into(),
            network: "b".into(),
            request_id: "r-disconnect".into(),
            ..Default::default()
        })
        .await
    })
    .await
    .expect("Disconnect's retry gets its answer")
    .into_inner();
    assert_eq!(disconnected.endpoint_id, connected.id);
    let deleted = killed_then_retried(&deps, "delete-sandbox:committed", async |mut c| {
        c.delete_sandbox(pb::DeleteSandboxRequest {
            sandbox: "s1".into(),
            request_id: "r-delete".into(),
        })
        .await
    })
    .await
    .expect("DeleteSandbox's retry gets its answer")
    .into_inner();
    assert_eq!(deleted.id, created.id);

    // Killed in the middle of a removal: the retry completes it, at once.
    for (step, name) in [
        ("disconnect:detached", "s2"),
        ("delete-sandbox:detached", "s3"),
    ] {
        let gw = ServiceProcess::start(BIN, &args(&deps, None)).await;
        SandboxServiceClient::new(deps.admin_channel(gw.addr))
            .create_sandbox(on_a(name, ""))
            .await
            .unwrap();
        drop(gw);
        let request_id = format!("r-{step}");
        let done = killed_then_retried(&deps, step, async |mut c| {
            if step.starts_with("disconnect") {
                c.disconnect(pb::DisconnectRequest {
                    sandbox: name.into(),
                    network: "a".into(),
                    request_id: request_id.clone(),
                    force: false,
                })
                .await
                .map(drop)
            } else {
                c.delete_sandbox(pb::DeleteSandboxRequest {
                    sandbox: name.into(),
                    request_id: request_id.clone(),
                })
                .await
                .map(drop)
            }
        })
        .await;
        assert!(done.is_ok(), "{step}: the retry completes it: {done:?}");
    }

    // What each call did, once: s2 without endpoints, s3 and s1 gone, nothing pending or leaked.
    let gw_args = gateway::Args::try_parse_from(
        std::iter::once("gateway".to_owned()).chain(args(&deps, None)),
    )
    .unwrap();
    let gw = gateway::open(&gw_args).await.unwrap();
    let mut names: Vec<String> = gw
        .list_sandboxes()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    names.sort();
    assert_eq!(names, ["kept", "s2"]);
    let s2 = gw.find_sandbox("sandbox", "s2").await.unwrap();
    assert!(
        gw.endpoints(gateway::store::sandboxes::Owner::Sandbox, &s2.id)
            .await
            .unwrap()
            .is_empty()
    );
    let c = gw.consistency().await.unwrap();
    assert_eq!(c, gateway::recovery::Consistency::default());
    gw.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_that_no_network_has_is_reported_and_released_by_the_sweep() {
    let deps = StackOptions::new(Backend::Sqlite).start_deps().await;
    let mut ipam = IpamServiceClient::new(weft_testkit::channel(deps.ipam));
    let orphan = "ab".repeat(32);
    ipam.request_pool(ipb::RequestPoolRequest {
        pool_id: format!("{orphan}/0"),
        subnet: "10.115.0.0/24".into(),
        labels: [("weft.network".to_owned(), orphan.clone())].into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut gw_args = deps.gateway_args();
    gw_args.extend(["--operation-timeout", "0s", "--sweep-interval", "1h"].map(str::to_owned));
    let gw_args =
        gateway::Args::try_parse_from(std::iter::once("gateway".to_owned()).chain(gw_args))
            .unwrap();
    let gw = gateway::open(&gw_args).await.unwrap();
    gateway::ensure_predefined_with_retry(&gw).await;
    let c = gw.consistency().await.unwrap();
    assert_eq!(c.leaked_pools, [format!("{orphan}/0 10.115.0.0/24")]);
    let swept = gw.sweep().await.unwrap();
    assert_eq!(swept.released_pools, 1);
    assert_eq!(
        gw.consistency().await.unwrap(),
        gateway::recovery::Consistency::default()
    );
    gw.close().await;
    // The subnet is free again, and the sweep leaves the pools of networks alone.
    let gw_svc = ServiceProcess::start(BIN, &args(&deps, None)).await;
    NetworkServiceClient::new(deps.admin_channel(gw_svc.addr))
        .create_network(with_subnet("again", "10.115.0.0/24"))
        .await
        .unwrap();
    drop(gw_svc);
    let gw = gateway::open(&gw_args).await.unwrap();
    assert_eq!(gw.sweep().await.unwrap().released_pools, 0);
    assert_eq!(
        gw.consistency().await.unwrap(),
        gateway::recovery::Consistency::default()
    );
    let st = ipam
        .get_pool(ipb::GetPoolRequest {
            pool_id: format!("{orphan}/0"),
        })
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::NotFound);
    gw.close().await;
}

/// A removal's addresses are released beside its commit; a gateway killed between the two
/// leaves them held. The client's retry (same request id) is answered from the commit and
/// releases them too, without waiting for the sweep. (The crash is staged: the address is
/// taken again for its endpoint in IPAM after the call, as the killed release would have left
/// it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_removal_releases_what_a_crash_before_its_release_left_held() {
    let deps = StackOptions::new(Backend::Sqlite).start_deps().await;
    let mut ipam = IpamServiceClient::new(weft_testkit::channel(deps.ipam));
    let gw = ServiceProcess::start(BIN, &args(&deps, None)).await;
    let mut nets = NetworkServiceClient::new(deps.admin_channel(gw.addr));
    let mut sb = SandboxServiceClient::new(deps.admin_channel(gw.addr));
    let a = nets
        .create_network(with_subnet("a", "10.116.0.0/24"))
        .await
        .unwrap()
        .into_inner();
    let b = nets
        .create_network(with_subnet("b", "10.117.0.0/24"))
        .await
        .unwrap()
        .into_inner();
    let mut req = on_a("s", "");
    req.networks.push(pb::NetworkAttachment {
        network: "b".into(),
        settings: None,
    });
    let created = sb.create_sandbox(req).await.unwrap().into_inner();
    let on = |net: &pb::Network| {
        let ep = created
            .endpoints
            .iter()
            .find(|e| e.network_id == net.id)
            .unwrap();
        (
            ep.id.clone(),
            ep.ipv4_address.clone(),
            format!("{}/0", net.id),
        )
    };
    let (on_a_ep, on_a_ip, pool_a) = on(&a);
    let (on_b_ep, on_b_ip, pool_b) = on(&b);
    let hold_again = async |ipam: &mut IpamServiceClient<_>, pool: &str, owner: &str, ip: &str| {
        ipam.request_address(ipb::RequestAddressRequest {
            pool_id: pool.to_owned(),
            owner: owner.to_owned(),
            address: ip.split('/').next().unwrap().to_owned(),
        })
        .await
        .unwrap();
    };
    let held = async |ipam: &mut IpamServiceClient<_>, owner: &str| {
        !ipam
            .list_allocations(ipb::ListAllocationsRequest {
                owner: owner.to_owned(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .allocations
            .is_empty()
    };

    let disconnect = pb::DisconnectRequest {
        sandbox: "s".into(),
        network: "b".into(),
        request_id: "r-disconnect".into(),
        force: false,
    };
    let first = sb
        .disconnect(disconnect.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.endpoint_id, on_b_ep);
    hold_again(&mut ipam, &pool_b, &on_b_ep, &on_b_ip).await;
    assert!(held(&mut ipam, &on_b_ep).await);
    let again = sb.disconnect(disconnect).await.unwrap().into_inner();
    assert_eq!(again, first);
    assert!(!held(&mut ipam, &on_b_ep).await, "released by the retry");

    let delete = pb::DeleteSandboxRequest {
        sandbox: "s".into(),
        request_id: "r-delete".into(),
    };
    let first = sb
        .delete_sandbox(delete.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.endpoint_ids, std::slice::from_ref(&on_a_ep));
    hold_again(&mut ipam, &pool_a, &on_a_ep, &on_a_ip).await;
    assert!(held(&mut ipam, &on_a_ep).await);
    let again = sb.delete_sandbox(delete).await.unwrap().into_inner();
    assert_eq!(again, first);
    assert!(!held(&mut ipam, &on_a_ep).await, "released by the retry");
    drop(gw);
}
