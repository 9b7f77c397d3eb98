-- bench/sql/layout_execute_queue.sql (bench/layout-ab, pgbench -D batch=N): N one-task runs submitted, layout 'queue'.
WITH r AS (INSERT INTO bench_layout.runs (workflow, status, input_context, task_count, pending_tasks)
           SELECT 'bench_one', 'running', '{}', 1, 1 FROM generate_series(1, :batch) RETURNING id),
t AS (INSERT INTO bench_layout.tasks (execution_id, workflow, task, status, ready_at, input)
      SELECT id, 'bench_one', 't', 'ready', now(), '{}' FROM r RETURNING id, kind, priority, ready_at)
INSERT INTO bench_layout.queue (task_id, kind, priority, ready_at, state) SELECT id, kind, priority, ready_at, 'ready' FROM t;
