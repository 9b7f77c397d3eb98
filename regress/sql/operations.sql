-- Operating it: retry of an ended run from its failure point, unregister_workflow, a completed
-- task without the error of an earlier attempt, schedules (macros, pause and resume, overlap,
-- the schedules view), the figures of tenant_stats()/workflow_stats() and the DOT pictures.
-- (Schedules firing with overlap "skip" and the server log lines: regress/t/107_operations.pl.)
CREATE FUNCTION pg_temp.try(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;
-- Claims every ready task named t of the current tenant and completes it with "output" plus
-- the input it saw (or fails it, not retryable, when output is NULL).
CREATE FUNCTION pg_temp.work(t text, output jsonb) RETURNS int LANGUAGE plpgsql AS $$
DECLARE
    c record;
    n int := 0;
BEGIN
    FOR c IN SELECT * FROM cloacina.claim('op-worker', ARRAY[t], 100) LOOP
        IF output IS NULL THEN
            PERFORM cloacina.fail(c.task_id, c.fence, 'boom in ' || c.task, false);
        ELSE
            PERFORM cloacina.complete(c.task_id, c.fence, output || jsonb_build_object(c.task || '_saw', c.context));
        END IF;
        n := n + 1;
    END LOOP;
    RETURN n;
END $$;

SELECT schema_name FROM cloacina.create_tenant('tenant_ops', 'ops_user');
SELECT schema_name FROM cloacina.create_tenant('tenant_ops_other');
SET search_path = tenant_ops;

-- A chain one -> two -> three, and "cleanup" (one_failed) after two.
SELECT cloacina.register_workflow('{"name": "chain", "tasks": [
    {"id": "one"},
    {"id": "two", "dependencies": ["one"]},
    {"id": "three", "dependencies": ["two"]},
    {"id": "cleanup", "dependencies": ["two"], "trigger_rule": "one_failed"}]}') IS NOT NULL AS registered;
SELECT cloacina.execute('chain', '{"n": 1}') AS run \gset
SELECT pg_temp.work('chain.one', '{"one": "first"}') AS one_done;
SELECT pg_temp.work('chain.two', NULL) AS two_failed;
SELECT pg_temp.work('chain.cleanup', '{"cleaned": true}') AS cleanup_done;
SELECT status, error FROM cloacina.execution_status(:run);
SELECT task, status, attempt, error FROM cloacina.task_results(:run);
SELECT cloacina.run_dot(:run);

-- Retry: two and three start over with attempts counted anew; one and cleanup keep their outputs.
SELECT cloacina.retry(:run) AS tasks_again;
SELECT status, error, final_context FROM cloacina.execution_status(:run);
SELECT task, status, attempt, error FROM cloacina.task_results(:run);
SELECT pg_temp.try(format('SELECT cloacina.retry(%s)', :run)) AS retry_while_running;
SELECT pg_temp.work('chain.one', '{"one": "again?"}') AS one_claimed_again;
SELECT pg_temp.work('chain.two', '{"two": "second time"}') AS two_done;
SELECT pg_temp.work('chain.three', '{"three": "done"}') AS three_done;
SELECT status, final_context ->> 'one' AS one, final_context ->> 'two' AS two,
       final_context -> 'two_saw' ->> 'one' AS two_saw_one, final_context ->> 'cleaned' AS cleaned
  FROM cloacina.execution_status(:run);
SELECT task, status, attempt FROM cloacina.task_results(:run);
-- one "retried" event per task that started over, and one for the run
SELECT task, attempt, from_status, to_status, detail FROM tenant_ops.execution_events
 WHERE execution_id = :run AND id > (SELECT min(id) FROM tenant_ops.execution_events
                                      WHERE execution_id = :run AND detail = 'run retried')
                                - 1
 ORDER BY id;
SELECT cloacina.run_dot(:run);
SELECT pg_temp.try(format('SELECT cloacina.retry(%s)', :run)) AS retry_completed;
SELECT pg_temp.try('SELECT cloacina.retry(999999)') AS retry_missing;

