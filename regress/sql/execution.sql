-- The execution engine driven by hand, as a worker would: claims, completions, the context
-- merge, retries, failure and skip propagation, trigger rules and conditions, stale fences,
-- cancel, pause, resume, idempotency, priorities, delays, batches and the events log.
CREATE FUNCTION pg_temp.try(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;

SELECT schema_name FROM cloacina.create_tenant('tenant_ex');
SET search_path = tenant_ex;

-- A three-level diamond: a -> (b, c) -> d.
SELECT cloacina.register_workflow('{"name": "diamond", "tasks": [
    {"id": "a"},
    {"id": "b", "dependencies": ["a"]},
    {"id": "c", "dependencies": ["a"]},
    {"id": "d", "dependencies": ["b", "c"]}]}') IS NOT NULL AS registered;
SELECT cloacina.execute('diamond', '{"input": 1, "shared": "input", "nested": {"keep": true}}') AS run \gset

SELECT task, attempt, fence, context FROM cloacina.claim('worker-1', NULL, 10);
SELECT cloacina.complete(id, fence, '{"a": "done", "nested": {"from_a": 1}}')
  FROM tenant_ex.tasks WHERE execution_id = :run AND task = 'a';
-- b and c are ready together, both with a's output merged into the input
SELECT task, attempt, context FROM cloacina.claim('worker-1', NULL, 10) ORDER BY task;
SELECT cloacina.complete(id, fence, '{"b": 2, "shared": "b", "nested": {"who": "b"}}')
  FROM tenant_ex.tasks WHERE execution_id = :run AND task = 'b';
-- d still waits for c
SELECT count(*) AS claimable FROM cloacina.claim('worker-1', NULL, 10);
SELECT cloacina.complete(id, fence, '{"c": 3, "shared": "c", "nested": {"who": "c"}}')
  FROM tenant_ex.tasks WHERE execution_id = :run AND task = 'c';
-- d gets b then c merged in declaration order: c's "shared" and "who" win
SELECT task, context FROM cloacina.claim('worker-1');
-- a completion with a stale fence is refused and changes nothing
SELECT cloacina.complete(id, fence - 1, '{"stale": true}') AS stale_accepted
  FROM tenant_ex.tasks WHERE execution_id = :run AND task = 'd';
SELECT status, output FROM tenant_ex.tasks WHERE execution_id = :run AND task = 'd';
SELECT cloacina.complete(id, fence, '{"d": 4}') FROM tenant_ex.tasks WHERE execution_id = :run AND task = 'd';
-- each (task, attempt) completes at most once
SELECT cloacina.complete(id, fence, '{"again": true}') AS second_completion
  FROM tenant_ex.tasks WHERE execution_id = :run AND task = 'd';
SELECT * FROM cloacina.wait(:run, '5 seconds');
SELECT * FROM cloacina.execution_status(:run);
SELECT task, status, attempt, output FROM cloacina.task_results(:run);
-- exactly one event per state change
SELECT task, attempt, from_status, to_status FROM tenant_ex.execution_events
 WHERE execution_id = :run ORDER BY id;

-- Retries: 3 attempts with exponential backoff from 200 ms; the failed attempts' output is
-- discarded; then the run fails, all_success dependents are skipped (and skips propagate),
-- and a one_failed handler runs.
SELECT cloacina.register_workflow('{"name": "flaky", "tasks": [
    {"id": "fetch", "retry": {"attempts": 3, "backoff": "exponential", "delay_ms": 200, "max_delay_ms": 300}},
    {"id": "transform", "dependencies": ["fetch"]},
    {"id": "load", "dependencies": ["transform"]},
    {"id": "alert", "dependencies": ["fetch"], "trigger_rule": "one_failed"}]}') IS NOT NULL AS registered;
SELECT cloacina.execute('flaky') AS flaky \gset
CREATE TEMP TABLE retry_log (attempt int, delay interval);
DO $$
DECLARE
    c record;
    deadline timestamptz;
