-- The per-host change feed: the revision of the last change to each host's desired state (its
-- sandboxes, their endpoints, the networks those use, its registration). An agent reconciles
-- when its own host's revision moves, not on every change of the cluster. Hosts with sandboxes
-- start at the current revision, so an agent that applied before the upgrade is not behind.
CREATE TABLE gateway_host_revisions (
    host     TEXT PRIMARY KEY,
    revision BIGINT NOT NULL
);
INSERT INTO gateway_host_revisions (host, revision)
    SELECT DISTINCT host, (SELECT revision FROM gateway_revision WHERE id = 1) FROM gateway_sandboxes;
-- The sandboxes of one host, found without reading the others.
CREATE INDEX gateway_sandboxes_host ON gateway_sandboxes (host);
