//! Which namespace files a caller may hand the agent (`netns_path` of CreateSandbox, Attach,
//! Detach, RemoveSandbox), and the one way such a path is opened: [`NetnsPolicy::open`].
//!
//! A caller-chosen path is opened as root, then entered and rewritten (links, addresses,
//! routes). Left unchecked, it could name the host's own namespace (or the managed one, or pid
//! 1's) and have its routes replaced, or a FIFO that blocks the opener forever, or a device
//! whose open has side effects. So a path is accepted only when:
//!
//! 1. it is a normalised absolute path (no `.`, `..` or empty components, at most
//!    [`PATH_MAX_LEN`] bytes) in an allowed place: directly inside an allowed directory,
//!    `/proc/<pid>/ns/net` (when allowed), or one of Weft's own managed namespaces
//!    (`/run/netns/weft-<sandbox id>`). This is decided from the text alone, before the file
//!    system is touched, so a refused path reveals nothing about what exists;
//! 2. the file, opened with `O_PATH` (no open semantics at all: a FIFO does not block, a device
//!    is not opened) and close-on-exec, without following a symbolic link out of its directory
//!    (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS`; `O_NOFOLLOW` where the kernel
//!    lacks `openat2`), is on nsfs (`fstatfs`);
//! 3. it is not the agent's own namespace, the managed one, or pid 1's (same nsfs inode);
//! 4. reopened through `/proc/self/fd` (the same inode, no second path lookup) read-only and
//!    non-blocking, it can be entered as a *network* namespace (`setns(CLONE_NEWNET)` refuses
//!    every other kind).
//!
//! All of it runs on a dedicated thread that exits afterwards (it ends inside the namespace it
//! probed), never on an async worker. The opened file is what the agent then uses: the path is
//! never looked up again.
//!
//! Why not `readlink(/proc/self/fd/N)` = `net:[…]` for step 4: that holds for the
//! `/proc/<pid>/ns/net` magic links only; a namespace bind-mounted onto a file (`ip netns
//! add`) reads back as its mount path. And the `NS_GET_NSTYPE` ioctl would need unsafe code.

use std::{
    fmt,
    fs::File,
    os::fd::{AsFd, AsRawFd, OwnedFd},
    path::{Path, PathBuf},
    str::FromStr,
};

use nix::{
    errno::Errno,
    fcntl::{OFlag, OpenHow, ResolveFlag, open, openat, openat2},
    sys::{
        stat::{FileStat, Mode, SFlag, fstat, stat},
        statfs::{NSFS_MAGIC, PROC_SUPER_MAGIC, fstatfs},
    },
};
use weft_runtime::FieldViolation;

use crate::{error::AgentError, netns, sandbox};

/// `/proc/<pid>/ns/net` as an allowed place.
pub const PROC_PATTERN: &str = "/proc/<pid>/ns/net";
/// The default allowed places (`--netns-allow`).
pub const DEFAULT_ALLOW: &str = "/run/netns,/var/run/netns,/proc/<pid>/ns/net";
/// The longest path accepted (PATH_MAX less the NUL).
pub const PATH_MAX_LEN: usize = 4095;

/// One place caller-given namespace files may come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// Files directly inside this directory (symbolic links there must stay inside it).
    Dir(PathBuf),
    /// `/proc/<pid>/ns/net` of a process outside the host's namespace.
    Proc,
}

impl FromStr for Place {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == PROC_PATTERN {
            return Ok(Self::Proc);
        }
        if s == "/" || normalised(s).is_err() {
            return Err(format!(
                "{s:?}: expected {PROC_PATTERN} or a normalised absolute directory (not /)"
            ));
        }
        Ok(Self::Dir(PathBuf::from(s)))
    }
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dir(d) => write!(f, "{}/<name>", d.display()),
            Self::Proc => f.write_str(PROC_PATTERN),
        }
    }
}

/// The allowed places, and the check every caller-given namespace path goes through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetnsPolicy {
    places: Vec<Place>,
}

