//! CreateSandbox and RemoveSandbox: a sandbox's namespace (the agent's own `weft-<id>`, the
//! caller's, or the host's) and its files. A part of [`super::Agent`] of its own, apart from
//! networks and endpoints.

use std::path::{Path, PathBuf};

use super::{Agent, SandboxNetnsPath, connected};
use crate::{
    applied::{Of, digest},
    error::AgentError,
    kernel, names, netns,
    netns_policy::NetnsFile,
    report::{Action, Kind, Report},
    sandbox::{self, Sandbox, SandboxNetns},
};

/// Where a sandbox ended up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxState {
    pub netns_path: PathBuf,
    /// The agent created the namespace and deletes it on removal.
    pub managed: bool,
    pub resolv_conf: PathBuf,
    pub hosts: PathBuf,
}

impl Agent {
    /// Creates or updates a sandbox: its namespace (created, or checked), loopback up, and its
    /// files. All or nothing: a namespace created by this call is deleted again on failure.
    pub async fn create_sandbox(
        &self,
        sb: &Sandbox,
        report: &mut Report,
    ) -> Result<SandboxState, AgentError> {
        self.applied.forget(Of::Sandbox, &sb.id);
        let mut given = None;
        let (path, managed, created) = match &sb.netns {
            SandboxNetns::Host => (self.host_netns.clone(), false, false),
            SandboxNetns::Given(p) => {
                given = Some(self.open_netns("sandbox.netns_path", p).await?);
                (p.clone(), false, false)
            }
            SandboxNetns::Managed => {
                let known = netns::named_path(&sandbox::managed_netns_name(&sb.id));
                // Made lately and still open (the second call, with the files): nothing to do.
                let (p, created, open) = if self.connected(&known).is_some() {
                    (known, false, None)
                } else {
                    connected::create_managed(&sb.id)
                        .await
                        .map_err(AgentError::netns(&known))?
                };
                if let Some(c) = open {
                    self.connected
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .insert(p.clone(), c);
                }
                if created {
                    tracing::info!(sandbox = %sb.id, netns = %p.display(), "namespace created");
                    report.change(
                        Action::Created,
                        Kind::Netns,
                        p.display().to_string(),
                        &sb.id,
                    );
                }
                (p, true, created)
            }
        };
        let res = self.finish_sandbox(sb, &path, given.as_ref(), report).await;
        if res.is_err() && created {
            let name = sandbox::managed_netns_name(&sb.id);
            if let Err(e) = netns::delete_named(&name) {
                tracing::warn!(netns = %name, error = %e, "cannot undo a failed sandbox creation");
            }
            report.changes.clear();
        }
        let (resolv_conf, hosts) = res?;
        self.know_sandbox(sb, &path, managed);
        self.applied.record(Of::Sandbox, &sb.id, digest(sb));
        Ok(SandboxState {
            netns_path: path,
            managed,
            resolv_conf,
            hosts,
        })
    }

    /// Remembers where sandbox `sb`'s namespace is (for the socket broker).
    pub(crate) fn know_sandbox(&self, sb: &Sandbox, path: &Path, managed: bool) {
        let mut known = self
            .sandbox_netns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match &sb.netns {
            SandboxNetns::Host => known.remove(&sb.id),
            _ => known.insert(
                sb.id.clone(),
                SandboxNetnsPath {
                    path: path.to_owned(),
                    managed,
                },
            ),
        };
    }

