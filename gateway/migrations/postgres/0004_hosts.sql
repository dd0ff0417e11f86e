-- Hosts: machines whose driver-agent registered. The record is the Host message as registered
-- (protobuf-encoded, without state and heartbeat); state and the last heartbeat are columns so
-- that "mark down the hosts whose heartbeat is older than X" is one conditional UPDATE, which
-- exactly one replica wins.
CREATE TABLE gateway_hosts (
    name              TEXT PRIMARY KEY,
    record            BYTEA NOT NULL,
    state             TEXT NOT NULL,
    last_heartbeat_ms BIGINT NOT NULL
);
