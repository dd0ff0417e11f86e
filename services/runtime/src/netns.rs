//! Entering a network namespace: the one place in Weft that calls `setns(2)`.
//!
//! `setns` moves the *calling thread* into a namespace, and it stays there. Done on a tokio
//! worker, every task that later runs on that worker would talk to the wrong kernel; done on a
//! thread that outlives its work, a later job inherits a namespace it never asked for. So a
//! namespace is entered only on a thread made for that one piece of work, which exits
//! afterwards ([`spawn_in`], [`run_in`], both opening a path on that thread), or by a process that is about to `exec` ([`enter`]).
//! `clippy.toml` forbids `nix::sched::setns` everywhere else, so nobody writes a fourth copy.

use std::{
    fs::File,
    io,
    os::{fd::AsFd, unix::fs::OpenOptionsExt as _},
    path::{Path, PathBuf},
    thread::JoinHandle,
};

use nix::sched::CloneFlags;

/// Opens a namespace file as `setns` wants it: read-only, non-blocking (a FIFO put where a
/// namespace was expected cannot hang the opener), no controlling terminal, close-on-exec (the
/// standard library's default). Whether the path may be opened at all is the caller's policy
/// (the agent checks caller-given paths before they get here).
pub fn open(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc_flags())
        .open(path)
}

fn libc_flags() -> i32 {
    (nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_NOCTTY).bits()
}

/// Moves the calling thread into the network namespace open as `ns`.
///
/// Only for a thread that exists for this work alone, or a process about to `exec` (the
/// `weftctl exec` path); anything async goes through [`run_in`]. `EINVAL` means the file is a
/// namespace of another kind (or not a namespace): callers that check a caller-given file rely
/// on it (`io::Error::raw_os_error`).
pub fn enter(ns: impl AsFd) -> io::Result<()> {
    #[allow(clippy::disallowed_methods)] // the one allowed call: see the module comment
    nix::sched::setns(ns, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)
}

/// Why running in a namespace failed: the path, the namespace, or the thread.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetnsError {
    #[error("cannot open namespace {}: {source}", path.display())]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot enter namespace {}: {source}", path.display())]
    Enter { path: PathBuf, source: io::Error },
    #[error("namespace thread failed: {0}")]
    Thread(io::Error),
}

/// Which namespace a thread enters: a path it opens itself (so a slow or hostile file never
/// blocks the caller), or a file already open (`path` only names it in errors).
#[derive(Debug)]
pub enum Target {
    Path(PathBuf),
    File(File, PathBuf),
}

impl Target {
    /// Opens (if need be) and enters the namespace on the calling thread.
    fn enter(self) -> Result<(), NetnsError> {
        let (ns, path) = match self {
            Self::Path(path) => match open(&path) {
                Ok(f) => (f, path),
                Err(source) => return Err(NetnsError::Open { path, source }),
            },
            Self::File(f, path) => (f, path),
        };
        enter(&ns).map_err(|source| NetnsError::Enter { path, source })
    }
}

/// Starts an OS thread named `name` that enters `target`, runs `f` there and exits, taking its
/// namespace membership with it. The join handle gives `f`'s result, or why entering failed.
pub fn spawn_in<T, F>(
    target: Target,
    name: &str,
    f: F,
) -> io::Result<JoinHandle<Result<T, NetnsError>>>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || target.enter().map(|()| f()))
}

/// [`spawn_in`] awaited without blocking a tokio worker: the thread sends its result back on a
/// channel. A panic in `f` comes back as [`NetnsError::Thread`], never as a hung future.
pub async fn run_in<T, F>(target: Target, name: &str, f: F) -> Result<T, NetnsError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let _ = tx.send(target.enter().map(|()| f()));
        })
        .map_err(NetnsError::Thread)?;
    rx.await.map_err(|_| {
        NetnsError::Thread(io::Error::other(
            "the namespace thread ended without a result (panicked)",
        ))
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_path_is_an_open_error_naming_it() {
        let target = Target::Path("/nonexistent/ns".into());
        let err = spawn_in(target, "t", || ())
            .unwrap()
            .join()
            .unwrap()
            .unwrap_err();
        assert!(matches!(err, NetnsError::Open { .. }), "{err}");
        assert!(err.to_string().contains("/nonexistent/ns"), "{err}");
    }

    #[test]
    fn a_file_that_is_no_namespace_is_refused_with_einval() {
        let target = Target::Path("/proc/self/status".into());
        let err = spawn_in(target, "t", || ())
            .unwrap()
            .join()
            .unwrap()
            .unwrap_err();
        match err {
            NetnsError::Enter { source, .. } => {
                assert_eq!(source.raw_os_error(), Some(nix::libc::EINVAL), "{source}");
            }
            other => panic!("{other}"),
        }
    }

    #[tokio::test]
    async fn the_own_namespace_is_entered_on_a_thread_of_its_own() {
        // Entering the namespace we are already in is allowed for root and EPERM otherwise;
        // either way the answer comes back and the caller's thread is untouched.
        let me = Target::Path("/proc/self/ns/net".into());
        let caller = std::thread::current().id();
        let res = run_in(me, "t", move || std::thread::current().id() != caller).await;
        match res {
            Ok(other_thread) => assert!(other_thread),
            Err(NetnsError::Enter { source, .. }) => {
                assert_eq!(source.raw_os_error(), Some(nix::libc::EPERM), "{source}");
            }
            Err(e) => panic!("{e}"),
        }
    }

    #[tokio::test]
    async fn a_panic_in_the_work_is_an_error_not_a_hang() {
        let me = Target::File(open(Path::new("/proc/self/ns/net")).unwrap(), "self".into());
        let res: Result<(), NetnsError> = run_in(me, "t", || panic!("boom")).await;
        assert!(res.is_err());
    }
}
