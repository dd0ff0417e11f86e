//! The ipvlan driver called directly (the agent refuses it before this: FAILED_PRECONDITION
//! on a kernel without ipvlan, UNIMPLEMENTED on one with it). Where the kernel makes ipvlan,
//! an attach makes the device inside the sandbox with the endpoint's address and a detach
//! removes it; where it does not, the attach fails naming the request and leaves nothing in
//! either namespace. A parent that is not there is refused before anything is sent.

use driver_agent::{
    driver::{self, SandboxNs},
    error::AgentError,
    netns,
    report::Report,
    spec::{Driver, Endpoint, Network},
};
use weft_proto::agent::v1 as pb;

use crate::{
    bridge::{endpoint, network},
    support::{TestNs, addresses, link, links},
};

fn unique(tag: &str) -> String {
    format!("{tag}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

fn names(ns: &TestNs) -> Vec<String> {
    links(ns)
        .iter()
        .filter_map(|l| l["ifname"].as_str().map(str::to_owned))
        .collect()
}

#[cfg_attr(weft_no_root, ignore = "needs root: namespaces, links, nftables")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipvlan_attach_makes_its_device_in_the_sandbox_where_the_kernel_has_ipvlan_and_nothing_where_not()
 {
    let (host, sb) = (TestNs::new(), TestNs::new());
    let (has_ipvlan, _, _) = crate::capabilities::kernel_link_kinds(&TestNs::new());
    let made = std::process::Command::new("ip")
        .args([
            "-n", &host.name, "link", "add", "par0", "type", "veth", "peer", "name", "par1",
        ])
        .status()
        .unwrap();
    assert!(made.success());
    let mut spec = network(&unique("net"), "10.98.0.0/24", "10.98.0.1");
    spec.driver = pb::Driver::Ipvlan as i32;
    spec.parent = "nope0".into();
    let mut net = Network::from_pb(spec.clone(), "network").unwrap();
    let ep = Endpoint::from_pb(
        endpoint(&unique("ep"), &spec, &sb, "10.98.0.2/24", false),
        "endpoint",
    )
    .unwrap();
    let host_h = netns::connect(&host.path).await.unwrap();
    let sb_h = netns::connect(&sb.path).await.unwrap();
    let file = std::fs::File::open(&sb.path).unwrap();
    let ns = SandboxNs {
        handle: &sb_h,
        file: &file,
        path: &sb.path,
        ipv6_off_by_default: false,
        fresh: false,
    };
    let d = driver::of(Driver::Ipvlan);
    assert!(d.attaches());
    let (host_before, sb_before) = (links(&host), names(&sb));
    let setup = d
        .ensure_network(&host_h, &net, &mut Report::default())
        .await
        .unwrap();
    assert_eq!(setup.device, None);

    // A parent this host lacks: refused by name, nothing sent.
    let mut report = Report::default();
    let err = d
        .attach(&host_h, ns, &setup, &net, &ep, &mut report)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, AgentError::NoParent { name } if name == "nope0"),
        "{err:?}"
    );
    assert_eq!(
        tonic::Status::from(err).code(),
        tonic::Code::FailedPrecondition
    );

    net.parent = "par0".into();
    let res = d.attach(&host_h, ns, &setup, &net, &ep, &mut report).await;
    if has_ipvlan {
        let a = res.unwrap();
        assert!(a.created);
        let sb_links = links(&sb);
        let l = link(&sb_links, &ep.ifname).expect("the ipvlan device in the sandbox");
        assert_eq!(l["linkinfo"]["info_kind"], "ipvlan", "{l}");
        assert_eq!(addresses(&sb, &ep.ifname), ["10.98.0.2/24"]);
        let mut removed = Report::default();
        d.detach(&host_h, Some(&sb_h), &ep.id, &mut removed).await;
        assert!(removed.failures.is_empty(), "{removed:?}");
    } else {
        let err = res.unwrap_err();
        assert!(
            matches!(
                &err,
                AgentError::Netlink {
                    op: "create ipvlan",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(report.changes.is_empty(), "{report:?}");
    }
    assert_eq!(names(&sb), sb_before);
    assert_eq!(links(&host), host_before);
}
