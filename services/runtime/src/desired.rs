//! A host's desired state brought forward by the changes since the revision it was read at
//! (`GetDesiredState` with `since_revision`): the gateway sends the sandboxes that changed,
//! whole (with every endpoint), the ones removed, and the networks those use; the agent merges
//! them into the state it holds. Kept here, beside both, so that the gateway's tests check the
//! very merge the agent does against a full read.

use std::collections::{BTreeMap, HashSet};

use weft_proto::agent::v1::DesiredState;

/// `state` (at some revision) with `changes` applied: the sandboxes named in `changes` or in
/// `removed` replaced by those of `changes` (their endpoints too), the networks those use taken
/// from `changes`, every network no endpoint uses any more dropped, and `changes`' revision.
/// Sandboxes and networks in name order, endpoints grouped by sandbox in that order, each
/// sandbox's in attach order: as a full read gives them.
pub fn apply_changes(state: &mut DesiredState, changes: DesiredState, removed: &[String]) {
    let replaced: HashSet<&str> = changes
        .sandboxes
        .iter()
        .map(|s| s.sandbox_id.as_str())
        .chain(removed.iter().map(String::as_str))
        .collect();
    state
        .sandboxes
        .retain(|s| !replaced.contains(s.sandbox_id.as_str()));
    state
        .endpoints
        .retain(|e| !replaced.contains(e.sandbox_id.as_str()));
    state.sandboxes.extend(changes.sandboxes);
    state.endpoints.extend(changes.endpoints);
    state.sandboxes.sort_by(|a, b| {
        a.name
            .cmp(&b.name)
            .then_with(|| a.sandbox_id.cmp(&b.sandbox_id))
    });
    // Grouped by sandbox in the sandboxes' order (stable: each one's endpoints keep theirs).
    let place: BTreeMap<&str, usize> = state
        .sandboxes
        .iter()
        .enumerate()
        .map(|(i, s)| (s.sandbox_id.as_str(), i))
        .collect();
    let mut endpoints = std::mem::take(&mut state.endpoints);
    endpoints.sort_by_key(|e| place.get(e.sandbox_id.as_str()).copied());
    state.endpoints = endpoints;
    let mut networks: BTreeMap<String, _> = std::mem::take(&mut state.networks)
        .into_iter()
        .map(|n| (n.network_id.clone(), n))
        .collect();
    for n in changes.networks {
        networks.insert(n.network_id.clone(), n);
    }
    let used: HashSet<&str> = state
        .endpoints
        .iter()
        .map(|e| e.network_id.as_str())
        .collect();
    let mut networks: Vec<_> = networks
        .into_values()
        .filter(|n| used.contains(n.network_id.as_str()))
        .collect();
    networks.sort_by(|a, b| {
        a.name
            .cmp(&b.name)
            .then_with(|| a.network_id.cmp(&b.network_id))
    });
    state.networks = networks;
    state.revision = changes.revision;
}
