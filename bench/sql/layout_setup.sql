-- bench/sql/layout_setup.sql (bench/layout-ab): the task layout of a tenant in plain SQL, without
-- events or API: 'today' (tenant layout 2: the claim-order and lease-expiry indexes on tasks) or
-- 'queue' (a narrow table of ready and running tasks holds them; tasks keeps its two keys only, so
-- that its updates can be HOT). psql -v layout=today|queue.
DROP SCHEMA IF EXISTS bench_layout CASCADE;
CREATE SCHEMA bench_layout;
CREATE TABLE bench_layout.runs (id bigserial PRIMARY KEY, workflow text NOT NULL, workflow_version text NOT NULL DEFAULT 'abcdef0123456789',
  status text NOT NULL, input_context jsonb NOT NULL, final_context jsonb, error text, priority int NOT NULL DEFAULT 0,
  idempotency_key text, run_at timestamptz NOT NULL DEFAULT now(), deadline timestamptz, task_count int NOT NULL,
  pending_tasks int NOT NULL, created_at timestamptz NOT NULL DEFAULT now(), finished_at timestamptz);
CREATE INDEX ON bench_layout.runs (created_at, id) WHERE status IN ('running', 'paused');
CREATE INDEX ON bench_layout.runs (finished_at) WHERE finished_at IS NOT NULL;
CREATE TABLE bench_layout.tasks (id bigserial PRIMARY KEY, execution_id bigint NOT NULL, workflow text NOT NULL, task text NOT NULL,
  position int NOT NULL DEFAULT 0, topo_index int NOT NULL DEFAULT 0, kind text NOT NULL DEFAULT 'handler', sql text,
  dependencies text[] NOT NULL DEFAULT '{}', dependents text[] NOT NULL DEFAULT '{}', pending_deps int NOT NULL DEFAULT 0,
  trigger_rule text NOT NULL DEFAULT 'all_success', condition jsonb, max_attempts int NOT NULL DEFAULT 3,
  backoff text NOT NULL DEFAULT 'exponential', delay_ms bigint NOT NULL DEFAULT 1000, max_delay_ms bigint NOT NULL DEFAULT 60000,
  jitter bool NOT NULL DEFAULT true, timeout_ms bigint, priority int NOT NULL DEFAULT 0, status text NOT NULL,
  attempt int NOT NULL DEFAULT 0, fence bigint NOT NULL DEFAULT 0, ready_at timestamptz, lease interval, lease_until timestamptz,
  worker text, input jsonb, output jsonb, error text, started_at timestamptz, finished_at timestamptz,
  UNIQUE (execution_id, task)) WITH (fillfactor = 80);
SELECT :'layout' = 'today' AS is_today \gset
\if :is_today
CREATE INDEX ON bench_layout.tasks (priority DESC, ready_at, id) WHERE status = 'ready' AND kind = 'handler';
CREATE INDEX ON bench_layout.tasks (priority DESC, ready_at, id) WHERE status = 'ready' AND kind = 'sql';
CREATE INDEX ON bench_layout.tasks (lease_until) WHERE status = 'running';
\else
CREATE TABLE bench_layout.queue (task_id bigint PRIMARY KEY, kind text NOT NULL, priority int NOT NULL, ready_at timestamptz NOT NULL,
  state text NOT NULL, lease_until timestamptz) WITH (fillfactor = 80);
CREATE INDEX ON bench_layout.queue (priority DESC, ready_at, task_id) WHERE state = 'ready' AND kind = 'handler';
CREATE INDEX ON bench_layout.queue (priority DESC, ready_at, task_id) WHERE state = 'ready' AND kind = 'sql';
CREATE INDEX ON bench_layout.queue (lease_until) WHERE state = 'running';
\endif
