//! Namespaces made ahead of the CreateSandbox calls that need one. Making a network namespace
//! costs the kernel more than the rest of a sandbox's creation (every per-namespace subsystem is
//! set up, loopback registered) plus a thread to unshare on; a namespace made in the background
//! (loopback up, IPv6 off by default for the interfaces to come, a netlink socket inside) is only bind-mounted at `weft-<id>` when claimed.
//!
//! The namespaces waiting here are anonymous: held by an open file and nothing else, so they
//! vanish with the agent (a killed agent leaves nothing behind). At most [`READY`] wait; a
//! claim wakes the filler, which makes one again. When none is ready the caller makes its own
//! namespace as before.

use std::{
    fs::File,
    sync::{Arc, Mutex, PoisonError, Weak},
};

use super::connected::{Connected, Prebound};
use crate::{error::AgentError, kernel, netns};

/// How many namespaces wait, ready (each holds a namespace, a file and a netlink socket).
pub(crate) const READY: usize = 4;

#[derive(Debug, Default)]
pub(crate) struct NetnsPool {
    ready: Mutex<Vec<Connected>>,
    /// Wakes the filler: a namespace was taken, or the pool is gone.
    wake: Arc<tokio::sync::Notify>,
}

/// Where dns-svc wants its sandbox listeners (learnt from its first request): each namespace
/// made ahead gets them bound too, so that handing them over needs no thread entering it.
pub(crate) type DnsListen = Arc<Mutex<Option<std::net::SocketAddr>>>;

impl Drop for NetnsPool {
    fn drop(&mut self) {
        self.wake.notify_one();
    }
}

impl NetnsPool {
    /// A pool filled by a background task, which ends when the pool is dropped.
    pub(crate) fn start(dns: DnsListen) -> Arc<Self> {
        let pool = Arc::new(Self::default());
        tokio::spawn(fill(Arc::downgrade(&pool), pool.wake.clone(), dns));
        pool
    }

    /// A ready namespace, if one waits; the filler makes the next.
    pub(crate) fn take(&self) -> Option<Connected> {
        let got = self
            .ready
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        self.wake.notify_one();
        got
    }

    /// Gives back a namespace claimed but not used (still anonymous and untouched).
    pub(crate) fn put_back(&self, c: Connected) {
        let mut ready = self.ready.lock().unwrap_or_else(PoisonError::into_inner);
        if ready.len() < READY {
            ready.push(c);
        }
    }

    fn len(&self) -> usize {
        self.ready
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// Keeps the pool at [`READY`] namespaces while it lives. A failure to make one is logged and
/// retried at the next claim (callers make their own meanwhile).
async fn fill(pool: Weak<NetnsPool>, wake: Arc<tokio::sync::Notify>, dns: DnsListen) {
    loop {
        let Some(p) = pool.upgrade() else {
            return;
        };
        let full = p.len() >= READY;
        drop(p);
        if full {
            wake.notified().await;
            continue;
        }
        let addr = *dns.lock().unwrap_or_else(PoisonError::into_inner);
        match make(addr).await {
            Ok(c) => match pool.upgrade() {
                Some(p) => p.put_back(c),
                None => return,
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot make a namespace ahead; sandboxes make their own");
                wake.notified().await;
            }
        }
    }
}

/// A fresh anonymous namespace with loopback up and a netlink socket inside, made on a thread
/// of its own (which leaves the namespace when it ends; the open file keeps it); with dns-svc's
/// listener sockets bound on `dns` when it is known (a failure there is logged: dns-svc then
/// gets them the usual way).
async fn make(dns: Option<std::net::SocketAddr>) -> Result<Connected, AgentError> {
    let rt = tokio::runtime::Handle::current();
    let scratch = std::path::PathBuf::from("(new namespace)");
    let made = tokio::task::spawn_blocking(move || {
        netns::run_in_scratch(move || {
            // Registering the socket with the reactor needs the runtime's context here.
            let _guard = rt.enter();
            let off = crate::sysctl::ipv6_off_by_default_here_or_warn();
            let file = File::open("/proc/thread-self/ns/net")?;
            let (conn, handle, _) = rtnetlink::new_connection()?;
            // Loopback up first: a socket bound to an address not yet local (IP_FREEBIND)
            // would answer from another one.
            let prebound = dns.and_then(|addr| {
                crate::survey::loopback_up_here()
                    .and_then(|()| crate::sockets::listeners(addr))
                    .map(|fds| Prebound { addr, fds })
                    .inspect_err(|e| {
                        tracing::warn!(%addr, error = %e, "cannot bind DNS listeners ahead");
                    })
                    .ok()
            });
            Ok::<_, std::io::Error>((file, conn, handle, off, prebound))
        })
    })
    .await
    .map_err(|e| AgentError::netns(&scratch)(netns::NetnsError::Thread(e.to_string())))?
    .map_err(AgentError::netns(&scratch))?;
    let (file, conn, handle, ipv6_off_by_default, prebound) =
        made.map_err(|e| AgentError::netns(&scratch)(netns::NetnsError::Socket(e)))?;
    tokio::spawn(conn);
    if let Some(lo) = kernel::link_by_name(&handle, "lo").await?
        && !lo.up
    {
        kernel::set_up(&handle, lo.index, "lo").await?;
    }
    Ok(Connected {
        file: Arc::new(file),
        handle,
        ipv6_off_by_default,
        dns: Arc::new(Mutex::new(prebound)),
    })
}
