-- The pool counters (allocated, generation, cursor) are no longer kept by a trigger that
-- rewrites the pool row once per allocation row: the one writer of a SQLite store (the lock
-- file admits one process) writes them itself, once per pool per batch, in the same
-- transaction as the rows (`UPDATE ipam_pools SET allocated = allocated + n, generation =
-- generation + changes, cursor = <last dynamic address>`), so they still cannot drift from the
-- table: the batch commits both or neither. The values are the ones the triggers gave.
DROP TRIGGER ipam_allocations_insert;
DROP TRIGGER ipam_allocations_delete;
