//! Crash: the gateway is killed (SIGKILL, at a chosen step, by its fault hook) at each step of
//! CreateSandbox (with two networks), Connect, Disconnect and DeleteSandbox; after a restart
//! and one sweep, IPAM's Check and the gateway's consistency check find nothing leaked and
//! nothing half-attached, and each operation was undone (CreateSandbox, Connect) or completed
//! (Disconnect, DeleteSandbox).

use std::time::Duration;

use clap::Parser as _;
use weft_proto::{
    gateway::v1::{
        self as pb, network_service_client::NetworkServiceClient,
        sandbox_service_client::SandboxServiceClient,
    },
    ipam::v1 as ipb,
};
use weft_testkit::{Backend, ServiceProcess, stack::StackOptions};

use crate::harness::with_subnet;

const STEPS: &[&str] = &[
    "create-sandbox:recorded",
    "create-sandbox:allocated",
    "create-sandbox:attached",
    "connect:recorded",
    "connect:allocated",
    "connect:attached",
    "disconnect:recorded",
    "disconnect:detached",
    "disconnect:released",
    "delete-sandbox:recorded",
    "delete-sandbox:detached",
    "delete-sandbox:agent-removed",
    "delete-sandbox:released",
    "delete-sandbox:committed",
];

async fn crash_at_every_step(backend: Backend, kills: usize) {
    let deps = StackOptions::new(backend).start_deps().await;
    let mut base = deps.gateway_args();
    base.extend(
        [
            // Whatever a dead gateway left is abandoned at once; nothing else runs here.
            "--operation-timeout",
            "0s",
            "--sweep-interval",
            "1h",
        ]
        .map(str::to_owned),
    );
    let bin = env!("CARGO_BIN_EXE_gateway");
    {
        let svc = ServiceProcess::start(bin, &base).await;
        let mut n = NetworkServiceClient::new(deps.admin_channel(svc.addr));
        weft_testkit::wait_for(Duration::from_secs(20), "predefined networks", || {
            let mut n = n.clone();
            async move {
                (n.list_networks(pb::ListNetworksRequest::default())
                    .await
                    .ok()?
                    .into_inner()
                    .networks
                    .len()
                    == 3)
                    .then_some(())
            }
        })
        .await;
        n.create_network(with_subnet("a", "10.110.0.0/24"))
            .await
            .unwrap();
        n.create_network(with_subnet("b", "10.111.0.0/24"))
            .await
            .unwrap();
    }

    for i in 0..kills {
        let step = STEPS[i % STEPS.len()];
        let name = format!("s{i}");
        let mut args = base.clone();
        args.extend(["--fault".to_owned(), step.to_owned()]);
        let mut svc = ServiceProcess::start(bin, &args).await;
        let mut sb = SandboxServiceClient::new(deps.admin_channel(svc.addr));
        let op = step.split(':').next().unwrap();
        let outcome = match op {
            "create-sandbox" => sb
                .create_sandbox(pb::CreateSandboxRequest {
                    name: name.clone(),
                    networks: vec![
                        pb::NetworkAttachment {
                            network: "a".into(),
                            settings: None,
                        },
                        pb::NetworkAttachment {
                            network: "b".into(),
                            settings: None,
                        },
                    ],
                    ..Default::default()
                })
                .await
                .map(drop),
            "connect" => {
                sb.create_sandbox(pb::CreateSandboxRequest {
                    name: name.clone(),
                    ..Default::default()
                })
                .await
                .unwrap();
                sb.connect(pb::ConnectRequest {
                    sandbox: name.clone(),
                    network: "a".into(),
                    ..Default::default()
                })
                .await
                .map(drop)
            }
            "disconnect" => {
                sb.create_sandbox(pb::CreateSandboxRequest {
                    name: name.clone(),
                    networks: vec![pb::NetworkAttachment {
                        network: "a".into(),
                        settings: None,
                    }],
                    ..Default::default()
                })
                .await
                .unwrap();
                sb.disconnect(pb::DisconnectRequest {
                    sandbox: name.clone(),
                    network: "a".into(),
                    ..Default::default()
                })
                .await
                .map(drop)
            }
            _ => {
                sb.create_sandbox(pb::CreateSandboxRequest {
                    name: name.clone(),
                    networks: vec![
                        pb::NetworkAttachment {
                            network: "a".into(),
                            settings: None,
                        },
                        pb::NetworkAttachment {
                            network: "b".into(),
                            settings: None,
                        },
                    ],
                    ..Default::default()
                })
                .await
                .unwrap();
                sb.delete_sandbox(pb::DeleteSandboxRequest {
                    sandbox: name.clone(),
                    ..Default::default()
                })
                .await
                .map(drop)
            }
        };
        assert!(
            outcome.is_err(),
            "{step}: the gateway should have died mid-call"
        );
        let status = svc.wait_exit(Duration::from_secs(10)).await;
        assert!(!status.success(), "{step}: killed, not exited: {status}");

        // Restart (in this process, on the same store) and sweep once.
        let gw_args = gateway::Args::try_parse_from(
            std::iter::once("gateway".to_owned()).chain(base.iter().cloned()),
        )
        .unwrap();
        let gw = gateway::open(&gw_args).await.unwrap();
        gw.sweep().await.unwrap();
        let c = gw.consistency().await.unwrap();
        assert!(
            c.leaked_addresses.is_empty(),
            "{step}: leaked {:?}",
            c.leaked_addresses
        );
        assert!(
            c.endpoints_without_address.is_empty(),
            "{step}: {:?}",
            c.endpoints_without_address
        );
        assert_eq!(c.operations_pending, 0, "{step}");
        let sandboxes = gw.list_sandboxes().await.unwrap();
        let mut endpoints = std::collections::BTreeSet::new();
        for s in &sandboxes {
            for e in gw
                .endpoints(gateway::store::sandboxes::Owner::Sandbox, &s.id)
                .await
                .unwrap()
            {
                endpoints.insert(e.id);
            }
        }
        let this = sandboxes.iter().find(|s| s.name == name);
        match op {
            // Undone: the sandbox stays, without the endpoint.
            "connect" => {
                let s = this.expect("the sandbox was created before the crash");
                assert!(
                    gw.endpoints(gateway::store::sandboxes::Owner::Sandbox, &s.id)
                        .await
                        .unwrap()
                        .is_empty(),
                    "{step}"
                );
            }
            // Completed: the endpoint is gone.
            "disconnect" => {
                let s = this.unwrap();
                assert!(
                    gw.endpoints(gateway::store::sandboxes::Owner::Sandbox, &s.id)
                        .await
                        .unwrap()
                        .is_empty(),
                    "{step}"
                );
            }
            // Undone (create) or completed (delete): the sandbox is not there.
            _ => assert!(this.is_none(), "{step}: sandbox still there"),
        }
        // Nothing half-attached: the agent holds exactly the recorded endpoints.
        assert_eq!(
            deps.agent.calls.lock().unwrap().attached_now(),
            endpoints,
            "{step}"
        );
        gw.close().await;
        let mut ipam_client = weft_proto::ipam::v1::ipam_service_client::IpamServiceClient::new(
            weft_testkit::channel(deps.ipam),
        );
        let check = ipam_client
            .check(ipb::CheckRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(check.problems_count, 0, "{step}: {check:?}");
        let held = ipam_client
            .list_allocations(ipb::ListAllocationsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .allocations;
        assert!(
            held.iter().all(|a| endpoints.contains(&a.owner)),
            "{step}: an address without an endpoint"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_killed_at_every_step_50_times_leaves_nothing_behind_on_sqlite() {
    crash_at_every_step(Backend::Sqlite, 50).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_postgres, ignore = "needs Postgres: WEFT_TEST_DATABASE_URL")]
async fn heavy_killed_at_every_step_leaves_nothing_behind_on_postgres() {
    crash_at_every_step(Backend::Postgres, STEPS.len()).await;
}
