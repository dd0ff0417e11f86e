//! The threads that serve DNS, apart from the gRPC side.
//!
//! Each is one OS thread running a single-threaded tokio runtime; a listener's sockets, its
//! loops and its queries (forwarded ones too) live on one of them. Measured with `dnsperf`
//! (`bench/dns.sh`): on tokio's work-stealing runtime a woken socket task hops between worker
//! threads, and the wake-ups and context switches cost more than answering the query; on a thread
//! of its own the loop takes the next packet where it left off.

use std::{
    io,
    sync::atomic::{AtomicUsize, Ordering::Relaxed},
};

use tokio::{runtime::Handle, sync::oneshot};

/// The DNS threads; dropping this ends them (and whatever still runs on them).
#[derive(Debug)]
pub struct IoThreads {
    handles: Vec<Handle>,
    /// Dropping a sender ends its thread.
    _stops: Vec<oneshot::Sender<()>>,
    next: AtomicUsize,
}

impl IoThreads {
    /// Starts `n` threads (at least one), named `dns-io-<i>`.
    pub fn start(n: usize) -> io::Result<Self> {
        let mut handles = Vec::new();
        let mut stops = Vec::new();
        for i in 0..n.max(1) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(rt.handle().clone());
            let (stop, stopped) = oneshot::channel::<()>();
            stops.push(stop);
            std::thread::Builder::new()
                .name(format!("dns-io-{i}"))
                .spawn(move || {
                    // Ends when the sender is sent to or dropped; the runtime drops its tasks.
                    let _ = rt.block_on(stopped);
                })?;
        }
        Ok(Self {
            handles,
            _stops: stops,
            next: AtomicUsize::new(0),
        })
    }

    pub fn len(&self) -> usize {
        self.handles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// Every thread's runtime.
    pub fn all(&self) -> &[Handle] {
        &self.handles
    }

    /// The index of the thread for the next listener, round robin.
    pub fn pick_index(&self) -> usize {
        self.next.fetch_add(1, Relaxed) % self.handles.len()
    }

    /// The thread for the next listener, round robin.
    pub fn pick(&self) -> &Handle {
        &self.handles[self.pick_index()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tasks_run_on_the_named_threads_and_end_with_them() {
        let threads = IoThreads::start(2).unwrap();
        assert_eq!(threads.len(), 2);
        let mut names = Vec::new();
        for _ in 0..2 {
            let h = threads
                .pick()
                .spawn(async { std::thread::current().name().map(str::to_owned) });
            names.push(h.await.unwrap().unwrap());
        }
        names.sort();
        assert_eq!(names, ["dns-io-0", "dns-io-1"]);

        let (tx, rx) = oneshot::channel::<()>();
        let pending = threads.all()[0].spawn(async move {
            let _tx = tx;
            std::future::pending::<()>().await;
        });
        drop(threads);
        // The task is dropped with its runtime: its sender goes, and the join reports it.
        assert!(rx.await.is_err());
        assert!(pending.await.unwrap_err().is_cancelled());
    }
}
