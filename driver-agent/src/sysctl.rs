//! Sysctls of the managed namespace. `/proc/sys/net` shows the network namespace of the thread
//! that opens it, so they are read and written from a thread inside that namespace: the
//! machine's own switches are only touched when the agent manages the machine's namespace.

use std::{io, path::Path};

use crate::{error::AgentError, netns};

/// One switch the agent wants set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sysctl {
    /// Path below `/proc/sys` ("net/ipv4/ip_forward").
    pub path: String,
    pub value: &'static str,
    /// The kernel feature that provides the switch (br_netfilter): its absence is reported as
    /// that feature missing (FAILED_PRECONDITION) rather than as an I/O failure.
    pub feature: Option<&'static str>,
}

impl Sysctl {
    pub fn new(path: impl Into<String>, value: &'static str) -> Self {
        Self {
            path: path.into(),
            value,
            feature: None,
        }
    }

    /// A switch that exists only when the kernel has `feature`.
    pub fn of_feature(path: impl Into<String>, value: &'static str, feature: &'static str) -> Self {
        Self {
            feature: Some(feature),
            ..Self::new(path, value)
        }
    }

    /// The dotted name, as `sysctl` prints it.
    pub fn name(&self) -> String {
        self.path.replace('/', ".")
    }
}

/// Sets every switch in `wanted` inside the namespace at `netns_path`, writing only those that
/// differ; returns the ones it changed.
pub async fn ensure(netns_path: &Path, wanted: Vec<Sysctl>) -> Result<Vec<Sysctl>, AgentError> {
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    netns::run_in(netns_path, move || {
        let mut changed = Vec::new();
        for s in wanted {
            let file = Path::new("/proc/sys").join(&s.path);
            let fail = |source: io::Error| AgentError::Sysctl {
                name: s.name(),
                source,
            };
            let current = match std::fs::read_to_string(&file) {
                Ok(v) => v,
                Err(e) if e.kind() == io::ErrorKind::NotFound && s.feature.is_some() => {
                    return Err(AgentError::Unsupported {
                        driver: "bridge",
                        feature: s.feature.unwrap_or_default(),
                    });
                }
                Err(e) => return Err(fail(e)),
            };
            if current.trim() == s.value {
                continue;
            }
            std::fs::write(&file, s.value).map_err(fail)?;
            tracing::info!(sysctl = %s.name(), value = s.value, "sysctl set");
            changed.push(s);
        }
        Ok(changed)
    })
    .await
    .map_err(AgentError::netns(netns_path))?
}

/// IPv6 of an interface in the namespace of the calling thread: on or off
/// (`net.ipv6.conf.<ifname>.disable_ipv6`), written only when it differs. Returns whether it
/// was written. A kernel without IPv6 has it off already: nothing to do when off is wanted.
pub(crate) fn set_interface_ipv6_here(ifname: &str, on: bool) -> Result<bool, AgentError> {
    // (An interface name never holds '/' or is "." or "..", but this path is built from it.)
    if ifname.is_empty() || ifname.contains('/') || ifname == "." || ifname == ".." {
        return Err(AgentError::Sysctl {
            name: format!("net.ipv6.conf.{ifname}.disable_ipv6"),
            source: io::Error::new(io::ErrorKind::InvalidInput, "not an interface name"),
        });
    }
    write_if_differs(
        &format!("net/ipv6/conf/{ifname}/disable_ipv6"),
        if on { "0" } else { "1" },
        !on,
    )
    .map(|w| w == Some(true))
}

/// Makes interfaces that appear later in the namespace of the calling thread (one the agent
/// has just made) start with IPv6 off (`net.ipv6.conf.default.disable_ipv6`): an endpoint of
/// an IPv4-only network then never gets a link-local address, multicast memberships or
/// router advertisements, with no thread entering the namespace per attach. Loopback, made
/// with the namespace, keeps `::1`. Returns whether the default is off now (false: this kernel
/// has no IPv6).
pub(crate) fn ipv6_off_by_default_here() -> Result<bool, AgentError> {
    Ok(write_if_differs("net/ipv6/conf/default/disable_ipv6", "1", true)?.is_some())
}

