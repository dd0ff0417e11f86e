//! Bearer tokens: name, role, (for service roles) host, and the SHA-256 of the secret.

use sqlx::{AnyConnection, Row as _, any::AnyRow};

use super::Result;

/// A token as stored (never the secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    pub name: String,
    pub role: String,
    pub host: String,
    pub created_at_ms: i64,
    pub created_by: String,
    pub revoked_at_ms: Option<i64>,
}

fn row(r: &AnyRow) -> Result<TokenRow> {
    Ok(TokenRow {
        name: r.try_get("name")?,
        role: r.try_get("role")?,
        host: r.try_get("host")?,
        created_at_ms: r.try_get("created_at_ms")?,
        created_by: r.try_get("created_by")?,
        revoked_at_ms: r.try_get("revoked_at_ms")?,
    })
}

const COLUMNS: &str = "name, role, host, created_at_ms, created_by, revoked_at_ms";

/// The live (not revoked) token with this hash.
pub async fn live_by_hash(conn: &mut AnyConnection, hash: &str) -> Result<Option<TokenRow>> {
    let sql =
        format!("SELECT {COLUMNS} FROM gateway_tokens WHERE hash = $1 AND revoked_at_ms IS NULL");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(hash)
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(row)
        .transpose()
}

pub async fn by_name(conn: &mut AnyConnection, name: &str) -> Result<Option<TokenRow>> {
    let sql = format!("SELECT {COLUMNS} FROM gateway_tokens WHERE name = $1");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(name)
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(row)
        .transpose()
}

/// Every token, by name.
pub async fn all(conn: &mut AnyConnection) -> Result<Vec<TokenRow>> {
    let sql = format!("SELECT {COLUMNS} FROM gateway_tokens ORDER BY name");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_all(conn)
        .await?
        .iter()
        .map(row)
        .collect()
}

pub async fn count_live(conn: &mut AnyConnection) -> Result<u64> {
    let n: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM gateway_tokens WHERE revoked_at_ms IS NULL")
            .fetch_one(conn)
            .await?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Stores a token, replacing a revoked one of the same name (the caller checked that no live
/// one has it).
pub async fn put(conn: &mut AnyConnection, t: &TokenRow, hash: &str) -> Result<()> {
    sqlx::query("DELETE FROM gateway_tokens WHERE name = $1 AND revoked_at_ms IS NOT NULL")
        .bind(&t.name)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO gateway_tokens (name, role, host, hash, created_at_ms, created_by) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&t.name)
    .bind(&t.role)
    .bind(&t.host)
    .bind(hash)
    .bind(t.created_at_ms)
    .bind(&t.created_by)
    .execute(conn)
    .await?;
    Ok(())
}

/// Marks a live token revoked; its hash, to forget it; None when no live token has the name.
pub async fn revoke(conn: &mut AnyConnection, name: &str, now_ms: i64) -> Result<Option<String>> {
    let hash: Option<String> = sqlx::query_scalar(
        "UPDATE gateway_tokens SET revoked_at_ms = $2 WHERE name = $1 AND revoked_at_ms IS NULL \
         RETURNING hash",
    )
    .bind(name)
    .bind(now_ms)
    .fetch_optional(conn)
    .await?;
    Ok(hash)
}

/// Revokes every live token bound to `host` (its agent's and dns-svc's); their names.
pub async fn revoke_for_host(
    conn: &mut AnyConnection,
    host: &str,
    now_ms: i64,
) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "UPDATE gateway_tokens SET revoked_at_ms = $2 WHERE host = $1 AND revoked_at_ms IS NULL \
         RETURNING name",
    )
    .bind(host)
    .bind(now_ms)
    .fetch_all(conn)
    .await?)
}
