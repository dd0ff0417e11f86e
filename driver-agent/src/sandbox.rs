//! Sandboxes: a container's namespace (one the caller gives, or a named one the agent creates
//! and later deletes) and the resolv.conf and hosts files the runtime bind-mounts into it.

use std::{
    io,
    path::{Path, PathBuf},
};

use weft_proto::agent::v1 as pb;
use weft_runtime::FieldViolation;

use crate::spec::Violations;

/// Where a sandbox's network lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SandboxNetns {
    /// The agent creates (and deletes) the named namespace `weft-<sandbox id>`.
    Managed,
    /// The caller's namespace; never deleted by the agent.
    Given(PathBuf),
    /// The managed host namespace itself: nothing created or deleted.
    Host,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Sandbox {
    pub id: String,
    pub netns: SandboxNetns,
    pub resolv_conf: String,
    pub hosts: String,
}

/// Sandbox ids become a namespace name and a directory name: keep them to a safe alphabet.
pub fn check_sandbox_id(v: &mut Violations, field: &str, id: &str) {
    let ok = !id.is_empty()
        && id.len() <= 64
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        v.add(
            field,
            id,
            "must be 1 to 64 characters of letters, digits, '-', '_' or '.', not starting with '.'",
        );
    }
}

impl Sandbox {
    pub fn from_pb(spec: pb::SandboxSpec) -> Result<Self, Vec<FieldViolation>> {
        let mut v = Violations::default();
        check_sandbox_id(&mut v, "sandbox.sandbox_id", &spec.sandbox_id);
        let netns = match (spec.host_network, spec.netns_path.is_empty()) {
            (true, true) => SandboxNetns::Host,
            (true, false) => {
                v.add(
                    "sandbox.netns_path",
                    &spec.netns_path,
                    "must be empty when host_network is set",
                );
                SandboxNetns::Host
            }
            (false, true) => SandboxNetns::Managed,
            (false, false) => {
                if !spec.netns_path.starts_with('/') {
                    v.add(
                        "sandbox.netns_path",
                        &spec.netns_path,
                        "must be an absolute path",
                    );
                }
                SandboxNetns::Given(PathBuf::from(&spec.netns_path))
            }
        };
        v.finish(Self {
            id: spec.sandbox_id,
            netns,
            resolv_conf: spec.resolv_conf,
            hosts: spec.hosts,
        })
    }
}

/// The name of the namespace the agent creates for `sandbox_id`.
pub fn managed_netns_name(sandbox_id: &str) -> String {
    format!("weft-{sandbox_id}")
}

/// The sandbox id of a namespace name the agent gave, if it is one.
pub fn sandbox_of_managed_netns(name: &str) -> Option<&str> {
    name.strip_prefix("weft-").filter(|id| !id.is_empty())
}

/// The directory holding a sandbox's files.
pub fn files_dir(data_dir: &Path, sandbox_id: &str) -> PathBuf {
    data_dir.join("sandboxes").join(sandbox_id)
}

/// Makes directory `dir` (and its parents); true when this call made it, false when it was
/// there already.
pub fn make_dir(dir: &Path) -> io::Result<bool> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent() {
                std::fs::create_dir_all(parent)?;
            }
            match std::fs::create_dir(dir) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// Writes a file that must not exist yet (in a directory just made), mode 0644 whatever the
/// umask (as [`write_atomically`]).
pub fn write_new(path: &Path, contents: &str) -> io::Result<()> {
    use std::{io::Write as _, os::unix::fs::PermissionsExt as _};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    f.write_all(contents.as_bytes())?;
    f.set_permissions(std::fs::Permissions::from_mode(0o644))
}

/// Writes `contents` to `path` atomically (a reader sees the old or the new file, never half).
/// Mode 0644 whatever the umask (`weft up` runs with 077): the runtime bind-mounts these files
/// over a container's /etc/resolv.conf and /etc/hosts, which every user in it must read.
pub fn write_atomically(path: &Path, contents: &str) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_directory_gets_its_files_written_once_readable_by_all() {
        use std::os::unix::fs::PermissionsExt as _;
        // (nextest runs each test in a process of its own: the umask is this test's.)
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("sandboxes").join("sb-1");
        assert!(make_dir(&dir).unwrap(), "made with its parent");
        assert!(!make_dir(&dir).unwrap(), "there already");
        let file = dir.join("resolv.conf");
        write_new(&file, "nameserver 127.0.0.11\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            "nameserver 127.0.0.11\n"
        );
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        let again = write_new(&file, "other").unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            "nameserver 127.0.0.11\n"
        );
    }

    #[test]
    fn sandbox_netns_is_managed_given_or_host() {
        let base = pb::SandboxSpec {
            sandbox_id: "sb-1".into(),
            ..Default::default()
        };
        assert_eq!(
            Sandbox::from_pb(base.clone()).unwrap().netns,
            SandboxNetns::Managed
        );
        let given = pb::SandboxSpec {
            netns_path: "/run/netns/x".into(),
            ..base.clone()
        };
        assert_eq!(
            Sandbox::from_pb(given).unwrap().netns,
            SandboxNetns::Given("/run/netns/x".into())
        );
        let host = pb::SandboxSpec {
            host_network: true,
            ..base.clone()
        };
        assert_eq!(Sandbox::from_pb(host).unwrap().netns, SandboxNetns::Host);
    }

    #[test]
    fn sandbox_ids_that_could_escape_a_path_are_refused() {
        for bad in ["", "../x", "a/b", ".hidden", "a b"] {
            let spec = pb::SandboxSpec {
                sandbox_id: bad.into(),
                ..Default::default()
            };
            let v = Sandbox::from_pb(spec).unwrap_err();
            assert_eq!(v[0].field, "sandbox.sandbox_id", "{bad:?}");
        }
    }
}