BEGIN
    FOR i IN 1 .. 3 LOOP
        -- wait (bounded) for the retry to come due, as a polling worker would
        deadline := clock_timestamp() + interval '10 seconds';
        -- (each claim in its own transaction: now() is the transaction's start time)
        LOOP
            SELECT * INTO c FROM cloacina.claim('worker-2', ARRAY['flaky.fetch']);
            COMMIT;
            EXIT WHEN c.task_id IS NOT NULL OR clock_timestamp() > deadline;
            PERFORM pg_sleep(0.02);
        END LOOP;
        PERFORM cloacina.fail(c.task_id, c.fence, format('timeout talking to upstream (attempt %s)', c.attempt));
        INSERT INTO retry_log
            SELECT c.attempt, t.ready_at - now()
              FROM tenant_ex.tasks t WHERE t.id = c.task_id AND t.status = 'ready';
        COMMIT;
    END LOOP;
END $$;
-- attempt 1 waits 200 ms, attempt 2 waits 400 ms capped at 300 ms; attempt 3 ends it
SELECT attempt, delay FROM retry_log ORDER BY attempt;
SELECT t.attempt, t.status, t.error FROM tenant_ex.tasks t
 WHERE t.execution_id = :flaky AND t.task = 'fetch';
SELECT e.attempt, e.from_status, e.to_status FROM tenant_ex.execution_events e
 WHERE e.execution_id = :flaky AND e.task = 'fetch' ORDER BY e.id;
SELECT task, status FROM cloacina.task_results(:flaky);
SELECT task, context FROM cloacina.claim('worker-2');
SELECT cloacina.complete(id, fence, '{"alerted": true}') FROM tenant_ex.tasks WHERE execution_id = :flaky AND task = 'alert';
SELECT * FROM cloacina.execution_status(:flaky);

-- Retry delays follow the policy: fixed, linear, exponential, capped, and jitter in [d/2, d].
SELECT b, a, extract(epoch FROM cloacina._retry_delay(a, b, 100, 1000, false, 0.5)) * 1000 AS ms
  FROM unnest(ARRAY['fixed', 'linear', 'exponential']) b, generate_series(1, 5) a ORDER BY b, a;
SELECT c AS chance, extract(epoch FROM cloacina._retry_delay(3, 'exponential', 100, 1000, true, c)) * 1000 AS ms
  FROM unnest(ARRAY[0, 0.5, 0.999]) c;

-- A failure draws its jitter: 20 retries of a 100 s delay land apart, within [50 s, 100 s]
-- (in a tenant of their own: their runs stay unfinished).
SELECT schema_name FROM cloacina.create_tenant('tenant_jitter');
SET search_path = tenant_jitter;
SELECT cloacina.register_workflow('{"name": "jittery", "tasks": [
    {"id": "j", "retry": {"attempts": 2, "delay_ms": 100000, "backoff": "fixed", "jitter": true}}]}') IS NOT NULL AS registered;
SELECT count(cloacina.execute('jittery')) FROM generate_series(1, 20);
BEGIN;
SELECT count(*) FILTER (WHERE f.accepted) AS failed
  FROM (SELECT array_agg(task_id) AS ids, array_agg(fence) AS fences
          FROM cloacina.claim('worker-j', ARRAY['jittery.j'], 20)) c,
       cloacina.fail_batch(c.ids, c.fences, array_fill('flaky'::text, ARRAY[20]),
                            array_fill(true, ARRAY[20])) f;
SELECT count(DISTINCT ready_at) > 1 AS spread,
       bool_and(ready_at - now() BETWEEN interval '50 s' AND interval '100 s') AS within_bounds
  FROM tenant_jitter.tasks;
COMMIT;
SET search_path = tenant_ex;
SELECT cloacina.remove_tenant('tenant_jitter', cancel_unfinished => true);

-- A non-retryable failure ends the task at once.
SELECT cloacina.register_workflow('{"name": "fragile", "tasks": [
    {"id": "only", "retry": {"attempts": 5, "delay_ms": 0}}]}') IS NOT NULL AS registered;
SELECT cloacina.execute('fragile') AS fragile \gset
SELECT cloacina.fail(task_id, fence, 'bad input', false) FROM cloacina.claim('worker-3', ARRAY['fragile.only']);
SELECT * FROM cloacina.execution_status(:fragile);

