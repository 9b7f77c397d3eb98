-- sql/src/background.sql: the background worker's duties per tenant: tick, expiry, pruning.

------------------------------------------------------------------------------------------------
-- 8. Background duties, called by the background worker (extension/scheduler.c) for one tenant
--    at a time, each in its own transaction, as a superuser.
------------------------------------------------------------------------------------------------

-- The tenant's ready queues around time t: the first ready time still to come (a retry or a
-- delayed run), whether a handler task came due in the 10 seconds up to t (its workers are
-- woken), and whether a SQL task is due. Read one priority at a time, a few index descents per
-- priority, never by reading the queue: a backlog of millions of ready tasks must not hold the
-- background worker, which serves every tenant (a scan of the queue took seconds per tick in a
-- 19-million-run burn-down). Past max_levels priorities the answer is "look again in a second".
CREATE FUNCTION cloacina._ready_queue_times(s text, t timestamptz, max_levels int DEFAULT 100,
                                            OUT next_ready timestamptz, OUT came_due boolean,
                                            OUT sql_due boolean)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    -- One kind's queue, in its claim index: %2$s is the index's priority key, %4$s the order
    -- that reads the index backward, %5$s the step to the next level that way. Each level is
    -- one backward step from the level before (where it lands, a level's newest entries, are
    -- rarely claimed ones); within a level, (key, $1) is where a descent starts. The LIMITs
    -- keep each lookup a descent per level, never a join over the whole index.
    walk constant text := $q$
        WITH RECURSIVE levels(k, n) AS (
            (SELECT %2$s, 1 FROM %1$I.tasks WHERE status = 'ready' AND kind = %3$L
              ORDER BY %2$s %4$s LIMIT 1)
          UNION ALL
            SELECT x.k, l.n + 1 FROM levels l, LATERAL (
                SELECT %2$s AS k FROM %1$I.tasks
                 WHERE status = 'ready' AND kind = %3$L AND %2$s %5$s l.k
                 ORDER BY %2$s %4$s LIMIT 1) x
             WHERE l.n < $3)
        SELECT (SELECT min((SELECT ready_at FROM %1$I.tasks
                             WHERE status = 'ready' AND kind = %3$L AND %2$s = l.k AND ready_at > $1
                             ORDER BY ready_at LIMIT 1)) FROM levels l),
               coalesce((SELECT max(n) >= $3 FROM levels), false),
               EXISTS (SELECT FROM levels l, LATERAL (
                   SELECT FROM %1$I.tasks WHERE status = 'ready' AND kind = %3$L AND %2$s = l.k
                      AND ready_at <= $1 AND ready_at > $2 LIMIT 1) x)$q$;
    layout int;
    handler_next timestamptz;
    handler_capped boolean;
    sql_next timestamptz;
    sql_capped boolean;
BEGIN
    SELECT tn.layout_version INTO layout FROM cloacina.tenant tn WHERE tn.schema_name = s;
    IF layout >= 2 THEN  -- tasks_claim_key
        EXECUTE format(walk, s, '(-priority)', 'handler', 'DESC', '<')
            INTO handler_next, handler_capped, came_due USING t, t - interval '10 seconds', max_levels;
    ELSE                 -- tasks_claim_order (priority DESC), until the tenant is migrated
        EXECUTE format(walk, s, 'priority', 'handler', 'ASC', '>')
            INTO handler_next, handler_capped, came_due USING t, t - interval '10 seconds', max_levels;
    END IF;
    EXECUTE format(walk, s, 'priority', 'sql', 'ASC', '>')  -- tasks_sql_claim_order (priority DESC)
        INTO sql_next, sql_capped, sql_due USING t, '-infinity'::timestamptz, max_levels;
    next_ready := least(handler_next, sql_next,
                        CASE WHEN handler_capped OR sql_capped THEN t + interval '1 second' END);
END
$$;

-- When the first lease of the tenant's running tasks runs out (extension/earliest_lease.c), or a
-- time no later than that: past max_dead entries of finished tasks in tasks_lease_expiry, where
-- it stopped reading (the worker ticks the tenant then and reads on). A busy tenant's lease
-- index holds a lease's worth of finished claims before its live ones until vacuum.
CREATE FUNCTION cloacina._earliest_lease(s text, max_dead int DEFAULT 20000) RETURNS timestamptz
AS 'MODULE_PATHNAME', 'cloacina_earliest_lease' LANGUAGE C;

-- One pass over a tenant: expired leases and timeouts, due schedules, a ready-hint for retries
-- that came due, and retention. Returns the next time something is due in this tenant (NULL:
-- nothing), which the worker keeps in shared memory so that idle tenants cost nothing; no row at
-- all for a tenant that was removed.
CREATE FUNCTION cloacina._tenant_tick(s text, startup boolean, retention interval)
RETURNS TABLE(next_due timestamptz, sql_ready boolean, max_running int, weight int)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    queue record;
BEGIN
    IF NOT EXISTS (SELECT FROM cloacina.tenant t WHERE t.schema_name = s) THEN
        RETURN;  -- removed: no row tells the worker to forget it
    END IF;
    PERFORM cloacina._reap(s);
    PERFORM cloacina._expire_runs(s);
    PERFORM cloacina._fire_schedules(s, startup);
    -- Retries (and delayed runs) that came due since the last pass: wake the tenant's workers.
    -- (Read, then hinted: a query over tenant tables calls no cloacina function, docs/citus.md.)
    queue := cloacina._ready_queue_times(s, now());
    IF queue.came_due THEN
        PERFORM cloacina._hint(s, 'ready');
    END IF;
    IF retention IS NOT NULL THEN
        PERFORM cloacina._prune(s, retention);
    END IF;
    RETURN QUERY EXECUTE format($q$
        SELECT least($4,
                     (SELECT min((started_at AT TIME ZONE 'UTC') + timeout_ms * interval '1 millisecond')
                        FROM %1$I.tasks WHERE status = 'running' AND timeout_ms IS NOT NULL) AT TIME ZONE 'UTC',
                     $2,
                     (SELECT min(next_run_at) FROM %1$I.schedules),
                     (SELECT min(deadline) FROM %1$I.executions WHERE deadline IS NOT NULL AND status IN ('running', 'paused')),
                     (SELECT min(finished_at) + $1 FROM %1$I.executions WHERE finished_at IS NOT NULL)),
               $3, st.max_running, st.weight
          FROM %1$I.tenant_settings st$q$, s)
        USING retention, queue.next_ready, queue.sql_due, cloacina._earliest_lease(s);
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
    cloacina._ready_queue_times(text, timestamptz, int), cloacina._earliest_lease(text, int),
    cloacina._tenant_schemas(),
    cloacina._fire_schedules(text, boolean, int), cloacina._reap(text, int), cloacina._expire_runs(text),
    cloacina._sql_task_alive(text, bigint) FROM PUBLIC;
