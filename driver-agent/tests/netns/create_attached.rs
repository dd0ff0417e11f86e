//! CreateSandbox with its initial endpoints in the same call (what the gateway sends for a new
//! sandbox), and Detach that rewrites the sandbox's files: checked in the kernel.

use std::time::Duration;

use driver_agent::{names, netns, sandbox::managed_netns_name};
use tonic::Code;
use weft_proto::agent::v1 as pb;

use crate::{
    bridge::{endpoint, network},
    grpc::{serve, unique},
    support::{TestNs, addresses, default_route, link, links},
};

/// The agent's own namespace for sandbox `id`, as a guard that deletes it if the test ends
/// early.
fn managed(id: &str) -> TestNs {
    let name = managed_netns_name(id);
    TestNs {
        path: netns::named_path(&name),
        name,
    }
}

fn spec(id: &str, hosts: &str) -> pb::SandboxSpec {
    pb::SandboxSpec {
        sandbox_id: id.into(),
        resolv_conf: "nameserver 127.0.0.11\n".into(),
        hosts: hosts.into(),
        ..Default::default()
    }
}

/// `ep` of sandbox `id` on `net`, its namespace left for the agent to fill in.
fn attachment(
    id: &str,
    ep: &str,
    net: &pb::NetworkSpec,
    host: &TestNs,
    cidr: &str,
    ifname: &str,
) -> pb::AttachRequest {
    let mut e = endpoint(ep, net, host, cidr, ifname == "eth0");
    e.sandbox_id = id.into();
    e.netns_path = String::new();
    e.interface_name = ifname.into();
    pb::AttachRequest {
        endpoint: Some(e),
        network: Some(net.clone()),
        revision: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: namespaces, links, nftables")]
async fn one_create_sandbox_makes_the_namespace_attaches_every_endpoint_and_writes_the_files() {
    let host = TestNs::new();
    let (mut client, _stop, _data) = serve(&host).await;
    let (a, b) = (
        network(&unique("net"), "10.85.0.0/24", "10.85.0.1"),
        network(&unique("net"), "10.86.0.0/24", "10.86.0.1"),
    );
    let id = unique("t");
    let sb = managed(&id);
    let (ep1, ep2) = (unique("ep"), unique("ep"));
    let created = client
        .create_sandbox(pb::CreateSandboxRequest {
            sandbox: Some(spec(&id, "10.85.0.2 web\n")),
            revision: 0,
            attachments: vec![
                attachment(&id, &ep1, &a, &host, "10.85.0.2/24", "eth0"),
                attachment(&id, &ep2, &b, &host, "10.86.0.2/24", "eth1"),
            ],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(created.netns_managed);
    assert_eq!(created.netns_path, sb.path.display().to_string());
    let names_made: Vec<&str> = created
        .attached
        .iter()
        .map(|r| r.interface.as_ref().unwrap().name.as_str())
        .collect();
    assert_eq!(names_made, ["eth0", "eth1"]);
    assert_eq!(created.attached[0].default_route_v4_endpoint_id, ep1);
    // (eth1 does not carry it: the route stays with eth0, as the kernel below shows.)
    assert_eq!(created.attached[1].default_route_v4_endpoint_id, ep1);
    // The kernel's view: both interfaces with their addresses, the default route via eth0,
    // loopback up, both host-side veths in the host.
    let sb_links = links(&sb);
    for l in ["lo", "eth0", "eth1"] {
        let l = link(&sb_links, l).unwrap_or_else(|| panic!("{l} missing: {sb_links:?}"));
        assert!(
            l["flags"].as_array().unwrap().iter().any(|f| f == "UP"),
            "{l}"
        );
    }
    assert_eq!(addresses(&sb, "eth0"), ["10.85.0.2/24"]);
    assert_eq!(addresses(&sb, "eth1"), ["10.86.0.2/24"]);
    assert_eq!(
        default_route(&sb),
        Some(("10.85.0.1".to_owned(), "eth0".to_owned()))
    );
    let host_links = links(&host);
    for ep in [&ep1, &ep2] {
        assert!(link(&host_links, &names::veth_host_name(ep)).is_some());
    }
    assert_eq!(
        std::fs::read_to_string(&created.hosts_path).unwrap(),
        "10.85.0.2 web\n"
    );

    // Detach with the files: the interface goes, the hosts file is rewritten in the same call.
    let detached = client
        .detach(pb::DetachRequest {
            endpoint_id: ep2.clone(),
            network_id: b.network_id.clone(),
            sandbox_id: id.clone(),
            netns_path: created.netns_path.clone(),
            revision: 0,
            files: Some(spec(&id, "10.85.0.2 web-only\n")),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(detached.files_written);
    assert!(detached.failures.is_empty(), "{detached:?}");
    assert_eq!(
        std::fs::read_to_string(&created.hosts_path).unwrap(),
        "10.85.0.2 web-only\n"
    );
    let veth2 = names::veth_host_name(&ep2);
    weft_testkit::wait_for(
        Duration::from_secs(5),
        "the detached veth to go",
        || async { link(&links(&host), &veth2).is_none().then_some(()) },
    )
    .await;
    // Files of another sandbox than the one named: refused before anything is done.
    let e = client
        .detach(pb::DetachRequest {
            endpoint_id: ep1.clone(),
            network_id: a.network_id.clone(),
            sandbox_id: id.clone(),
            netns_path: created.netns_path.clone(),
            revision: 0,
            files: Some(spec("someone-else", "")),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(link(&links(&sb), "eth0").is_some(), "nothing was detached");

    client
        .remove_sandbox(pb::RemoveSandboxRequest {
            sandbox_id: id.clone(),
            netns_path: String::new(),
            revision: 0,
        })
        .await
        .unwrap();
    assert!(!sb.path.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: namespaces, links, nftables")]
async fn a_failed_endpoint_undoes_the_whole_creation() {
    let host = TestNs::new();
    let (mut client, _stop, _data) = serve(&host).await;
    let net = network(&unique("net"), "10.84.0.0/24", "10.84.0.1");
    let id = unique("t");
    let sb = managed(&id);
    let (ep1, ep2) = (unique("ep"), unique("ep"));
    // The second endpoint wants the name the first one took: the kernel refuses it.
    let e = client
        .create_sandbox(pb::CreateSandboxRequest {
            sandbox: Some(spec(&id, "")),
            revision: 0,
            attachments: vec![
                attachment(&id, &ep1, &net, &host, "10.84.0.2/24", "eth0"),
                attachment(&id, &ep2, &net, &host, "10.84.0.3/24", "eth0"),
            ],
        })
        .await
        .unwrap_err();
    assert_ne!(e.code(), Code::Ok);
    assert!(!sb.path.exists(), "the namespace made by the call is gone");
    let veth1 = names::veth_host_name(&ep1);
    weft_testkit::wait_for(Duration::from_secs(5), "the first veth to go", || async {
        link(&links(&host), &veth1).is_none().then_some(())
    })
    .await;

    // Refused before anything is done: an endpoint of another sandbox, or in another namespace.
    let mut other = attachment(&id, &ep1, &net, &host, "10.84.0.2/24", "eth0");
    other.endpoint.as_mut().unwrap().sandbox_id = "someone-else".into();
    let mut elsewhere = attachment(&id, &ep2, &net, &host, "10.84.0.3/24", "eth1");
    elsewhere.endpoint.as_mut().unwrap().netns_path = host.path.display().to_string();
    let e = client
        .create_sandbox(pb::CreateSandboxRequest {
            sandbox: Some(spec(&id, "")),
            revision: 0,
            attachments: vec![other, elsewhere],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let message = e.message();
    assert!(
        message.contains("attachments[0].endpoint.sandbox_id"),
        "{message}"
    );
    assert!(
        message.contains("attachments[1].endpoint.netns_path"),
        "{message}"
    );
    assert!(!sb.path.exists());
}