-- Trigger rules and context conditions.
SELECT cloacina.register_workflow('{"name": "rules", "tasks": [
    {"id": "ok"},
    {"id": "bad"},
    {"id": "all_success", "dependencies": ["ok", "bad"]},
    {"id": "all_done", "dependencies": ["ok", "bad"], "trigger_rule": "all_done"},
    {"id": "one_success", "dependencies": ["ok", "bad"], "trigger_rule": "one_success"},
    {"id": "one_failed", "dependencies": ["ok", "bad"], "trigger_rule": "one_failed"},
    {"id": "always", "dependencies": ["all_success"], "trigger_rule": "always"},
    {"id": "big_order", "dependencies": ["ok"], "when": {"key": "order.total", "op": "gt", "value": 100}},
    {"id": "small_order", "dependencies": ["ok"], "when": {"key": "order.total", "op": "lt", "value": 100}},
    {"id": "vip", "dependencies": ["ok"], "when": {"key": "tags", "op": "contains", "value": "vip"}},
    {"id": "no_coupon", "dependencies": ["ok"], "when": {"key": "coupon", "op": "not_exists"}},
    {"id": "gold", "when": {"key": "tier", "op": "equals", "value": "gold"}},
    {"id": "not_gold", "when": {"key": "tier", "op": "not_equals", "value": "gold"}}]}') IS NOT NULL AS registered;
SELECT cloacina.execute('rules', '{"order": {"total": 250}, "tags": ["new", "vip"], "tier": "silver"}') AS rules \gset
SELECT cloacina.complete(task_id, fence, '{}') FROM cloacina.claim('w', ARRAY['rules.ok']);
SELECT cloacina.fail(task_id, fence, 'nope', false) FROM cloacina.claim('w', ARRAY['rules.bad']);
SELECT task, status FROM cloacina.task_results(:rules) ORDER BY task;
SELECT count(*) FROM (SELECT cloacina.complete(task_id, fence, '{}') FROM cloacina.claim('w', NULL, 100)) x;
SELECT task, status FROM cloacina.task_results(:rules) ORDER BY task;
SELECT status, error FROM cloacina.execution_status(:rules);
SELECT task, detail FROM tenant_ex.execution_events
 WHERE execution_id = :rules AND to_status = 'skipped' ORDER BY task;

-- Cancel: waiting and ready tasks become cancelled, the running one learns it by heartbeat,
-- its completion is refused, and the run never flips back.
SELECT cloacina.execute('diamond') AS doomed \gset
SELECT task_id AS doomed_task, fence AS doomed_fence FROM cloacina.claim('w', ARRAY['diamond.a']) \gset
SELECT cloacina.heartbeat(:doomed_task, :doomed_fence);
SELECT cloacina.heartbeat(:doomed_task, :doomed_fence + 1);
SELECT cloacina.execute('diamond') AS survivor \gset
SELECT task_id AS survivor_task, fence AS survivor_fence FROM cloacina.claim('w', ARRAY['diamond.a']) \gset
-- heartbeat_batch: one answer per element in the order given (ids out of order, a stale fence,
-- an unknown task, a NULL, a repeat), and the lease of a renewed task moves on.
UPDATE tenant_ex.tasks SET lease_until = now() - interval '1 hour' WHERE id = :survivor_task;
SELECT CASE task_id WHEN :survivor_task THEN 'survivor' WHEN :doomed_task THEN 'doomed'
            ELSE coalesce(task_id::text, 'NULL') END AS task, status
  FROM cloacina.heartbeat_batch(
    ARRAY[:survivor_task, :doomed_task, :doomed_task, 987654321, NULL, :survivor_task],
    ARRAY[:survivor_fence, :doomed_fence, :doomed_fence + 1, 1, 1, :survivor_fence]);
SELECT lease_until > now() AS survivor_lease_renewed FROM tenant_ex.tasks WHERE id = :survivor_task;
SELECT * FROM cloacina.heartbeat_batch(ARRAY[]::bigint[], ARRAY[]::bigint[]);
SELECT * FROM cloacina.heartbeat_batch(ARRAY[:survivor_task], ARRAY[]::bigint[]);
SELECT cloacina.cancel(:doomed);
SELECT cloacina.heartbeat(:doomed_task, :doomed_fence);
SELECT task_id = :doomed_task AS doomed, status
  FROM cloacina.heartbeat_batch(ARRAY[:doomed_task, :survivor_task], ARRAY[:doomed_fence, :survivor_fence]);
