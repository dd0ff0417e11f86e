-- The gateway's desired state. Every mutation takes the next revision from gateway_revision in
-- its own transaction: that row serialises writers, so revisions commit in order and without
-- gaps, and a watcher that reads "after revision N" never misses a change that commits later.
CREATE TABLE gateway_revision (
    id       BIGINT PRIMARY KEY CHECK (id = 1),
    revision BIGINT NOT NULL
);
INSERT INTO gateway_revision (id, revision) VALUES (1, 0);

CREATE TABLE gateway_networks (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    driver        TEXT NOT NULL,
    predefined    BIGINT NOT NULL DEFAULT 0,
    -- The whole record as JSON (network::NetworkRecord).
    record        TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);

-- The event log: each event as published (weft.gateway.v1.Event, protobuf-encoded).
CREATE TABLE gateway_events (
    revision BIGINT PRIMARY KEY,
    payload  BLOB NOT NULL
);

-- Mutations already applied, by request_id, with the answer given, so a retry gets the same one.
CREATE TABLE gateway_requests (
    request_id    TEXT PRIMARY KEY,
    method        TEXT NOT NULL,
    request       BLOB NOT NULL,
    response      BLOB NOT NULL,
    created_at_ms BIGINT NOT NULL
);
