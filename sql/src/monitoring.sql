-- sql/src/monitoring.sql: what an operator and a tenant see: live figures per tenant and per
-- workflow, and Graphviz pictures of a workflow and of one run.

------------------------------------------------------------------------------------------------
-- 9. Monitoring
------------------------------------------------------------------------------------------------

-- The figures of tenant s, one row per workflow (every registered one, and any other that has
-- runs) and a total row whose workflow is NULL. Queue figures are live; run counts and task
-- durations cover the runs that ended within window_length (durations: the completed tasks of
-- those runs, from claim to completion). Each figure but the workflow list has a partial index
-- of the tenant's tables to be read through.
-- The figures are read in a subtransaction that is rolled back on purpose: that releases the
-- locks the read took (a dozen relations per tenant), so one query over thousands of tenants
-- does not run out of the shared lock table.
CREATE FUNCTION cloacina._stats(s text, window_length interval)
RETURNS TABLE(workflow text, ready_tasks bigint, oldest_ready_seconds double precision,
              running_tasks bigint, active_runs bigint, completed_runs bigint, failed_runs bigint,
              cancelled_runs bigint, task_p50_ms double precision, task_p95_ms double precision,
              task_p99_ms double precision)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    figures jsonb;
BEGIN
    PERFORM cloacina._require_tenant(s);
    IF window_length IS NULL OR window_length <= interval '0' THEN
        RAISE EXCEPTION 'window_length must be a positive interval (got %)', coalesce(window_length::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    BEGIN
        EXECUTE format($q$
            SELECT jsonb_agg(to_jsonb(f) ORDER BY f.workflow NULLS FIRST) FROM (
            SELECT x.workflow,
                   count(*) FILTER (WHERE x.k = 'ready') AS ready_tasks,
                   extract(epoch FROM now() - min(x.at) FILTER (WHERE x.k = 'ready'))::double precision AS oldest_ready_seconds,
                   count(*) FILTER (WHERE x.k = 'running') AS running_tasks,
                   count(*) FILTER (WHERE x.k = 'active') AS active_runs,
                   count(*) FILTER (WHERE x.k = 'completed') AS completed_runs,
                   count(*) FILTER (WHERE x.k = 'failed') AS failed_runs,
                   count(*) FILTER (WHERE x.k = 'cancelled') AS cancelled_runs,
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY x.ms) FILTER (WHERE x.k = 'duration') AS task_p50_ms,
                   percentile_cont(0.95) WITHIN GROUP (ORDER BY x.ms) FILTER (WHERE x.k = 'duration') AS task_p95_ms,
                   percentile_cont(0.99) WITHIN GROUP (ORDER BY x.ms) FILTER (WHERE x.k = 'duration') AS task_p99_ms
              FROM (SELECT name AS workflow, 'registered' AS k, NULL::timestamptz AS at, NULL::float8 AS ms
                      FROM %1$I.workflows
                    UNION ALL
                    SELECT workflow, 'ready', ready_at, NULL FROM %1$I.tasks
                     WHERE status = 'ready' AND ready_at <= now()
                    UNION ALL
                    SELECT workflow, 'running', NULL, NULL FROM %1$I.tasks WHERE status = 'running'
                    UNION ALL
                    SELECT workflow, 'active', NULL, NULL FROM %1$I.executions WHERE status IN ('running', 'paused')
                    UNION ALL
                    SELECT workflow, status, NULL, NULL FROM %1$I.executions
                     WHERE finished_at IS NOT NULL AND finished_at >= now() - $1
                    UNION ALL
                    SELECT t.workflow, 'duration', NULL, extract(epoch FROM t.finished_at - t.started_at) * 1000
                      FROM %1$I.executions e JOIN %1$I.tasks t ON t.execution_id = e.id
                     WHERE e.finished_at IS NOT NULL AND e.finished_at >= now() - $1
                       AND t.status = 'completed' AND t.started_at IS NOT NULL) x
             GROUP BY ROLLUP (x.workflow)) f$q$, s) INTO figures USING window_length;
        RAISE EXCEPTION USING ERRCODE = 'CLRLK';  -- roll back: release the locks, keep "figures"
    EXCEPTION WHEN SQLSTATE 'CLRLK' THEN
        NULL;
    END;
    RETURN QUERY SELECT * FROM jsonb_to_recordset(figures) AS f(
        workflow text, ready_tasks bigint, oldest_ready_seconds double precision, running_tasks bigint,
        active_runs bigint, completed_runs bigint, failed_runs bigint, cancelled_runs bigint,
        task_p50_ms double precision, task_p95_ms double precision, task_p99_ms double precision);
