//! What the API touched lately, which reconciliation (`reconcile.rs`) leaves alone. Its
//! own module so that the agent, which records it, and reconciliation, which reads it, do not
//! import each other.

/// How long reconciliation leaves alone what the API just touched: an attach whose endpoint
/// the gateway has not recorded yet is not an orphan, and an endpoint just detached is not
/// brought back from a desired state read before the detach.
pub const GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// Ids (endpoints, sandboxes, networks) the API touched lately: when, and whether it was to
/// make (true) or to remove (false). Lost on restart, which is right: after a crash nothing is
/// in flight.
#[derive(Debug, Default)]
pub struct Recent(std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, bool)>>);

impl Recent {
    pub fn touch(&self, id: &str, made: bool) {
        let mut m = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        m.retain(|_, (t, _)| t.elapsed() < GRACE);
        m.insert(id.to_owned(), (std::time::Instant::now(), made));
    }

    /// Whether `id` was made (`made`) or removed (`!made`) within the grace period.
    pub(crate) fn lately(&self, id: &str, made: bool) -> bool {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(id)
            .is_some_and(|(t, m)| *m == made && t.elapsed() < GRACE)
    }
}
