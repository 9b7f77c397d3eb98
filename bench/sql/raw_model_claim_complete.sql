-- bench/sql/raw_model_claim_complete.sql (pgbench -M prepared -D batch=N): claim+complete of
-- one-task runs with cloacina's writes per task (two task updates, one run update, three
-- events) in the fewest statements: two round trips, two commits, like the raw queue.
WITH picked AS (
    SELECT id FROM bench_model.jobs
     WHERE status = 'ready' AND ready_at <= now()
     ORDER BY ready_at, id
     LIMIT :batch
       FOR UPDATE SKIP LOCKED),
claimed AS (
    UPDATE bench_model.jobs j
       SET status = 'running', fence = j.fence + 1, lease_until = now() + interval '30 seconds'
      FROM picked WHERE j.id = picked.id
    RETURNING j.id, j.run_id),
logged AS (
    INSERT INTO bench_model.events (run_id, job_id, to_status)
    SELECT run_id, id, 'running' FROM claimed)
SELECT coalesce(array_agg(id), '{}') AS ids, count(*) AS n FROM claimed
\gset
\if :n > 0
WITH done AS (
    UPDATE bench_model.jobs
       SET status = 'completed', output = '{}', finished_at = now(), lease_until = NULL
     WHERE id = ANY (:ids::bigint[])
    RETURNING id, run_id, output),
logged AS (
    INSERT INTO bench_model.events (run_id, job_id, to_status)
    SELECT run_id, id, 'completed' FROM done),
ended AS (
    UPDATE bench_model.runs r
       SET status = 'completed', final = r.input || d.output, finished_at = now()
      FROM done d WHERE r.id = d.run_id
    RETURNING r.id)
INSERT INTO bench_model.events (run_id, to_status) SELECT id, 'completed' FROM ended;
\endif
