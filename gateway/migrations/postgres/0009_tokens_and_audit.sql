-- Bearer tokens of the public API: only their SHA-256 (hex) is kept. A revoked token keeps its
-- row (for `token ls`) with revoked_at_ms set; its name can then be given to a new token.
CREATE TABLE gateway_tokens (
    name          TEXT PRIMARY KEY,
    role          TEXT NOT NULL,
    -- For the agent and dns roles: the host the token speaks for; empty otherwise.
    host          TEXT NOT NULL DEFAULT '',
    hash          TEXT NOT NULL UNIQUE,
    created_at_ms BIGINT NOT NULL,
    created_by    TEXT NOT NULL,
    revoked_at_ms BIGINT
);

-- One row per mutation accepted or refused: who, what, on which object, with which outcome.
CREATE TABLE gateway_audit (
    id         BIGSERIAL PRIMARY KEY,
    time_ms    BIGINT NOT NULL,
    identity   TEXT NOT NULL,
    role       TEXT NOT NULL,
    rpc        TEXT NOT NULL,
    object     TEXT NOT NULL,
    request_id TEXT NOT NULL,
    outcome    TEXT NOT NULL,
    message    TEXT NOT NULL
);
