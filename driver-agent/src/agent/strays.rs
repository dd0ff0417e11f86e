//! Stray endpoint devices inside a sandbox that stays: the device of an endpoint the gateway no
//! longer wants (a Disconnect whose detach never reached this agent). A bridge endpoint's
//! stray shows on the host (its veth) and goes as an orphan there; a macvlan or ipvlan device
//! lives in its sandbox alone, so only a look inside finds it: the audit's
//! (`reconcile.rs`), which enters its sandboxes anyway. A part of [`super::Agent`] of its own.

use std::{collections::BTreeSet, time::Instant};

use super::Agent;
use crate::{
    kernel, names, netns,
    report::{Action, Kind, Report},
    sandbox::{self, Sandbox, SandboxNetns},
    spec::Endpoint,
};

impl Agent {
    /// Removes the devices in sandbox `s`'s namespace marked as an endpoint that is none of
    /// `desired` (the whole desired state, read at `as_of`: a namespace shared with another
    /// sandbox, `container:`, holds that one's endpoints), unless the API made it (or touched
    /// the sandbox) since shortly before `as_of`.
    pub(crate) async fn remove_strays(
        &self,
        s: &Sandbox,
        desired: &[Endpoint],
        as_of: Instant,
        report: &mut Report,
    ) {
        let path = match &s.netns {
            SandboxNetns::Managed => netns::named_path(&sandbox::managed_netns_name(&s.id)),
            SandboxNetns::Given(p) => p.clone(),
            // (The host's own links are the orphan survey's.)
            SandboxNetns::Host => return,
        };
        if self.recent.touched_since(&s.id, as_of) || !path.exists() {
            return;
        }
        let wanted: BTreeSet<&str> = desired.iter().map(|e| e.id.as_str()).collect();
        let handle = match self.sandbox_socket("netns_path", &path).await {
            Ok(c) => c.handle,
            Err(e) => {
                report.fail(Kind::Netns, path.display().to_string(), &s.id, &e);
                return;
            }
        };
        let links = match kernel::links(&handle).await {
            Ok(l) => l,
            Err(e) => {
                report.fail(Kind::Link, "links (in the sandbox)", &s.id, &e);
                return;
            }
        };
        for l in links {
            let Some(id) = names::endpoint_of_alias(&l.alias) else {
                continue;
            };
            if wanted.contains(id) || self.recent.since(id, true, as_of) {
                continue;
            }
            tracing::info!(endpoint = %id, sandbox = %s.id, link = %l.name, "removing a stray endpoint device");
            match kernel::delete_link(&handle, &l).await {
                Ok(true) => report.change(
                    Action::Removed,
                    Kind::Link,
                    format!("{} (in the sandbox)", l.name),
                    id,
                ),
                Ok(false) => {}
                Err(e) => report.fail(Kind::Link, &l.name, id, &e),
            }
        }
    }
}
