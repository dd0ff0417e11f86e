//! One-time join tokens: the SHA-256 of the secret, the host name it is for (or any), when it
//! expires and when it was spent.

use sqlx::{AnyConnection, Row as _, any::AnyRow};

use super::Result;

/// A join token as stored (never the secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinTokenRow {
    pub hash: String,
    pub host_name: String,
    pub created_at_ms: i64,
    pub created_by: String,
    pub expires_at_ms: i64,
    pub used_at_ms: Option<i64>,
}

fn row(r: &AnyRow) -> Result<JoinTokenRow> {
    Ok(JoinTokenRow {
        hash: r.try_get("hash")?,
        host_name: r.try_get("host_name")?,
        created_at_ms: r.try_get("created_at_ms")?,
        created_by: r.try_get("created_by")?,
        expires_at_ms: r.try_get("expires_at_ms")?,
        used_at_ms: r.try_get("used_at_ms")?,
    })
}

/// The unspent token with this hash that has not expired at `now_ms`.
pub async fn usable(
    conn: &mut AnyConnection,
    hash: &str,
    now_ms: i64,
) -> Result<Option<JoinTokenRow>> {
    sqlx::query(
        "SELECT hash, host_name, created_at_ms, created_by, expires_at_ms, used_at_ms \
         FROM gateway_join_tokens WHERE hash = $1 AND used_at_ms IS NULL AND expires_at_ms > $2",
    )
    .bind(hash)
    .bind(now_ms)
    .fetch_optional(conn)
    .await?
    .as_ref()
    .map(row)
    .transpose()
}

/// Spends the token for `host`: true if this call did (it was usable), false if another call
/// spent it first or it expired meanwhile.
pub async fn spend(conn: &mut AnyConnection, hash: &str, host: &str, now_ms: i64) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE gateway_join_tokens SET used_at_ms = $3, used_by_host = $2 \
         WHERE hash = $1 AND used_at_ms IS NULL AND expires_at_ms > $3",
    )
    .bind(hash)
    .bind(host)
    .bind(now_ms)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Deletes spent and expired tokens; then the number of usable ones left.
pub async fn trim(conn: &mut AnyConnection, now_ms: i64) -> Result<u64> {
    sqlx::query(
        "DELETE FROM gateway_join_tokens WHERE used_at_ms IS NOT NULL OR expires_at_ms <= $1",
    )
    .bind(now_ms)
    .execute(&mut *conn)
    .await?;
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM gateway_join_tokens")
        .fetch_one(conn)
        .await?;
    Ok(u64::try_from(n).unwrap_or(0))
}

pub async fn insert(conn: &mut AnyConnection, t: &JoinTokenRow) -> Result<()> {
    sqlx::query(
        "INSERT INTO gateway_join_tokens (hash, host_name, created_at_ms, created_by, expires_at_ms) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&t.hash)
    .bind(&t.host_name)
    .bind(t.created_at_ms)
    .bind(&t.created_by)
    .bind(t.expires_at_ms)
    .execute(conn)
    .await?;
    Ok(())
}