SELECT cloacina.cancel(:survivor);
SELECT cloacina.complete(:doomed_task, :doomed_fence, '{}') AS accepted_after_cancel;
SELECT cloacina.cancel(:doomed) AS cancel_again, cloacina.pause(:doomed) AS pause_cancelled,
       cloacina.resume(:doomed) AS resume_cancelled;
SELECT * FROM cloacina.wait(:doomed, '5 seconds');
SELECT task, status FROM cloacina.task_results(:doomed);

-- Pause holds everything back until resume; running work may finish meanwhile.
SELECT cloacina.execute('diamond') AS held \gset
SELECT task_id AS held_a, fence AS held_a_fence FROM cloacina.claim('w', ARRAY['diamond.a']) \gset
SELECT cloacina.pause(:held), cloacina.pause(:held) AS pause_twice;
SELECT cloacina.complete(:held_a, :held_a_fence, '{}') AS finished_while_paused;
SELECT count(*) AS claimable_while_paused FROM cloacina.claim('w', NULL, 10);
SELECT status FROM cloacina.execution_status(:held);
SELECT cloacina.resume(:held);
SELECT task FROM cloacina.claim('w', NULL, 10) ORDER BY task;
SELECT cloacina.cancel(:held);

-- Idempotency keys, priorities, delayed runs and options validation.
SELECT cloacina.register_workflow('{"name": "single", "tasks": [{"id": "step"}]}') IS NOT NULL AS registered;
SELECT cloacina.execute('single', '{}', '{"idempotency_key": "order-42"}') =
       cloacina.execute('single', '{"other": 1}', '{"idempotency_key": "order-42"}') AS same_run;
SELECT cloacina.execute('single', '{"n": "low"}', '{"priority": -5}') AS low \gset
SELECT cloacina.execute('single', '{"n": "high"}', '{"priority": 7}') AS high \gset
SELECT cloacina.execute('single', '{"n": "later"}', '{"run_at": "2999-01-01T00:00:00Z"}') AS later \gset
SELECT task, context FROM cloacina.claim('w', ARRAY['single.step'], 10);
SELECT pg_temp.try($$SELECT cloacina.execute('single', '[]')$$);
SELECT pg_temp.try($$SELECT cloacina.execute('single', '"text"')$$);
SELECT pg_temp.try($$SELECT cloacina.execute('single', '{}', '{"priorty": 1}')$$);
SELECT pg_temp.try($$SELECT cloacina.execute('single', '{}', '{"priority": "high"}')$$);
SELECT pg_temp.try($$SELECT cloacina.execute('single', '{}', '{"run_at": "tomorrow-ish"}')$$);
SELECT pg_temp.try($$SELECT cloacina.execute('single', '{}', '{"idempotency_key": ""}')$$);
SELECT pg_temp.try($$SELECT cloacina.execute('missing_workflow')$$);
SELECT pg_temp.try($$SELECT * FROM cloacina.execution_status(999999)$$);
SELECT pg_temp.try($$SELECT * FROM cloacina.wait(999999, '1 second')$$);
SELECT pg_temp.try($$SELECT cloacina.cancel(999999)$$);
SELECT pg_temp.try($$SELECT * FROM cloacina.claim('w', NULL, 0)$$);
SELECT pg_temp.try($$SELECT * FROM cloacina.claim('w', NULL, 1, '-1 second')$$);
SELECT pg_temp.try($$SELECT cloacina.complete(1, 1, '[1]')$$);
SELECT * FROM cloacina.wait(:later, '10 milliseconds');
-- A run timeout: the background worker fails a run still unfinished after timeout_ms and
-- cancels its unfinished tasks.
SELECT cloacina.execute('single', '{"n": "slow"}', '{"timeout_ms": 200}') AS timed \gset
SELECT status, error FROM cloacina.wait(:timed, '30 seconds');
SELECT task, status FROM cloacina.task_results(:timed);
SELECT pg_temp.try($$SELECT cloacina.execute('single', '{}', '{"timeout_ms": 0}')$$);

-- Batches: execute_batch, complete_batch and fail_batch.
SELECT ordinal, execution_id IS NOT NULL AS started
  FROM cloacina.execute_batch('single', ARRAY['{"i": 1}', '{"i": 2}', '{"i": 3}', '{"i": 4}']::jsonb[]);
