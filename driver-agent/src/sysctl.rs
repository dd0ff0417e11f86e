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
}

/// Makes interfaces that appear later in the namespace of the calling thread (one the agent
/// has just made) start with IPv6 off (`net.ipv6.conf.default.disable_ipv6`): an endpoint of
/// an IPv4-only network then never gets a link-local address, multicast memberships or
/// router advertisements, with no thread entering the namespace per attach. Loopback, made
/// with the namespace, keeps `::1`. Returns whether the default is off now (false: this kernel
/// has no IPv6).
pub(crate) fn ipv6_off_by_default_here() -> Result<bool, AgentError> {
    write_if_differs("net/ipv6/conf/default/disable_ipv6", "1", true)?;
    Ok(Path::new("/proc/sys/net/ipv6").is_dir())
}

/// Writes `value` to `/proc/sys/<path>` unless it holds it already; a missing switch is fine
/// when `absent_ok` (IPv6 compiled out or disabled at boot). Returns whether it wrote.
fn write_if_differs(path: &str, value: &str, absent_ok: bool) -> Result<bool, AgentError> {
    let file = Path::new("/proc/sys").join(path);
    let fail = |source: io::Error| AgentError::Sysctl {
        name: path.replace('/', "."),
        source,
    };
    match std::fs::read_to_string(&file) {
        Ok(v) if v.trim() == value => Ok(false),
        Ok(_) => std::fs::write(&file, value).map(|()| true).map_err(fail),
        Err(e) if e.kind() == io::ErrorKind::NotFound && absent_ok => Ok(false),
        Err(e) => Err(fail(e)),
    }
}

/// [`ipv6_off_by_default_here`], a failure logged (then each interface is switched on its own).
pub(crate) fn ipv6_off_by_default_here_or_warn() -> bool {
    ipv6_off_by_default_here().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "a new namespace keeps IPv6 on by default");
        false
    })
}