impl Default for NetnsPolicy {
    fn default() -> Self {
        Self::new(
            DEFAULT_ALLOW
                .split(',')
                .filter_map(|p| p.parse().ok())
                .collect(),
        )
    }
}

/// A namespace file that passed [`NetnsPolicy::open`]: open read-only, non-blocking and
/// close-on-exec, known to be a network namespace other than the host's.
#[derive(Debug)]
pub struct NetnsFile {
    pub path: PathBuf,
    pub file: File,
}

/// Where a path sits, decided from its text.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Located {
    Dir { dir: PathBuf, name: String },
    Proc { pid: u32 },
}

/// Why the file system part refused.
enum Refusal {
    NotFound,
    Invalid(String),
    Io(std::io::Error),
}

impl From<Errno> for Refusal {
    fn from(e: Errno) -> Self {
        match e {
            Errno::ENOENT | Errno::ESRCH => Self::NotFound,
            Errno::EACCES | Errno::EPERM => {
                Self::Invalid("not accessible to the driver-agent".into())
            }
            e => Self::Io(e.into()),
        }
    }
}

/// The path's components, when it is absolute and normalised.
fn normalised(path: &str) -> Result<Vec<&str>, &'static str> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err("must be an absolute path");
    };
    let parts: Vec<&str> = rest.split('/').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == ".." || p.contains('\0'))
    {
        return Err("must be a normalised absolute path (no '.', '..' or empty components)");
    }
    Ok(parts)
}

impl NetnsPolicy {
    pub fn new(places: Vec<Place>) -> Self {
        Self { places }
    }

    pub fn places(&self) -> &[Place] {
        &self.places
    }

    /// Where `path` sits, from its text alone; the reason when it is not an allowed place.
    fn locate(&self, path: &Path) -> Result<Located, String> {
        let Some(text) = path.to_str() else {
            return Err("must be UTF-8".into());
        };
        if text.len() > PATH_MAX_LEN {
            return Err(format!("longer than {PATH_MAX_LEN} bytes"));
        }
        let parts = normalised(text)?;
        if let ["proc", pid, "ns", "net"] = parts.as_slice()
            && self.places.contains(&Place::Proc)
            && !pid.starts_with('0')
            && pid.bytes().all(|b| b.is_ascii_digit())
            && let Ok(pid) = pid.parse::<u32>()
        {
            return Ok(Located::Proc { pid });
        }
        if let Some((name, dir)) = parts.split_last()
            && !dir.is_empty()
        {
            let dir = PathBuf::from(format!("/{}", dir.join("/")));
            let allowed = self.places.iter().any(|p| *p == Place::Dir(dir.clone()));
            let managed = dir == Path::new(netns::NETNS_DIR)
                && sandbox::sandbox_of_managed_netns(name).is_some();
            if allowed || managed {
                return Ok(Located::Dir {
                    dir,
                    name: (*name).to_owned(),
                });
            }
        }
        let places: Vec<String> = self
            .places
            .iter()
            .map(ToString::to_string)
            .chain([format!("{}/weft-<sandbox id>", netns::NETNS_DIR)])
            .collect();
        Err(format!(
            "not an allowed place for a namespace file (allowed: {})",
            places.join(", ")
        ))
    }

