-- One-time join tokens (HostService.CreateJoinToken): only the SHA-256 (hex) of the secret is
-- kept. A token is spent (used_at_ms set) by the first JoinHost that succeeds with it; spent and
-- expired rows are deleted when new tokens are made.
CREATE TABLE gateway_join_tokens (
    hash          TEXT PRIMARY KEY,
    -- Empty: any host name; else the only name it joins.
    host_name     TEXT NOT NULL DEFAULT '',
    created_at_ms BIGINT NOT NULL,
    created_by    TEXT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    used_at_ms    BIGINT,
    used_by_host  TEXT NOT NULL DEFAULT ''
);

-- The last removal of each host name (HostService.RemoveHost): certificates for the host issued
-- before it are refused.
CREATE TABLE gateway_host_removals (
    name          TEXT PRIMARY KEY,
    removed_at_ms BIGINT NOT NULL
);