    /// `given`: the caller's namespace, checked and open.
    async fn finish_sandbox(
        &self,
        sb: &Sandbox,
        path: &Path,
        given: Option<&NetnsFile>,
        report: &mut Report,
    ) -> Result<(PathBuf, PathBuf), AgentError> {
        if sb.netns != SandboxNetns::Host {
            let handle = match (self.connected(path), given) {
                (Some(c), _) => Ok(c.handle),
                (None, Some(ns)) => netns::connect_file(&ns.file, path).await,
                (None, None) => netns::connect(path).await,
            }
            .map_err(AgentError::netns(path))?;
            if let Some(lo) = kernel::link_by_name(&handle, "lo").await?
                && !lo.up
            {
                kernel::set_up(&handle, lo.index, "lo").await?;
            }
        }
        let dir = sandbox::files_dir(&self.data_dir, &sb.id);
        std::fs::create_dir_all(&dir).map_err(|source| AgentError::File {
            path: dir.clone(),
            source,
        })?;
        let resolv_conf = dir.join("resolv.conf");
        let hosts = dir.join("hosts");
        for (file, contents) in [(&resolv_conf, &sb.resolv_conf), (&hosts, &sb.hosts)] {
            let old = std::fs::read_to_string(file).ok();
            if old.as_ref() == Some(contents) {
                continue;
            }
            sandbox::write_atomically(file, contents).map_err(|source| AgentError::File {
                path: file.clone(),
                source,
            })?;
            let action = if old.is_some() {
                Action::Updated
            } else {
                Action::Created
            };
            report.change(action, Kind::File, file.display().to_string(), &sb.id);
        }
        Ok((resolv_conf, hosts))
    }

    /// Removes a sandbox: its namespace when the agent created it (its interfaces go with it),
    /// otherwise Weft's interfaces inside the caller's namespace; then its files. Keeps going
    /// past failures; a `netns_path` the policy refuses is refused before anything is done.
    pub async fn remove_sandbox(
        &self,
        sandbox_id: &str,
        netns_path: &Path,
    ) -> Result<Report, AgentError> {
        self.applied.forget(Of::Sandbox, sandbox_id);
        let managed_path = netns::named_path(&sandbox::managed_netns_name(sandbox_id));
        let ours = netns_path.as_os_str().is_empty() || netns_path == managed_path;
        // A host-network sandbox names the managed namespace, and a sandbox sharing another's
        // (`container:`, or a caller who named it) names that one's `weft-<id>` namespace:
        // nothing of either is removed (the other sandbox's removal takes its interfaces).
        let siblings = netns_path.parent() == Some(Path::new(netns::NETNS_DIR))
            && netns_path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(sandbox::sandbox_of_managed_netns)
                .is_some();
        let given = if ours || siblings || netns_path == self.host_netns {
            None
        } else {
            self.open_netns_if_there("netns_path", netns_path).await?
        };
        self.sandbox_netns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(sandbox_id);
        self.connected
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&managed_path);
        let mut report = Report::default();
        self.forget_in_firewall(&mut report, sandbox_id, |s| s.remove_sandbox(sandbox_id))
            .await;
        if ours {
            if managed_path.exists() {
                match netns::delete_path(&managed_path) {
                    Ok(()) => report.change(
                        Action::Removed,
                        Kind::Netns,
                        managed_path.display().to_string(),
                        sandbox_id,
                    ),
                    Err(e) => report.fail(
                        Kind::Netns,
                        managed_path.display().to_string(),
                        sandbox_id,
                        &e,
                    ),
                }
            }
        } else if let Some(ns) = given {
            self.remove_interfaces_in(sandbox_id, &ns, &mut report)
                .await;
        }
        let dir = sandbox::files_dir(&self.data_dir, sandbox_id);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => report.change(
                Action::Removed,
                Kind::File,
                dir.display().to_string(),
                sandbox_id,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => report.fail(Kind::File, dir.display().to_string(), sandbox_id, &e),
        }
        Ok(report)
    }

    /// Deletes the Weft interfaces (by alias) inside a namespace the agent does not own.
    async fn remove_interfaces_in(&self, sandbox_id: &str, ns: &NetnsFile, report: &mut Report) {
        let handle = match netns::connect_file(&ns.file, &ns.path).await {
            Ok(h) => h,
            Err(e) => {
                report.fail(Kind::Netns, ns.path.display().to_string(), sandbox_id, &e);
                return;
            }
        };
        let links = match kernel::links(&handle).await {
            Ok(l) => l,
            Err(e) => {
                report.fail(Kind::Link, "links", sandbox_id, &e);
                return;
            }
        };
        for l in links {
            let Some(endpoint) = names::endpoint_of_alias(&l.alias) else {
                continue;
            };
            match kernel::delete_link(&handle, &l).await {
                Ok(true) => report.change(Action::Removed, Kind::Link, &l.name, endpoint),
                Ok(false) => {}
                Err(e) => report.fail(Kind::Link, &l.name, endpoint, &e),
            }
        }
    }
}
