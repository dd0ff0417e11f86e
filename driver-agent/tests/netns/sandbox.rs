//! Sandboxes: the agent's own named namespaces and the caller's, loopback, files, removal.

use std::time::Duration;

use driver_agent::{
    error::AgentError,
    names, netns,
    report::{Action, Kind, Report},
    sandbox::{Sandbox, SandboxNetns, managed_netns_name},
    spec::{Endpoint, Network},
};
use weft_proto::agent::v1 as pb;

use crate::{
    bridge::{endpoint, network},
    grpc::{serve, unique},
    support::{TestNs, link, links},
};

fn is_up(l: &serde_json::Value) -> bool {
    l["flags"].as_array().unwrap().iter().any(|f| f == "UP")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: namespaces, links, nftables")]
async fn managed_sandbox_gets_its_own_namespace_and_files_and_removal_deletes_them() {
    let host = TestNs::new();
    let (mut client, _stop, _data) = serve(&host).await;
    let id = unique("t");
    let ns_name = managed_netns_name(&id);
    // The agent creates this namespace; the guard deletes it if the test ends early.
    let sb = TestNs {
        name: ns_name.clone(),
        path: netns::named_path(&ns_name),
    };
    let spec = pb::SandboxSpec {
        sandbox_id: id.clone(),
        resolv_conf: "nameserver 127.0.0.11\n".into(),
        hosts: "127.0.0.1 localhost\n".into(),
        ..Default::default()
    };
    let created = client
        .create_sandbox(pb::CreateSandboxRequest {
            sandbox: Some(spec.clone()),
            revision: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(created.netns_managed);
    assert_eq!(created.netns_path, format!("/run/netns/{ns_name}"));
    let kinds: Vec<i32> = created.changes.iter().map(|c| c.kind).collect();
    assert_eq!(
        kinds,
        [
            pb::ObjectKind::Netns as i32,
            pb::ObjectKind::File as i32,
            pb::ObjectKind::File as i32
        ]
    );
    assert_eq!(
        std::fs::read_to_string(&created.resolv_conf_path).unwrap(),
        "nameserver 127.0.0.11\n"
    );
    assert_eq!(
        std::fs::read_to_string(&created.hosts_path).unwrap(),
        "127.0.0.1 localhost\n"
    );
    assert_eq!(sb.path.display().to_string(), created.netns_path);
    let sb_links = links(&sb);
    assert!(is_up(link(&sb_links, "lo").unwrap()), "{sb_links:?}");

    // Again, with new DNS settings: same namespace, only resolv.conf rewritten.
    let mut spec2 = spec.clone();
    spec2.resolv_conf = "nameserver 127.0.0.11\noptions ndots:0\n".into();
    let again = client
        .create_sandbox(pb::CreateSandboxRequest {
            sandbox: Some(spec2),
            revision: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.changes.len(), 1, "{:?}", again.changes);
    assert_eq!(again.changes[0].action, pb::ChangeAction::Updated as i32);
    assert_eq!(again.changes[0].object, created.resolv_conf_path);

    // An endpoint in it; removing the sandbox takes namespace, interface and files away.
    let net = network(&unique("net"), "10.87.0.0/24", "10.87.0.1");
    let ep = unique("ep");
    let mut ep_spec = endpoint(&ep, &net, &host, "10.87.0.2/24", true);
    ep_spec.netns_path = created.netns_path.clone();
    ep_spec.sandbox_id = id.clone();
    client
        .attach(pb::AttachRequest {
            endpoint: Some(ep_spec),
            network: Some(net),
            revision: 0,
        })
        .await
        .unwrap();
    let removed = client
        .remove_sandbox(pb::RemoveSandboxRequest {
            sandbox_id: id.clone(),
            netns_path: String::new(),
            revision: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(removed.failures.is_empty(), "{removed:?}");
    assert!(!std::path::Path::new(&created.netns_path).exists());
    assert!(!std::path::Path::new(&created.resolv_conf_path).exists());
    // The kernel tears the namespace's links down asynchronously.
    let veth = names::veth_host_name(&ep);
    weft_testkit::wait_for(Duration::from_secs(5), "the veth to go", || async {
        link(&links(&host), &veth).is_none().then_some(())
    })
    .await;

    let removed = client
        .remove_sandbox(pb::RemoveSandboxRequest {
            sandbox_id: id,
            netns_path: String::new(),
            revision: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        removed.failures.is_empty() && removed.changes.is_empty(),
        "{removed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: namespaces, links, nftables")]
async fn a_given_namespace_is_kept_and_only_weft_interfaces_are_removed_from_it() {
    let (host, sb) = (TestNs::new(), TestNs::new());
    let (agent, _data) = crate::support::agent(&host).await;
    let id = unique("t");
    let sandbox = Sandbox {
        id: id.clone(),
        netns: SandboxNetns::Given(sb.path.clone()),
        resolv_conf: String::new(),
        hosts: String::new(),
    };
    let state = agent
        .create_sandbox(&sandbox, &mut Report::default())
        .await
        .unwrap();
    assert!(!state.managed);
    assert!(is_up(link(&links(&sb), "lo").unwrap()));

    // One Weft interface and one of someone else's in the sandbox.
    let net = network(&unique("net"), "10.87.1.0/24", "10.87.1.1");
    let ep = unique("ep");
    let mut report = Report::default();
    agent
        .attach(
            &Endpoint::from_pb(endpoint(&ep, &net, &sb, "10.87.1.2/24", true), "endpoint").unwrap(),
            &Network::from_pb(net, "network").unwrap(),
            &mut report,
        )
        .await
        .unwrap();
    let status = std::process::Command::new("ip")
        .args([
            "-n", &sb.name, "link", "add", "theirs0", "type", "veth", "peer", "name", "theirs1",
        ])
        .status()
        .unwrap();
    assert!(status.success());

    let report = agent.remove_sandbox(&id, &sb.path).await.unwrap();
    assert!(report.failures.is_empty(), "{report:?}");
    assert!(
        report
            .changes
            .iter()
            .any(|c| c.action == Action::Removed && c.kind == Kind::Link && c.object == "eth0"),
        "{report:?}"
    );
    assert!(sb.path.exists(), "the caller's namespace was deleted");
    let sb_links = links(&sb);
    assert!(link(&sb_links, "eth0").is_none(), "{sb_links:?}");
    assert!(link(&sb_links, "theirs0").is_some(), "{sb_links:?}");
    assert!(link(&links(&host), &names::veth_host_name(&ep)).is_none());

    // A given namespace that does not exist.
    let missing = Sandbox {
        netns: SandboxNetns::Given("/run/netns/wft-t-missing".into()),
        ..sandbox
    };
    let err = agent
        .create_sandbox(&missing, &mut Report::default())
        .await
        .unwrap_err();
    assert!(matches!(err, AgentError::NetnsNotFound { .. }), "{err:?}");
}
