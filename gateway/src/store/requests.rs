//! Request ids already applied, with the answer given.

use sqlx::{AnyConnection, Row as _};

use super::Result;

/// A request id seen before: its method, request and response.
pub async fn applied(
    conn: &mut AnyConnection,
    request_id: &str,
) -> Result<Option<(String, Vec<u8>, Vec<u8>)>> {
    let row =
        sqlx::query("SELECT method, request, response FROM gateway_requests WHERE request_id = $1")
            .bind(request_id)
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

pub async fn record(
    conn: &mut AnyConnection,
    request_id: &str,
    method: &str,
    request: &[u8],
    response: &[u8],
    now_ms: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO gateway_requests (request_id, method, request, response, created_at_ms) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(request_id)
    .bind(method)
    .bind(request.to_vec())
    .bind(response.to_vec())
    .bind(now_ms)
    .execute(conn)
    .await?;
    Ok(())
}