    /// Opens the caller-given namespace file at `path` (request field `field`) if it is one
    /// the agent may use, never the managed namespace at `managed`. A refusal is
    /// INVALID_ARGUMENT naming the field and the path; a missing file in an allowed place is
    /// NOT_FOUND.
    pub async fn open(
        &self,
        field: &str,
        path: &Path,
        managed: &Path,
    ) -> Result<NetnsFile, AgentError> {
        let invalid = |reason: String| {
            AgentError::Invalid(vec![FieldViolation::new(
                field,
                path.display().to_string(),
                reason,
            )])
        };
        let located = self.locate(path).map_err(invalid)?;
        let managed = managed.to_owned();
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("weft-netns-check".into())
            .spawn(move || {
                let _ = tx.send(open_checked(&located, &managed));
            })
            .map_err(|e| AgentError::netns(path)(netns::NetnsError::Thread(e.to_string())))?;
        let res = rx.await.map_err(|_| {
            AgentError::netns(path)(netns::NetnsError::Thread(
                "the namespace check thread panicked".into(),
            ))
        })?;
        match res {
            Ok(file) => Ok(NetnsFile {
                path: path.to_owned(),
                file,
            }),
            Err(Refusal::Invalid(reason)) => Err(invalid(reason)),
            Err(Refusal::NotFound) => Err(AgentError::NetnsNotFound {
                path: path.to_owned(),
            }),
            Err(Refusal::Io(source)) => Err(AgentError::netns(path)(netns::NetnsError::Open {
                path: path.to_owned(),
                source,
            })),
        }
    }
}

/// The namespaces a caller may never name, as nsfs inodes.
fn forbidden(managed: &Path) -> Result<Vec<(FileStat, &'static str)>, Refusal> {
    let io = |e: Errno| Refusal::Io(e.into());
    // /proc/self is the thread group: its namespace is the main thread's, which never moves.
    let mut out = vec![
        (
            stat("/proc/self/ns/net").map_err(io)?,
            "the driver-agent's own network namespace",
        ),
        (
            stat(managed).map_err(io)?,
            "the network namespace the driver-agent manages (the host's)",
        ),
    ];
    match stat("/proc/1/ns/net") {
        Ok(init) => out.push((init, "the network namespace of pid 1 (the machine's)")),
        // Where pid 1 is out of the agent's reach (a sandboxed agent, an LSM), so is its
        // namespace: no path to it opens either.
        Err(Errno::EACCES | Errno::EPERM) => {}
        Err(e) => return Err(io(e)),
    }
    Ok(out)
}

/// Steps 2 to 4 of the module's list, on the calling (dedicated) thread; it may end inside
/// the namespace it checked.
fn open_checked(located: &Located, managed: &Path) -> Result<File, Refusal> {
    let fd = match located {
        Located::Dir { dir, name } => open_beneath(dir, name)?,
        Located::Proc { pid } => {
            let proc = open(
                "/proc",
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )?;
            if fstatfs(&proc)?.filesystem_type() != PROC_SUPER_MAGIC {
                return Err(Refusal::Invalid("/proc is not procfs".into()));
            }
            // The last component is a magic link, followed on purpose: /proc is procfs and
            // every component of the rest is fixed.
            openat(
                &proc,
                format!("{pid}/ns/net").as_str(),
                OFlag::O_PATH | OFlag::O_CLOEXEC,
                Mode::empty(),
            )?
        }
    };
    if fstatfs(&fd)?.filesystem_type() != NSFS_MAGIC {
        return Err(Refusal::Invalid("not a namespace file".into()));
    }
    let st = fstat(&fd)?;
    for (f, what) in forbidden(managed)? {
        if (f.st_dev, f.st_ino) == (st.st_dev, st.st_ino) {
            return Err(Refusal::Invalid(format!("is {what}")));
        }
    }
    let reopened: OwnedFd = open(
        format!("/proc/self/fd/{}", fd.as_raw_fd()).as_str(),
        OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC | OFlag::O_NOCTTY,
        Mode::empty(),
    )?;
    match weft_runtime::netns::enter(reopened.as_fd()) {
        Ok(()) => Ok(File::from(reopened)),
        Err(e) if e.raw_os_error() == Some(Errno::EINVAL as i32) => Err(Refusal::Invalid(
            "not a network namespace (another kind of namespace)".into(),
        )),
        Err(e) => Err(Refusal::Io(e)),
    }
}

