-- bench/sql/raw_setup.sql — the baseline queue: a plain jobs table as a hand-written SKIP LOCKED
-- queue would have it, filled with :jobs ready jobs (psql -v jobs=N).
DROP SCHEMA IF EXISTS bench_raw CASCADE;
CREATE SCHEMA bench_raw;
CREATE TABLE bench_raw.jobs (
    id          bigserial PRIMARY KEY,
    payload     jsonb NOT NULL DEFAULT '{}',
    status      text NOT NULL DEFAULT 'ready',
    run_at      timestamptz NOT NULL DEFAULT now(),
    attempts    int NOT NULL DEFAULT 0,
    locked_by   text,
    locked_at   timestamptz,
    finished_at timestamptz,
    output      jsonb);
CREATE INDEX jobs_ready ON bench_raw.jobs (run_at, id) WHERE status = 'ready';
INSERT INTO bench_raw.jobs (payload) SELECT '{}' FROM generate_series(1, :jobs);
VACUUM ANALYZE bench_raw.jobs;