-- A cancelled run retried from the start; a root skipped by its condition stays skipped.
SELECT cloacina.register_workflow('{"name": "gated", "tasks": [
    {"id": "go"},
    {"id": "never", "when": {"key": "flag", "op": "exists"}},
    {"id": "after", "dependencies": ["go"]}]}') IS NOT NULL AS registered;
SELECT cloacina.execute('gated') AS gated \gset
SELECT cloacina.cancel(:gated);
SELECT cloacina.retry(:gated) AS tasks_again;
SELECT task, status, attempt FROM cloacina.task_results(:gated);
SELECT pg_temp.work('gated.go', '{}') + pg_temp.work('gated.after', '{}') AS done;
SELECT status FROM cloacina.execution_status(:gated);

-- A run timeout starts afresh on retry.
SELECT cloacina.execute('gated', '{}', '{"timeout_ms": 60000}') AS timed \gset
SELECT cloacina.cancel(:timed);
UPDATE tenant_ops.executions SET deadline = now() - interval '1 second', run_at = now() - interval '61 seconds' WHERE id = :timed;
SELECT cloacina.retry(:timed) AS tasks_again;
SELECT deadline > now() + interval '50 seconds' AS fresh_deadline FROM tenant_ops.executions WHERE id = :timed;
SELECT cloacina.cancel(:timed);

-- A task that succeeds on its second attempt carries no error; the events keep the first one.
SELECT cloacina.register_workflow('{"name": "flaky", "tasks": [{"id": "f", "retry": {"attempts": 2, "delay_ms": 0}}]}') IS NOT NULL AS registered;
SELECT cloacina.execute('flaky') AS flaky \gset
SELECT cloacina.fail(task_id, fence, 'first attempt broke') FROM cloacina.claim('w', ARRAY['flaky.f']);
SELECT cloacina.complete(task_id, fence, '{"ok": true}') FROM cloacina.claim('w', ARRAY['flaky.f']);
SELECT task, status, attempt, error FROM cloacina.task_results(:flaky);
SELECT attempt, to_status, detail LIKE '%first attempt broke%' AS has_error FROM tenant_ops.execution_events
 WHERE execution_id = :flaky AND task = 'f' AND to_status IN ('ready', 'completed') AND from_status = 'running' ORDER BY id;

-- unregister_workflow: refused while a schedule starts it; runs go on without the definition.
SELECT cloacina.execute('chain') AS orphan \gset
SELECT cloacina.schedule('chain-nightly', 'chain', '@daily') > 0 AS scheduled;
SELECT pg_temp.try($$SELECT cloacina.unregister_workflow('chain')$$) AS with_schedule;
SELECT cloacina.unschedule('chain-nightly');
SELECT cloacina.unregister_workflow('chain') AS removed, cloacina.unregister_workflow('chain') AS removed_again;
SELECT name FROM cloacina.workflows ORDER BY 1;
SELECT pg_temp.work('chain.one', '{}') + pg_temp.work('chain.two', '{}') + pg_temp.work('chain.three', '{}') AS orphan_tasks_done;
SELECT status FROM cloacina.execution_status(:orphan);
SELECT pg_temp.try($$SELECT cloacina.execute('chain')$$) AS execute_unregistered;

-- Schedules: @ macros, overlap, pause and resume, the schedules view.
SELECT m, cloacina._cron_parse(m) = cloacina._cron_parse(e) AS same_as
  FROM (VALUES ('@hourly', '0 * * * *'), ('@daily', '0 0 * * *'), ('@midnight', '0 0 * * *'),
               ('@weekly', '0 0 * * 0'), ('@monthly', '0 0 1 * *'), ('@yearly', '0 0 1 1 *'),
               ('@annually', '0 0 1 1 *'), (' @HOURLY ', '0 * * * *')) v(m, e);
