-- bench/sql/raw_claim_complete.sql (pgbench -M prepared -D batch=N): one round trip claims up to
-- :batch jobs with SKIP LOCKED, a second marks them done: the floor for any PostgreSQL job queue.
WITH picked AS (
    SELECT id FROM bench_raw.jobs
     WHERE status = 'ready' AND run_at <= now()
     ORDER BY run_at, id
     LIMIT :batch
       FOR UPDATE SKIP LOCKED),
claimed AS (
    UPDATE bench_raw.jobs j
       SET status = 'running', attempts = j.attempts + 1, locked_by = 'bench', locked_at = now()
      FROM picked WHERE j.id = picked.id
    RETURNING j.id, j.payload)
SELECT coalesce(array_agg(id), '{}') AS ids, count(*) AS n FROM claimed
\gset
\if :n > 0
UPDATE bench_raw.jobs SET status = 'done', finished_at = now(), output = '{}'
 WHERE id = ANY (:ids::bigint[]);
\endif
