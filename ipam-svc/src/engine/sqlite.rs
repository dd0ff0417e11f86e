//! The allocation batches' writes on SQLite, through a connection of the writer's own.
//!
//! sqlx runs every SQLite connection on a thread of its own: each statement is a hop to that
//! thread and back, plus the conversions of its `Any` driver. An allocation batch is the hottest
//! path of the service, so on SQLite the writer writes its rows itself, in-line, with statements
//! prepared once: one transaction per batch, one cached single-row statement per row. The
//! transaction is the same as before (`BEGIN IMMEDIATE`, the rows, the triggers that keep each
//! pool's counters, `COMMIT`), on the same file with the same settings, so an acknowledged
//! allocation is as durable as it was. Everything else (pool creation and deletion, the reads a
//! cold cache needs) stays on sqlx: the writer is the only writer of the file, and it never
//! leaves a transaction open on either connection.
//!
//! The calls block the writer's task for the length of a batch's commit: tens of microseconds
//! with `synchronous = NORMAL`, one fsync with `FULL`.

use rusqlite::{Connection, ErrorCode, params};
use weft_store::SqliteFile;

use crate::{domain::addr::to_bytes, store::AllocRow};

const INSERT: &str = "INSERT INTO ipam_allocations (pool_id, address, owner, dynamic, created_at_ms) \
                      VALUES (?1, ?2, ?3, ?4, ?5)";
const BEGIN: &str = "BEGIN IMMEDIATE";
const COMMIT: &str = "COMMIT";
const DELETE: &str = "DELETE FROM ipam_allocations WHERE pool_id = ?1 AND address = ?2";

/// The writer's own connection to the store's file.
pub(super) struct SqliteWriter {
    conn: Connection,
}

impl SqliteWriter {
    pub(super) fn open(file: &SqliteFile) -> rusqlite::Result<Self> {
        let conn = Connection::open(&file.path)?;
        conn.execute_batch(&file.pragmas)?;
        Ok(Self { conn })
    }

    /// Deletes `deletes` (pool, address), then inserts `inserts`, in one transaction. Nothing is
    /// written when it fails.
    pub(super) fn write<'a>(
        &mut self,
        deletes: impl Iterator<Item = (&'a str, u128)>,
        inserts: impl Iterator<Item = &'a AllocRow>,
    ) -> rusqlite::Result<()> {
        // BEGIN and COMMIT are cached statements too (a `Transaction` would parse them each
        // time). After an error the caller drops this connection, which rolls back.
        self.conn.prepare_cached(BEGIN)?.execute([])?;
        {
            let mut del = self.conn.prepare_cached(DELETE)?;
            for (pool, addr) in deletes {
                del.execute(params![pool, to_bytes(addr)])?;
            }
            let mut ins = self.conn.prepare_cached(INSERT)?;
            for r in inserts {
                ins.execute(params![
                    r.pool_id,
                    to_bytes(r.addr),
                    r.owner,
                    i64::from(r.dynamic),
                    r.created_at_ms
                ])?;
            }
        }
        self.conn.prepare_cached(COMMIT)?.execute([])?;
        Ok(())
    }
}

/// A primary-key or unique violation: another writer got there first (the batch is retried).
pub(crate) fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.code == ErrorCode::ConstraintViolation
            && matches!(f.extended_code, rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY | rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE))
}

/// The database is locked or cannot be opened (callers get `UNAVAILABLE`, as for sqlx).
pub(crate) fn is_unavailable(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if matches!(f.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked | ErrorCode::CannotOpen | ErrorCode::SystemIoFailure))
}