CREATE TEMP TABLE claimed AS SELECT * FROM cloacina.claim('w', ARRAY['single.step'], 10);
SELECT context FROM claimed ORDER BY task_id;
SELECT accepted, count(*) FROM cloacina.complete_batch(
    (SELECT array_agg(task_id ORDER BY task_id) FROM claimed WHERE (context ->> 'i')::int <= 3),
    (SELECT array_agg(fence ORDER BY task_id) FROM claimed WHERE (context ->> 'i')::int <= 3),
    (SELECT array_agg(jsonb_build_object('done', context -> 'i') ORDER BY task_id)
       FROM claimed WHERE (context ->> 'i')::int <= 3))
 GROUP BY accepted;
SELECT accepted FROM cloacina.fail_batch(
    (SELECT array_agg(task_id) FROM claimed WHERE (context ->> 'i')::int = 4),
    (SELECT array_agg(fence) FROM claimed WHERE (context ->> 'i')::int = 4),
    ARRAY['batch failure'], ARRAY[false]);
-- a second submission of the same batch changes nothing
SELECT accepted, count(*) FROM cloacina.complete_batch(
    (SELECT array_agg(task_id) FROM claimed), (SELECT array_agg(fence) FROM claimed),
    (SELECT array_agg('{}'::jsonb) FROM claimed))
 GROUP BY accepted;
SELECT e.input_context, e.status, e.final_context, e.error
  FROM tenant_ex.executions e JOIN claimed c ON c.execution_id = e.id ORDER BY e.id;
SELECT pg_temp.try($$SELECT * FROM cloacina.complete_batch(ARRAY[1, 2], ARRAY[1], ARRAY['{}']::jsonb[])$$);
-- fail_batch in one call: a retry (back to ready at once, delay 0), a final failure whose
-- dependent is skipped and whose run fails, and an unknown task; then the same batch again,
-- stale now, changes nothing.
SELECT cloacina.register_workflow('{"name": "pair", "tasks": [
    {"id": "first", "retry": {"attempts": 2, "delay_ms": 0}},
    {"id": "second", "dependencies": ["first"]}]}') IS NOT NULL AS registered;
SELECT cloacina.execute('pair') AS pair_retried \gset
SELECT cloacina.execute('pair') AS pair_failed \gset
CREATE TEMP TABLE pair_claimed AS
    SELECT task_id, fence, execution_id = :pair_failed AS final FROM cloacina.claim('w', ARRAY['pair.first'], 10);
SELECT coalesce(p.final::text, f.task_id::text) AS task, f.accepted
  FROM cloacina.fail_batch(
      (SELECT array_agg(task_id ORDER BY final DESC) FROM pair_claimed) || 987654321::bigint,
      (SELECT array_agg(fence ORDER BY final DESC) FROM pair_claimed) || 1::bigint,
      ARRAY['broken', 'flaky', 'ghost'], ARRAY[false, true, true]) WITH ORDINALITY AS f(task_id, accepted, ord)
  LEFT JOIN pair_claimed p ON p.task_id = f.task_id
 ORDER BY f.ord;
SELECT execution_id = :pair_failed AS final, task, status, attempt, error, finished_at IS NOT NULL AS finished
  FROM tenant_ex.tasks WHERE execution_id IN (:pair_retried, :pair_failed) ORDER BY execution_id, task;
SELECT execution_id = :pair_failed AS final, task, attempt, from_status, to_status,
       regexp_replace(detail, 'retry at .*:', 'retry at <time>:') AS detail
  FROM tenant_ex.execution_events WHERE execution_id IN (:pair_retried, :pair_failed) ORDER BY execution_id, id;
SELECT status, error FROM cloacina.execution_status(:pair_failed);
SELECT accepted FROM cloacina.fail_batch((SELECT array_agg(task_id) FROM pair_claimed),
    (SELECT array_agg(fence) FROM pair_claimed), ARRAY['again', 'again'], ARRAY[false, false]);
SELECT task_id IS NOT NULL AS retry_claimable, attempt FROM cloacina.claim('w', ARRAY['pair.first']);
SELECT cloacina.cancel(:pair_retried);