/// Writes `value` to `/proc/sys/<path>` of the calling thread's namespace unless it holds it
/// already; a missing switch is fine when `absent_ok` (IPv6 compiled out or disabled at boot).
/// Returns whether it wrote, `None` for a switch absent.
///
/// Through a procfs instance of the call's own when the kernel allows one: in the machine's
/// `/proc`, every namespace that ever looked a `/proc/sys/net` path up keeps a dentry of the
/// same name under the same parent, so each lookup compares itself with all of them, a lock
/// taken each time: at 4,000 sandbox namespaces that cost more than the rest of a sandbox's
/// creation. A detached mount (`fsopen`, `fsmount`: attached to no tree, seen by nobody)
/// takes its dentries with it when closed.
fn write_if_differs(path: &str, value: &str, absent_ok: bool) -> Result<Option<bool>, AgentError> {
    use std::os::unix::fs::FileExt as _;
    let fail = |source: io::Error| AgentError::Sysctl {
        name: path.replace('/', "."),
        source,
    };
    let file = match open_private(path) {
        Ok(f) => Ok(f),
        Err(Private::Unavailable) => std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(Path::new("/proc/sys").join(path)),
        Err(Private::Open(e)) => Err(e),
    };
    let file = match file {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound && absent_ok => return Ok(None),
        Err(e) => return Err(fail(e)),
    };
    // (A sysctl is read and written whole, at offset 0.)
    let mut buf = [0u8; 64];
    let n = file.read_at(&mut buf, 0).map_err(fail)?;
    if std::str::from_utf8(&buf[..n]).map(str::trim) == Ok(value) {
        return Ok(Some(false));
    }
    file.write_at(value.as_bytes(), 0).map_err(fail)?;
    Ok(Some(true))
}

enum Private {
    /// No procfs of one's own here (an older kernel, or a sandboxed agent): the shared one.
    Unavailable,
    Open(io::Error),
}

/// Opens `sys/<path>` in a new procfs instance, detached (it goes when the file is closed).
fn open_private(path: &str) -> Result<std::fs::File, Private> {
    use rustix::{
        fs::{Mode, OFlags},
        mount::{FsMountFlags, FsOpenFlags, MountAttrFlags},
    };
    let unavailable = |_| Private::Unavailable;
    let fs = rustix::mount::fsopen("proc", FsOpenFlags::FSOPEN_CLOEXEC).map_err(unavailable)?;
    rustix::mount::fsconfig_create(&fs).map_err(unavailable)?;
    let mnt = rustix::mount::fsmount(
        &fs,
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::MOUNT_ATTR_NOSUID
            | MountAttrFlags::MOUNT_ATTR_NODEV
            | MountAttrFlags::MOUNT_ATTR_NOEXEC,
    )
    .map_err(unavailable)?;
    rustix::fs::openat(
        &mnt,
        format!("sys/{path}"),
        OFlags::RDWR | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    )
    .map(std::fs::File::from)
    .map_err(|e| Private::Open(e.into()))
}

/// [`ipv6_off_by_default_here`], a failure logged (then each interface is switched on its own).
pub(crate) fn ipv6_off_by_default_here_or_warn() -> bool {
    ipv6_off_by_default_here().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "a new namespace keeps IPv6 on by default");
        false
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg_attr(weft_no_root, ignore = "needs root: a namespace of its own")]
    fn a_procfs_of_ones_own_writes_the_threads_namespace_and_refuses_odd_names() {
        let seen = netns::run_in_scratch(|| {
            // This kernel gives one (otherwise every write would take the shared /proc).
            let own = open_private("net/ipv6/conf/default/disable_ipv6").is_ok();
            let first = ipv6_off_by_default_here().unwrap();
            let again = write_if_differs("net/ipv6/conf/default/disable_ipv6", "1", true).unwrap();
            let absent =
                write_if_differs("net/ipv6/conf/no-such-if/disable_ipv6", "1", true).unwrap();
            let shared =
                std::fs::read_to_string("/proc/sys/net/ipv6/conf/default/disable_ipv6").unwrap();
            let lo_off = set_interface_ipv6_here("lo", false).unwrap();
            let lo_on = set_interface_ipv6_here("lo", true).unwrap();
            let bad = ["", "a/b", "..", "."].map(|n| set_interface_ipv6_here(n, false).is_err());
            (own, first, again, absent, shared, lo_off, lo_on, bad)
        })
        .unwrap();
        assert_eq!(
            seen,
            (
                true,
                true,
                Some(false),
                None,
                "1\n".to_owned(),
                true,
                true,
                [true; 4]
            )
        );
    }
}
