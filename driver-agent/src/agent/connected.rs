//! The namespaces of the sandboxes this agent made lately, kept open with a netlink socket
//! inside. A container usually starts with its networks: CreateSandbox, then an Attach per
//! network, then CreateSandbox again for its files. With the namespace at hand none of these
//! needs a thread to check the path against the policy or a thread to open a socket there (a
//! thread that enters a namespace costs more than the rest of an attach's netlink work).
//!
//! Only the agent's own `weft-<id>` namespaces are kept (a caller's is checked against the
//! policy every time): made by CreateSandbox, or opened by a later Attach or Detach (a Connect
//! is often followed by a Disconnect); at most [`CAP`] of them, the oldest dropped first. An
//! entry is used only while its path still holds the same namespace, and RemoveSandbox drops
//! it.

use std::{
    collections::{HashMap, VecDeque},
    fs::File,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::Arc,
};

use rtnetlink::Handle;

use crate::{netns, sandbox};

/// How many namespaces stay open (each holds two file descriptors: the namespace and a
/// netlink socket).
pub(crate) const CAP: usize = 256;

/// A sandbox's namespace, open, and a netlink socket inside it.
#[derive(Debug, Clone)]
pub(crate) struct Connected {
    pub file: Arc<File>,
    pub handle: Handle,
    /// Interfaces are born here with IPv6 off: the agent made the namespace so
    /// ([`crate::sysctl::ipv6_off_by_default_here`]).
    pub ipv6_off_by_default: bool,
    /// dns-svc's listener sockets, made ahead with the namespace: handed over (once) when
    /// dns-svc asks for listeners on that address (see [`crate::broker`]).
    pub dns: Arc<std::sync::Mutex<Option<Prebound>>>,
}

/// How many sets of listener sockets made ahead were handed over (by this process).
pub(crate) static PREBOUND_GIVEN: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(0);

/// Listener sockets bound ahead on `addr` (UDP, then TCP listening).
#[derive(Debug)]
pub(crate) struct Prebound {
    pub addr: std::net::SocketAddr,
    pub fds: Vec<std::os::fd::OwnedFd>,
}

impl Connected {
    /// The sockets made ahead for listeners on `addr`, if there are (taken: given once).
    pub fn take_dns(&self, addr: std::net::SocketAddr) -> Option<Vec<std::os::fd::OwnedFd>> {
        let mut dns = self
            .dns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match dns.take() {
            Some(p) if p.addr == addr => {
                PREBOUND_GIVEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Some(p.fds)
            }
            // Another address than dns-svc asks for now: useless.
            _ => None,
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct ConnectedNamespaces {
    open: HashMap<PathBuf, Connected>,
    /// Insertion order, oldest first.
    order: VecDeque<PathBuf>,
}

impl ConnectedNamespaces {
    /// The namespace open for `path`, if `path` still holds it.
    pub fn get(&mut self, path: &Path) -> Option<Connected> {
        let c = self.open.get(path)?;
        if same_namespace(path, &c.file) {
            Some(c.clone())
        } else {
            self.remove(path);
            None
        }
    }

    pub fn insert(&mut self, path: PathBuf, c: Connected) {
        if self.open.insert(path.clone(), c).is_none() {
            self.order.push_back(path);
        }
        while self.order.len() > CAP {
            if let Some(old) = self.order.pop_front() {
                self.open.remove(&old);
            }
        }
    }

    pub fn remove(&mut self, path: &Path) {
        if self.open.remove(path).is_some() {
            self.order.retain(|p| p != path);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.open.len()
    }
}

/// Whether the namespace mounted at `path` is the one `file` holds (same nsfs inode).
fn same_namespace(path: &Path, file: &File) -> bool {
    match (std::fs::metadata(path), file.metadata()) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

/// Creates sandbox `id`'s own namespace on a blocking thread, and opens it and a netlink
/// socket inside it on the same thread. Returns its path, whether this call created it (a
/// retry finds it there), and the open namespace when it was created now.
pub(crate) async fn create_managed(
    id: &str,
) -> Result<(PathBuf, bool, Option<Connected>), netns::NetnsError> {
    let name = sandbox::managed_netns_name(id);
    let rt = tokio::runtime::Handle::current();
    let task_name = name.clone();
    let made = tokio::task::spawn_blocking(move || {
        netns::create_named_then(&task_name, move || {
            // Registering the socket with the reactor needs the runtime's context here.
            let _guard = rt.enter();
            let off = crate::sysctl::ipv6_off_by_default_here_or_warn();
            let file = File::open("/proc/thread-self/ns/net")?;
            let (conn, handle, _) = rtnetlink::new_connection()?;
            Ok::<_, std::io::Error>((file, conn, handle, off))
        })
    })
    .await
    .map_err(|e| netns::NetnsError::Thread(e.to_string()))?;
    match made {
        Ok((path, Ok((file, conn, handle, ipv6_off_by_default)))) => {
            tokio::spawn(conn);
            let c = Connected {
                file: Arc::new(file),
                handle,
                ipv6_off_by_default,
                dns: Arc::default(),
            };
            Ok((path, true, Some(c)))
        }
        // Made, but not opened: the path is opened the usual way.
        Ok((path, Err(e))) => {
            tracing::warn!(netns = %path.display(), error = %e, "cannot open a socket in a new namespace");
            Ok((path, true, None))
        }
        Err(netns::NetnsError::Exists { .. }) => Ok((netns::named_path(&name), false, None)),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Connected {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let (_conn, handle, _) = rtnetlink::new_connection().unwrap();
        Connected {
            file: Arc::new(File::open("/proc/self/ns/net").unwrap()),
            handle,
            ipv6_off_by_default: false,
            dns: Arc::default(),
        }
    }

    #[test]
    fn the_oldest_go_past_the_cap_and_a_path_holding_another_namespace_is_not_used() {
        let mut c = ConnectedNamespaces::default();
        for i in 0..CAP + 3 {
            c.insert(PathBuf::from(format!("/nonexistent/{i}")), entry());
        }
        assert_eq!(c.len(), CAP);
        assert!(!c.open.contains_key(Path::new("/nonexistent/0")));
        assert!(
            c.open
                .contains_key(Path::new(&format!("/nonexistent/{}", CAP + 2)))
        );
        // The path does not hold the namespace the entry has open: not used, and dropped.
        let last = PathBuf::from(format!("/nonexistent/{}", CAP + 2));
        assert!(c.get(&last).is_none());
        assert_eq!(c.len(), CAP - 1);
        // A path that holds it (this process's own namespace) is used.
        c.insert(PathBuf::from("/proc/self/ns/net"), entry());
        assert!(c.get(Path::new("/proc/self/ns/net")).is_some());
        c.remove(Path::new("/proc/self/ns/net"));
        assert!(c.get(Path::new("/proc/self/ns/net")).is_none());
    }
}
