-- Published ports, one row per mapping beside the sandbox's record, so that placing a new
-- sandbox's ports reads only the mappings that overlap the ports it asks for (by index), not
-- every sandbox of the host. `first_port`..`last_port` is the mapping's host port range.
CREATE TABLE gateway_ports (
    sandbox_id TEXT NOT NULL REFERENCES gateway_sandboxes (id),
    host       TEXT NOT NULL,
    first_port BIGINT NOT NULL,
    last_port  BIGINT NOT NULL,
    record     TEXT NOT NULL
);
CREATE INDEX gateway_ports_host ON gateway_ports (host, first_port);
CREATE INDEX gateway_ports_sandbox ON gateway_ports (sandbox_id);
INSERT INTO gateway_ports (sandbox_id, host, first_port, last_port, record)
    SELECT s.id, s.host,
           json_extract(p.value, '$.host_port'),
           json_extract(p.value, '$.host_port') + max(json_extract(p.value, '$.range'), 1) - 1,
           p.value
    FROM gateway_sandboxes s, json_each(s.record, '$.port_mappings') p;

-- The sandbox whose namespace a `container:<id>` sandbox shares, so that deleting a sandbox
-- finds the ones sharing its namespace by index.
ALTER TABLE gateway_sandboxes ADD COLUMN shares TEXT NOT NULL DEFAULT '';
UPDATE gateway_sandboxes SET shares = substr(json_extract(record, '$.network_mode'), 11)
    WHERE json_extract(record, '$.network_mode') LIKE 'container:%';
CREATE INDEX gateway_sandboxes_shares ON gateway_sandboxes (shares);
