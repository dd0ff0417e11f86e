//! Network namespaces without forking: entering one happens on a dedicated OS thread that
//! exits afterwards, so no tokio worker (and no later task) ever runs in the wrong namespace.
//!
//! Named namespaces follow iproute2's convention (`ip netns add`): an empty file under
//! `/run/netns` with the namespace's `nsfs` inode bind-mounted onto it, which keeps the
//! namespace alive after the creating thread is gone.

use std::{
    fs::File,
    io,
    path::{Path, PathBuf},
};

use nix::{
    mount::{MntFlags, MsFlags, mount, umount2},
    sched::{CloneFlags, unshare},
};

/// Where named namespaces live, as iproute2 puts them.
pub const NETNS_DIR: &str = "/run/netns";

/// A problem entering, creating or deleting a namespace.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetnsError {
    #[error("namespace {path} does not exist")]
    NotFound { path: PathBuf },
    #[error("cannot open namespace {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot enter namespace {path}: {source}")]
    Enter { path: PathBuf, source: io::Error },
    #[error("cannot create a new namespace: {0}")]
    Unshare(nix::Error),
    #[error("invalid namespace name {name:?}")]
    InvalidName { name: String },
    #[error("namespace {name:?} already exists")]
    Exists { name: String },
    #[error("cannot prepare {dir}: {source}")]
    Dir { dir: PathBuf, source: io::Error },
    #[error("cannot bind-mount namespace onto {path}: {source}")]
    Mount { path: PathBuf, source: nix::Error },
    #[error("cannot unmount namespace {path}: {source}")]
    Unmount { path: PathBuf, source: nix::Error },
    #[error("cannot remove {path}: {source}")]
    Remove { path: PathBuf, source: io::Error },
    #[error("cannot open a netlink socket: {0}")]
    Socket(io::Error),
    #[error("namespace thread failed: {0}")]
    Thread(String),
}

/// Opens the namespace file at `path` (read-only, non-blocking, close-on-exec), telling a
/// missing namespace apart from other failures. For the agent's own paths (the managed
/// namespace, the ones it creates); a caller-given path goes through
/// [`crate::netns_policy::NetnsPolicy::open`] instead.
pub fn open(path: &Path) -> Result<File, NetnsError> {
    weft_runtime::netns::open(path).map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            NetnsError::NotFound {
                path: path.to_owned(),
            }
        } else {
            NetnsError::Open {
                path: path.to_owned(),
                source,
            }
        }
    })
}

use weft_runtime::netns::Target;

/// [`Target::File`] for a namespace file already open, duplicated so the caller keeps its own.
fn file_target(ns: &File, path: &Path) -> Result<Target, NetnsError> {
    let dup = ns.try_clone().map_err(|source| NetnsError::Open {
        path: path.to_owned(),
        source,
    })?;
    Ok(Target::File(dup, path.to_owned()))
}

/// Runs `f` on a fresh OS thread that has entered the namespace at `path` (opened on that
/// thread too, never on the caller's), and waits for it. The thread exits afterwards, taking
/// its namespace membership with it.
pub async fn run_in<T, F>(path: &Path, f: F) -> Result<T, NetnsError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    run_on(Target::Path(path.to_owned()), f).await
}

/// [`run_in`] for a namespace file already open (`path` only names it in errors): one the
/// netns policy checked, entered without looking its path up again.
pub async fn run_in_file<T, F>(ns: &File, path: &Path, f: F) -> Result<T, NetnsError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    run_on(file_target(ns, path)?, f).await
}

async fn run_on<T, F>(target: Target, f: F) -> Result<T, NetnsError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    use weft_runtime::netns::NetnsError as E;
    weft_runtime::netns::run_in(target, "weft-netns", f)
        .await
        .map_err(|e| match e {
            E::Open { path, source } if source.kind() == io::ErrorKind::NotFound => {
                NetnsError::NotFound { path }
            }
            E::Open { path, source } => NetnsError::Open { path, source },
            E::Enter { path, source } => NetnsError::Enter { path, source },
            other => NetnsError::Thread(other.to_string()),
        })
}

