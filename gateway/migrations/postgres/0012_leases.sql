-- Leases of work that must run on one gateway replica at a time (the background work: the
-- saga sweep, host-down detection, expiry). The holder renews its lease before it expires;
-- another replica takes it over only once it has expired, and every takeover increments the
-- token: the fencing token that the holder's every write checks in its own transaction, so a
-- holder that was paused past its lease (and does not know it) has its writes refused.
CREATE TABLE gateway_leases (
    name          TEXT PRIMARY KEY,
    holder        TEXT NOT NULL,
    token         BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL
);
