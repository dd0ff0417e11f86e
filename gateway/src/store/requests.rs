//! Request ids already applied, with the answer given. An entry counts for the request-id
//! time to live (older ones are ignored, then deleted) and the table keeps at most the
//! configured number of entries (the oldest go first).

use sqlx::{AnyConnection, Row as _};

use super::Result;

/// How long entries count and how many are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Entries created before this time (ms) no longer count.
    pub not_before_ms: i64,
    /// At most this many entries are kept.
    pub max: u64,
}

/// A request id applied since `not_before_ms`: its method, request and response.
pub async fn applied(
    conn: &mut AnyConnection,
    request_id: &str,
    not_before_ms: i64,
) -> Result<Option<(String, Vec<u8>, Vec<u8>)>> {
    let row = sqlx::query(
        "SELECT method, request, response FROM gateway_requests \
         WHERE request_id = $1 AND created_at_ms >= $2",
    )
    .bind(request_id)
    .bind(not_before_ms)
    .fetch_optional(conn)
    .await?;
    Ok(match row {
        Some(r) => Some((
            r.try_get("method")?,
            r.try_get("request")?,
            r.try_get("response")?,
        )),
        None => None,
    })
}

/// Records a request id's answer (replacing an expired entry of the same id, never a live
/// one), then deletes expired entries and the oldest beyond the maximum.
pub async fn record(
    conn: &mut AnyConnection,
    entry: (&str, &str, &[u8], &[u8]),
    now_ms: i64,
    keep: Retention,
) -> Result<()> {
    let (request_id, method, request, response) = entry;
    sqlx::query(
        "INSERT INTO gateway_requests (request_id, method, request, response, created_at_ms) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (request_id) DO UPDATE SET method = excluded.method, \
         request = excluded.request, response = excluded.response, \
         created_at_ms = excluded.created_at_ms \
         WHERE gateway_requests.created_at_ms < $6",
    )
    .bind(request_id)
    .bind(method)
    .bind(request.to_vec())
    .bind(response.to_vec())
    .bind(now_ms)
    .bind(keep.not_before_ms)
    .execute(&mut *conn)
    .await?;
    expire(conn, keep).await
}

/// Deletes expired entries and the oldest beyond the maximum.
pub async fn expire(conn: &mut AnyConnection, keep: Retention) -> Result<()> {
    sqlx::query("DELETE FROM gateway_requests WHERE created_at_ms < $1")
        .bind(keep.not_before_ms)
        .execute(&mut *conn)
        .await?;
    // Everything older than the max-th newest entry (by time, then id).
    sqlx::query(
        "DELETE FROM gateway_requests WHERE (created_at_ms, request_id) < \
         (SELECT created_at_ms, request_id FROM gateway_requests \
          ORDER BY created_at_ms DESC, request_id DESC LIMIT 1 OFFSET $1)",
    )
    .bind(i64::try_from(keep.max.saturating_sub(1)).unwrap_or(i64::MAX))
    .execute(conn)
    .await?;
    Ok(())
}

/// How many entries there are (for tests and checks).
pub async fn count(conn: &mut AnyConnection) -> Result<u64> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM gateway_requests")
        .fetch_one(conn)
        .await?;
    Ok(u64::try_from(n).unwrap_or(0))
}
