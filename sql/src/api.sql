-- sql/src/api.sql: the public tenant API: the functions a tenant calls, in its current schema.

------------------------------------------------------------------------------------------------
-- 6. Public tenant API. The tenant is the caller's current schema. The SQL wrappers here
--    deliberately have no SET clause (that would hide the caller's schema) and contain nothing
--    but a fully qualified call, so nothing in them resolves through the caller's search_path;
--    the task path's functions are C (extension/*.c, the *_current symbols).
------------------------------------------------------------------------------------------------

CREATE FUNCTION cloacina.register_workflow(definition jsonb) RETURNS text
LANGUAGE sql AS $$ SELECT cloacina._register_workflow(pg_catalog.current_schema(), definition) $$;
COMMENT ON FUNCTION cloacina.register_workflow(jsonb) IS
    'Validates and stores (upsert by name) a workflow definition in the current tenant; returns its version hash';

CREATE FUNCTION cloacina.unregister_workflow(name text) RETURNS boolean
LANGUAGE sql AS $$ SELECT cloacina._unregister_workflow(pg_catalog.current_schema(), name) $$;
COMMENT ON FUNCTION cloacina.unregister_workflow(text) IS
    'Removes a workflow''s definition (its runs go on); refused while schedules start it; false if there was none';

CREATE FUNCTION cloacina._list_workflows(s text)
RETURNS TABLE(name text, version text, description text, task_count int, definition jsonb,
              created_at timestamptz, updated_at timestamptz)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM cloacina._require_tenant(s);
    RETURN QUERY EXECUTE format('SELECT name, version, description, jsonb_array_length(definition -> ''tasks''), '
                                'definition, created_at, updated_at FROM %I.workflows ORDER BY name', s);
END
$$;

CREATE VIEW cloacina.workflows WITH (security_invoker = true) AS
    SELECT * FROM cloacina._list_workflows(pg_catalog.current_schema());
COMMENT ON VIEW cloacina.workflows IS 'The workflows registered in the current tenant';
GRANT SELECT ON cloacina.workflows TO PUBLIC;

CREATE FUNCTION cloacina.execute(workflow text, context jsonb DEFAULT '{}', options jsonb DEFAULT '{}')
RETURNS bigint
AS 'MODULE_PATHNAME', 'cloacina_execute_current' LANGUAGE C;
COMMENT ON FUNCTION cloacina.execute(text, jsonb, jsonb) IS
    'Starts a run of a workflow with an input context; options: priority, idempotency_key, run_at';

CREATE FUNCTION cloacina.execute_batch(workflow text, contexts jsonb[], options jsonb DEFAULT '{}')
RETURNS TABLE(ordinal int, execution_id bigint)
AS 'MODULE_PATHNAME', 'cloacina_execute_batch_current' LANGUAGE C;
COMMENT ON FUNCTION cloacina.execute_batch(text, jsonb[], jsonb) IS
    'Starts one run per context in one call; returns the run ids in input order';

CREATE FUNCTION cloacina.execution_status(execution_id bigint)
RETURNS TABLE(status text, final_context jsonb, error text)
AS 'MODULE_PATHNAME', 'cloacina_execution_status_current' LANGUAGE C STABLE;
COMMENT ON FUNCTION cloacina.execution_status(bigint) IS 'The status, final context and error of a run';

CREATE FUNCTION cloacina.wait(execution_id bigint, timeout interval DEFAULT '30 seconds')
RETURNS TABLE(status text, final_context jsonb, error text)
AS 'MODULE_PATHNAME', 'cloacina_wait_current' LANGUAGE C;
COMMENT ON FUNCTION cloacina.wait(bigint, interval) IS
    'Blocks until the run ends or the timeout passes, then returns its status';

CREATE FUNCTION cloacina.task_results(execution_id bigint)
RETURNS TABLE(task text, status text, attempt int, output jsonb, error text,
              started_at timestamptz, finished_at timestamptz)
AS 'MODULE_PATHNAME', 'cloacina_task_results_current' LANGUAGE C STABLE;
COMMENT ON FUNCTION cloacina.task_results(bigint) IS 'The tasks of a run in topological order, with their outcome';

CREATE FUNCTION cloacina.claim(worker text, task_names text[] DEFAULT NULL, max_tasks int DEFAULT 1,
                               lease interval DEFAULT '30 seconds', wait interval DEFAULT NULL)
RETURNS TABLE(task_id bigint, execution_id bigint, workflow text, task text, attempt int,
              fence bigint, context jsonb)
AS 'MODULE_PATHNAME', 'cloacina_claim_current' LANGUAGE C;
COMMENT ON FUNCTION cloacina.claim(text, text[], int, interval, interval) IS
    'Claims up to max_tasks ready handler tasks (by task id or workflow.task) with a lease and a new fence; when none is ready, waits for one up to wait (at most cloacina.max_claim_wait)';

CREATE FUNCTION cloacina.heartbeat(task_id bigint, fence bigint) RETURNS text
AS 'MODULE_PATHNAME', 'cloacina_heartbeat_current' LANGUAGE C;
COMMENT ON FUNCTION cloacina.heartbeat(bigint, bigint) IS
    'Extends a claimed task''s lease; returns ok, lost (fence no longer current) or cancelled';

CREATE FUNCTION cloacina.heartbeat_batch(task_ids bigint[], fences bigint[])
RETURNS TABLE(task_id bigint, status text)
AS 'MODULE_PATHNAME', 'cloacina_heartbeat_batch_current' LANGUAGE C;
COMMENT ON FUNCTION cloacina.heartbeat_batch(bigint[], bigint[]) IS
    'heartbeat() for many tasks in one call, one row per task in the order given';

CREATE FUNCTION cloacina.complete(task_id bigint, fence bigint, context jsonb) RETURNS boolean
AS 'MODULE_PATHNAME', 'cloacina_complete_current' LANGUAGE C;
COMMENT ON FUNCTION cloacina.complete(bigint, bigint, jsonb) IS
    'Completes a claimed task with its output context; false if the fence is stale or the task is no longer running';

CREATE FUNCTION cloacina.fail(task_id bigint, fence bigint, error text, retryable boolean DEFAULT true)
RETURNS boolean
AS 'MODULE_PATHNAME', 'cloacina_fail_current' LANGUAGE C;
COMMENT ON FUNCTION cloacina.fail(bigint, bigint, text, boolean) IS
    'Fails a claimed task; it is retried by its policy when retryable and attempts remain';

CREATE FUNCTION cloacina.complete_batch(task_ids bigint[], fences bigint[], contexts jsonb[])
RETURNS TABLE(task_id bigint, accepted boolean)
AS 'MODULE_PATHNAME', 'cloacina_complete_batch_current' LANGUAGE C;
COMMENT ON FUNCTION cloacina.complete_batch(bigint[], bigint[], jsonb[]) IS
    'complete() for many tasks in one call';

CREATE FUNCTION cloacina.fail_batch(task_ids bigint[], fences bigint[], errors text[], retryable boolean[])
RETURNS TABLE(task_id bigint, accepted boolean)
AS 'MODULE_PATHNAME', 'cloacina_fail_batch_current' LANGUAGE C;
COMMENT ON FUNCTION cloacina.fail_batch(bigint[], bigint[], text[], boolean[]) IS
    'fail() for many tasks in one call';

CREATE FUNCTION cloacina.cancel(execution_id bigint) RETURNS boolean
LANGUAGE sql AS $$ SELECT cloacina._cancel(pg_catalog.current_schema(), execution_id) $$;
COMMENT ON FUNCTION cloacina.cancel(bigint) IS
    'Cancels a run: nothing new starts, unfinished tasks become cancelled, waiters return; false if it had ended';

CREATE FUNCTION cloacina.cancel_runs(workflow text DEFAULT NULL,
                                     statuses text[] DEFAULT ARRAY['running', 'paused']) RETURNS bigint
LANGUAGE sql AS $$ SELECT cloacina._cancel_matching(pg_catalog.current_schema(), workflow, statuses) $$;
COMMENT ON FUNCTION cloacina.cancel_runs(text, text[]) IS
    'Cancels unfinished runs in bulk, in one transaction: all of them, or one workflow''s, or those running or paused; returns how many';

CREATE FUNCTION cloacina.retry(execution_id bigint) RETURNS int
LANGUAGE sql AS $$ SELECT cloacina._retry(pg_catalog.current_schema(), execution_id) $$;
COMMENT ON FUNCTION cloacina.retry(bigint) IS
    'Runs a failed or cancelled run again from where it failed: its failed, skipped and cancelled tasks start over, completed outputs are kept; returns how many tasks start over';

CREATE FUNCTION cloacina.pause(execution_id bigint) RETURNS boolean
LANGUAGE sql AS $$ SELECT cloacina._pause(pg_catalog.current_schema(), execution_id) $$;
COMMENT ON FUNCTION cloacina.pause(bigint) IS 'Pauses a running run: nothing of it is claimed until resume';

CREATE FUNCTION cloacina.resume(execution_id bigint) RETURNS boolean
LANGUAGE sql AS $$ SELECT cloacina._resume(pg_catalog.current_schema(), execution_id) $$;
COMMENT ON FUNCTION cloacina.resume(bigint) IS 'Resumes a paused run';

CREATE FUNCTION cloacina.notify_channel() RETURNS text
LANGUAGE sql AS $$ SELECT cloacina._notify_channel(pg_catalog.current_schema()) $$;
COMMENT ON FUNCTION cloacina.notify_channel() IS
    'The current tenant''s private LISTEN channel for wake-up hints (ready, finished)';

CREATE FUNCTION cloacina.version() RETURNS text
LANGUAGE sql STABLE
AS $$ SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'cloacina' $$;
COMMENT ON FUNCTION cloacina.version() IS
    'The installed version of the cloacina extension (what ALTER EXTENSION cloacina UPDATE changes)';
