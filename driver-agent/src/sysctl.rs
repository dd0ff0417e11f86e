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
