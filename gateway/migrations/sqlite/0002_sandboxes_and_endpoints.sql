-- Sandboxes (a container's network namespace) and endpoints (one attachment of a sandbox to a
-- network). UNIQUE (sandbox_id, network_id): a sandbox is on a network at most once, whatever
-- replica is asked; the foreign keys keep a network with endpoints from being deleted.
CREATE TABLE gateway_sandboxes (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    host          TEXT NOT NULL,
    record        TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);

CREATE TABLE gateway_endpoints (
    id            TEXT PRIMARY KEY,
    sandbox_id    TEXT NOT NULL REFERENCES gateway_sandboxes (id),
    network_id    TEXT NOT NULL REFERENCES gateway_networks (id),
    record        TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    UNIQUE (sandbox_id, network_id)
);
CREATE INDEX gateway_endpoints_network ON gateway_endpoints (network_id);