END
$$;

-- The tenants the caller may see: all of them for an admin, its own for a tenant role.
CREATE FUNCTION cloacina._visible_tenants() RETURNS SETOF text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT n.nspname::text FROM pg_namespace n
     WHERE has_schema_privilege(n.oid, 'USAGE') AND cloacina._is_registered(n.nspname)
     ORDER BY 1
$$;

CREATE FUNCTION cloacina.tenant_stats(window_length interval DEFAULT '1 hour')
RETURNS TABLE(schema_name text, ready_tasks bigint, oldest_ready_seconds double precision,
              running_tasks bigint, active_runs bigint, completed_runs bigint, failed_runs bigint,
              cancelled_runs bigint, task_p50_ms double precision, task_p95_ms double precision,
              task_p99_ms double precision)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT v.s, st.ready_tasks, st.oldest_ready_seconds, st.running_tasks, st.active_runs,
           st.completed_runs, st.failed_runs, st.cancelled_runs, st.task_p50_ms, st.task_p95_ms,
           st.task_p99_ms
      FROM cloacina._visible_tenants() v(s), LATERAL cloacina._stats(v.s, window_length) st
     WHERE st.workflow IS NULL
$$;
COMMENT ON FUNCTION cloacina.tenant_stats(interval) IS
    'One row per tenant the caller may see (an admin: all; a tenant: its own): ready depth, oldest ready age, running tasks, active runs, runs ended and task duration percentiles over the window';

CREATE FUNCTION cloacina.workflow_stats(window_length interval DEFAULT '1 hour')
RETURNS TABLE(schema_name text, workflow text, ready_tasks bigint, oldest_ready_seconds double precision,
              running_tasks bigint, active_runs bigint, completed_runs bigint, failed_runs bigint,
              cancelled_runs bigint, task_p50_ms double precision, task_p95_ms double precision,
              task_p99_ms double precision)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT v.s, st.*
      FROM cloacina._visible_tenants() v(s), LATERAL cloacina._stats(v.s, window_length) st
     WHERE st.workflow IS NOT NULL
$$;
COMMENT ON FUNCTION cloacina.workflow_stats(interval) IS
    'tenant_stats() per workflow: one row per workflow of every tenant the caller may see';

-- What the background worker's scheduler is behind on (extension/due.c): the tenants it tracks,
-- those due now and waiting for their tick, and how long the most overdue has waited (NULL when
-- none is due). Admins only: it counts every tenant.
CREATE FUNCTION cloacina.scheduler_status(OUT tracked_tenants int, OUT due_tenants int,
                                          OUT oldest_due_seconds double precision)
    AS 'MODULE_PATHNAME', 'cloacina_scheduler_status' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION cloacina.scheduler_status() IS
    'The tenants the scheduler tracks, how many are due now and how long the most overdue has waited: a wait of more than a few seconds says it cannot keep up';
REVOKE ALL ON FUNCTION cloacina.scheduler_status() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cloacina.scheduler_status() TO cloacina_admin;

-- Where a tenant's claims start in its queue (extension/claim_floor.c), for an operator who asks
-- why a claim reads more than it takes, or when a task its tables say is ready will be claimed.
-- Admins only: it names keys of any tenant.
CREATE FUNCTION cloacina.claim_floor(schema_name text, OUT state text, OUT priority int,
                                     OUT ready_at timestamptz, OUT task_id bigint,
                                     OUT refreshed_seconds_ago double precision,
                                     OUT rescanned_seconds_ago double precision)
    AS 'MODULE_PATHNAME', 'cloacina_claim_floor_status' LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION cloacina.claim_floor(text) IS
    'Where the tenant''s claims start: "start" (the first entry of its queue), "key" (from priority, ready_at, task_id) or "end" (no ready task when last looked); raised every few milliseconds, found again from the start every second (up to ten while that reads a long run of claimed tasks)';
