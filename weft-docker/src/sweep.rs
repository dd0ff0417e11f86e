//! Sandboxes Docker forgot: when the plugin is down while dockerd removes a container, dockerd
//! gives up on `Leave` after a minute and removes the container anyway, and its namespace with
//! it, which leaves the Weft sandbox behind. A sweep (at start and every `--sweep-every`)
//! deletes the plugin's sandboxes whose Docker namespace file is gone.
//!
//! Gone means: the SandboxKey path (a label) does not exist while its directory does (a
//! plugin that cannot see dockerd's exec root, from another mount namespace, deletes nothing),
//! and the sandbox is older than `--stale-after` (dockerd makes the file only after `Join`, when
//! runc's prestart hook runs).
//!
//! Likewise a network: dockerd removes its record even when the plugin could not delete the
//! Weft network. With `--docker-host`, the plugin's networks older than `--stale-after` that
//! dockerd answers 404 for are deleted (once they have no endpoint left).

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, SystemTime},
};

use weft_proto::gateway::v1 as pb;

use crate::{plugin::Plugin, weft::SANDBOX_PATH_LABEL};

/// Whether the Docker sandbox at `path` is gone: see the module's comment.
pub fn docker_sandbox_gone(
    path: &Path,
    created: SystemTime,
    now: SystemTime,
    grace: Duration,
) -> bool {
    let old_enough = now.duration_since(created).is_ok_and(|age| age >= grace);
    let dir_there = path.is_absolute() && path.parent().is_some_and(Path::is_dir);
    let file_gone = matches!(std::fs::symlink_metadata(path), Err(e) if e.kind() == std::io::ErrorKind::NotFound);
    old_enough && dir_there && file_gone
}

fn created_at(sb: &pb::Sandbox) -> SystemTime {
    timestamp(sb.created_at.as_ref())
}

fn timestamp(t: Option<&prost_types::Timestamp>) -> SystemTime {
    t.and_then(|t| {
        let secs = u64::try_from(t.seconds).ok()?;
        let nanos = u32::try_from(t.nanos).ok()?;
        SystemTime::UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
    })
    // Unknown: as if made now, so never swept for it.
    .unwrap_or_else(SystemTime::now)
}

/// One sweep: deletes the plugin's sandboxes whose Docker sandbox is gone; how many.
pub async fn once(plugin: &Plugin, grace: Duration) -> Result<usize, crate::error::PluginError> {
    let mut gw = plugin.clients().await?;
    let now = SystemTime::now();
    let mut deleted = 0;
    for sb in gw.sandboxes(None, None).await? {
        let Some(path) = sb.labels.get(SANDBOX_PATH_LABEL) else {
            continue;
        };
        if !docker_sandbox_gone(Path::new(path), created_at(&sb), now, grace) {
            continue;
        }
        match gw.delete_sandbox(&sb.id).await {
            Ok(()) => {
                tracing::info!(sandbox = %sb.name, %path, "deleted: Docker's sandbox is gone");
                deleted += 1;
            }
            Err(st) => {
                tracing::warn!(sandbox = %sb.name, error = %st.message(), "cannot delete a sandbox Docker forgot")
            }
        }
    }
    Ok(deleted)
}

/// Deletes the plugin's networks that dockerd no longer has; how many.
pub async fn networks(
    plugin: &Plugin,
    grace: Duration,
) -> Result<usize, crate::error::PluginError> {
    let Some(docker) = plugin.docker() else {
        return Ok(0);
    };
    let mut gw = plugin.clients().await?;
    let now = SystemTime::now();
    let mut deleted = 0;
    for net in gw.networks(None).await? {
        let Some(id) = net.labels.get(crate::weft::NETWORK_ID_LABEL) else {
            continue;
        };
        let created = timestamp(net.created_at.as_ref());
        if !now.duration_since(created).is_ok_and(|age| age >= grace) {
            continue;
        }
        match docker.network_exists(id).await {
            Ok(false) => {}
            Ok(true) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "cannot ask dockerd about its networks");
                return Ok(deleted);
            }
        }
        match gw.delete_network(&net.id).await {
            Ok(()) => {
                tracing::info!(network = %net.name, docker_id = %id, "deleted: Docker's network is gone");
                deleted += 1;
            }
            Err(st) => {
                tracing::warn!(network = %net.name, error = %st.message(), "cannot delete a network Docker forgot")
            }
        }
    }
    Ok(deleted)
}

/// Sweeps every `every`, the first time at once: sandboxes first (a network with endpoints
/// cannot go).
pub async fn run(plugin: Arc<Plugin>, every: Duration, grace: Duration) {
    loop {
        if let Err(e) = once(&plugin, grace).await {
            tracing::warn!(error = %e, "sweep of forgotten sandboxes failed");
        }
        if let Err(e) = networks(&plugin, grace).await {
            tracing::warn!(error = %e, "sweep of forgotten networks failed");
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_old_sandbox_whose_file_is_gone_from_a_visible_directory_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let alive = dir.path().join("0123456789ab");
        std::fs::write(&alive, b"").unwrap();
        let gone = dir.path().join("ba9876543210");
        let now = SystemTime::now();
        let old = now - Duration::from_secs(120);
        let grace = Duration::from_secs(60);
        assert!(docker_sandbox_gone(&gone, old, now, grace));
        assert!(!docker_sandbox_gone(&alive, old, now, grace));
        // Too young: dockerd makes the file only after Join.
        assert!(!docker_sandbox_gone(&gone, now, now, grace));
        // A directory this plugin cannot see (another mount namespace): nothing is gone.
        assert!(!docker_sandbox_gone(
            &dir.path().join("nope/0123456789ab"),
            old,
            now,
            grace
        ));
        assert!(!docker_sandbox_gone(
            Path::new("relative/x"),
            old,
            now,
            grace
        ));
    }
}
