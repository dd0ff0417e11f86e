//! Caller-given namespace paths (`netns_path`): only real network namespaces from allowed
//! places, never the host's, the managed one or pid 1's; a refusal names the field and the
//! path, comes back at once (a FIFO does not block it) and leaves nothing written.

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command},
    time::Duration,
};

use driver_agent::{
    Agent,
    error::AgentError,
    kernel, names, netns,
    netns_policy::{NetnsPolicy, Place},
};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use tonic::Code;
use tonic_types::StatusExt as _;
use weft_proto::agent::v1 as pb;

use crate::{
    bridge::{endpoint, network},
    grpc::{serve, unique},
    support::{TestNs, link, links},
};

const FIELD: &str = "sandbox.netns_path";

/// An agent for `host` that also accepts files directly inside `dir` (and `/dev`, to show
/// that a device file there is still refused).
async fn agent_with(host: &TestNs, dir: &Path) -> (Agent, tempfile::TempDir) {
    let (agent, data) = crate::support::agent(host).await;
    let mut places = NetnsPolicy::default().places().to_vec();
    places.push(Place::Dir(dir.to_owned()));
    places.push(Place::Dir("/dev".into()));
    (agent.with_netns_policy(NetnsPolicy::new(places)), data)
}

/// The check of `path`, which must come back (a hang would be a FIFO opened for reading).
async fn check(
    agent: &Agent,
    path: &str,
) -> Result<driver_agent::netns_policy::NetnsFile, AgentError> {
    tokio::time::timeout(
        Duration::from_secs(10),
        agent.open_netns(FIELD, Path::new(path)),
    )
    .await
    .unwrap_or_else(|_| panic!("checking {path:?} did not return"))
}

/// The reason `path` is refused with; asserts it is INVALID_ARGUMENT naming the field and the
/// path.
async fn refused(agent: &Agent, path: &str) -> String {
    match check(agent, path).await {
        Err(AgentError::Invalid(v)) => {
            assert_eq!(v.len(), 1, "{v:?}");
            assert_eq!(v[0].field, FIELD);
            assert_eq!(v[0].value, path);
            v[0].reason.clone()
        }
        Err(e) => panic!("{path:?}: refused with {e:?}, not INVALID_ARGUMENT"),
        Ok(_) => panic!("{path:?} was accepted"),
    }
}

/// A namespace file bind-mounted onto `target` (as `ip netns add` does); unmounted when
/// dropped.
struct Bound(PathBuf);

