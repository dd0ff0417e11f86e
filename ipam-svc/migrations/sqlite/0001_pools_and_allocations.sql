-- Pools and allocations. Addresses are 16-byte big-endian blobs so that byte order is numeric
-- order. The primary key (pool_id, address) is what makes a duplicate allocation impossible;
-- UNIQUE (pool_id, owner) makes an owner hold at most one address per pool.
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
);
CREATE INDEX ipam_pools_space ON ipam_pools (address_space, subnet_start);

CREATE TABLE ipam_allocations (
    pool_id       TEXT NOT NULL REFERENCES ipam_pools (id) ON DELETE CASCADE,
    address       BLOB NOT NULL,
    owner         TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (pool_id, address),
    UNIQUE (pool_id, owner)
);
CREATE INDEX ipam_allocations_owner ON ipam_allocations (owner);
