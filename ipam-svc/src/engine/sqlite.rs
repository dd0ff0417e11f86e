//! The allocation batches' writes on SQLite, through a connection of the writer's own.
//!
//! sqlx runs every SQLite connection on a thread of its own: each statement is a hop to that
//! thread and back, plus the conversions of its `Any` driver. An allocation batch is the hottest
//! path of the service, so on SQLite the writer writes its rows itself, in-line, with statements
//! prepared once, on the same file with the same settings, so an acknowledged allocation is as
//! durable as it was. Everything else (pool creation and deletion, the reads a cold cache needs)
//! stays on sqlx: the writer is the only writer of the file, and it never leaves a transaction
//! open on either connection.
//!
//! A batch is one `BEGIN IMMEDIATE` … `COMMIT` holding its deletes, one multi-row `INSERT` per
//! [`ROWS_PER_INSERT`] new allocations, and one `UPDATE` of the counters of each pool it changed
//! (migration 0002: no per-row trigger rewrites the pool row any more). The row statements are
//! `OR ROLLBACK`: a constraint failure ends the whole transaction, which is what the writer does
//! with any failed batch anyway, and so SQLite keeps no statement journal for them (with the
//! default `ABORT` it would copy every page a multi-row statement changes, to undo that
//! statement alone).
//!
//! The calls block the writer's task, and the runtime worker it runs on, for the length of a
//! batch's commit: tens of microseconds with `synchronous = NORMAL`, one fsync with `FULL`, and
//! the two fsyncs of SQLite's automatic checkpoint when the commit crosses
//! [`WAL_AUTOCHECKPOINT_PAGES`] WAL pages. The
//! other workers keep serving meanwhile; sqlx's own thread cost more per batch than this blocks.
//!
//! One SQLite library serves both connections (`libsqlite3-sys` is linked once, bundled, for
//! sqlx and rusqlite alike): that is what makes the two connections' POSIX locks on the same
//! file work, since SQLite tracks them per process in the library's own tables.

use rusqlite::{Connection, ErrorCode};
use weft_store::SqliteFile;

// Addresses are stored as 16 big-endian bytes (`domain::addr::to_bytes`), bound from the stack.
use crate::store::{AllocRow, CounterDelta};

/// Rows one `INSERT` statement carries at most (5 parameters each). A batch of 16 callers fits
/// in one statement; the statements for 1..=this many rows are prepared once and kept.
pub(super) const ROWS_PER_INSERT: usize = 32;
const BEGIN: &str = "BEGIN IMMEDIATE";
const COMMIT: &str = "COMMIT";
const DELETE: &str = "DELETE FROM ipam_allocations WHERE pool_id = ?1 AND address = ?2";
/// A batch's change to one pool's counters ([`CounterDelta`]), once per pool per batch.
const COUNTERS: &str = "UPDATE OR ROLLBACK ipam_pools SET allocated = allocated + ?2, \
     generation = generation + ?3, cursor = coalesce(?4, cursor) WHERE id = ?1";

/// WAL pages after which a commit of the writer's connection copies the WAL back into the
/// database file (SQLite's default is 1000). That copy runs inside the commit that crosses the
/// mark, with two fsyncs, while every waiting caller waits; it copies each page once however
/// many times the WAL holds it, and an allocation batch rewrites the same few pages (the table's
/// and the index's last leaves, the pool row), so fewer, larger checkpoints copy far less: about
/// a tenth of a batch's write time went to checkpoints at 1000 pages. 4000 pages bound the WAL
/// at about 16 MB (4 KiB pages). What survives what is unchanged: with `synchronous = NORMAL` a
/// commit survives the process being killed (it is in the WAL file), and a power loss may take
/// the commits since the last checkpoint's sync (already unbounded in time: a quiet service
/// may sit below any mark for hours); with `FULL` every commit is synced.
const WAL_AUTOCHECKPOINT_PAGES: u32 = 4000;

/// The writer's own connection to the store's file.
pub(super) struct SqliteWriter {
    conn: Connection,
    /// The text of the `INSERT` of `n + 1` rows, the key of its prepared statement.
    inserts: Vec<String>,
}