impl Bound {
    fn new(source: &str, target: PathBuf) -> Self {
        File::create(&target).unwrap();
        mount(
            Some(source),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .unwrap();
        Self(target)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for Bound {
    fn drop(&mut self) {
        let _ = umount2(&self.0, MntFlags::MNT_DETACH);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: namespaces, links, nftables")]
async fn hostile_files_in_an_allowed_place_are_refused_at_once() {
    let host = TestNs::new();
    let dir = tempfile::tempdir().unwrap();
    let (agent, _data) = agent_with(&host, dir.path()).await;
    let at = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();

    // A FIFO: opening it for reading would block until a writer comes.
    nix::unistd::mkfifo(Path::new(&at("fifo")), nix::sys::stat::Mode::S_IRWXU).unwrap();
    assert_eq!(refused(&agent, &at("fifo")).await, "not a namespace file");
    // A device file (opening some has side effects), a regular file, a directory.
    assert_eq!(refused(&agent, "/dev/zero").await, "not a namespace file");
    std::fs::write(at("plain"), "x").unwrap();
    assert_eq!(refused(&agent, &at("plain")).await, "not a namespace file");
    std::fs::create_dir(at("sub")).unwrap();
    assert_eq!(refused(&agent, &at("sub")).await, "not a namespace file");
    // Symbolic links out of the allowed directory: to pid 1's namespace, to the managed one,
    // and a relative one climbing out.
    for (name, target) in [
        ("to-init", "/proc/1/ns/net".to_owned()),
        ("to-host", host.path.display().to_string()),
        ("climb", format!("../..{}", host.path.display())),
    ] {
        std::os::unix::fs::symlink(&target, at(name)).unwrap();
        let reason = refused(&agent, &at(name)).await;
        assert!(
            reason.starts_with("a symbolic link leading outside"),
            "{name} -> {target}: {reason}"
        );
    }
    // A namespace file of another kind (UTS) in an allowed place.
    let uts = Bound::new("/proc/self/ns/uts", dir.path().join("uts"));
    assert_eq!(
        refused(&agent, uts.path()).await,
        "not a network namespace (another kind of namespace)"
    );
    // `..` is refused by its text, wherever it would lead.
    let climb = format!("{}/../../proc/1/ns/net", dir.path().display());
    assert!(
        refused(&agent, &climb)
            .await
            .starts_with("must be a normalised")
    );
    drop(uts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: namespaces, links, nftables")]
async fn the_agents_own_the_managed_and_pid_1s_namespaces_are_refused_by_any_name() {
    let host = TestNs::new();
    let dir = tempfile::tempdir().unwrap();
    let (agent, _data) = agent_with(&host, dir.path()).await;

    // The managed namespace, named where it lives (an allowed directory).
    let managed = "is the network namespace the driver-agent manages (the host's)";
    assert_eq!(refused(&agent, host.path.to_str().unwrap()).await, managed);
    // …and bind-mounted somewhere else allowed.
    let again = Bound::new(host.path.to_str().unwrap(), dir.path().join("again"));
    assert_eq!(refused(&agent, again.path()).await, managed);
    // The agent's own (this test process is the agent): by /proc/<pid> and bind-mounted.
    let own = format!("/proc/{}/ns/net", std::process::id());
    assert_eq!(
        refused(&agent, &own).await,
        "is the driver-agent's own network namespace"
    );
    let own_bound = Bound::new("/proc/self/ns/net", dir.path().join("own"));
    assert_eq!(
        refused(&agent, own_bound.path()).await,
        "is the driver-agent's own network namespace"
    );
    // Pid 1's: the machine's (the same as the agent's here), or out of the agent's reach
    // where pid 1 is more privileged than this process.
    let reason = refused(&agent, "/proc/1/ns/net").await;
    assert!(
        [
            "is the driver-agent's own network namespace",
            "is the network namespace of pid 1 (the machine's)",
            "not accessible to the driver-agent",
        ]
        .contains(&reason.as_str()),
        "{reason}"
    );
    drop((again, own_bound));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: namespaces, links, nftables")]
async fn paths_outside_the_allowed_places_are_refused_by_their_text_alone() {
    let host = TestNs::new();
    let (agent, _data) = crate::support::agent(&host).await;
    let outside = refused(&agent, "/etc/hostname").await;
    assert!(
        outside.starts_with("not an allowed place")
            && outside.contains("/run/netns/<name>")
            && outside.contains("/proc/<pid>/ns/net"),
        "{outside}"
    );
    // Whether the file exists is not told: the file system is not asked.
    assert_eq!(refused(&agent, "/etc/no-such-file-here").await, outside);
    assert_eq!(refused(&agent, "/no-such-dir/x").await, outside);
    for path in [
        "/dev/zero",
        "/tmp/x",
        "/proc/self/ns/net",
        "/proc/self/ns/uts",
        "/proc/1/ns/uts",
        "/proc/1/root/run/netns/x",
    ] {
        assert_eq!(refused(&agent, path).await, outside, "{path}");
    }
    for path in [
        "relative/ns",
        "/run/netns/../../proc/1/ns/net",
        "/run//netns/x",
    ] {
        let reason = refused(&agent, path).await;
        assert!(reason.starts_with("must be"), "{path}: {reason}");
    }
}

/// `ip netns add NAME`; `ip netns del` when dropped.
struct IpNetns(String);

impl Drop for IpNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// A process the test started inside a namespace; killed (by its PID) when dropped.
struct Sleeper(Child);

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn nsfs_inode(path: &str) -> Option<u64> {
    nix::sys::stat::stat(path).ok().map(|s| s.st_ino)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: namespaces, links, nftables")]
async fn a_real_namespace_and_the_proc_path_of_a_process_inside_one_are_accepted() {
    let host = TestNs::new();
    let (agent, _data) = crate::support::agent(&host).await;

    let name = format!("wft-t-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let status = Command::new("ip")
        .args(["netns", "add", &name])
        .status()
        .unwrap();
    assert!(status.success());
    let _ns = IpNetns(name.clone());
    let path = format!("/run/netns/{name}");
    let ns = check(&agent, &path).await.unwrap();
    assert_eq!(ns.path, Path::new(&path));
    // The open file is the namespace: a netlink socket made through it sees its loopback.
    let handle = netns::connect_file(&ns.file, &ns.path).await.unwrap();
    assert!(kernel::link_by_name(&handle, "lo").await.unwrap().is_some());

    let child = Command::new("ip")
        .args(["netns", "exec", &name, "sleep", "60"])
        .spawn()
        .unwrap();
    let sleeper = Sleeper(child);
    let proc_path = format!("/proc/{}/ns/net", sleeper.0.id());
    // `ip netns exec` enters the namespace, then execs sleep: wait until it is in.
    weft_testkit::wait_for(
        Duration::from_secs(5),
        "the process in the namespace",
        || {
            let (p, want) = (proc_path.clone(), nsfs_inode(&path));
            async move { (nsfs_inode(&p) == want).then_some(()) }
        },
    )
    .await;
    let by_pid = check(&agent, &proc_path).await.unwrap();
    let handle = netns::connect_file(&by_pid.file, &by_pid.path)
        .await
        .unwrap();
    assert!(kernel::link_by_name(&handle, "lo").await.unwrap().is_some());
    drop(sleeper);

    // A missing file in an allowed place is NOT_FOUND (a sandbox already gone).
    let missing = check(&agent, "/run/netns/wft-t-surely-missing").await;
    assert!(
        matches!(missing, Err(AgentError::NetnsNotFound { .. })),
        "{missing:?}"
    );
}

/// The request's INVALID_ARGUMENT names `field` and `path` in its message and its details.
fn assert_names(st: &tonic::Status, field: &str, path: &str) {
    assert_eq!(st.code(), Code::InvalidArgument, "{st:?}");
    assert!(
        st.message().contains(field) && st.message().contains(path),
        "{}",
        st.message()
    );
    let details = st.get_error_details();
    let bad = details.bad_request().expect("BadRequest details");
    assert_eq!(bad.field_violations[0].field, field);
    assert!(bad.field_violations[0].description.contains(path));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: namespaces, links, nftables")]
async fn every_rpc_refuses_a_hostile_netns_path_before_writing_anything() {
    let host = TestNs::new();
    let (mut client, _stop, data) = serve(&host).await;
    let before = links(&host);
    let own = format!("/proc/{}/ns/net", std::process::id());
    let host_path = host.path.display().to_string();
    for path in [
        host_path.as_str(),
        own.as_str(),
        "/proc/1/ns/net",
        "/dev/zero",
        "/etc/passwd",
    ] {
        let id = unique("sb");
        let st = client
            .create_sandbox(pb::CreateSandboxRequest {
                sandbox: Some(pb::SandboxSpec {
                    sandbox_id: id.clone(),
                    netns_path: path.into(),
                    resolv_conf: "nameserver 127.0.0.11\n".into(),
                    hosts: "127.0.0.1 localhost\n".into(),
                    ..Default::default()
                }),
                revision: 0,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_names(&st, "sandbox.netns_path", path);
        assert!(
            !data.path().join("sandboxes").join(&id).exists(),
            "{path}: the sandbox's files were written"
        );

        let net = network(&unique("net"), "10.97.0.0/24", "10.97.0.1");
        let ep = unique("ep");
        // (`endpoint` takes its namespace from a TestNs; the hostile path replaces it.)
        let mut spec = endpoint(&ep, &net, &host, "10.97.0.2/24", true);
        spec.netns_path = path.into();
        let st = client
            .attach(pb::AttachRequest {
                endpoint: Some(spec),
                network: Some(net.clone()),
                revision: 0,
            })
            .await
            .unwrap_err();
        assert_names(&st, "endpoint.netns_path", path);
        let now = links(&host);
        assert!(
            link(&now, &names::bridge_name(&net.network_id)).is_none()
                && link(&now, &names::veth_host_name(&ep)).is_none(),
            "{path}: the attach created links"
        );

        let st = client
            .detach(pb::DetachRequest {
                endpoint_id: ep.clone(),
                network_id: net.network_id.clone(),
                sandbox_id: id.clone(),
                netns_path: path.into(),
                revision: 0,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_names(&st, "netns_path", path);
    }
    // RemoveSandbox names the managed namespace only for host-network sandboxes (nothing of
    // it is removed); any other name of a forbidden namespace is refused.
    for path in [own.as_str(), "/proc/1/ns/net", "/dev/zero"] {
        let st = client
            .remove_sandbox(pb::RemoveSandboxRequest {
                sandbox_id: unique("sb"),
                netns_path: path.into(),
                revision: 0,
            })
            .await
            .unwrap_err();
        assert_names(&st, "netns_path", path);
    }
    assert_eq!(links(&host), before, "the host's links changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(weft_no_root, ignore = "needs root: namespaces, links, nftables")]
async fn removing_a_sandbox_that_named_another_sandboxs_namespace_leaves_that_one_whole() {
    let host = TestNs::new();
    let (mut client, _stop, _data) = serve(&host).await;
    let owner = unique("t");
    let name = driver_agent::sandbox::managed_netns_name(&owner);
    // The agent creates this namespace; the guard deletes it if the test ends early.
    let owned = TestNs {
        name: name.clone(),
        path: netns::named_path(&name),
    };
    let created = client
        .create_sandbox(pb::CreateSandboxRequest {
            sandbox: Some(pb::SandboxSpec {
                sandbox_id: owner.clone(),
                ..Default::default()
            }),
            revision: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let net = network(&unique("net"), "10.97.1.0/24", "10.97.1.1");
    let mut spec = endpoint(&unique("ep"), &net, &owned, "10.97.1.2/24", true);
    spec.sandbox_id = owner.clone();
    client
        .attach(pb::AttachRequest {
            endpoint: Some(spec),
            network: Some(net),
            revision: 0,
        })
        .await
        .unwrap();
    // Another sandbox adopts the owner's namespace (as `container:` mode does, or a caller
    // naming it), then goes away naming it.
    let intruder = unique("t");
    client
        .create_sandbox(pb::CreateSandboxRequest {
            sandbox: Some(pb::SandboxSpec {
                sandbox_id: intruder.clone(),
                netns_path: created.netns_path.clone(),
                ..Default::default()
            }),
            revision: 0,
            ..Default::default()
        })
        .await
        .unwrap();
    let removed = client
        .remove_sandbox(pb::RemoveSandboxRequest {
            sandbox_id: intruder,
            netns_path: created.netns_path.clone(),
            revision: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(removed.failures.is_empty(), "{removed:?}");
    assert!(owned.path.exists());
    assert!(
        link(&links(&owned), "eth0").is_some(),
        "the owner lost eth0"
    );
}
