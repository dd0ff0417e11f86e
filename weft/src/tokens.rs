//! The stack's tokens: made at the first start, kept across restarts. `admin.token` (root's,
//! 0600) is for the operator: `weftctl` finds it there; `pki/agent.token` (root's) is the
//! driver-agent's and `run/dns.token` (the service user's) dns-svc's. The gateway gets only
//! their SHA-256.

use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Uid, chown};
use weft_runtime::access;

use crate::{error::UpError, user::Ids};

/// Where the stack's tokens are, and the hashes the gateway is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackTokens {
    pub admin_file: PathBuf,
    pub admin_hash: String,
    pub agent_file: PathBuf,
    pub agent_hash: String,
    pub dns_file: PathBuf,
    pub dns_hash: String,
}

/// The admin token's file in `data_dir`.
pub fn admin_file(data_dir: &Path) -> PathBuf {
    data_dir.join("admin.token")
}

/// The token in `path`, made first if there is none; given to `owner` (root when `None`).
fn ensure_one(path: &Path, owner: Option<Ids>) -> Result<String, UpError> {
    let dir_err = |e: std::io::Error| UpError::Dir {
        path: path.to_owned(),
        source: e,
    };
    let token = match std::fs::symlink_metadata(path) {
        Ok(_) => access::read_token_file(path).map_err(|e| UpError::Invalid(e.to_string()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            access::write_new_token_file(path).map_err(dir_err)?
        }
        Err(e) => return Err(dir_err(e)),
    };
    let ids = owner.unwrap_or(Ids { uid: 0, gid: 0 });
    chown(
        path,
        Some(Uid::from_raw(ids.uid)),
        Some(Gid::from_raw(ids.gid)),
    )
    .map_err(|e| dir_err(e.into()))?;
    Ok(access::token_hash(&token))
}

/// Makes (or reads) the stack's tokens in `data_dir`, whose `run/` belongs to `service`.
pub fn ensure(data_dir: &Path, service: Option<Ids>) -> Result<StackTokens, UpError> {
    crate::user::own_dir(&data_dir.join("pki"), 0o700, None)?;
    let admin_file = admin_file(data_dir);
    let agent_file = data_dir.join("pki").join("agent.token");
    let dns_file = data_dir.join("run").join("dns.token");
    Ok(StackTokens {
        admin_hash: ensure_one(&admin_file, None)?,
        agent_hash: ensure_one(&agent_file, None)?,
        dns_hash: ensure_one(&dns_file, service)?,
        admin_file,
        agent_file,
        dns_file,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_made_once_and_kept() {
        let dir = std::env::temp_dir().join(format!("weft-up-tokens-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("run")).unwrap();
        let first = ensure(&dir, None).unwrap();
        let again = ensure(&dir, None).unwrap();
        assert_eq!(first, again, "a restart keeps the tokens");
        assert_ne!(first.admin_hash, first.agent_hash);
        let admin = access::read_token_file(&first.admin_file).unwrap();
        assert_eq!(access::token_hash(&admin), first.admin_hash);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&first.admin_file)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let pki = std::fs::metadata(dir.join("pki"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(pki & 0o777, 0o700);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
