-- bench/sql/api_claim_complete_batch.sql (pgbench -M prepared -D batch=N, PGOPTIONS selects the
-- tenant): up to :batch tasks per cloacina.claim, all completed by one cloacina.complete_batch.
SELECT coalesce(array_agg(task_id), '{}') AS ids, coalesce(array_agg(fence), '{}') AS fences, count(*) AS n
  FROM cloacina.claim('bench', NULL, :batch)
\gset
\if :n > 0
SELECT count(*) FROM cloacina.complete_batch(:ids::bigint[], :fences::bigint[],
                                             array_fill('{}'::jsonb, ARRAY[:n::int]));
\endif
