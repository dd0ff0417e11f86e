//! Leases with fencing tokens (table `gateway_leases`): what lets exactly one gateway replica
//! run the background work at a time on a shared store.
//!
//! - [`acquire`] takes a lease that is free or expired, and increments its token;
//! - [`renew`] extends it, only for the holder of the current token;
//! - [`fence`], inside a write transaction, refuses that transaction unless the token is still
//!   the current one. On Postgres it takes the lease row's lock, so a takeover waits for the
//!   fenced transaction to end (and the fenced one waits for a takeover under way, then fails);
//!   on SQLite writers are serialised anyway.
//!
//! Times are the replicas' clocks in ms since the epoch: replicas are expected to keep their
//! clocks within a small fraction of the lease's time to live (NTP). A skew only makes a
//! takeover early or late; the token keeps a stale holder's writes out either way.

use sqlx::{AnyConnection, Row as _};

use super::Result;

/// A lease as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRow {
    pub holder: String,
    pub token: i64,
    pub expires_at_ms: i64,
}

/// Takes lease `name` for `holder` until `expires_at_ms` when nobody holds it or its holder
/// let it expire (at `now_ms`), or when `holder` holds it already: the new token. None when
/// another holder's lease is still live.
pub async fn acquire(
    conn: &mut AnyConnection,
    name: &str,
    holder: &str,
    now_ms: i64,
    expires_at_ms: i64,
) -> Result<Option<i64>> {
    let token: Option<i64> = sqlx::query_scalar(
        "INSERT INTO gateway_leases (name, holder, token, expires_at_ms) VALUES ($1, $2, 1, $3) \
         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
         token = gateway_leases.token + 1, expires_at_ms = excluded.expires_at_ms \
         WHERE gateway_leases.expires_at_ms <= $4 OR gateway_leases.holder = excluded.holder \
         RETURNING token",
    )
    .bind(name)
    .bind(holder)
    .bind(expires_at_ms)
    .bind(now_ms)
    .fetch_optional(conn)
    .await?;
    Ok(token)
}

/// Extends lease `name` to `expires_at_ms` if `token` is still its token (held by `holder`);
/// false when another replica has taken it over.
pub async fn renew(
    conn: &mut AnyConnection,
    name: &str,
    holder: &str,
    token: i64,
    expires_at_ms: i64,
) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE gateway_leases SET expires_at_ms = $4 \
         WHERE name = $1 AND holder = $2 AND token = $3",
    )
    .bind(name)
    .bind(holder)
    .bind(token)
    .bind(expires_at_ms)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// In a write transaction: true if `token` is still lease `name`'s token (and the row is then
/// locked until the transaction ends); false means the transaction must not write.
pub async fn fence(conn: &mut AnyConnection, name: &str, token: i64) -> Result<bool> {
    let done =
        sqlx::query("UPDATE gateway_leases SET token = token WHERE name = $1 AND token = $2")
            .bind(name)
            .bind(token)
            .execute(conn)
            .await?;
    Ok(done.rows_affected() == 1)
}

/// Lets lease `name` go at once if `token` still holds it (a replica stopping cleanly), so that
/// another takes over without waiting for it to expire.
pub async fn release(conn: &mut AnyConnection, name: &str, token: i64) -> Result<()> {
    sqlx::query("UPDATE gateway_leases SET expires_at_ms = 0 WHERE name = $1 AND token = $2")
        .bind(name)
        .bind(token)
        .execute(conn)
        .await?;
    Ok(())
}

/// Lease `name` as stored, if it was ever taken.
pub async fn get(conn: &mut AnyConnection, name: &str) -> Result<Option<LeaseRow>> {
    let row =
        sqlx::query("SELECT holder, token, expires_at_ms FROM gateway_leases WHERE name = $1")
            .bind(name)
            .fetch_optional(conn)
            .await?;
    Ok(match row {
        Some(r) => Some(LeaseRow {
            holder: r.try_get("holder")?,
            token: r.try_get("token")?,
            expires_at_ms: r.try_get("expires_at_ms")?,
        }),
        None => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Connection as _;

    async fn db() -> AnyConnection {
        sqlx::any::install_default_drivers();
        let mut c = AnyConnection::connect("sqlite::memory:").await.unwrap();
        let sql = include_str!("../../migrations/sqlite/0012_leases.sql");
        sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
        c
    }

    #[tokio::test]
    async fn one_holder_until_expiry_then_a_takeover_with_a_new_token() {
        let mut c = db().await;
        assert_eq!(acquire(&mut c, "bg", "a", 0, 100).await.unwrap(), Some(1));
        // b cannot take a live lease; a may take its own again (a restart with the same id).
        assert_eq!(acquire(&mut c, "bg", "b", 50, 150).await.unwrap(), None);
        assert!(renew(&mut c, "bg", "a", 1, 200).await.unwrap());
        assert_eq!(acquire(&mut c, "bg", "b", 199, 300).await.unwrap(), None);
        assert!(fence(&mut c, "bg", 1).await.unwrap());
        // Expired: b takes over with token 2; a's token is fenced and cannot renew.
        assert_eq!(acquire(&mut c, "bg", "b", 200, 300).await.unwrap(), Some(2));
        assert!(!fence(&mut c, "bg", 1).await.unwrap());
        assert!(!renew(&mut c, "bg", "a", 1, 400).await.unwrap());
        assert!(fence(&mut c, "bg", 2).await.unwrap());
        let row = get(&mut c, "bg").await.unwrap().unwrap();
        assert_eq!((row.holder.as_str(), row.token), ("b", 2));
        // A clean stop lets it go at once; a stale token releases nothing.
        release(&mut c, "bg", 1).await.unwrap();
        assert_eq!(acquire(&mut c, "bg", "a", 210, 310).await.unwrap(), None);
        release(&mut c, "bg", 2).await.unwrap();
        assert_eq!(acquire(&mut c, "bg", "a", 210, 310).await.unwrap(), Some(3));
    }
}
