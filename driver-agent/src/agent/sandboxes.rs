//! CreateSandbox and RemoveSandbox: a sandbox's namespace (the agent's own `weft-<id>`, made
//! ahead by the pool when one is ready, the caller's, or the host's) and its files, and the
//! initial endpoints attached with it. A part of [`super::Agent`] of its own, apart from
//! networks and endpoints.

use std::path::{Path, PathBuf};

use super::{Agent, DefaultRoutes, SandboxNetnsPath, connected};
use crate::{
    applied::{Of, digest},
    driver::Attached,
    error::AgentError,
    kernel, names, netns,
    netns_policy::NetnsFile,
    report::{Action, Kind, Report},
    sandbox::{self, Sandbox, SandboxNetns},
    spec::{Endpoint, Network},
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
        let (state, _) = self.make_sandbox(sb, false, report).await?;
        Ok(state)
    }

    /// [`Agent::create_sandbox`]; with `defer_new_files`, files that are new (their directory
    /// made by this call) are not written but returned, for the caller to write while it
    /// attaches (and to record the sandbox as applied once they are written).
    async fn make_sandbox(
        &self,
        sb: &Sandbox,
        defer_new_files: bool,
        report: &mut Report,
    ) -> Result<(SandboxState, Option<NewFiles>), AgentError> {
        self.applied.forget(Of::Sandbox, &sb.id);
        let mut given = None;
        // The sandbox's files directory was made by this call: its files are new.
        let mut fresh_dir = false;
        // (A namespace from the pool has loopback up already.)
        let mut lo_up = false;
        let (path, managed, created) = match &sb.netns {
            SandboxNetns::Host => (self.host_netns.clone(), false, false),
            SandboxNetns::Given(p) => {
                given = Some(self.open_netns("sandbox.netns_path", p).await?);
                (p.clone(), false, false)
            }
            SandboxNetns::Managed => {
                let known = netns::named_path(&sandbox::managed_netns_name(&sb.id));
                // The sandbox's files directory first: it is what marks a `weft-<id>`
                // namespace as this agent's (reconciliation removes an orphan only then), so a
                // kill between the namespace and its files cannot leave a namespace no one
                // owns.
                let dir = sandbox::files_dir(&self.data_dir, &sb.id);
                fresh_dir = sandbox::make_dir(&dir).map_err(|source| AgentError::File {
                    path: dir.clone(),
                    source,
                })?;
                let started = std::time::Instant::now();
                let mut pooled = false;
                // Made lately and still open (the second call, with the files): nothing to do.
                let (p, created, open) = if self.connected(&known).is_some() {
                    (known, false, None)
                } else if let Some(ready) = self.pool.take() {
                    // One made ahead: it only needs its name.
                    let name = sandbox::managed_netns_name(&sb.id);
                    match netns::mount_named(&name, &ready.file) {
                        Ok(p) => {
                            pooled = true;
                            lo_up = true;
                            (p, true, Some(ready))
                        }
                        // A retry: the namespace is there already.
                        Err(netns::NetnsError::Exists { .. }) => {
                            self.pool.put_back(ready);
                            (known, false, None)
                        }
                        Err(e) => {
                            self.pool.put_back(ready);
                            return Err(AgentError::netns(&known)(e));
                        }
                    }
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
                    tracing::info!(
                        sandbox = %sb.id,
                        netns = %p.display(),
                        pooled,
                        took_us = started.elapsed().as_micros(),
                        "namespace created"
                    );
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
        let defer = defer_new_files && fresh_dir;
        let res = self
            .finish_sandbox(
                sb,
                &path,
                given.as_ref(),
                lo_up,
                (fresh_dir, !defer),
                report,
            )
            .await;
        if res.is_err() && created {
            let name = sandbox::managed_netns_name(&sb.id);
            if let Err(e) = netns::delete_named(&name) {
                tracing::warn!(netns = %name, error = %e, "cannot undo a failed sandbox creation");
            }
            report.changes.clear();
        }
        let (resolv_conf, hosts) = res?;
        self.know_sandbox(sb, &path, managed);
        let files = defer.then(|| NewFiles {
            files: [
                (resolv_conf.clone(), sb.resolv_conf.clone()),
                (hosts.clone(), sb.hosts.clone()),
            ],
        });
        if files.is_none() {
            self.applied.record(Of::Sandbox, &sb.id, digest(sb));
        }
        let state = SandboxState {
            netns_path: path,
            managed,
            resolv_conf,
            hosts,
        };
        Ok((state, files))
    }

    /// [`Agent::create_sandbox`], then its initial endpoints attached in order inside its
    /// namespace (their `netns` is set to it). All or nothing: when an attach fails, a
    /// namespace this call created goes with everything in it; otherwise the endpoints
    /// attached are detached again. Returns what each attach made, in order.
    pub async fn create_sandbox_attached(
        &self,
        sb: &Sandbox,
        attachments: &mut [(Endpoint, Network)],
        report: &mut Report,
    ) -> Result<(SandboxState, Vec<Option<(Attached, DefaultRoutes)>>), AgentError> {
        let started = std::time::Instant::now();
        let (state, files) = self.make_sandbox(sb, true, report).await?;
        let sandbox_us = started.elapsed().as_micros();
        // A new sandbox's files are written by a blocking thread while the endpoints attach:
        // file system and kernel work side by side.
        let writing = files.map(|f| tokio::task::spawn_blocking(move || f.write()));
        let created = report
            .changes
            .iter()
            .any(|c| c.action == Action::Created && c.kind == Kind::Netns);
        for (ep, _) in attachments.iter_mut() {
            ep.netns.clone_from(&state.netns_path);
        }
        let mut done = Vec::with_capacity(attachments.len());
        let mut routes = created.then(DefaultRoutes::default);
        let mut failed = None;
        for (i, (ep, net)) in attachments.iter().enumerate() {
            match self.attach_in(ep, net, routes.as_mut(), report).await {
                Ok(a) => done.push(a),
                Err(e) => {
                    failed = Some((i, e));
                    break;
                }
            }
        }
        // (Awaited on failure too: the undo removes the files' directory.)
        let written = match writing {
            Some(w) => Some(w.await.unwrap_or_else(|e| {
                Err(AgentError::File {
                    path: state.resolv_conf.clone(),
                    source: std::io::Error::other(e),
                })
            })),
            None => None,
        };
        let failed = match (failed, written) {
            (Some(f), _) => Some(f),
            (None, Some(Err(e))) => Some((attachments.len(), e)),
            (None, Some(Ok(paths))) => {
                NewFiles::report(&paths, &sb.id, report);
                self.applied.record(Of::Sandbox, &sb.id, digest(sb));
                None
            }
            (None, None) => None,
        };
        if let Some((i, e)) = failed {
            if created {
                if let Err(u) = self.remove_sandbox(&sb.id, Path::new("")).await {
                    tracing::warn!(sandbox = %sb.id, error = %u, "cannot undo a failed sandbox creation");
                }
            } else {
                for (ep, _) in attachments[..i].iter().rev() {
                    if let Err(u) = self.detach(&ep.id, &state.netns_path).await {
                        tracing::warn!(endpoint = %ep.id, error = %u, "cannot undo a failed attach");
                    }
                }
            }
            report.changes.clear();
            return Err(e);
        }
        if !attachments.is_empty() {
            tracing::info!(
                sandbox = %sb.id,
                endpoints = attachments.len(),
                sandbox_us,
                attach_us = started.elapsed().as_micros() - sandbox_us,
                "sandbox created with its endpoints"
            );
        }
        Ok((state, done))
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
    /// `lo_up`: loopback is known to be up (the pool brought it up).
    /// `fresh_dir`: the files directory was made by this call (nothing in it to compare);
    /// `write`: the files are written here (otherwise only their paths are returned).
    async fn finish_sandbox(
        &self,
        sb: &Sandbox,
        path: &Path,
        given: Option<&NetnsFile>,
        lo_up: bool,
        (fresh_dir, write): (bool, bool),
        report: &mut Report,
    ) -> Result<(PathBuf, PathBuf), AgentError> {
        if sb.netns != SandboxNetns::Host && !lo_up {
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
        if !write {
            return Ok(self.file_paths(&sb.id));
        }
        self.write_files_in(&sb.id, &sb.resolv_conf, &sb.hosts, fresh_dir, report)
    }

    /// Where sandbox `id`'s resolv.conf and hosts files are.
    fn file_paths(&self, id: &str) -> (PathBuf, PathBuf) {
        let dir = sandbox::files_dir(&self.data_dir, id);
        (dir.join("resolv.conf"), dir.join("hosts"))
    }

    /// Writes sandbox `id`'s resolv.conf and hosts files (each only when its contents differ);
    /// returns their paths.
    pub(crate) fn write_files(
        &self,
        id: &str,
        resolv_conf_text: &str,
        hosts_text: &str,
        report: &mut Report,
    ) -> Result<(PathBuf, PathBuf), AgentError> {
        self.write_files_in(id, resolv_conf_text, hosts_text, false, report)
    }

    /// [`Agent::write_files`]; `fresh_dir`: the directory was made by this call, so the files
    /// are written once, in place (no earlier contents to read, nothing to replace).
    fn write_files_in(
        &self,
        id: &str,
        resolv_conf_text: &str,
        hosts_text: &str,
        fresh_dir: bool,
        report: &mut Report,
    ) -> Result<(PathBuf, PathBuf), AgentError> {
        // What reconciliation last brought the sandbox to no longer holds (CreateSandbox
        // records it again once done).
        self.applied.forget(Of::Sandbox, id);
        if !fresh_dir {
            let dir = sandbox::files_dir(&self.data_dir, id);
            std::fs::create_dir_all(&dir).map_err(|source| AgentError::File {
                path: dir.clone(),
                source,
            })?;
        }
        let (resolv_conf, hosts) = self.file_paths(id);
        if fresh_dir {
            let files = NewFiles {
                files: [
                    (resolv_conf.clone(), resolv_conf_text.to_owned()),
                    (hosts.clone(), hosts_text.to_owned()),
                ],
            };
            NewFiles::report(&files.write()?, id, report);
            return Ok((resolv_conf, hosts));
        }
        for (file, contents) in [(&resolv_conf, resolv_conf_text), (&hosts, hosts_text)] {
            let old = std::fs::read_to_string(file).ok();
            if old.as_deref() == Some(contents) {
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
            report.change(action, Kind::File, file.display().to_string(), id);
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

/// A new sandbox's files (its directory made by the same call), each path with its contents,
/// still to write.
struct NewFiles {
    files: [(PathBuf, String); 2],
}

impl NewFiles {
    /// Writes each file once, readable by all ([`sandbox::write_new`]); returns their paths.
    fn write(self) -> Result<Vec<PathBuf>, AgentError> {
        let mut written = Vec::with_capacity(self.files.len());
        for (path, contents) in self.files {
            sandbox::write_new(&path, &contents).map_err(|source| AgentError::File {
                path: path.clone(),
                source,
            })?;
            written.push(path);
        }
        Ok(written)
    }

    /// Reports the files `written` for sandbox `id` as created.
    fn report(written: &[PathBuf], id: &str, report: &mut Report) {
        for p in written {
            report.change(Action::Created, Kind::File, p.display().to_string(), id);
        }
    }
}
