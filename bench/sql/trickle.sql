-- bench/sql/trickle.sql (pgbench -R rate, PGOPTIONS selects the tenant): a trickling tenant
-- starts one run of :workflow per transaction.
SELECT cloacina.execute(:workflow);
