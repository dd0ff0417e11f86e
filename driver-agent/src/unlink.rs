//! Endpoint links removed off the request path. Removing a veth costs the kernel an RCU grace
//! period (about 17 ms per link on this machine's 6.18 kernel, whatever else is going on), and
//! a netlink request blocks the thread that sends it until the kernel is done. So Detach makes
//! the endpoint inert at once (its host end out of the bridge and down: no packet passes, and
//! its firewall elements are gone) and answers; the link itself is removed by one of [`THREADS`]
//! threads of this module, each with a netlink socket of its own in the host namespace, whose
//! waits overlap in the kernel. The link is gone well within a second (the peer benchmark
//! measures it).
//!
//! An attach into a sandbox first waits for the removals pending there (its interface name may
//! come back), and a second Detach of an endpoint being removed has nothing left to do. A
//! removal lost with the process leaves an inert veth of Weft's that reconciliation removes.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
};

use rtnetlink::Handle;
use tokio::sync::Notify;

use crate::{kernel, netns::NetnsError};

/// How many removals run at once (each on its own thread and socket).
pub const THREADS: usize = 4;

/// A link made inert, to be removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Doomed {
    pub index: u32,
    pub name: String,
    pub endpoint_id: String,
}

#[derive(Debug)]
pub struct Unlinker {
    sockets: Vec<Handle>,
    next: AtomicUsize,
    /// The endpoints whose link is being removed, with the sandbox namespace it was in.
    pending: Arc<Mutex<HashMap<String, PathBuf>>>,
    /// Woken whenever a removal ends.
    ended: Arc<Notify>,
}

impl Unlinker {
    /// Starts the removal threads, each with a netlink socket in the namespace at `host_netns`.
    /// They end when the unlinker is dropped.
    pub async fn start(host_netns: &Path) -> Result<Self, NetnsError> {
        let mut sockets = Vec::with_capacity(THREADS);
        for _ in 0..THREADS {
            sockets.push(socket_thread(host_netns).await?);
        }
        Ok(Self {
            sockets,
            next: AtomicUsize::new(0),
            pending: Arc::default(),
            ended: Arc::default(),
        })
    }

    /// Whether the link of `endpoint_id` is being removed.
    pub fn removing(&self, endpoint_id: &str) -> bool {
        self.lock().contains_key(endpoint_id)
    }

    /// Removes `link` (once in the sandbox namespace at `sandbox`) in the background.
    pub fn remove(&self, link: Doomed, sandbox: &Path) {
        self.lock()
            .insert(link.endpoint_id.clone(), sandbox.to_owned());
        let socket =
            self.sockets[self.next.fetch_add(1, Ordering::Relaxed) % self.sockets.len()].clone();
        let (pending, ended) = (self.pending.clone(), self.ended.clone());
        tokio::spawn(async move {
            let l = kernel::Link {
                index: link.index,
                name: link.name.clone(),
                ..Default::default()
            };
            match kernel::delete_link(&socket, &l).await {
                Ok(_) => {
                    tracing::info!(link = %link.name, owner = %link.endpoint_id, "link removed")
                }
                Err(e) => {
                    tracing::warn!(link = %link.name, owner = %link.endpoint_id, error = %e, "cannot remove an inert link; reconciliation will");
                }
            }
            pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&link.endpoint_id);
            ended.notify_waiters();
        });
    }

    /// Waits until no link once in the sandbox namespace at `sandbox` is being removed.
    pub async fn settled(&self, sandbox: &Path) {
        loop {
            let ended = self.ended.notified();
            tokio::pin!(ended);
            // Registered before looking, so an end in between is not missed.
            ended.as_mut().enable();
            if !self.lock().values().any(|p| p == sandbox) {
                return;
            }
            ended.await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, PathBuf>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A thread in the namespace at `path` that drives a netlink socket created there until every
/// handle to it is dropped; returns the handle.
async fn socket_thread(path: &Path) -> Result<Handle, NetnsError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let target = weft_runtime::netns::Target::Path(path.to_owned());
    weft_runtime::netns::spawn_in(target, "weft-unlink", move || {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        rt.block_on(async move {
            match rtnetlink::new_connection() {
                Ok((conn, handle, _)) => {
                    let _ = tx.send(Ok(handle));
                    conn.await;
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        });
    })
    .map_err(|e| NetnsError::Thread(e.to_string()))?;
    match rx.await {
        Ok(Ok(handle)) => Ok(handle),
        Ok(Err(e)) => Err(NetnsError::Socket(e)),
        Err(_) => Err(NetnsError::Thread(format!(
            "the removal thread could not enter {}",
            path.display()
        ))),
    }
}
