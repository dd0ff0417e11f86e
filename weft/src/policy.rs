//! When `weft up` restarts a service that exited, and when it gives up: a pure state machine
//! per service, driven by the supervisor (`supervisor.rs`), with its numbers documented in the
//! README next to `weft up`.
//!
//! A service that exits by itself is started again after a delay: 100 ms the first time, then
//! twice the previous delay, at most 5 s. Once a (re)started service has answered its health
//! check SERVING without a failed check for 10 s, it is well again: its next exit waits 100 ms
//! again and its run of crashes starts over. A service that exits 8 times in a row without
//! staying healthy that long in between (7 restarts, after 0.1, 0.2, 0.4, 0.8, 1.6, 3.2 and
//! 5 s) is crash-looping: `weft up` stops the other services and exits 1, naming it.
//!
//! A process that hangs counts as one that exits: the supervisor kills a restarted process
//! that is not healthy within `--start-timeout`, and one that was healthy and then fails every
//! health check for `--start-timeout` (at the first start, not becoming healthy in time stops
//! the start instead).

use std::time::Duration;

/// The delay before the first restart of a run of crashes.
pub const FIRST_DELAY: Duration = Duration::from_millis(100);
/// The longest delay between two restarts.
pub const MAX_DELAY: Duration = Duration::from_secs(5);
/// How long a (re)started service must stay up and healthy to be well again.
pub const STABLE_AFTER: Duration = Duration::from_secs(10);
/// How many exits in a row, without staying healthy for [`STABLE_AFTER`] in between, make a
/// crash loop.
pub const CRASH_LIMIT: u32 = 8;

/// What to do about an exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Start it again after `delay`: its `restart`th restart since `weft up` started.
    Restart { delay: Duration, restart: u32 },
    /// It exited [`CRASH_LIMIT`] times in a row: stop everything.
    GiveUp,
}

/// One service's restart bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restarts {
    /// Restarts since `weft up` started (never reset).
    pub total: u32,
    /// Exits since it was last well.
    pub streak: u32,
    next_delay: Duration,
}

impl Default for Restarts {
    fn default() -> Self {
        Self {
            total: 0,
            streak: 0,
            next_delay: FIRST_DELAY,
        }
    }
}

impl Restarts {
    /// The service exited by itself (or was killed for not becoming healthy).
    pub fn exited(&mut self) -> Decision {
        self.streak = self.streak.saturating_add(1);
        if self.streak >= CRASH_LIMIT {
            return Decision::GiveUp;
        }
        let delay = self.next_delay;
        self.next_delay = (delay * 2).min(MAX_DELAY);
        self.total = self.total.saturating_add(1);
        Decision::Restart {
            delay,
            restart: self.total,
        }
    }

    /// It has stayed up and healthy for [`STABLE_AFTER`]: the next exit starts a new run.
    pub fn stable(&mut self) {
        self.streak = 0;
        self.next_delay = FIRST_DELAY;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delays(r: &mut Restarts, n: usize) -> Vec<Decision> {
        (0..n).map(|_| r.exited()).collect()
    }

    #[test]
    fn delays_double_from_100ms_up_to_5s_and_the_eighth_exit_in_a_row_gives_up() {
        let mut r = Restarts::default();
        let ms = |delay, restart| Decision::Restart {
            delay: Duration::from_millis(delay),
            restart,
        };
        assert_eq!(
            delays(&mut r, 8),
            [
                ms(100, 1),
                ms(200, 2),
                ms(400, 3),
                ms(800, 4),
                ms(1600, 5),
                ms(3200, 6),
                ms(5000, 7),
                Decision::GiveUp
            ]
        );
    }

    #[test]
    fn staying_healthy_resets_the_delay_and_the_run_but_not_the_count() {
        let mut r = Restarts::default();
        delays(&mut r, 7);
        r.stable();
        assert_eq!(
            r.exited(),
            Decision::Restart {
                delay: FIRST_DELAY,
                restart: 8
            }
        );
        assert_eq!(r.streak, 1);
        // A whole new run before giving up.
        let more = delays(&mut r, 7);
        assert_eq!(more.iter().filter(|d| **d == Decision::GiveUp).count(), 1);
        assert_eq!(more.last(), Some(&Decision::GiveUp));
    }
}
