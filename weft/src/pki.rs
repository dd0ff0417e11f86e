//! The stack's certificates: made at the first start in `<data-dir>/pki/` and kept across
//! restarts (`weft_identity::pki::bootstrap`: a CA, and one certificate per identity, issued
//! again when missing, unusable or in the last third of its life).
//!
//! Layout (the CA key never leaves root's directory):
//! - `pki/` (root, 0700): `ca.crt`, `ca.key` (0600), `gateway-gateway`, `ipam-ipam`,
//!   `agent-<host>`, `dns-<host>` and `admin-admin` `.crt`/`.key`. The driver-agent (root) and
//!   the operator (`admin-admin`) use them in place.
//! - `run/tls/` (the service user's, 0700): copies of `ca.crt` and of the gateway's, ipam-svc's
//!   and dns-svc's certificates and keys (0600), which those services, unprivileged, read.

use std::{
    io::Write as _,
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use nix::unistd::{Gid, Uid, chown};
use weft_identity::{Identity, Kind, TlsFiles};

use crate::{error::UpError, user::Ids};

/// Where each service's certificate, key and CA are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackTls {
    /// The CA certificate in `pki/` (health checks and the operator trust it).
    pub ca: PathBuf,
    pub gateway: TlsFiles,
    pub ipam: TlsFiles,
    pub agent: TlsFiles,
    pub dns: TlsFiles,
    /// The operator's certificate (role admin), in `pki/`.
    pub admin: TlsFiles,
    /// A joinable host's gateway's copy of the CA key (`run/tls/ca.key`).
    pub ca_key: Option<PathBuf>,
}

/// The identities of one host's stack.
pub fn identities(host: &str) -> Result<Vec<Identity>, UpError> {
    let id = |kind, name: &str| {
        Identity::new(kind, name).map_err(|e| {
            UpError::Invalid(format!(
                "--host-name: {e} (the agent's and dns-svc's certificates are named after the host)"
            ))
        })
    };
    Ok(vec![
        id(Kind::Gateway, "gateway")?,
        id(Kind::Ipam, "ipam")?,
        id(Kind::Agent, host)?,
        id(Kind::Dns, host)?,
        id(Kind::Admin, "admin")?,
    ])
}

/// Lays out `pki/` and `run/tls/` in `data_dir` for `host`; `service` owns `run/tls/`. With
/// `advertise` (a joinable first host), the gateway's certificate also names that address and
/// the gateway gets a copy of the CA key, to sign joining hosts' certificates with.
pub fn ensure(
    data_dir: &Path,
    host: &str,
    advertise: Option<std::net::IpAddr>,
    service: Option<Ids>,
) -> Result<StackTls, UpError> {
    let ids = identities(host)?;
    let pki = data_dir.join("pki");
    let failed =
        |e: weft_identity::Error| UpError::Invalid(format!("cannot prepare the certificates: {e}"));
    if let Some(addr) = advertise {
        // The gateway first, with the address joining hosts dial it by.
        let mut opts = weft_identity::pki::LeafOptions::for_host(host);
        opts.ip_addresses.push(addr);
        weft_identity::pki::bootstrap_with(&pki, &ids[..1], &opts).map_err(failed)?;
    }
    let made = weft_identity::pki::bootstrap(&pki, host, &ids).map_err(failed)?;
    let files = |i: usize| -> Result<TlsFiles, UpError> {
        made.files(&ids[i])
            .cloned()
            .ok_or_else(|| UpError::Invalid(format!("no certificate made for {}", ids[i])))
    };
    let run_tls = data_dir.join("run").join("tls");
    crate::user::own_dir(&run_tls, 0o700, service)?;
    let ca = copy(&made.ca_cert, &run_tls, service)?;
    let for_service = |i: usize| -> Result<TlsFiles, UpError> {
        let f = files(i)?;
        Ok(TlsFiles {
            key: copy(&f.key, &run_tls, service)?,
            cert: copy(&f.cert, &run_tls, service)?,
            ca: ca.clone(),
        })
    };
    let ca_key = match advertise {
        Some(_) => Some(copy(&made.ca_key, &run_tls, service)?),
        None => {
            // Not joinable (any more): no copy of the key outside pki/.
            let _ = std::fs::remove_file(run_tls.join("ca.key"));
            None
        }
    };
    Ok(StackTls {
        ca_key,
        gateway: for_service(0)?,
        ipam: for_service(1)?,
        dns: for_service(3)?,
        agent: files(2)?,
        admin: files(4)?,
        ca: made.ca_cert,
    })
}

