-- Sagas in flight. A saga records its intent here before its first step and removes it in the
-- same transaction as its final change, so a row left behind is a saga that was cut short:
-- the sweep undoes it (connect, create) or completes it (disconnect, delete).
CREATE TABLE gateway_operations (
    id            TEXT PRIMARY KEY,
    kind          TEXT NOT NULL,
    record        TEXT NOT NULL,
    started_at_ms BIGINT NOT NULL
);
