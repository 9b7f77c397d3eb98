-- bench/sql/layout_claim_complete_queue.sql (bench/layout-ab, pgbench -D batch=N): up to N tasks claimed, then completed with their runs, layout 'queue'.
WITH picked AS (SELECT task_id FROM bench_layout.queue WHERE state = 'ready' AND kind = 'handler' AND ready_at <= now()
                 ORDER BY priority DESC, ready_at, task_id LIMIT :batch FOR UPDATE SKIP LOCKED),
queued AS (UPDATE bench_layout.queue q SET state = 'running', lease_until = now() + interval '30s'
            WHERE q.task_id = ANY (ARRAY(SELECT task_id FROM picked)) RETURNING q.task_id),
claimed AS (UPDATE bench_layout.tasks t SET status = 'running', attempt = t.attempt + 1, fence = t.fence + 1, lease = '30s',
                   lease_until = now() + interval '30s', worker = 'w', started_at = now()
             WHERE t.id = ANY (ARRAY(SELECT task_id FROM queued)) RETURNING t.id, t.fence)
SELECT coalesce(array_agg(id), '{}') AS ids, coalesce(array_agg(fence), '{}') AS fences, count(*) AS n FROM claimed
\gset
\if :n > 0
WITH done AS (UPDATE bench_layout.tasks t SET status = 'completed', output = '{}', finished_at = now(), lease_until = NULL, error = NULL
               FROM unnest(:ids::bigint[], :fences::bigint[]) AS i(id, fence)
              WHERE t.id = i.id AND t.fence = i.fence AND t.status = 'running' RETURNING t.id, t.execution_id),
gone AS (DELETE FROM bench_layout.queue q USING done WHERE q.task_id = done.id)
UPDATE bench_layout.runs r SET status = 'completed', final_context = r.input_context, pending_tasks = 0, finished_at = now()
  FROM done WHERE r.id = done.execution_id;
\endif