/// Copies `from` into `dir` under its own name, 0600 and `owner`'s, replacing the copy of an
/// earlier start whole (a new file renamed over it).
pub(crate) fn copy(from: &Path, dir: &Path, owner: Option<Ids>) -> Result<PathBuf, UpError> {
    let name = from.file_name().unwrap_or_default();
    let data = std::fs::read(from).map_err(|source| UpError::Dir {
        path: from.to_owned(),
        source,
    })?;
    let to = dir.join(name);
    write_file(&to, &data, 0o600, owner)?;
    Ok(to)
}

/// Writes `data` to `to` with `mode`, `owner`'s (root when `None`), replacing an earlier file
/// whole (a new file renamed over it; a symbolic link in its place is never followed).
pub(crate) fn write_file(
    to: &Path,
    data: &[u8],
    mode: u32,
    owner: Option<Ids>,
) -> Result<(), UpError> {
    let dir = to.parent().unwrap_or(Path::new("."));
    let name = to.file_name().unwrap_or_default();
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    let err = |path: &Path| {
        let path = path.to_owned();
        move |source| UpError::Dir { path, source }
    };
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(&tmp)
        .map_err(err(&tmp))?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(err(&tmp))?;
    f.write_all(data).map_err(err(&tmp))?;
    f.sync_all().map_err(err(&tmp))?;
    let ids = owner.unwrap_or(Ids { uid: 0, gid: 0 });
    chown(
        &tmp,
        Some(Uid::from_raw(ids.uid)),
        Some(Gid::from_raw(ids.gid)),
    )
    .map_err(|e| err(&tmp)(e.into()))?;
    std::fs::rename(&tmp, to).map_err(err(to))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::os::unix::fs::MetadataExt as _;

    use super::*;

    #[test]
    fn host_names_that_cannot_name_a_certificate_are_refused() {
        for bad in ["Local", "wft_host", "a/b", "-x"] {
            let e = identities(bad).unwrap_err().to_string();
            assert!(e.starts_with("--host-name: "), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
        assert_eq!(identities("wft-test-host").unwrap().len(), 5);
    }

    #[test]
    fn the_services_get_copies_and_the_ca_key_stays_in_pki() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("run")).unwrap();
        crate::user::own_dir(&dir.path().join("pki"), 0o700, None).unwrap();
        let t = ensure(dir.path(), "h1", None, None).unwrap();
        let run_tls = dir.path().join("run").join("tls");
        for f in [&t.gateway, &t.ipam, &t.dns] {
            assert!(
                f.cert.starts_with(&run_tls) && f.key.starts_with(&run_tls),
                "{f:?}"
            );
            assert_eq!(f.ca, run_tls.join("ca.crt"));
            assert_eq!(std::fs::metadata(&f.key).unwrap().mode() & 0o777, 0o600);
        }
        assert!(t.agent.cert.starts_with(dir.path().join("pki")));
        assert_eq!(t.dns.cert, run_tls.join("dns-h1.crt"));
        let names: Vec<String> = std::fs::read_dir(&run_tls)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!names.iter().any(|n| n.contains("ca.key")), "{names:?}");
        assert_eq!(std::fs::metadata(&run_tls).unwrap().mode() & 0o777, 0o700);
        // A restart keeps the CA and the certificates.
        let again = ensure(dir.path(), "h1", None, None).unwrap();
        assert_eq!(again, t);
        assert_eq!(
            std::fs::read(&t.gateway.cert).unwrap(),
            std::fs::read(dir.path().join("pki/gateway-gateway.crt")).unwrap()
        );
    }

    #[test]
    fn a_joinable_host_gives_its_gateway_a_copy_of_the_ca_key_and_takes_it_back() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("run")).unwrap();
        crate::user::own_dir(&dir.path().join("pki"), 0o700, None).unwrap();
        let addr: std::net::IpAddr = "192.0.2.1".parse().unwrap();
        let t = ensure(dir.path(), "h1", Some(addr), None).unwrap();
        let key = t.ca_key.clone().unwrap();
        assert_eq!(key, dir.path().join("run/tls/ca.key"));
        assert_eq!(std::fs::metadata(&key).unwrap().mode() & 0o777, 0o600);
        // (That the gateway's certificate names the address, which joining hosts dial, is
        // weft-identity's bootstrap test and the join test's.)
        let files = weft_identity::TlsFiles {
            cert: t.gateway.cert.clone(),
            key: t.gateway.key.clone(),
            ca: t.gateway.ca.clone(),
        };
        assert!(weft_identity::ServerTls::new(files).is_ok());
        // Not joinable any more: the copy of the key goes.
        let plain = ensure(dir.path(), "h1", None, None).unwrap();
        assert_eq!(plain.ca_key, None);
        assert!(!key.exists());
    }
}