SELECT pg_temp.try($$SELECT cloacina._cron_parse('@reboot')$$) AS reboot;
SELECT pg_temp.try($$SELECT cloacina._cron_parse('@every 5m')$$) AS every;
BEGIN;  -- one now() for the schedule and the check of its next slot
SELECT cloacina.schedule('hourly', 'gated', '@hourly', 'UTC', '{}', 'skip', 'skip') > 0 AS scheduled;
SELECT cloacina.schedule('yearly', 'gated', '0 0 1 1 *') > 0 AS scheduled;
SELECT pg_temp.try($$SELECT cloacina.schedule('bad', 'gated', '@daily', 'UTC', '{}', 'skip', 'queue')$$) AS bad_overlap;
SELECT name, cron, overlap, paused, next_run_at = date_trunc('hour', now()) + interval '1 hour' AS next_is_top_of_hour,
       last_slot, last_status
  FROM cloacina.schedules ORDER BY name;
COMMIT;
SELECT cloacina.pause_schedule('hourly') AS paused, cloacina.pause_schedule('hourly') AS paused_again;
SELECT name, paused, next_run_at FROM cloacina.schedules WHERE name = 'hourly';
SELECT next_run_at FROM tenant_ops.schedules WHERE name = 'hourly';
-- replacing a paused schedule keeps it paused
SELECT cloacina.schedule('hourly', 'gated', '@daily', 'UTC', '{}', 'skip', 'allow') > 0 AS replaced;
SELECT name, cron, overlap, paused, next_run_at FROM cloacina.schedules WHERE name = 'hourly';
SELECT cloacina.resume_schedule('hourly') AS resumed, cloacina.resume_schedule('hourly') AS resumed_again;
SELECT name, paused, next_run_at = date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' + interval '1 day' AS next_is_midnight
  FROM cloacina.schedules WHERE name = 'hourly';
SELECT pg_temp.try($$SELECT cloacina.pause_schedule('missing')$$) AS pause_missing;
SELECT cloacina.unschedule('hourly'), cloacina.unschedule('yearly');

-- Figures: one task of "gated" ready for a minute and one running; the runs that ended in the
-- window (two of chain, one of flaky, one of gated completed; one of gated cancelled).
SELECT cloacina.execute('gated') AS g1 \gset
SELECT cloacina.execute('gated') AS g2 \gset
-- the claim takes the oldest (g1's); g2's has waited a minute. An UPDATE of the tenant's own
-- tables moves the tasks below the tenant's claim floor, where claims find them at the floor's
-- next rescan (within a second, extension/claim_floor.c); this claim reads from the start.
SET cloacina.claim_floors = off;
UPDATE tenant_ops.tasks SET ready_at = now() - CASE execution_id WHEN :g1 THEN interval '120 seconds' ELSE interval '60 seconds' END
 WHERE execution_id IN (:g1, :g2) AND task = 'go';
SELECT count(*) AS claimed FROM cloacina.claim('w', ARRAY['gated.go'], 1);
RESET cloacina.claim_floors;
SELECT workflow, ready_tasks, round(oldest_ready_seconds) >= 60 AS oldest_a_minute, running_tasks, active_runs,
       completed_runs, failed_runs, cancelled_runs, task_p50_ms >= 0 AS has_p50, task_p99_ms >= task_p50_ms AS p99_ge_p50
  FROM cloacina.workflow_stats() WHERE schema_name = 'tenant_ops' ORDER BY workflow;
SELECT schema_name, ready_tasks, running_tasks, active_runs, completed_runs, failed_runs, cancelled_runs
  FROM cloacina.tenant_stats() WHERE schema_name LIKE 'tenant_ops%';
SELECT pg_temp.try($$SELECT * FROM cloacina.tenant_stats('0 seconds')$$) AS zero_window;
-- Reading the figures keeps no lock on tenant tables (thousands of tenants fit one query).
BEGIN;
SELECT count(*) AS tenants FROM cloacina.tenant_stats() WHERE schema_name LIKE 'tenant_ops%';
SELECT count(*) AS tenants FROM cloacina.tenants WHERE schema_name LIKE 'tenant_ops%';
SELECT count(*) AS tenant_locks_held FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
 WHERE l.pid = pg_backend_pid() AND c.relnamespace::regnamespace::text LIKE 'tenant_ops%';
COMMIT;
-- a tenant role sees its own line only; the admin sees every tenant
RESET search_path;
SET ROLE ops_user;
SELECT schema_name, ready_tasks FROM cloacina.tenant_stats();
SELECT count(*) AS other_tenants_rows FROM cloacina.workflow_stats() WHERE schema_name <> 'tenant_ops';
RESET ROLE;
CREATE ROLE ops_admin LOGIN IN ROLE cloacina_admin;
SET ROLE ops_admin;
SELECT schema_name, ready_tasks, active_runs FROM cloacina.tenant_stats() WHERE schema_name LIKE 'tenant_ops%' ORDER BY 1;
-- The scheduler's backlog: every tenant is tracked; an admin sees it, a tenant does not.
SELECT tracked_tenants >= 2 AS tracks_tenants, due_tenants >= 0 AS due_counted,
       (oldest_due_seconds IS NULL) = (due_tenants = 0) AS wait_only_when_due
  FROM cloacina.scheduler_status();
RESET ROLE;
SET ROLE ops_user;
SELECT pg_temp.try('SELECT * FROM cloacina.scheduler_status()') AS tenant_scheduler_status;
RESET ROLE;
DROP ROLE ops_admin;

-- Pictures: a workflow's DAG, with trigger rules on the edges and SQL tasks as cylinders.
SET search_path = tenant_ops;
SELECT cloacina.register_workflow('{"name": "report", "tasks": [
    {"id": "extract", "kind": "sql", "sql": "SELECT 1"},
    {"id": "render", "dependencies": ["extract"]},
    {"id": "alert", "dependencies": ["extract", "render"], "trigger_rule": "one_failed"}]}') IS NOT NULL AS registered;
