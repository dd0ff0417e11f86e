//! What the API touched lately, which reconciliation (`reconcile.rs`) leaves alone. Its
//! own module so that the agent, which records it, and reconciliation, which reads it, do not
//! import each other.

use std::{
    collections::HashMap,
    sync::{Mutex, MutexGuard, PoisonError},
    time::Instant,
};

/// How long reconciliation leaves alone what the API touched before its desired state was
/// read: an attach whose endpoint the gateway has not recorded yet is not an orphan, and an
/// endpoint just detached is not brought back from a desired state read before the detach.
/// What the API touched after the state was read is left alone whatever the pass's length.
pub const GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// Ids (endpoints, sandboxes, networks) the API touched lately: when, and whether it was to
/// make (true) or to remove (false). Lost on restart, which is right: after a crash nothing is
/// in flight.
#[derive(Debug, Default)]
pub struct Recent {
    touched: Mutex<HashMap<String, (Instant, bool)>>,
    /// The moments the running passes' desired states are as of: nothing touched within
    /// [`GRACE`] before the oldest of them is forgotten while they run.
    passes: Mutex<Vec<Instant>>,
}

/// A pass reading a desired state as of some moment; see [`Recent::pass`].
#[derive(Debug)]
pub struct PassGuard<'a> {
    recent: &'a Recent,
    as_of: Instant,
}

impl Drop for PassGuard<'_> {
    fn drop(&mut self) {
        let mut passes = lock(&self.recent.passes);
        if let Some(i) = passes.iter().position(|t| *t == self.as_of) {
            passes.swap_remove(i);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Recent {
    pub fn touch(&self, id: &str, made: bool) {
        let now = Instant::now();
        let oldest = lock(&self.passes).iter().min().copied().unwrap_or(now);
        let mut m = lock(&self.touched);
        m.retain(|_, (t, _)| *t + GRACE > oldest.min(now));
        m.insert(id.to_owned(), (now, made));
    }

    /// Marks a pass whose desired state is as of `as_of` as running, until the guard drops.
    pub fn pass(&self, as_of: Instant) -> PassGuard<'_> {
        lock(&self.passes).push(as_of);
        PassGuard {
            recent: self,
            as_of,
        }
    }

    /// Whether `id` was made or removed within [`GRACE`] before `as_of`, or at any time since.
    pub(crate) fn touched_since(&self, id: &str, as_of: Instant) -> bool {
        lock(&self.touched)
            .get(id)
            .is_some_and(|(t, _)| *t + GRACE > as_of)
    }

    /// The ids made within [`GRACE`] before `as_of`, or at any time since.
    pub(crate) fn made_since(&self, as_of: Instant) -> Vec<String> {
        lock(&self.touched)
            .iter()
            .filter(|(_, (t, made))| *made && *t + GRACE > as_of)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Whether `id` was made (`made`) or removed (`!made`) within [`GRACE`] before `as_of`, or
    /// at any time since.
    pub(crate) fn since(&self, id: &str, made: bool, as_of: Instant) -> bool {
        lock(&self.touched)
            .get(id)
            .is_some_and(|(t, m)| *m == made && *t + GRACE > as_of)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_was_touched_after_the_state_was_read_stays_protected_however_long_the_pass() {
        let r = Recent::default();
        let long_ago = Instant::now().checked_sub(GRACE * 3).unwrap();
        let _pass = r.pass(long_ago);
        r.touch("a", true);
        // Another touch prunes by the running pass, not by the clock: "a" stays.
        r.touch("b", false);
        assert!(r.since("a", true, long_ago));
        assert!(r.since("b", false, long_ago));
        assert!(!r.since("a", false, long_ago));
        assert!(!r.since("c", true, long_ago));
        // A state read now: "a" was touched within the grace period before it.
        assert!(r.since("a", true, Instant::now()));
        // A state read long after: no longer protected.
        assert!(!r.since("a", true, Instant::now() + GRACE * 2));
    }
}