/// `name` inside `dir` as an `O_PATH` descriptor, symbolic links allowed only while they stay
/// inside `dir`. The directory itself is the operator's choice and is resolved normally (on
/// Debian `/var/run` is a link to `/run`).
fn open_beneath(dir: &Path, name: &str) -> Result<OwnedFd, Refusal> {
    let dirfd = open(
        dir,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    match openat2(&dirfd, name, how) {
        Ok(fd) => Ok(fd),
        Err(Errno::EXDEV) => Err(Refusal::Invalid(format!(
            "a symbolic link leading outside {}",
            dir.display()
        ))),
        Err(Errno::ELOOP) => Err(Refusal::Invalid(
            "a symbolic link to a magic link, or a loop".into(),
        )),
        // Kernels before 5.6: no link is followed at all.
        Err(Errno::ENOSYS) => {
            let fd = openat(
                &dirfd,
                name,
                OFlag::O_PATH | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
                Mode::empty(),
            )?;
            let kind = SFlag::from_bits_truncate(fstat(&fd)?.st_mode) & SFlag::S_IFMT;
            if kind == SFlag::S_IFLNK {
                return Err(Refusal::Invalid("a symbolic link".into()));
            }
            Ok(fd)
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> NetnsPolicy {
        NetnsPolicy::default()
    }

    fn located(p: &str) -> Result<Located, String> {
        policy().locate(Path::new(p))
    }

    #[test]
    fn the_default_places_are_run_netns_var_run_netns_and_proc() {
        assert_eq!(
            policy().places(),
            [
                Place::Dir("/run/netns".into()),
                Place::Dir("/var/run/netns".into()),
                Place::Proc
            ]
        );
    }

    #[test]
    fn allowed_places_are_told_from_the_text_alone() {
        assert_eq!(
            located("/run/netns/cni-1"),
            Ok(Located::Dir {
                dir: "/run/netns".into(),
                name: "cni-1".into()
            })
        );
        assert_eq!(
            located("/var/run/netns/x"),
            Ok(Located::Dir {
                dir: "/var/run/netns".into(),
                name: "x".into()
            })
        );
        assert_eq!(
            located("/proc/4242/ns/net"),
            Ok(Located::Proc { pid: 4242 })
        );
        // Weft's own stay allowed whatever the operator configured.
        let none = NetnsPolicy::new(Vec::new());
        assert!(none.locate(Path::new("/run/netns/weft-sb1")).is_ok());
        assert!(none.locate(Path::new("/run/netns/other")).is_err());
        assert!(none.locate(Path::new("/proc/4242/ns/net")).is_err());
    }

    #[test]
    fn paths_outside_the_allowed_places_or_not_normalised_are_refused_by_their_text() {
        for bad in [
            "",
            "relative/x",
            "/run/netns",
            "/run/netns/",
            "/run/netns/../../proc/1/ns/net",
            "/run/netns/./x",
            "/run//netns/x",
            "/run/netns/a/b",
            "/proc/self/ns/net",
            "/proc/thread-self/ns/net",
            "/proc/01/ns/net",
            "/proc/1/ns/uts",
            "/proc/1/task/1/ns/net",
            "/proc/99999999999/ns/net",
            "/dev/zero",
            "/etc/passwd",
            "/var/run/docker/netns/x",
        ] {
            assert!(located(bad).is_err(), "{bad:?} was accepted");
        }
        let long = format!("/run/netns/{}", "x".repeat(PATH_MAX_LEN));
        assert!(located(&long).unwrap_err().contains("longer than"));
        assert!(
            located("/etc/passwd")
                .unwrap_err()
                .contains("/run/netns/<name>")
        );
    }

    #[test]
    fn places_parse_from_the_flag() {
        assert_eq!("/proc/<pid>/ns/net".parse(), Ok(Place::Proc));
        assert_eq!(
            "/var/run/docker/netns".parse(),
            Ok(Place::Dir("/var/run/docker/netns".into()))
        );
        for bad in ["/", "run/netns", "/run/../etc", "/run/netns/", ""] {
            assert!(bad.parse::<Place>().is_err(), "{bad:?}");
        }
    }
}
