-- bench/sql/raw_model_setup.sql — the raw queue with cloacina's writes: the same rows a one-task
-- run writes (the task claimed and completed, the run ended, an event for each of the three
-- state changes), hand-written with no fencing, locking order, context merge or API around
-- them. Filled with :jobs one-task runs (psql -v jobs=N).
DROP SCHEMA IF EXISTS bench_model CASCADE;
CREATE SCHEMA bench_model;
CREATE TABLE bench_model.runs (
    id          bigserial PRIMARY KEY,
    status      text NOT NULL DEFAULT 'running',
    input       jsonb NOT NULL DEFAULT '{}',
    final       jsonb,
    finished_at timestamptz);
CREATE TABLE bench_model.jobs (
    id          bigserial PRIMARY KEY,
    run_id      bigint NOT NULL,
    status      text NOT NULL DEFAULT 'ready',
    ready_at    timestamptz NOT NULL DEFAULT now(),
    fence       bigint NOT NULL DEFAULT 0,
    lease_until timestamptz,
    output      jsonb,
    finished_at timestamptz) WITH (fillfactor = 80);
CREATE INDEX jobs_ready ON bench_model.jobs (ready_at, id) WHERE status = 'ready';
CREATE TABLE bench_model.events (
    id        bigserial,
    run_id    bigint NOT NULL,
    job_id    bigint,
    to_status text NOT NULL,
    at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, id));
INSERT INTO bench_model.runs (id) SELECT g FROM generate_series(1, :jobs) g;
INSERT INTO bench_model.jobs (run_id) SELECT g FROM generate_series(1, :jobs) g;
SELECT setval('bench_model.runs_id_seq', :jobs);
VACUUM ANALYZE bench_model.runs;
VACUUM ANALYZE bench_model.jobs;