SELECT cloacina.workflow_dot('report');
SELECT pg_temp.try($$SELECT cloacina.workflow_dot('nope')$$) AS dot_missing;
SELECT pg_temp.try($$SELECT cloacina.run_dot(999999)$$) AS run_dot_missing;

-- States and kinds are constrained: a tenant writing its own tables cannot invent one.
SET ROLE ops_user;
SELECT pg_temp.try($$UPDATE tenant_ops.tasks SET status = 'bogus'$$) AS bogus_task_status;
SELECT pg_temp.try($$UPDATE tenant_ops.executions SET status = 'done'$$) AS bogus_run_status;
SELECT pg_temp.try($$UPDATE tenant_ops.tasks SET kind = 'python'$$) AS bogus_kind;
RESET ROLE;

-- A tenant still at an older table layout gets a clear error from the schedule functions.
RESET search_path;
UPDATE cloacina.tenant SET layout_version = 1 WHERE schema_name = 'tenant_ops';
SET search_path = tenant_ops;
SELECT pg_temp.try($$SELECT * FROM cloacina.schedules$$) AS old_layout;
RESET search_path;
UPDATE cloacina.tenant SET layout_version = cloacina._tenant_layout() WHERE schema_name = 'tenant_ops';

-- A backend's caches keep the tables of at most cloacina.cached_tenants tenants (each holds
-- a dozen indexes): reading 40 tenants with a bound of 5 keeps few, without a bound all of them.
SELECT count(*) AS probe_tenants FROM generate_series(1, 40) g, cloacina.create_tenant('cache_probe_' || g);
SET cloacina.cached_tenants = 5;
SELECT count(*) AS read FROM cloacina.tenant_stats() WHERE schema_name LIKE 'cache_probe%';
SELECT count(*) < 200 AS bounded FROM pg_backend_memory_contexts WHERE name = 'index info';
SET cloacina.cached_tenants = 0;
SELECT count(*) AS read FROM cloacina.tenant_stats() WHERE schema_name LIKE 'cache_probe%';
SELECT count(*) >= 440 AS unbounded FROM pg_backend_memory_contexts WHERE name = 'index info';
RESET cloacina.cached_tenants;
SELECT count(*) AS removed FROM generate_series(1, 40) g, cloacina.remove_tenant('cache_probe_' || g);
-- A tenant cannot lift the bound for its own sessions.
SET ROLE ops_user;
SELECT pg_temp.try('SET cloacina.cached_tenants = 0') AS tenant_sets_cached_tenants;
RESET ROLE;