fn insert_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT OR ROLLBACK INTO ipam_allocations (pool_id, address, owner, dynamic, created_at_ms) \
         VALUES ",
    );
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str("(?,?,?,?,?)");
    }
    sql
}

impl SqliteWriter {
    pub(super) fn open(file: &SqliteFile) -> rusqlite::Result<Self> {
        let conn = Connection::open(&file.path)?;
        conn.execute_batch(&file.pragmas)?;
        // No foreign key check on this connection: it only writes rows of pools the writer holds
        // in its cache, and a pool is in that cache only after the writer read it from the file
        // and until the writer itself deletes it (pools are created and deleted by the same
        // task, one command at a time, and no other process writes the file: the lock file).
        // So the parent row of every row written here exists; the check would look it up, in
        // the pool table's index and then the table, once per row. Every other connection
        // keeps the check.
        conn.execute_batch("PRAGMA foreign_keys = OFF")?;
        // This connection's commits checkpoint the WAL less often than SQLite's default (every
        // 1000 pages): see [`WAL_AUTOCHECKPOINT_PAGES`].
        conn.execute_batch(&format!(
            "PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}"
        ))?;
        // Every INSERT size, plus BEGIN, COMMIT and DELETE, stays prepared.
        conn.set_prepared_statement_cache_capacity(ROWS_PER_INSERT + 8);
        Ok(Self {
            conn,
            inserts: (1..=ROWS_PER_INSERT).map(insert_sql).collect(),
        })
    }

    /// Deletes `deletes` (pool, address), then inserts `inserts`, then applies `counters` to
    /// the pool rows, atomically. Nothing is written when it fails; the caller then drops this
    /// connection, which rolls back whatever was open.
    pub(super) fn write(
        &mut self,
        deletes: &[(&str, u128)],
        inserts: &[&AllocRow],
        counters: &[(&str, CounterDelta)],
    ) -> rusqlite::Result<()> {
        let statements = deletes.len() + inserts.len().div_ceil(ROWS_PER_INSERT) + counters.len();
        let in_tx = statements > 1;
        if in_tx {
            // BEGIN and COMMIT are cached statements too (a `Transaction` would parse them
            // each time).
            self.conn.prepare_cached(BEGIN)?.raw_execute()?;
        }
        if !deletes.is_empty() {
            let mut del = self.conn.prepare_cached(DELETE)?;
            for (pool, addr) in deletes {
                del.raw_bind_parameter(1, pool)?;
                del.raw_bind_parameter(2, addr.to_be_bytes().as_slice())?;
                del.raw_execute()?;
            }
        }
        for chunk in inserts.chunks(ROWS_PER_INSERT) {
            let Some(sql) = self.inserts.get(chunk.len() - 1) else {
                continue;
            };
            let mut ins = self.conn.prepare_cached(sql)?;
            for (i, r) in chunk.iter().enumerate() {
                let b = i * 5;
                ins.raw_bind_parameter(b + 1, r.pool_id.as_str())?;
                ins.raw_bind_parameter(b + 2, r.addr.to_be_bytes().as_slice())?;
                ins.raw_bind_parameter(b + 3, r.owner.as_str())?;
                ins.raw_bind_parameter(b + 4, i64::from(r.dynamic))?;
                ins.raw_bind_parameter(b + 5, r.created_at_ms)?;
            }
            ins.raw_execute()?;
        }
        if !counters.is_empty() {
            let mut upd = self.conn.prepare_cached(COUNTERS)?;
            for (pool, d) in counters {
                upd.raw_bind_parameter(1, pool)?;
                upd.raw_bind_parameter(2, d.allocated)?;
                upd.raw_bind_parameter(3, d.generation)?;
                match d.cursor {
                    Some(c) => upd.raw_bind_parameter(4, c.to_be_bytes().as_slice())?,
                    None => upd.raw_bind_parameter(4, rusqlite::types::Null)?,
                }
                upd.raw_execute()?;
            }
        }
        if in_tx {
            self.conn.prepare_cached(COMMIT)?.raw_execute()?;
        }
        Ok(())
    }
}

/// A primary-key or unique violation: another writer got there first (the batch is retried).
pub(crate) fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.code == ErrorCode::ConstraintViolation
            && matches!(f.extended_code, rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY | rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE))
}
