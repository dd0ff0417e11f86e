//! A TLS configuration rebuilt from its files when they change, checked lazily: the caller
//! asks for the current configuration once per new connection, and at most once per
//! [`CHECK_INTERVAL`] that triggers a `stat` of the files. A rebuild that fails (a half-written
//! renewal, a key that does not match the new certificate) keeps the previous configuration
//! and logs a warning; the next change to any file is tried again.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;

use crate::{
    Error,
    files::{Fingerprint, fingerprint},
};

/// How often the files are looked at, at most.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);

type Build<T> = dyn Fn() -> Result<T, Error> + Send + Sync;

pub(crate) struct Reloading<T> {
    what: &'static str,
    /// The files the configuration is built from (a client without a certificate has only
    /// its CA); the first one names the configuration in logs.
    paths: Vec<PathBuf>,
    build: Box<Build<T>>,
    current: ArcSwap<T>,
    seen: Mutex<Seen>,
}

struct Seen {
    checked: Instant,
    prints: Vec<Option<Fingerprint>>,
}

impl<T> std::fmt::Debug for Reloading<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloading")
            .field("what", &self.what)
            .field("paths", &self.paths)
            .finish_non_exhaustive()
    }
}

impl<T> Reloading<T> {
    /// Builds the first configuration; unlike a reload, a failure here is the caller's error.
    pub(crate) fn new(
        what: &'static str,
        paths: Vec<PathBuf>,
        build: impl Fn() -> Result<T, Error> + Send + Sync + 'static,
    ) -> Result<Self, Error> {
        let prints = prints(&paths);
        let first = build()?;
        Ok(Self {
            what,
            paths,
            build: Box::new(build),
            current: ArcSwap::from_pointee(first),
            seen: Mutex::new(Seen {
                checked: Instant::now(),
                prints,
            }),
        })
    }

    /// The configuration for a new connection, rebuilt first if the files changed.
    pub(crate) fn current(&self) -> Arc<T> {
        // A connection never waits for another one's reload: it takes the configuration in
        // force, and the next connection gets the new one.
        if let Ok(mut seen) = self.seen.try_lock()
            && seen.checked.elapsed() >= CHECK_INTERVAL
        {
            seen.checked = Instant::now();
            // Fingerprints are taken before reading: a file that changes during the rebuild
            // differs at the next check and is read again.
            let now = prints(&self.paths);
            if now != seen.prints {
                seen.prints = now;
                match (self.build)() {
                    Ok(config) => {
                        self.current.store(Arc::new(config));
                        let first = self.paths.first().map(|p| p.display().to_string());
                        tracing::info!(
                            what = self.what,
                            file = first.unwrap_or_default(),
                            "tls files reloaded"
                        );
                    }
                    Err(error) => tracing::warn!(
                        what = self.what,
                        %error,
                        "tls files changed but cannot be used; keeping the previous ones"
                    ),
                }
            }
        }
        self.current.load_full()
    }
}

fn prints(paths: &[PathBuf]) -> Vec<Option<Fingerprint>> {
    paths.iter().map(|p| fingerprint(p)).collect()
}
