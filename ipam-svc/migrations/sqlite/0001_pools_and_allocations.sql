-- Pools and allocations. Addresses are 16-byte big-endian blobs so that byte order is numeric
-- order. The primary key (pool_id, address) is what makes a duplicate allocation impossible;
-- UNIQUE (owner, pool_id) makes an owner hold at most one address per pool, and also serves
-- "which pools does this owner hold addresses in".
CREATE TABLE ipam_pools (
    id            TEXT PRIMARY KEY,
    address_space TEXT NOT NULL,
    family        BIGINT NOT NULL,
    subnet        TEXT NOT NULL,
    subnet_start  BLOB NOT NULL,
    subnet_end    BLOB NOT NULL,
    ip_range      TEXT NOT NULL DEFAULT '',
    gateway       TEXT NOT NULL,
    reserved      TEXT NOT NULL DEFAULT '{}',
    labels        TEXT NOT NULL DEFAULT '{}',
    created_at_ms BIGINT NOT NULL,
    -- The last address handed out dynamically (next-free continues after it).
    cursor        BLOB,
    -- Bumped by every change to the pool's allocations, so a process can tell whether what it
    -- holds in memory is current.
    generation    BIGINT NOT NULL DEFAULT 0,
    allocated     BIGINT NOT NULL DEFAULT 0
    -- cursor, generation and allocated are kept by the triggers below, in the same statement
    -- as the change itself: they cannot drift, and an allocation costs one statement.
);
CREATE INDEX ipam_pools_space ON ipam_pools (address_space, subnet_start);

CREATE TABLE ipam_allocations (
    pool_id       TEXT NOT NULL REFERENCES ipam_pools (id) ON DELETE CASCADE,
    address       BLOB NOT NULL,
    owner         TEXT NOT NULL,
    -- 1 when handed out by next-free (it then moves the pool's cursor), 0 when asked for.
    dynamic       BIGINT NOT NULL DEFAULT 0,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (pool_id, address),
    UNIQUE (owner, pool_id)
) WITHOUT ROWID;

CREATE TRIGGER ipam_allocations_insert AFTER INSERT ON ipam_allocations
BEGIN
    UPDATE ipam_pools
       SET allocated = allocated + 1,
           generation = generation + 1,
           cursor = CASE WHEN NEW.dynamic = 1 THEN NEW.address ELSE cursor END
     WHERE id = NEW.pool_id;
END;

CREATE TRIGGER ipam_allocations_delete AFTER DELETE ON ipam_allocations
BEGIN
    UPDATE ipam_pools
       SET allocated = allocated - 1,
           generation = generation + 1
     WHERE id = OLD.pool_id;
END;