-- The background worker's look at a tenant's ready queues (_ready_queue_times) reads a few
-- index entries per priority; it must agree with reading the whole queue. 300 runs of a handler
-- and a SQL task at 9 priorities, ready times spread over 200 s, some running; rolled back, so
-- no worker sees them.
SELECT schema_name FROM cloacina.create_tenant('tenant_queue', 'queue_user');
SET search_path = tenant_queue;
SELECT cloacina.register_workflow('{"name": "mixed", "tasks": [
    {"id": "h"}, {"id": "q", "kind": "sql", "sql": "SELECT $1"}]}') IS NOT NULL AS registered;
BEGIN;
SELECT count(*) AS runs FROM cloacina.execute_batch('mixed', array_fill('{}'::jsonb, ARRAY[300]));
SELECT setseed(0.16);
UPDATE tenant_queue.tasks SET priority = floor(random() * 9)::int - 4,
                              ready_at = now() + (random() * 200 - 100) * interval '1 second';
UPDATE tenant_queue.tasks SET status = 'running' WHERE id % 7 = 0;
CREATE TEMP VIEW queue_truth AS
    SELECT o AS offset_s,
           (SELECT min(ready_at) FROM tenant_queue.tasks
             WHERE status = 'ready' AND ready_at > now() + o * interval '1 second') AS next_ready,
           EXISTS (SELECT FROM tenant_queue.tasks WHERE status = 'ready' AND kind = 'handler'
                     AND ready_at <= now() + o * interval '1 second'
                     AND ready_at > now() + (o - 10) * interval '1 second') AS came_due,
           EXISTS (SELECT FROM tenant_queue.tasks WHERE status = 'ready' AND kind = 'sql'
                     AND ready_at <= now() + o * interval '1 second') AS sql_due
      FROM generate_series(-110, 110, 10) o;
SELECT count(*) AS instants,
       count(*) FILTER (WHERE q.next_ready IS NOT DISTINCT FROM t.next_ready) AS next_ready_agrees,
       count(*) FILTER (WHERE q.came_due = t.came_due) AS came_due_agrees,
       count(*) FILTER (WHERE q.sql_due = t.sql_due) AS sql_due_agrees,
       count(*) FILTER (WHERE t.next_ready IS NULL) AS none_to_come,
       count(*) FILTER (WHERE t.came_due) AS came_due_true, count(*) FILTER (WHERE t.sql_due) AS sql_due_true
  FROM queue_truth t, cloacina._ready_queue_times('tenant_queue', now() + t.offset_s * interval '1 second') q;
-- Past max_levels priorities (here 3 of 9) the answer is at most a second away: a retry at a
-- priority not looked at is hinted at most a second late.
SELECT count(*) AS instants,
       count(*) FILTER (WHERE q.next_ready > now() + t.offset_s * interval '1 second'
                          AND q.next_ready <= now() + (t.offset_s + 1) * interval '1 second') AS within_a_second
  FROM queue_truth t, cloacina._ready_queue_times('tenant_queue', now() + t.offset_s * interval '1 second', 3) q;
-- A tenant still at layout 1 is walked by its old index's key: the same answers.
UPDATE cloacina.tenant SET layout_version = 1 WHERE schema_name = 'tenant_queue';
SELECT count(*) AS instants,
       count(*) FILTER (WHERE q.next_ready IS NOT DISTINCT FROM t.next_ready AND q.came_due = t.came_due
                          AND q.sql_due = t.sql_due) AS layout_1_agrees
  FROM queue_truth t, cloacina._ready_queue_times('tenant_queue', now() + t.offset_s * interval '1 second') q;
