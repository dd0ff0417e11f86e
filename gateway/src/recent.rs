//! The events this replica committed lately, kept in memory for its watchers.

use weft_proto::gateway::v1 as pb;

/// The last [`RecentEvents::CAP`] events this replica committed, by revision: a watcher woken by
/// a commit takes the new events from here instead of reading them back from the store (a
/// read on the path of every change that dns-svc, and so CreateSandbox, waits for). Only a
/// run of revisions held whole is taken from here; anything else (another replica's commits,
/// a commit not kept yet, a watcher far behind) is read from the store as before.
#[derive(Debug, Default)]
pub(crate) struct RecentEvents {
    by_revision: std::collections::BTreeMap<u64, pb::Event>,
}

impl RecentEvents {
    pub(crate) const CAP: usize = 1024;

    pub(crate) fn keep(&mut self, events: Vec<pb::Event>) {
        for e in events {
            self.by_revision.insert(e.revision, e);
        }
        while self.by_revision.len() > Self::CAP {
            self.by_revision.pop_first();
        }
    }

    /// Every event after `last` up to `upto`, at most `limit` of them, when all are here.
    pub(crate) fn after(&self, last: u64, upto: u64, limit: usize) -> Option<Vec<pb::Event>> {
        let want = upto.checked_sub(last).filter(|n| *n > 0)?;
        let got: Vec<pb::Event> = self
            .by_revision
            .range(last + 1..=upto)
            .take(limit)
            .map(|(_, e)| e.clone())
            .collect();
        // Held whole: revisions last+1, last+2, … without a gap (each change has its own).
        let whole = usize::try_from(want).is_ok_and(|w| got.len() == w.min(limit))
            && got
                .iter()
                .enumerate()
                .all(|(i, e)| Some(e.revision) == last.checked_add(i as u64 + 1));
        whole.then_some(got)
    }
}

#[cfg(test)]
mod recent_events_tests {
    use super::*;

    fn ev(revision: u64) -> pb::Event {
        pb::Event {
            revision,
            ..Default::default()
        }
    }

    fn revisions(got: Option<Vec<pb::Event>>) -> Option<Vec<u64>> {
        got.map(|v| v.iter().map(|e| e.revision).collect())
    }

    #[test]
    fn only_a_whole_run_of_revisions_is_taken_from_memory() {
        let mut r = RecentEvents::default();
        r.keep(vec![ev(5), ev(6)]);
        r.keep(vec![ev(8)]);
        assert_eq!(revisions(r.after(4, 6, 100)), Some(vec![5, 6]));
        assert_eq!(revisions(r.after(5, 6, 100)), Some(vec![6]));
        // 7 is not here (another replica's, or not kept yet): the store is asked.
        assert_eq!(revisions(r.after(6, 8, 100)), None);
        assert_eq!(revisions(r.after(5, 8, 100)), None);
        // Older than anything kept, or nothing new.
        assert_eq!(revisions(r.after(3, 6, 100)), None);
        assert_eq!(revisions(r.after(6, 6, 100)), None);
        assert_eq!(revisions(r.after(9, 6, 100)), None);
        r.keep(vec![ev(7)]);
        assert_eq!(revisions(r.after(4, 8, 100)), Some(vec![5, 6, 7, 8]));
        // A page at most.
        assert_eq!(revisions(r.after(4, 8, 2)), Some(vec![5, 6]));
    }

    #[test]
    fn at_most_cap_events_are_kept_the_oldest_going_first() {
        let mut r = RecentEvents::default();
        let n = u64::try_from(RecentEvents::CAP).unwrap() + 10;
        r.keep((1..=n).map(ev).collect());
        assert_eq!(r.by_revision.len(), RecentEvents::CAP);
        assert_eq!(r.after(0, n, 5), None);
        assert_eq!(revisions(r.after(10, 12, 5)), Some(vec![11, 12]));
    }
}