/// Opens an rtnetlink connection inside the namespace at `path`. The socket is created on a
/// thread inside the namespace (a socket belongs to the namespace it was created in for its
/// whole life), then driven by a task on the current runtime.
pub async fn connect(path: &Path) -> Result<rtnetlink::Handle, NetnsError> {
    crate::metrics::timed("netns_connect", connect_to(Target::Path(path.to_owned()))).await
}

/// [`connect`] for a namespace file already open (one the netns policy checked).
pub async fn connect_file(ns: &File, path: &Path) -> Result<rtnetlink::Handle, NetnsError> {
    crate::metrics::timed("netns_connect", connect_to(file_target(ns, path)?)).await
}

async fn connect_to(target: Target) -> Result<rtnetlink::Handle, NetnsError> {
    let rt = tokio::runtime::Handle::current();
    let (conn, handle, _) = run_on(target, move || {
        // Registering the socket with the reactor needs the runtime's context on this thread.
        let _guard = rt.enter();
        rtnetlink::new_connection()
    })
    .await?
    .map_err(NetnsError::Socket)?;
    tokio::spawn(conn);
    Ok(handle)
}

/// The path of the named namespace `name`.
pub fn named_path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

fn check_name(name: &str) -> Result<(), NetnsError> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && name != "."
        && name != ".."
        && !name.contains(['/', '\0']);
    if ok {
        Ok(())
    } else {
        Err(NetnsError::InvalidName { name: name.into() })
    }
}

/// Whether this process made `/run/netns` a shared mount point already.
static PREPARED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes `/run/netns` a shared mount point, as `ip netns add` does, so that namespaces mounted
/// there are visible in mount namespaces created later (container runtimes). Once per process:
/// `MS_SHARED | MS_REC` walks every mount below (each namespace is one), so doing it on every
/// creation, as `ip netns add` does, makes a creation cost grow with the namespaces there are.
fn prepare_dir(dir: &Path) -> Result<(), NetnsError> {
    use std::sync::atomic::Ordering;
    if dir == Path::new(NETNS_DIR) && PREPARED.load(Ordering::Acquire) && dir.is_dir() {
        return Ok(());
    }
    prepare_dir_now(dir)?;
    if dir == Path::new(NETNS_DIR) {
        PREPARED.store(true, Ordering::Release);
    }
    Ok(())
}

fn prepare_dir_now(dir: &Path) -> Result<(), NetnsError> {
    let fail = |source: nix::Error| NetnsError::Dir {
        dir: dir.to_owned(),
        source: io::Error::from(source),
    };
    std::fs::create_dir_all(dir).map_err(|source| NetnsError::Dir {
        dir: dir.to_owned(),
        source,
    })?;
    let shared = MsFlags::MS_SHARED | MsFlags::MS_REC;
    match mount(None::<&str>, dir, None::<&str>, shared, None::<&str>) {
        Ok(()) => Ok(()),
        // Not a mount point yet: make it one (bind onto itself), then shared.
        Err(nix::Error::EINVAL) => {
            mount(
                Some(dir),
                dir,
                Some("none"),
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(fail)?;
            mount(None::<&str>, dir, None::<&str>, shared, None::<&str>).map_err(fail)
        }
        Err(e) => Err(fail(e)),
    }
}

/// Creates the named namespace `name` (`/run/netns/<name>`) without forking: a dedicated
/// thread unshares its network namespace and bind-mounts it, then exits.
pub fn create_named(name: &str) -> Result<PathBuf, NetnsError> {
    create_named_then(name, || ()).map(|(path, ())| path)
}

/// [`create_named`], then `f` run inside the new namespace by the thread that made it, before
/// that thread ends (opening a socket there costs no second thread and no `setns`).
pub fn create_named_then<T, F>(name: &str, f: F) -> Result<(PathBuf, T), NetnsError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    check_name(name)?;
    let dir = Path::new(NETNS_DIR);
    prepare_dir(dir)?;
    let path = new_mount_point(name)?;
    let target = path.clone();
    let res = std::thread::Builder::new()
        .name("weft-netns-new".into())
        .spawn(move || -> Result<T, NetnsError> {
            unshare(CloneFlags::CLONE_NEWNET).map_err(NetnsError::Unshare)?;
            mount(
                Some("/proc/thread-self/ns/net"),
                &target,
                Some("none"),
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|source| NetnsError::Mount {
                path: target.clone(),
                source,
            })?;
            Ok(f())
        })
        .map_err(|e| NetnsError::Thread(e.to_string()))
        .and_then(|t| {
            t.join()
                .map_err(|_| NetnsError::Thread("the namespace thread panicked".into()))?
        });
    match res {
        Ok(t) => Ok((path, t)),
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            Err(e)
        }
    }
}

