-- sql/src/engine.sql: the execution engine: start, claim, heartbeat, complete, fail, reap, cancel, pause, resume.

------------------------------------------------------------------------------------------------
-- 5. The execution engine's internal functions. Each takes the tenant schema as its first
--    argument (the public functions of section 6 pass current_schema(); the task path's C
--    functions read it themselves). All of them run as the caller.
--
--    Locking order, to stay free of deadlocks: a run's row in executions first, then its tasks.
--    Every state change of a run (complete, fail, cancel, pause, resume) takes the run's row
--    lock first; claim and heartbeat touch only task rows.
------------------------------------------------------------------------------------------------

-- Does a task's context condition ({"key", "op", "value"}) hold for its input context?
-- "key" may be a dotted path into nested objects.
CREATE FUNCTION cloacina._condition_holds(cond jsonb, ctx jsonb) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v    jsonb := ctx #> string_to_array(cond ->> 'key', '.');
    want jsonb := cond -> 'value';
BEGIN
    CASE cond ->> 'op'
    WHEN 'exists' THEN RETURN v IS NOT NULL;
    WHEN 'not_exists' THEN RETURN v IS NULL;
    WHEN 'equals' THEN RETURN v IS NOT NULL AND v = want;
    WHEN 'not_equals' THEN RETURN v IS NULL OR v <> want;
    WHEN 'gt', 'lt' THEN
        IF jsonb_typeof(v) = 'number' AND jsonb_typeof(want) = 'number' THEN
            RETURN CASE cond ->> 'op' WHEN 'gt' THEN v::numeric > want::numeric ELSE v::numeric < want::numeric END;
        ELSIF jsonb_typeof(v) = 'string' AND jsonb_typeof(want) = 'string' THEN
            RETURN CASE cond ->> 'op' WHEN 'gt' THEN (v #>> '{}') > (want #>> '{}') COLLATE "C"
                                      ELSE (v #>> '{}') < (want #>> '{}') COLLATE "C" END;
        END IF;
        RETURN false;
    WHEN 'contains' THEN
        IF jsonb_typeof(v) = 'string' AND jsonb_typeof(want) = 'string' THEN
            RETURN strpos(v #>> '{}', want #>> '{}') > 0;
        ELSIF jsonb_typeof(v) = 'array' THEN
            RETURN v @> jsonb_build_array(want) OR (jsonb_typeof(want) = 'array' AND v @> want);
        ELSIF jsonb_typeof(v) = 'object' AND jsonb_typeof(want) = 'object' THEN
            RETURN v @> want;
        END IF;
        RETURN false;
    END CASE;
END
$$;

-- Delay before retry number "attempt" + 1. Exponential doubles from delay_ms; jitter keeps a
-- point in the upper half of the delay ("equal jitter"), chosen by "chance" (a random number in
-- [0, 1) the caller draws: the statement that calls this must not be volatile on Citus), so
-- retries spread but never come sooner than half the planned delay.
CREATE FUNCTION cloacina._retry_delay(attempt int, backoff text, delay_ms bigint,
                                      max_delay_ms bigint, jitter boolean, chance float8) RETURNS interval
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT make_interval(secs => d * CASE WHEN jitter THEN 0.5 + chance * 0.5 ELSE 1 END / 1000.0)
    FROM (SELECT least(max_delay_ms::float8,
                       CASE backoff
                           WHEN 'fixed' THEN delay_ms::float8
                           WHEN 'linear' THEN delay_ms::float8 * attempt
                           ELSE delay_ms::float8 * power(2, least(attempt - 1, 60))
                       END) AS d) x
$$;

-- A wake-up hint for the tenant's workers, on the tenant's private channel.
CREATE FUNCTION cloacina._hint(s text, payload text) RETURNS void
AS 'MODULE_PATHNAME', 'cloacina_hint_fn' LANGUAGE C;

CREATE FUNCTION cloacina._event(s text, eid bigint, task text, attempt int,
                                from_status text, to_status text, detail text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    EXECUTE format('INSERT INTO %I.execution_events (execution_id, task, attempt, from_status, to_status, detail) '
                   'VALUES ($1, $2, $3, $4, $5, $6)', s)
        USING eid, task, attempt, from_status, to_status, detail;
END
$$;

-- Locks a run's row (the first lock of every run state change) and returns its status,
-- or raises if the run does not exist.
CREATE FUNCTION cloacina._lock_run(s text, eid bigint) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    st text;
BEGIN
    EXECUTE format('SELECT status FROM %I.executions WHERE id = $1 FOR UPDATE', s) INTO st USING eid;
    IF st IS NULL THEN
        RAISE EXCEPTION 'execution % does not exist', coalesce(eid::text, 'NULL')
            USING ERRCODE = 'undefined_object';
    END IF;
    RETURN st;
END
$$;

-- Ends runs: status (derived from their tasks unless forced), final_context (the input merged
-- with every completed task's output in topological order), one event each, and the waiters'
-- wake-up. The caller holds the runs' row locks.
CREATE FUNCTION cloacina._finalize(s text, eids bigint[], forced_status text DEFAULT NULL,
                                   forced_error text DEFAULT NULL) RETURNS void
AS 'MODULE_PATHNAME', 'cloacina_finalize' LANGUAGE C;

-- After tasks of a run became terminal: counts them down on their dependents; a dependent whose
-- last dependency just ended is evaluated (trigger rule, then context condition) and becomes
-- ready (held as waiting while the run is paused) or skipped, and skips cascade. When no task
-- of the run is left, the run is finalised. All inside the caller's transaction.
CREATE FUNCTION cloacina._propagate(s text, eid bigint, finished text[]) RETURNS void
AS 'MODULE_PATHNAME', 'cloacina_propagate' LANGUAGE C;

-- Starts runs (extension/start.c): one per context in context order, each with its creation event
-- and its tasks; options: priority, idempotency_key (execute only; returns the run that first
-- used the key), run_at, timeout_ms.
CREATE FUNCTION cloacina._execute(s text, workflow text, context jsonb, options jsonb) RETURNS bigint
AS 'MODULE_PATHNAME', 'cloacina_execute' LANGUAGE C;

-- Time-based duty for one tenant (extension/reap.c): running tasks whose lease ran out (the
-- worker vanished) or whose timeout passed, and SQL tasks no pool worker runs any more. Each
-- such attempt fails as a failed attempt does (fail.c), retried at once while attempts are left.
-- The background worker calls this; it is also safe to call by hand. Returns how many it ended.
CREATE FUNCTION cloacina._reap(s text, max_tasks int DEFAULT 1000) RETURNS int
AS 'MODULE_PATHNAME', 'cloacina_reap' LANGUAGE C;

-- Ends runs early, set-based: as "cancelled" by default, or as "failed" with a reason (a run
-- timeout). Runs that already ended are left as they are (a finished run never changes); returns
-- the runs it ended. Their unfinished tasks are cancelled: running handler tasks' workers learn
-- it from heartbeat() and their complete()/fail() are refused; a running SQL task's statement is
-- cancelled when this transaction commits.
CREATE FUNCTION cloacina._cancel_run_ids(s text, eids bigint[], failure text DEFAULT NULL) RETURNS bigint[]
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ended bigint[];
BEGIN
    PERFORM cloacina._require_tenant(s);
    -- the runs' rows first, in id order: the locking order
    EXECUTE format($q$SELECT coalesce(array_agg(id ORDER BY id), '{}') FROM (
                          SELECT id FROM %I.executions WHERE id = ANY ($1) AND status IN ('running', 'paused')
                           ORDER BY id FOR UPDATE) r$q$, s)
        INTO ended USING eids;
    IF cardinality(ended) = 0 THEN
        RETURN ended;
    END IF;
    EXECUTE format($q$SELECT count(cloacina._cancel_sql_tasks(%L, execution_id)) FROM (
                          SELECT DISTINCT execution_id FROM %I.tasks
                           WHERE execution_id = ANY ($1) AND kind = 'sql' AND status = 'running') r$q$, s, s)
        USING ended;
    EXECUTE format($q$
        WITH old AS (SELECT id, status FROM %1$I.tasks
                      WHERE execution_id = ANY ($1) AND status IN ('waiting', 'ready', 'running')
                      ORDER BY id FOR UPDATE),
        cancelled AS (
            UPDATE %1$I.tasks t SET status = 'cancelled', finished_at = now(), lease_until = NULL
              FROM old WHERE t.id = old.id
            RETURNING t.execution_id, t.task, t.attempt, old.status AS from_status)
        INSERT INTO %1$I.execution_events (execution_id, task, attempt, from_status, to_status)
        SELECT execution_id, task, attempt, from_status, 'cancelled' FROM cancelled$q$, s) USING ended;
    IF failure IS NULL THEN
        PERFORM cloacina._finalize(s, ended, 'cancelled');
    ELSE
        PERFORM cloacina._finalize(s, ended, 'failed', failure);
    END IF;
    RETURN ended;
END
$$;

-- Ends one run early (see _cancel_run_ids); false if it had ended, an error if there is none.
CREATE FUNCTION cloacina._cancel(s text, eid bigint, failure text DEFAULT NULL) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF cardinality(cloacina._cancel_run_ids(s, ARRAY[eid], failure)) > 0 THEN
        RETURN true;
    END IF;
    PERFORM cloacina._lock_run(s, eid);  -- raises for a run that does not exist
    RETURN false;  -- already ended; a finished run never changes
END
$$;

-- Cancels every unfinished run of the tenant in one transaction, or those of one workflow, or
-- those in the given states (running, paused); returns how many it cancelled.
CREATE FUNCTION cloacina._cancel_matching(s text, workflow text, statuses text[]) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ids bigint[];
BEGIN
    PERFORM cloacina._require_tenant(s);
    IF statuses IS NULL OR cardinality(statuses) = 0 OR NOT statuses <@ ARRAY['running', 'paused'] THEN
        RAISE EXCEPTION 'statuses must list running and/or paused (got %)', coalesce(statuses::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Only unfinished runs can be cancelled.';
    END IF;
    EXECUTE format('SELECT coalesce(array_agg(id), ''{}'') FROM %I.executions
                     WHERE status = ANY ($1) AND ($2::text IS NULL OR workflow = $2)', s)
        INTO ids USING statuses, workflow;
    RETURN cardinality(cloacina._cancel_run_ids(s, ids));
END
$$;

CREATE FUNCTION cloacina._pause(s text, eid bigint) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM cloacina._require_tenant(s);
    IF cloacina._lock_run(s, eid) <> 'running' THEN
        RETURN false;
    END IF;
    -- Ready tasks are held back as waiting (with no pending dependencies) until resume.
    EXECUTE format($q$
        WITH held AS (
            UPDATE %1$I.tasks SET status = 'waiting'
             WHERE execution_id = $1 AND status = 'ready'
            RETURNING task, attempt),
        logged AS (
            INSERT INTO %1$I.execution_events (execution_id, task, attempt, from_status, to_status, detail)
            SELECT $1, task, attempt, 'ready', 'waiting', 'run paused' FROM held)
        UPDATE %1$I.executions SET status = 'paused' WHERE id = $1$q$, s) USING eid;
    PERFORM cloacina._event(s, eid, NULL, NULL, 'running', 'paused');
    RETURN true;
END
$$;

CREATE FUNCTION cloacina._resume(s text, eid bigint) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    released bigint;
BEGIN
    PERFORM cloacina._require_tenant(s);
    IF cloacina._lock_run(s, eid) <> 'paused' THEN
        RETURN false;
    END IF;
    EXECUTE format($q$
        WITH released AS (
            UPDATE %1$I.tasks SET status = 'ready'
             WHERE execution_id = $1 AND status = 'waiting' AND pending_deps = 0
            RETURNING task, attempt),
        logged AS (
            INSERT INTO %1$I.execution_events (execution_id, task, attempt, from_status, to_status, detail)
            SELECT $1, task, attempt, 'waiting', 'ready', 'run resumed' FROM released),
        run AS (UPDATE %1$I.executions SET status = 'running' WHERE id = $1)
        SELECT count(*) FROM released$q$, s) INTO released USING eid;
    PERFORM cloacina._event(s, eid, NULL, NULL, 'paused', 'running');
    IF released > 0 THEN
        PERFORM cloacina._hint(s, 'ready');
        PERFORM cloacina._due(s, now());  -- any SQL tasks among them: the worker's tick finds them
    END IF;
    RETURN true;
END
$$;

-- Runs an ended run again from where it failed: its failed, skipped and cancelled tasks start
-- over (attempts counted anew, one "retried" event each), its completed tasks keep their
-- outputs, and the run is running again (with a fresh run timeout, if it had one). A task is
-- decided as in a new run: roots by their condition, the others by _propagate as their
-- dependencies end, here by replaying the end of every completed task. Returns how many tasks
-- start over.
CREATE FUNCTION cloacina._retry(s text, eid bigint) RETURNS int
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    st text;
    again int;
    kept text[];
    skipped_roots text[];
    any_ready boolean;
    any_sql boolean;
BEGIN
    PERFORM cloacina._require_tenant(s);
    st := cloacina._lock_run(s, eid);
    IF st IN ('running', 'paused') THEN
        RAISE EXCEPTION 'execution % is still %', eid, st
            USING ERRCODE = 'object_not_in_prerequisite_state', HINT = 'Only an ended run (failed or cancelled) can be retried.';
    ELSIF st = 'completed' THEN
        RAISE EXCEPTION 'execution % completed; there is nothing to retry', eid
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    -- Every task that did not complete starts over, waiting for its dependencies that start over too.
    EXECUTE format($q$
        WITH again AS (
            SELECT id, task, status FROM %1$I.tasks
             WHERE execution_id = $1 AND status IN ('failed', 'skipped', 'cancelled') ORDER BY id FOR UPDATE),
        reset AS (
            UPDATE %1$I.tasks t
               SET status = 'waiting', attempt = 0, error = NULL, output = NULL, input = NULL,
                   pending_deps = cardinality(t.dependencies), ready_at = NULL, lease = NULL,
                   lease_until = NULL, worker = NULL, started_at = NULL, finished_at = NULL
              FROM again a WHERE t.id = a.id
            RETURNING t.id, t.task, a.status AS from_status),
        logged AS (
            INSERT INTO %1$I.execution_events (execution_id, task, attempt, from_status, to_status, detail)
            SELECT $1, task, 0, from_status, 'waiting', 'run retried' FROM reset ORDER BY id)
        SELECT count(*)::int FROM reset$q$, s) INTO again USING eid;
    EXECUTE format('SELECT coalesce(array_agg(task ORDER BY id), ''{}'') FROM %I.tasks
                     WHERE execution_id = $1 AND status = ''completed''', s) INTO kept USING eid;
    -- pending_tasks counts every task _propagate will see end: the kept ones replayed, and those
    -- that start over.
    EXECUTE format($q$UPDATE %I.executions
                         SET status = 'running', error = NULL, final_context = NULL, finished_at = NULL,
                             pending_tasks = $2 + $3,
                             deadline = ($4 + (deadline - run_at)) AT TIME ZONE 'UTC'
                       WHERE id = $1$q$, s)
        USING eid, again, cardinality(kept), now() AT TIME ZONE 'UTC';  -- docs/citus.md, rule 2
    PERFORM cloacina._event(s, eid, NULL, NULL, st, 'running', 'run retried');
    -- Roots that start over: ready, or skipped by their condition, as in a new run.
    EXECUTE format($q$
        WITH decided AS (
            SELECT t.id, e.input_context,
                   CASE WHEN t.condition IS NULL OR cloacina._condition_holds(t.condition, e.input_context)
                        THEN 'ready' ELSE 'skipped' END AS status
              FROM %1$I.tasks t JOIN %1$I.executions e ON e.id = t.execution_id
             WHERE t.execution_id = $1 AND t.status = 'waiting' AND cardinality(t.dependencies) = 0),
        roots AS (
            UPDATE %1$I.tasks t
               SET status = d.status, input = d.input_context, ready_at = $2,
                   finished_at = CASE WHEN d.status = 'skipped' THEN $2 END
              FROM decided d
             WHERE t.id = d.id
            RETURNING t.id, t.task, t.kind, t.status),
        logged AS (
            INSERT INTO %1$I.execution_events (execution_id, task, attempt, from_status, to_status, detail)
            SELECT $1, task, 0, 'waiting', status, CASE WHEN status = 'skipped' THEN 'condition not met' END
              FROM roots ORDER BY id)
        SELECT coalesce(array_agg(task ORDER BY id) FILTER (WHERE status = 'skipped'), '{}'),
               coalesce(bool_or(status = 'ready' AND kind = 'handler'), false),
               coalesce(bool_or(status = 'ready' AND kind = 'sql'), false)
          FROM roots$q$, s) INTO skipped_roots, any_ready, any_sql USING eid, now();
    IF any_ready THEN
        PERFORM cloacina._hint(s, 'ready');
    END IF;
    IF any_sql THEN
        PERFORM cloacina._due(s, now(), true);
    END IF;
    -- The dependents of every ended task are decided, as when those tasks ended.
    PERFORM cloacina._propagate(s, eid, kept || skipped_roots);
    RETURN again;
END
$$;

CREATE FUNCTION cloacina._notify_channel(s text) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    channel text;
BEGIN
    PERFORM cloacina._require_tenant(s);
    EXECUTE format('SELECT notify_channel FROM %I.tenant_settings', s) INTO channel;
    RETURN channel;
END
$$;
