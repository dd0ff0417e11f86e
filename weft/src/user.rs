//! The user the unprivileged services run as, and the data directory made theirs.
//!
//! `weft up` runs the gateway, ipam-svc and dns-svc as a dedicated system user (`weft` by
//! default, `--user` to choose another), never as root; only the driver-agent stays root. A
//! dedicated user rather than the invoking one (`SUDO_USER`): the services' databases, logs and
//! sockets then belong to no human account, whose other processes could otherwise read them,
//! signal or trace the services; and there is always such a user (under systemd or a root
//! shell there is no `SUDO_USER`). It is created when missing, as Debian packages do for their
//! daemons: a system user and group, no home, no login shell.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use nix::unistd::{Gid, Uid, User, chown};

use crate::error::UpError;

/// The default service user.
pub const DEFAULT_USER: &str = "weft";

/// Where `useradd` is: an absolute path in a root-owned directory, never a PATH lookup.
const USERADD: &str = "/usr/sbin/useradd";
const NOLOGIN: &str = "/usr/sbin/nologin";

/// The service user's ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
}

/// Looks `name` up; the default user is created when missing, any other must exist. Root is
/// refused: the point is to run without it.
pub fn ensure(name: &str) -> Result<Ids, UpError> {
    let lookup = || {
        User::from_name(name)
            .map_err(|e| UpError::User(format!("cannot look up user {name:?}: {e}")))
    };
    let user = match lookup()? {
        Some(u) => u,
        None if name == DEFAULT_USER => {
            create(name)?;
            lookup()?.ok_or_else(|| UpError::User(format!("user {name:?} was not created")))?
        }
        None => {
            return Err(UpError::User(format!(
                "--user {name:?}: no such user (only the default, {DEFAULT_USER:?}, is created)"
            )));
        }
    };
    if user.uid.is_root() || user.gid.as_raw() == 0 {
        return Err(UpError::User(format!(
            "--user {name:?}: uid {} gid {}: the services must not run as root",
            user.uid, user.gid
        )));
    }
    Ok(Ids {
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
    })
}

fn create(name: &str) -> Result<(), UpError> {
    let out = std::process::Command::new(USERADD)
        .args([
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            NOLOGIN,
            "--comment",
            "Weft services",
            name,
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| UpError::User(format!("cannot run {USERADD}: {e}")))?;
    // Another `weft up` may have created it meanwhile (exit 9: already exists).
    if out.status.success() || out.status.code() == Some(9) {
        Ok(())
    } else {
        Err(UpError::User(format!(
            "cannot create user {name:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Makes `dir` with `mode` if missing, sets its mode, and gives it to `owner` (or root).
pub fn own_dir(dir: &Path, mode: u32, owner: Option<Ids>) -> Result<(), UpError> {
    let err = |source| UpError::Dir {
        path: dir.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).map_err(err)?;
    give(dir, owner)
}

fn give(path: &Path, owner: Option<Ids>) -> Result<(), UpError> {
    let ids = owner.unwrap_or(Ids { uid: 0, gid: 0 });
    chown(
        path,
        Some(Uid::from_raw(ids.uid)),
        Some(Gid::from_raw(ids.gid)),
    )
    .map_err(|e| UpError::Dir {
        path: path.to_owned(),
        source: e.into(),
    })
}

/// Prepares the data directory: itself and `run/` (the broker's socket) 0700 for the service
/// user, `logs/` and `agent/` 0700 for root; the services' own files already there (from an
/// earlier run, maybe as root) are given to the service user, 0600.
pub fn prepare_data_dir(data_dir: &Path, ids: Ids) -> Result<(), UpError> {
    own_dir(data_dir, 0o700, Some(ids))?;
    own_dir(&data_dir.join("run"), 0o700, Some(ids))?;
    own_dir(&data_dir.join("logs"), 0o700, None)?;
    own_dir(&data_dir.join("agent"), 0o700, None)?;
    let entries = std::fs::read_dir(data_dir).map_err(|source| UpError::Dir {
        path: data_dir.to_owned(),
        source,
    })?;
    for e in entries.flatten() {
        let path: PathBuf = e.path();
        let is_file = e.file_type().is_ok_and(|t| t.is_file());
        // The admin token and the supervisor's status (`status::FILE`, which the status
        // module's tests hold to this) stay root's: the services have no use for them.
        let roots = e.file_name() == "admin.token" || e.file_name() == "status.json";
        if is_file && !roots {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(
                |source| UpError::Dir {
                    path: path.clone(),
                    source,
                },
            )?;
            give(&path, Some(ids))?;
        }
    }
    Ok(())
}