/// Creates the empty file `/run/netns/<name>` that a namespace is mounted onto; a name taken
/// is [`NetnsError::Exists`].
fn new_mount_point(name: &str) -> Result<PathBuf, NetnsError> {
    let path = named_path(name);
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
    {
        Ok(_) => Ok(path),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            Err(NetnsError::Exists { name: name.into() })
        }
        Err(source) => Err(NetnsError::Dir { dir: path, source }),
    }
}

/// Names the namespace open as `ns` (an anonymous one, held by nothing but that file):
/// `/run/netns/<name>` with its `nsfs` inode bind-mounted onto it, as `ip netns attach` does,
/// so that it outlives the file. A name already taken is [`NetnsError::Exists`].
pub fn mount_named(name: &str, ns: &File) -> Result<PathBuf, NetnsError> {
    use std::os::fd::AsRawFd as _;
    check_name(name)?;
    prepare_dir(Path::new(NETNS_DIR))?;
    let path = new_mount_point(name)?;
    // (The file's own entry in this process's fd table names the namespace.)
    let source = format!("/proc/self/fd/{}", ns.as_raw_fd());
    if let Err(source) = mount(
        Some(source.as_str()),
        &path,
        Some("none"),
        MsFlags::MS_BIND,
        None::<&str>,
    ) {
        let _ = std::fs::remove_file(&path);
        return Err(NetnsError::Mount { path, source });
    }
    Ok(path)
}

/// Deletes the named namespace `name`: unmounts and removes its file. The namespace itself
/// goes away when nothing else holds it. Deleting a missing namespace succeeds.
pub fn delete_named(name: &str) -> Result<(), NetnsError> {
    check_name(name)?;
    delete_path(&named_path(name))
}

/// Unmounts and removes a namespace file; a missing or already unmounted one is fine.
pub fn delete_path(path: &Path) -> Result<(), NetnsError> {
    match umount2(path, MntFlags::MNT_DETACH) {
        // EINVAL: not a mount point any more; ENOENT: gone already.
        Ok(()) | Err(nix::Error::EINVAL | nix::Error::ENOENT) => {}
        Err(source) => {
            return Err(NetnsError::Unmount {
                path: path.to_owned(),
                source,
            });
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(NetnsError::Remove {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Runs `f` on a fresh thread inside a brand-new anonymous namespace that dies with the thread:
/// nothing to clean up, nothing visible to anyone else. Used to probe kernel features.
pub fn run_in_scratch<T, F>(f: F) -> Result<T, NetnsError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    std::thread::Builder::new()
        .name("weft-netns-scratch".into())
        .spawn(move || {
            unshare(CloneFlags::CLONE_NEWNET).map_err(NetnsError::Unshare)?;
            Ok(f())
        })
        .map_err(|e| NetnsError::Thread(e.to_string()))?
        .join()
        .map_err(|_| NetnsError::Thread("the namespace thread panicked".into()))?
}
