//! What the agent last brought the kernel to, object by object: a digest of the spec each
//! sandbox, network and endpoint was last made to match, kept in memory and in an append-only
//! log in the data directory (`applied.log`), so that it outlives a restart of the agent.
//!
//! Reconciliation (`reconcile.rs`) uses it to work in proportion to what changed: an object
//! whose desired spec has the digest recorded here, and whose host-side traces the kernel still
//! shows (a cheap survey of the host's links and the namespace and file directories), is not
//! entered and checked again; anything else is ensured as before.
//!
//! The rule that keeps this safe: a digest is **forgotten before** any operation changes an
//! object and **recorded only after** the operation succeeded. An agent killed in between
//! leaves no digest (or an older one that the desired spec no longer has), so the object is
//! ensured in full at the next pass. The log is not synced to disk: it only has to outlive the
//! process, like the page cache does; after a reboot the kernel objects it describes are gone
//! too, and the survey sees that.

use std::{
    collections::HashMap,
    hash::{Hash, Hasher},
    io::{BufRead as _, Write as _},
    path::{Path, PathBuf},
    sync::Mutex,
};

/// The log's file name in the data directory.
pub const FILE: &str = "applied.log";
/// Longest line read back (a kind, an id of at most 64 characters, a digest).
const MAX_LINE: usize = 160;
/// The log is rewritten compactly once it holds this many lines more than twice the objects.
const COMPACT_SLACK: usize = 4096;

/// What an entry is about (ids of different kinds may coincide).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Of {
    Sandbox,
    Network,
    Endpoint,
}

impl Of {
    fn tag(self) -> char {
        match self {
            Of::Sandbox => 's',
            Of::Network => 'n',
            Of::Endpoint => 'e',
        }
    }

    fn from_tag(c: &str) -> Option<Self> {
        match c {
            "s" => Some(Of::Sandbox),
            "n" => Some(Of::Network),
            "e" => Some(Of::Endpoint),
            _ => None,
        }
    }
}

/// The digest of a spec (stable within one build of the agent; another build may differ,
/// which costs one full pass, nothing more).
pub fn digest<T: Hash + ?Sized>(spec: &T) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    spec.hash(&mut h);
    h.finish()
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<(Of, String), u64>,
    log: Option<std::fs::File>,
    /// Lines in the log file.
    lines: usize,
}

/// The digests, and the log they are kept in.
#[derive(Debug, Default)]
pub struct Applied {
    path: Option<PathBuf>,
    inner: Mutex<Inner>,
}

impl Applied {
    /// Reads the log in `data_dir` (a missing or unreadable one is an empty record: the next
    /// pass checks everything) and rewrites it compactly.
    pub fn load(data_dir: &Path) -> Self {
        let path = data_dir.join(FILE);
        let mut map = HashMap::new();
        if let Ok(f) = std::fs::File::open(&path) {
            for line in std::io::BufReader::new(f).split(b'\n') {
                let Ok(line) = line else { break };
                if let Some((key, value)) = parse(&line) {
                    match value {
                        Some(d) => map.insert(key, d),
                        None => map.remove(&key),
                    };
                }
            }
        }
        let me = Self {
            path: Some(path),
            inner: Mutex::new(Inner {
                map,
                log: None,
                lines: 0,
            }),
        };
        me.compact(&mut me.lock());
        me
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether `id` was last brought to a spec with `digest`.
    pub fn is(&self, of: Of, id: &str, digest: u64) -> bool {
        self.lock().map.get(&(of, id.to_owned())) == Some(&digest)
    }

    /// `id` was brought to a spec with `digest` (call once the operation succeeded).
    pub fn record(&self, of: Of, id: &str, digest: u64) {
        let mut inner = self.lock();
        if inner.map.insert((of, id.to_owned()), digest) != Some(digest) {
            self.append(&mut inner, &format!("{} {id} {digest:016x}\n", of.tag()));
        }
    }

    /// `id` is about to change, or is gone (call before the operation starts).
    pub fn forget(&self, of: Of, id: &str) {
        let mut inner = self.lock();
        if inner.map.remove(&(of, id.to_owned())).is_some() {
            self.append(&mut inner, &format!("{} {id} -\n", of.tag()));
        }
    }

    /// Forgets every entry of kind `of` that `keep` refuses (objects no longer desired).
    pub fn retain(&self, of: Of, keep: impl Fn(&str) -> bool) {
        let mut inner = self.lock();
        let gone: Vec<String> = inner
            .map
            .keys()
            .filter(|(o, id)| *o == of && !keep(id))
            .map(|(_, id)| id.clone())
            .collect();
        for id in gone {
            inner.map.remove(&(of, id.clone()));
            self.append(&mut inner, &format!("{} {id} -\n", of.tag()));
        }
    }

    /// How many objects have a digest.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn append(&self, inner: &mut Inner, line: &str) {
        if inner.lines > 2 * inner.map.len() + COMPACT_SLACK {
            self.compact(inner);
            return;
        }
        let Some(log) = inner.log.as_mut() else {
            return;
        };
        if let Err(e) = log.write_all(line.as_bytes()) {
            // Without the log, a restart checks everything in full: slower, never wrong.
            tracing::warn!(error = %e, "cannot append to the applied-state log");
            inner.log = None;
            return;
        }
        inner.lines += 1;
    }