REVOKE ALL ON FUNCTION cloacina.claim_floor(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cloacina.claim_floor(text) TO cloacina_admin;

-- Graphviz DOT. Task and workflow names are identifiers (letters, digits, "_", "-"), so they
-- need no escaping inside quotes.
CREATE FUNCTION cloacina._dot_graph(title text, nodes text[], edges text[]) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT format(E'digraph "%s" {\n  rankdir=LR;\n  node [shape=box, style="rounded,filled", fillcolor=white, fontname="Helvetica"];\n%s%s}\n',
                  title,
                  coalesce((SELECT string_agg('  ' || n || E';\n', '' ORDER BY o) FROM unnest(nodes) WITH ORDINALITY u(n, o)), ''),
                  coalesce((SELECT string_agg('  ' || e || E';\n', '' ORDER BY o) FROM unnest(edges) WITH ORDINALITY u(e, o)), ''))
$$;

-- A workflow's DAG: a node per task (SQL tasks as cylinders), an edge per dependency labelled
-- with the dependent's trigger rule where it is not all_success.
CREATE FUNCTION cloacina._workflow_dot(s text, workflow text) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    def jsonb;
BEGIN
    PERFORM cloacina._require_tenant(s);
    EXECUTE format('SELECT definition FROM %I.workflows WHERE name = $1', s) INTO def USING workflow;
    IF def IS NULL THEN
        RAISE EXCEPTION 'workflow "%" is not registered in tenant "%"', workflow, s USING ERRCODE = 'undefined_object';
    END IF;
    RETURN cloacina._dot_graph(workflow,
        ARRAY(SELECT format('"%s"%s', t ->> 'id', CASE WHEN t ->> 'kind' = 'sql' THEN ' [shape=cylinder]' ELSE '' END)
                FROM jsonb_array_elements(def -> 'tasks') WITH ORDINALITY a(t, o) ORDER BY o),
        ARRAY(SELECT format('"%s" -> "%s"%s', d, t ->> 'id',
                            CASE WHEN t ->> 'trigger_rule' <> 'all_success' THEN format(' [label="%s"]', t ->> 'trigger_rule') ELSE '' END)
                FROM jsonb_array_elements(def -> 'tasks') WITH ORDINALITY a(t, o),
                     jsonb_array_elements_text(t -> 'dependencies') WITH ORDINALITY b(d, p)
               ORDER BY o, p));
END
$$;

-- One run's DAG, each task filled by its state and labelled with its attempt.
CREATE FUNCTION cloacina._run_dot(s text, eid bigint) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    colour constant jsonb := '{"waiting": "white", "ready": "lightgoldenrod1", "running": "lightskyblue",
                               "completed": "palegreen", "failed": "salmon", "skipped": "gray90",
                               "cancelled": "gray70"}';
    title text;
    nodes text[];
    edges text[];
BEGIN
    PERFORM cloacina._require_tenant(s);
    EXECUTE format('SELECT format(''%%s run %%s (%%s)'', workflow, id, status) FROM %I.executions WHERE id = $1', s)
        INTO title USING eid;
    IF title IS NULL THEN
        RAISE EXCEPTION 'execution % does not exist', coalesce(eid::text, 'NULL') USING ERRCODE = 'undefined_object';
    END IF;
    EXECUTE format($q$
        SELECT array_agg(format('"%%s" [label="%%s\n%%s%%s", fillcolor=%%s%%s]', task, task, status,
                                CASE WHEN attempt > 1 THEN format(' (attempt %%s)', attempt) ELSE '' END,
                                $2 ->> status,
                                CASE WHEN kind = 'sql' THEN ', shape=cylinder' ELSE '' END) ORDER BY position),
               (SELECT array_agg(format('"%%s" -> "%%s"', d, t2.task) ORDER BY t2.position, p)
                  FROM %1$I.tasks t2, unnest(t2.dependencies) WITH ORDINALITY u(d, p) WHERE t2.execution_id = $1)
          FROM %1$I.tasks WHERE execution_id = $1$q$, s)
        INTO nodes, edges USING eid, colour;
    RETURN cloacina._dot_graph(title, nodes, coalesce(edges, '{}'));
END
$$;

CREATE FUNCTION cloacina.workflow_dot(workflow text) RETURNS text
LANGUAGE sql AS $$ SELECT cloacina._workflow_dot(pg_catalog.current_schema(), workflow) $$;
COMMENT ON FUNCTION cloacina.workflow_dot(text) IS
    'A registered workflow''s DAG as Graphviz DOT (render with dot -Tsvg)';

CREATE FUNCTION cloacina.run_dot(execution_id bigint) RETURNS text
LANGUAGE sql AS $$ SELECT cloacina._run_dot(pg_catalog.current_schema(), execution_id) $$;
COMMENT ON FUNCTION cloacina.run_dot(bigint) IS
    'One run''s DAG as Graphviz DOT, each task coloured by its state';
