//! Per-step timings of one saga, logged with its result line (`sandbox created`, `sandbox
//! removed`, `disconnected`): where the time of a call goes, under real load, without a
//! profiler. Steps that run side by side are one step, timed to the end of the slowest.

use std::{fmt, time::Instant};

#[derive(Debug)]
pub(crate) struct Steps {
    start: Instant,
    last: Instant,
    done: Vec<(&'static str, u128)>,
}

impl Steps {
    pub(crate) fn start() -> Self {
        let now = Instant::now();
        Self {
            start: now,
            last: now,
            done: Vec::new(),
        }
    }

    /// Ends step `name` (it began where the previous one ended).
    pub(crate) fn mark(&mut self, name: &'static str) {
        let now = Instant::now();
        self.done
            .push((name, now.duration_since(self.last).as_micros()));
        self.last = now;
    }

    /// Microseconds since the start.
    pub(crate) fn total_us(&self) -> u128 {
        self.start.elapsed().as_micros()
    }
}

/// `step:µs,step:µs,…` in order (one token in a plain log line).
impl fmt::Display for Steps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (name, us)) in self.done.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{name}:{us}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_print_in_order_with_their_names() {
        let mut s = Steps::start();
        s.mark("place");
        s.mark("commit");
        let text = s.to_string();
        let names: Vec<&str> = text
            .split(',')
            .map(|kv| kv.split_once(':').unwrap().0)
            .collect();
        assert_eq!(names, ["place", "commit"]);
    }
}