    /// Rewrites the log from the map (a new file renamed over the old one), then appends to it.
    fn compact(&self, inner: &mut Inner) {
        let Some(path) = &self.path else { return };
        let tmp = path.with_extension("log.tmp");
        let res = (|| -> std::io::Result<std::fs::File> {
            let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
            for ((of, id), d) in &inner.map {
                writeln!(out, "{} {id} {d:016x}", of.tag())?;
            }
            out.flush()?;
            drop(out);
            std::fs::rename(&tmp, path)?;
            std::fs::OpenOptions::new().append(true).open(path)
        })();
        match res {
            Ok(f) => {
                inner.log = Some(f);
                inner.lines = inner.map.len();
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot write the applied-state log");
                let _ = std::fs::remove_file(&tmp);
                let _ = std::fs::remove_file(path);
                inner.log = None;
            }
        }
    }
}

/// One line: `<kind> <id> <digest>` or `<kind> <id> -`. Anything else is skipped.
fn parse(line: &[u8]) -> Option<((Of, String), Option<u64>)> {
    if line.len() > MAX_LINE {
        return None;
    }
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    let of = Of::from_tag(parts.next()?)?;
    let id = parts.next()?;
    let value = parts.next()?;
    if parts.next().is_some()
        || id.is_empty()
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return None;
    }
    let value = match value {
        "-" => None,
        v if v.len() == 16 => Some(u64::from_str_radix(v, 16).ok()?),
        _ => return None,
    };
    Some(((of, id.to_owned()), value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_outlive_a_reload_and_forgetting_outlives_it_too() {
        let dir = tempfile::tempdir().unwrap();
        let a = Applied::load(dir.path());
        assert!(a.is_empty());
        a.record(Of::Sandbox, "s1", 7);
        a.record(Of::Endpoint, "s1", 8);
        a.record(Of::Endpoint, "e2", 9);
        a.forget(Of::Endpoint, "e2");
        a.record(Of::Sandbox, "s1", 10);
        drop(a);
        let b = Applied::load(dir.path());
        assert!(b.is(Of::Sandbox, "s1", 10));
        assert!(!b.is(Of::Sandbox, "s1", 7));
        assert!(b.is(Of::Endpoint, "s1", 8));
        assert!(!b.is(Of::Endpoint, "e2", 9));
        assert_eq!(b.len(), 2);
        // Compacted on load: one line per object.
        let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
    }

    #[test]
    fn a_damaged_or_hostile_log_is_skipped_line_by_line() {
        let dir = tempfile::tempdir().unwrap();
        let long = format!("s {} 0000000000000001\n", "a".repeat(300));
        std::fs::write(
            dir.path().join(FILE),
            format!(
                "s good 000000000000000a\nx bad 0000000000000001\ns ../etc 0000000000000001\n\
                 s two words here\ns short 12\n{long}\u{0}\u{ff}garbage\ne ok -\ne torn 00000"
            ),
        )
        .unwrap();
        let a = Applied::load(dir.path());
        assert!(a.is(Of::Sandbox, "good", 10));
        assert_eq!(a.len(), 1);
    }

    #[test]
    fn retain_forgets_what_is_no_longer_wanted() {
        let dir = tempfile::tempdir().unwrap();
        let a = Applied::load(dir.path());
        for i in 0..10 {
            a.record(Of::Endpoint, &format!("e{i}"), i);
        }
        a.record(Of::Sandbox, "e1", 1);
        a.retain(Of::Endpoint, |id| id == "e1");
        assert_eq!(a.len(), 2);
        drop(a);
        let b = Applied::load(dir.path());
        assert!(b.is(Of::Endpoint, "e1", 1) && b.is(Of::Sandbox, "e1", 1));
        assert_eq!(b.len(), 2);
    }

    #[test]
    fn the_log_is_compacted_as_it_grows() {
        let dir = tempfile::tempdir().unwrap();
        let a = Applied::load(dir.path());
        for i in 0..(3 * COMPACT_SLACK as u64) {
            a.record(Of::Endpoint, "e", i);
        }
        let lines = std::fs::read_to_string(dir.path().join(FILE))
            .unwrap()
            .lines()
            .count();
        assert!(lines <= COMPACT_SLACK + 3, "{lines} lines");
        assert!(Applied::load(dir.path()).is(Of::Endpoint, "e", 3 * COMPACT_SLACK as u64 - 1));
    }

    #[test]
    fn digests_differ_with_the_spec() {
        assert_eq!(digest(&("a", 1)), digest(&("a", 1)));
        assert_ne!(digest(&("a", 1)), digest(&("a", 2)));
    }
}
