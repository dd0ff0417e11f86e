//! The credentials of hosts that the access layer checks: one-time join tokens (their holder
//! becomes the role `join`; see `join` for what it may ask) and the removal times of hosts,
//! before which their certificates are refused. Removal times have a resolution of one second
//! (a certificate's `notBefore`): a certificate issued in the second of the removal is still
//! taken.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use weft_runtime::access::{self, Credential, Principal, Role};
use weft_store::Db;

use crate::{clock::Clock, error::GatewayError, store};

/// How long a host's removal time is cached (other replicas' removals show within it).
const REMOVAL_CACHE: Duration = Duration::from_secs(5);

/// The principal name of a join token's holder: the first 16 hex digits of its hash (enough
/// to tell tokens apart in the audit log, nothing to guess the secret from).
pub(crate) fn join_id(hash: &str) -> String {
    hash.chars().take(16).collect()
}

/// The join tokens, for the access layer.
#[derive(Debug, Clone)]
pub struct JoinTokens {
    db: Db,
    clock: Clock,
}

impl JoinTokens {
    pub fn new(db: Db, clock: Clock) -> Self {
        Self { db, clock }
    }

    /// The principal of a usable join token (role `join`).
    pub async fn lookup(&self, token: &str) -> Result<Option<Principal>, GatewayError> {
        if !access::looks_like_join_token(token) {
            return Ok(None);
        }
        let hash = access::token_hash(token);
        let mut conn = self.db.read().acquire().await?;
        let row = store::join_tokens::usable(&mut conn, &hash, self.clock.now_ms()).await?;
        Ok(row.map(|r| Principal {
            name: join_id(&r.hash),
            role: Role::Join,
            credential: Credential::Token,
        }))
    }
}

/// A host's last removal time (None: never removed) and when it was read.
type Seen = (Option<i64>, Instant);

/// When each host was last removed, cached.
#[derive(Debug, Clone)]
pub struct Removals {
    db: Db,
    cache: Arc<Mutex<HashMap<String, Seen>>>,
}

impl Removals {
    pub fn new(db: Db) -> Self {
        Self {
            db,
            cache: Arc::default(),
        }
    }

    /// Notes a removal made by this replica at once.
    pub fn record(&self, host: &str, at_ms: i64) {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(host.to_owned(), (Some(at_ms), Instant::now()));
    }

    /// When `host` was last removed, if ever.
    pub async fn removed_at(&self, host: &str) -> Result<Option<i64>, GatewayError> {
        if let Some((at, seen)) = self
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(host)
            && seen.elapsed() < REMOVAL_CACHE
        {
            return Ok(*at);
        }
        let at = {
            let mut conn = self.db.read().acquire().await?;
            store::hosts::removed_at(&mut conn, host).await?
        };
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        // Bounded by the hosts that call; stale entries go when it grows.
        if cache.len() >= 10_000 {
            cache.retain(|_, (_, seen)| seen.elapsed() < REMOVAL_CACHE);
        }
        cache.insert(host.to_owned(), (at, Instant::now()));
        Ok(at)
    }

    /// Whether a certificate of `host` issued at `issued` predates the host's last removal
    /// (compared by the second: see the module's comment).
    pub async fn predates_removal(
        &self,
        host: &str,
        issued: SystemTime,
    ) -> Result<bool, GatewayError> {
        let Some(removed_ms) = self.removed_at(host).await? else {
            return Ok(false);
        };
        let issued_s = issued
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        Ok(issued_s < removed_ms.div_euclid(1000))
    }
}
