-- bench/sql/api_claim_complete1.sql (pgbench -M prepared, PGOPTIONS selects the tenant): one task
-- at a time through the SQL API: cloacina.claim, then cloacina.complete.
SELECT coalesce(min(task_id), 0) AS id, coalesce(min(fence), 0) AS fence, count(*) AS n
  FROM cloacina.claim('bench', NULL, 1)
\gset
\if :n > 0
SELECT cloacina.complete(:id, :fence, '{}');
\endif