ROLLBACK;
RESET search_path;
SELECT cloacina.remove_tenant('tenant_queue');
-- With 20,000 runs waiting, the look reads a few dozen pages of the tasks table and its
-- indexes, where reading the queue reads them all (the blocks this transaction fetched).
SELECT schema_name FROM cloacina.create_tenant('tenant_backlog');
SET search_path = tenant_backlog;
SELECT cloacina.register_workflow('{"name": "single", "tasks": [{"id": "h"}]}') IS NOT NULL AS registered;
SELECT count(*) AS runs FROM cloacina.execute_batch('single', array_fill('{}'::jsonb, ARRAY[20000]));
-- The blocks this transaction fetched from a table and its indexes.
CREATE FUNCTION pg_temp.blocks_fetched(t regclass) RETURNS bigint LANGUAGE sql AS $$
    SELECT sum(pg_stat_get_xact_blocks_fetched(r))::bigint
      FROM (SELECT t::oid AS r UNION ALL SELECT indexrelid FROM pg_index WHERE indrelid = t) x $$;
BEGIN;
SELECT pg_temp.blocks_fetched('tenant_backlog.tasks') AS before \gset
SELECT next_ready IS NULL AS nothing_to_come, sql_due FROM cloacina._ready_queue_times('tenant_backlog', now());
SELECT pg_temp.blocks_fetched('tenant_backlog.tasks') - :before < 50 AS few_pages,
       pg_relation_size('tenant_backlog.tasks') / 8192 > 300 AS of_many;
COMMIT;
RESET search_path;
SELECT cloacina.remove_tenant('tenant_backlog', cancel_unfinished => true);

-- A tenant holding 20,000 claimed tasks (half with a timeout): the reaper and the tick find
-- what may be over in their own indexes and read a few dozen pages, where reading the running
-- tasks reads them all. Then the ones that are over are found: an expired lease, a timeout.
SELECT schema_name FROM cloacina.create_tenant('tenant_held');
SET search_path = tenant_held;
SELECT cloacina.register_workflow('{"name": "guarded", "tasks": [{"id": "g", "timeout_ms": 3600000}]}') IS NOT NULL AS registered;
SELECT cloacina.register_workflow('{"name": "plain", "tasks": [{"id": "p"}]}') IS NOT NULL AS registered;
SELECT count(*) AS runs FROM cloacina.execute_batch('guarded', array_fill('{}'::jsonb, ARRAY[10000]));
SELECT count(*) AS runs FROM cloacina.execute_batch('plain', array_fill('{}'::jsonb, ARRAY[10000]));
DO $$ BEGIN FOR i IN 1 .. 20 LOOP PERFORM cloacina.claim('holder', NULL, 1000, '1 hour'); END LOOP; END $$;
SELECT count(*) AS held FROM tenant_held.tasks WHERE status = 'running';
-- (Without the claimed tasks' old entries in the claim index, which the tick's look at the ready
-- queue reads once after the queue drained, then in index pages only until vacuum removes them.)
VACUUM tenant_held.tasks;
BEGIN;
SELECT pg_temp.blocks_fetched('tenant_held.tasks') AS before \gset
SELECT cloacina._reap('tenant_held') AS reaped;
SELECT next_due > now() + interval '50 minutes' AS next_due_is_a_lease FROM cloacina._tenant_tick('tenant_held', false, NULL);
SELECT pg_temp.blocks_fetched('tenant_held.tasks') - :before < 100 AS few_pages,
       pg_relation_size('tenant_held.tasks') / 8192 > 300 AS of_many;
COMMIT;
UPDATE tenant_held.tasks SET lease_until = now() - interval '1 second'
 WHERE id = (SELECT min(id) FROM tenant_held.tasks WHERE task = 'p');
UPDATE tenant_held.tasks SET started_at = now() - interval '2 hours'
 WHERE id = (SELECT min(id) FROM tenant_held.tasks WHERE task = 'g');
SELECT cloacina._reap('tenant_held') AS reaped;
SELECT task, status, error FROM tenant_held.tasks WHERE status <> 'running' ORDER BY task;
RESET search_path;
SELECT cloacina.remove_tenant('tenant_held', cancel_unfinished => true);

