-- On SQLite this version drops the per-row counter triggers (the one writing process keeps the
-- counters itself, once per pool per batch). On Postgres the trigger stays: several replicas,
-- possibly of different versions during a rolling upgrade, write the same tables, and the
-- trigger is what keeps every one of them bumping the generation the others compare against.
-- Nothing changes here; the version exists so that both backends have the same migrations.
SELECT 1;