-- One batch completes the roots of three runs: their dependents are decided together, each by
-- its own run's context (a skip cascades in one run only), and each run ends on its own.
SELECT cloacina.register_workflow('{"name": "branching", "tasks": [
    {"id": "root"},
    {"id": "big", "dependencies": ["root"], "when": {"key": "total", "op": "gt", "value": 100}},
    {"id": "after_big", "dependencies": ["big"]},
    {"id": "also", "dependencies": ["root"]},
    {"id": "last", "dependencies": ["after_big", "also"], "trigger_rule": "all_done"}]}') IS NOT NULL AS registered;
CREATE TEMP TABLE branching AS
SELECT ordinal, execution_id FROM cloacina.execute_batch('branching',
    ARRAY['{"total": 50}', '{"total": 150}', '{"total": 500}']::jsonb[]);
CREATE TEMP TABLE roots AS SELECT * FROM cloacina.claim('w', ARRAY['branching.root'], 10);
SELECT accepted, count(*) FROM cloacina.complete_batch(
    (SELECT array_agg(task_id ORDER BY task_id DESC) FROM roots),
    (SELECT array_agg(fence ORDER BY task_id DESC) FROM roots),
    (SELECT array_agg(jsonb_build_object('root_of', context -> 'total') ORDER BY task_id DESC) FROM roots))
 GROUP BY accepted;
SELECT b.ordinal, t.task, t.status, t.pending_deps, t.input
  FROM branching b JOIN tenant_ex.tasks t ON t.execution_id = b.execution_id
 WHERE t.task <> 'root' ORDER BY b.ordinal, t.topo_index;
SELECT b.ordinal, e.pending_tasks FROM branching b JOIN tenant_ex.executions e ON e.id = b.execution_id
 ORDER BY b.ordinal;
-- the rest, level by level, each level in one batch across the runs
CREATE TEMP TABLE level AS SELECT * FROM cloacina.claim('w', ARRAY['branching.big', 'branching.also'], 10);
SELECT count(*) FILTER (WHERE accepted) FROM cloacina.complete_batch(
    (SELECT array_agg(task_id) FROM level), (SELECT array_agg(fence) FROM level),
    (SELECT array_agg(jsonb_build_object(task, true)) FROM level));
DELETE FROM level;
INSERT INTO level SELECT * FROM cloacina.claim('w', ARRAY['branching.after_big'], 10);
SELECT count(*) FILTER (WHERE accepted) FROM cloacina.complete_batch(
    (SELECT array_agg(task_id) FROM level), (SELECT array_agg(fence) FROM level),
    (SELECT array_agg(jsonb_build_object(task, true)) FROM level));
DELETE FROM level;
INSERT INTO level SELECT * FROM cloacina.claim('w', ARRAY['branching.last'], 10);
SELECT count(*) FILTER (WHERE accepted) FROM cloacina.complete_batch(
    (SELECT array_agg(task_id) FROM level), (SELECT array_agg(fence) FROM level),
    (SELECT array_agg(jsonb_build_object(task, true)) FROM level));
SELECT b.ordinal, s.status, s.final_context
  FROM branching b, cloacina.execution_status(b.execution_id) s ORDER BY b.ordinal;
SELECT b.ordinal, ev.task, ev.from_status, ev.to_status, ev.detail
  FROM branching b JOIN tenant_ex.execution_events ev ON ev.execution_id = b.execution_id
 WHERE ev.to_status IN ('ready', 'skipped') ORDER BY b.ordinal, ev.id;
SELECT pg_temp.try($$SELECT * FROM cloacina.execute_batch('single', ARRAY['{}']::jsonb[], '{"idempotency_key": "k"}')$$);
SELECT status, count(*) FROM tenant_ex.executions GROUP BY status ORDER BY status;

-- A suspended tenant's work is not claimed.
SELECT cloacina.execute('single') AS parked \gset
RESET search_path;
SELECT cloacina.suspend_tenant('tenant_ex');
SET search_path = tenant_ex;
SELECT count(*) AS claimed_while_suspended FROM cloacina.claim('w', ARRAY['single.step']);
RESET search_path;
SELECT cloacina.resume_tenant('tenant_ex');
SET search_path = tenant_ex;
SELECT count(*) AS claimed_after_resume FROM cloacina.claim('w', ARRAY['single.step']);