-- The tick's next lease. tasks_lease_expiry keeps the entries of finished tasks until vacuum,
-- before the live ones (a lease's worth of claims in a busy tenant). _earliest_lease reads at
-- most max_dead of them per call: until it reaches a live lease it answers where it stopped,
-- a time no later than the first live lease, and the next call reads on from there.
SELECT schema_name FROM cloacina.create_tenant('tenant_leases');
SET search_path = tenant_leases;
SELECT cloacina.register_workflow('{"name": "single", "tasks": [{"id": "h"}]}') IS NOT NULL AS registered;
SELECT count(*) AS runs FROM cloacina.execute_batch('single', array_fill('{}'::jsonb, ARRAY[20050]));
DO $$
DECLARE
    ids bigint[];
    fences bigint[];
BEGIN
    FOR i IN 1 .. 20 LOOP
        SELECT array_agg(task_id), array_agg(fence) INTO ids, fences
          FROM cloacina.claim('finisher', NULL, 1000, '1 minute');
        PERFORM count(*) FROM cloacina.complete_batch(ids, fences, array_fill('{}'::jsonb, ARRAY[1000]));
    END LOOP;
END $$;
SELECT count(*) AS held FROM cloacina.claim('holder', NULL, 50, '1 hour');
SELECT count(*) FILTER (WHERE status = 'completed') AS finished, count(*) FILTER (WHERE status = 'running') AS running
  FROM tenant_leases.tasks;
BEGIN;
SELECT pg_temp.blocks_fetched('tenant_leases.tasks') AS before \gset
SELECT cloacina._earliest_lease('tenant_leases', 1000) AS bound \gset
SELECT :'bound'::timestamptz BETWEEN now() AND now() + interval '2 minutes' AS a_finished_lease,
       pg_temp.blocks_fetched('tenant_leases.tasks') - :before < 300 AS few_pages,
       pg_relation_size('tenant_leases.tasks') / 8192 > 1000 AS of_many;
COMMIT;
-- Read on, as the worker would: each answer no earlier than the last, the 20,000 entries read
-- once (21 calls; fewer if the background worker read some of them meanwhile).
CREATE TEMP TABLE lease_answers AS
    WITH RECURSIVE calls(n, answer) AS (
        SELECT 1, :'bound'::timestamptz
      UNION ALL
        SELECT n + 1, cloacina._earliest_lease('tenant_leases', 1000) FROM calls
         WHERE answer < now() + interval '30 minutes' AND n < 100)
    SELECT * FROM calls;
SELECT max(n) <= 25 AS calls,
       bool_and(answer >= prev) AS never_earlier,
       max(answer) = (SELECT min(lease_until) FROM tenant_leases.tasks WHERE status = 'running') AS first_live_lease
  FROM (SELECT n, answer, lag(answer, 1, '-infinity') OVER (ORDER BY n) AS prev FROM lease_answers) x;
-- A lease that ran out (the reaper left it) comes first: tick again at once. With no running
-- task there is no lease.
UPDATE tenant_leases.tasks SET lease_until = '2026-01-01 00:00 UTC'
 WHERE id = (SELECT max(id) FROM tenant_leases.tasks WHERE status = 'running');
SELECT cloacina._earliest_lease('tenant_leases') = '2026-01-01 00:00 UTC' AS expired_first;
-- Without the engine's index (a superuser dropped it) the statement answers the same.
DROP INDEX tenant_leases.tasks_lease_expiry;
SELECT cloacina._earliest_lease('tenant_leases') = '2026-01-01 00:00 UTC' AS without_the_index;
SELECT count(*) FILTER (WHERE cloacina.fail(id, fence, 'released')) AS released
  FROM tenant_leases.tasks WHERE status = 'running';
SELECT cloacina._earliest_lease('tenant_leases') IS NULL AS none_running;
RESET search_path;
SELECT cloacina.remove_tenant('tenant_leases', cancel_unfinished => true);

SELECT cloacina.remove_tenant('tenant_ops', cancel_unfinished => true);
SELECT cloacina.remove_tenant('tenant_ops_other');
