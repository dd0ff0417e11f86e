//! Limits per caller: a token bucket (calls per second, with a burst) and a number of calls in
//! flight, for each identity apart. Past either, a call is refused at once with
//! `RESOURCE_EXHAUSTED` and a `google.rpc.RetryInfo` saying when to try again, so that one
//! identity flooding a service costs it little and does not starve the others.
//!
//! The services' own roles (agent, dns, gateway) are not limited: they are the cluster's
//! machinery, and a reconciliation or an event stream must not be turned away.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::principal::{Principal, Refusal, Role};

/// How much one identity may ask.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Calls per second, on average.
    pub rate: f64,
    /// Calls that may come at once after a quiet time.
    pub burst: u32,
    /// Calls in flight at once.
    pub concurrent: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            rate: 500.0,
            burst: 1000,
            concurrent: 64,
        }
    }
}

/// The most identities tracked at once; past it, those idle longest are forgotten.
pub const MAX_TRACKED: usize = 10_000;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
    inflight: Arc<Semaphore>,
}

/// The limits of every identity, applied by the access layer.
#[derive(Debug, Clone)]
pub struct Limiter {
    limits: Limits,
    buckets: Arc<Mutex<HashMap<String, Bucket>>>,
}

/// Held while a call runs: frees its place among the identity's calls in flight.
#[derive(Debug)]
pub struct Admitted(#[allow(dead_code)] Option<OwnedSemaphorePermit>);

impl Limiter {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            buckets: Arc::default(),
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Admits one call of `who`, or says when to come back.
    pub fn admit(&self, who: &Principal) -> Result<Admitted, Refusal> {
        if matches!(who.role, Role::Agent | Role::Dns | Role::Gateway) {
            return Ok(Admitted(None));
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(&who.label()) {
            forget_idle(&mut buckets, MAX_TRACKED / 2);
        }
        let l = self.limits;
        let b = buckets.entry(who.label()).or_insert_with(|| Bucket {
            tokens: f64::from(l.burst),
            last: now,
            inflight: Arc::new(Semaphore::new(l.concurrent as usize)),
        });
        let elapsed = now.duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * l.rate).min(f64::from(l.burst));
        b.last = now;
        if b.tokens < 1.0 {
            let wait = Duration::from_secs_f64(((1.0 - b.tokens) / l.rate).max(0.001));
            return Err(Refusal::exhausted(
                format!(
                    "{} is over its rate limit ({} calls/s, bursts of {}): retry in {} ms",
                    who.label(),
                    l.rate,
                    l.burst,
                    wait.as_millis().max(1)
                ),
                wait,
            ));
        }
        let permit = b.inflight.clone().try_acquire_owned().map_err(|_| {
            Refusal::exhausted(
                format!(
                    "{} has {} calls in flight, the most one identity may have: retry when one ends",
                    who.label(),
                    l.concurrent
                ),
                Duration::from_millis(100),
            )
        })?;
        b.tokens -= 1.0;
        Ok(Admitted(Some(permit)))
    }
}

/// Forgets identities (with nothing in flight) until at most `keep` remain, the longest idle
/// first.
fn forget_idle(buckets: &mut HashMap<String, Bucket>, keep: usize) {
    let mut idle: Vec<(Instant, String)> = buckets
        .iter()
        .filter(|(_, b)| Arc::strong_count(&b.inflight) == 1)
        .map(|(k, b)| (b.last, k.clone()))
        .collect();
    idle.sort();
    let excess = buckets.len().saturating_sub(keep);
    for (_, k) in idle.into_iter().take(excess) {
        buckets.remove(&k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::principal::Credential;

    fn who(name: &str, role: Role) -> Principal {
        Principal {
            name: name.into(),
            role,
            credential: Credential::Token,
        }
    }

    #[test]
    fn a_burst_passes_then_the_rate_holds_with_a_retry_time() {
        let l = Limiter::new(Limits {
            rate: 10.0,
            burst: 5,
            concurrent: 100,
        });
        let a = who("a", Role::Operator);
        let held: Vec<_> = (0..5).map(|_| l.admit(&a).unwrap()).collect();
        let r = l.admit(&a).unwrap_err();
        assert_eq!(r.code, tonic::Code::ResourceExhausted);
        let wait = r.retry_after.unwrap();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        assert!(r.message.contains("operator:a"), "{}", r.message);
        // Another identity is not affected.
        assert!(l.admit(&who("b", Role::Operator)).is_ok());
        drop(held);
    }

    #[test]
    fn calls_in_flight_are_bounded_and_freed_when_they_end() {
        let l = Limiter::new(Limits {
            rate: 1e6,
            burst: 1000,
            concurrent: 2,
        });
        let a = who("a", Role::Viewer);
        let one = l.admit(&a).unwrap();
        let _two = l.admit(&a).unwrap();
        assert!(l.admit(&a).is_err());
        drop(one);
        assert!(l.admit(&a).is_ok());
    }

    #[test]
    fn the_services_roles_are_not_limited() {
        let l = Limiter::new(Limits {
            rate: 1.0,
            burst: 1,
            concurrent: 1,
        });
        for role in [Role::Agent, Role::Dns, Role::Gateway] {
            let w = who("h1", role);
            let _held: Vec<_> = (0..10).map(|_| l.admit(&w).unwrap()).collect();
        }
    }

    #[test]
    fn idle_identities_are_forgotten_past_the_bound() {
        let l = Limiter::new(Limits::default());
        for i in 0..MAX_TRACKED + 10 {
            drop(l.admit(&who(&format!("u{i}"), Role::Viewer)).unwrap());
        }
        assert!(l.buckets.lock().unwrap().len() <= MAX_TRACKED);
    }
}
