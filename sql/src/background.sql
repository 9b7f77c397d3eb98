-- sql/src/background.sql: the background worker's duties per tenant: tick, expiry, pruning.

------------------------------------------------------------------------------------------------
-- 8. Background duties, called by the background worker (extension/scheduler.c) for one tenant
--    at a time, each in its own transaction, as a superuser.
------------------------------------------------------------------------------------------------

-- One pass over a tenant: expired leases and timeouts, due schedules, a ready-hint for retries
-- that came due, and retention. Returns the next time something is due in this tenant (NULL:
-- nothing), which the worker keeps in shared memory so that idle tenants cost nothing; no row at
-- all for a tenant that was removed.
CREATE FUNCTION cloacina._tenant_tick(s text, startup boolean, retention interval)
RETURNS TABLE(next_due timestamptz, sql_ready boolean, max_running int, weight int)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    came_due boolean;
BEGIN
    IF NOT EXISTS (SELECT FROM cloacina.tenant t WHERE t.schema_name = s) THEN
        RETURN;  -- removed: no row tells the worker to forget it
    END IF;
    PERFORM cloacina._reap(s);
    PERFORM cloacina._expire_runs(s);
    PERFORM cloacina._fire_schedules(s, startup);
    -- Retries (and delayed runs) that came due since the last pass: wake the tenant's workers.
    -- (Read, then hinted: a query over tenant tables calls no cloacina function, docs/citus.md.)
    EXECUTE format($q$SELECT EXISTS (
        SELECT FROM %I.tasks WHERE status = 'ready' AND kind = 'handler'
           AND ready_at <= now() AND ready_at > now() - interval '10 seconds')$q$, s) INTO came_due;
    IF came_due THEN
        PERFORM cloacina._hint(s, 'ready');
    END IF;
    IF retention IS NOT NULL THEN
        PERFORM cloacina._prune(s, retention);
    END IF;
    RETURN QUERY EXECUTE format($q$
        SELECT least((SELECT min(lease_until) FROM %1$I.tasks WHERE status = 'running'),
                     (SELECT min(started_at + timeout_ms * interval '1 millisecond') FROM %1$I.tasks
                       WHERE status = 'running' AND timeout_ms IS NOT NULL),
                     (SELECT min(ready_at) FROM %1$I.tasks WHERE status = 'ready' AND ready_at > now()),
                     (SELECT min(next_run_at) FROM %1$I.schedules),
                     (SELECT min(deadline) FROM %1$I.executions WHERE deadline IS NOT NULL AND status IN ('running', 'paused')),
                     (SELECT min(finished_at) + $1 FROM %1$I.executions WHERE finished_at IS NOT NULL)),
               EXISTS (SELECT FROM %1$I.tasks WHERE status = 'ready' AND kind = 'sql' AND ready_at <= now()),
               st.max_running, st.weight
          FROM %1$I.tenant_settings st$q$, s) USING retention;
END
$$;

-- Runs past their timeout (execute option timeout_ms) fail: their unfinished tasks are cancelled.
CREATE FUNCTION cloacina._expire_runs(s text) RETURNS int
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
    expired int := 0;
BEGIN
    FOR r IN EXECUTE format($q$SELECT id, extract(epoch FROM deadline - run_at) * 1000 AS ms FROM %I.executions
                               WHERE deadline < now() AND status IN ('running', 'paused') ORDER BY id LIMIT 1000$q$, s)
    LOOP
        IF cloacina._cancel(s, r.id, format('run timed out after %s ms', round(r.ms))) THEN
            expired := expired + 1;
            PERFORM cloacina._log_event(s, format('run %s failed: it timed out after %s ms', r.id, round(r.ms)));
        END IF;
    END LOOP;
    RETURN expired;
END
$$;

-- Deletes runs (with their tasks and events) that ended more than "retention" ago, in batches
-- so that one pass never holds many locks.
CREATE FUNCTION cloacina._prune(s text, retention interval, batch int DEFAULT 1000) RETURNS int
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    pruned int;
BEGIN
    EXECUTE format($q$
        WITH old AS (
            SELECT id FROM %1$I.executions
             WHERE status IN ('completed', 'failed', 'cancelled') AND finished_at < now() - $1
             ORDER BY finished_at LIMIT $2 FOR UPDATE SKIP LOCKED),
        t AS (DELETE FROM %1$I.tasks WHERE execution_id IN (SELECT id FROM old)),
        e AS (DELETE FROM %1$I.execution_events WHERE execution_id IN (SELECT id FROM old)),
        f AS (DELETE FROM %1$I.schedule_fires WHERE execution_id IN (SELECT id FROM old))
        DELETE FROM %1$I.executions WHERE id IN (SELECT id FROM old)$q$, s) USING retention, batch;
    GET DIAGNOSTICS pruned = ROW_COUNT;
    RETURN pruned;
END
$$;

-- Every tenant schema, for the worker's one scan at start.
CREATE FUNCTION cloacina._tenant_schemas() RETURNS SETOF text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$ SELECT schema_name FROM cloacina.tenant ORDER BY schema_name $$;

-- The background duties are the background worker's alone (an admin may run them by hand).
REVOKE ALL ON FUNCTION cloacina._tenant_tick(text, boolean, interval), cloacina._prune(text, interval, int),
    cloacina._tenant_schemas(),
    cloacina._fire_schedules(text, boolean, int), cloacina._reap(text, int), cloacina._expire_runs(text),
    cloacina._sql_task_alive(text, bigint) FROM PUBLIC;