-- Every run's events agree with its state: one creation event per run, the run's status is
-- the to_status of its last run event, and every task's is that of its last task event.
SELECT count(*) AS runs_disagreeing
  FROM tenant_ex.executions x
 WHERE (SELECT count(*) FROM tenant_ex.execution_events e
         WHERE e.execution_id = x.id AND e.task IS NULL AND e.from_status IS NULL) <> 1
    OR x.status <> (SELECT e.to_status FROM tenant_ex.execution_events e
                     WHERE e.execution_id = x.id AND e.task IS NULL ORDER BY e.id DESC LIMIT 1);
SELECT count(*) AS tasks_disagreeing
  FROM tenant_ex.tasks t
 WHERE t.status <> coalesce((SELECT e.to_status FROM tenant_ex.execution_events e
                              WHERE e.execution_id = t.execution_id AND e.task = t.task
                              ORDER BY e.id DESC LIMIT 1), t.status);

-- cloacina.history = exceptions: the expected path (start, made ready, claimed, completed, run
-- completed) writes no events, the rows hold it; a retry and a failed run still do.
SET cloacina.history = exceptions;
SELECT cloacina.register_workflow('{"name": "quiet", "tasks": [
    {"id": "first"},
    {"id": "second", "dependencies": ["first"], "retry": {"attempts": 2, "delay_ms": 0}}]}') IS NOT NULL AS registered;
SELECT cloacina.execute('quiet', '{"in": 1}') AS quiet_run \gset
SELECT cloacina.complete(task_id, fence, '{"first": 1}') FROM cloacina.claim('w', ARRAY['quiet.first']);
SELECT cloacina.fail(task_id, fence, 'flaky') FROM cloacina.claim('w', ARRAY['quiet.second']);
SELECT cloacina.complete(task_id, fence, '{"second": 2}') FROM cloacina.claim('w', ARRAY['quiet.second']);
SELECT task, attempt, from_status, to_status, detail ~ 'attempt 1 failed, retry at .*: flaky' AS retry_detail
  FROM tenant_ex.execution_events WHERE execution_id = :quiet_run ORDER BY id;
SELECT status, final_context, finished_at IS NOT NULL AS finished FROM tenant_ex.executions WHERE id = :quiet_run;
SELECT task, status, attempt, worker, started_at IS NOT NULL AS started, finished_at IS NOT NULL AS finished
  FROM tenant_ex.tasks WHERE execution_id = :quiet_run ORDER BY task;
SELECT cloacina.execute('quiet') AS quiet_failed \gset
SELECT cloacina.fail(task_id, fence, 'broken', retryable => false) FROM cloacina.claim('w', ARRAY['quiet.first']);
SELECT task, from_status, to_status FROM tenant_ex.execution_events WHERE execution_id = :quiet_failed ORDER BY id;
RESET cloacina.history;
-- the operator's setting: a role that is not a superuser (a tenant's) cannot change it
CREATE ROLE history_tenant_like;
SET ROLE history_tenant_like;
SELECT pg_temp.try('SET cloacina.history = exceptions') AS non_superuser_sets_history;
SELECT pg_temp.try('SET cloacina.max_claim_wait = ''1h''') AS non_superuser_sets_claim_wait;
RESET ROLE;
DROP ROLE history_tenant_like;

-- A claim that waits for work: a ready task is claimed at once; with none, it returns nothing
-- once its wait, cut to cloacina.max_claim_wait, is over. A negative wait is an error, and a
-- transaction with one snapshot cannot wait (it would never see new work).
SELECT cloacina.execute('single', '{"waited": false}') IS NOT NULL AS started;
SELECT task, context FROM cloacina.claim('w', ARRAY['single.step'], 5, '30 seconds', '1 hour');
SET cloacina.max_claim_wait = '20ms';
SELECT count(*) AS claimed_after_waiting FROM cloacina.claim('w', ARRAY['single.step'], 1, '30 seconds', '1 hour');
RESET cloacina.max_claim_wait;
SELECT pg_temp.try($$SELECT * FROM cloacina.claim('w', NULL, 1, '30 seconds', '-1 second')$$);
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT pg_temp.try($$SELECT * FROM cloacina.claim('w', NULL, 1, '30 seconds', '1 second')$$);
ROLLBACK;

-- cancel everything left so that the tenant can be removed
SELECT count(*) FILTER (WHERE cloacina.cancel(id)) AS cancelled
  FROM tenant_ex.executions WHERE status IN ('running', 'paused');
RESET search_path;
SELECT cloacina.remove_tenant('tenant_ex');
