-- The task path's statements run under a search path of their own: pg_catalog alone before
-- PostgreSQL 17 (an override search path), 'pg_catalog, pg_temp' from 17 on (a setting, since
-- 17 has no override search paths; docs/decisions.md). Look-alikes that the caller plants in
-- its temporary schema (tables named like the tenant's, functions and an operator the engine
-- uses) must never be used on any major: the runs go through, the look-alikes stay untouched.
SELECT schema_name FROM cloacina.create_tenant('tmp_a');
SET search_path = tmp_a;
SELECT cloacina.register_workflow('{"name": "w", "tasks": [{"id": "t1"}, {"id": "t2", "dependencies": ["t1"], "when": {"key": "go", "op": "equals", "value": "yes"}}]}') IS NOT NULL AS registered;
RESET search_path;

CREATE TEMP TABLE trojan_calls (what text);
CREATE TEMP TABLE tasks (id bigint, status text, fence bigint);
CREATE TEMP TABLE executions (id bigint, status text);
CREATE TEMP TABLE workflows (name text);
INSERT INTO pg_temp.tasks VALUES (1, 'ready', 1);
CREATE FUNCTION pg_temp.trojan_texteq(a text, b text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO pg_temp.trojan_calls VALUES ('operator =');
    RETURN a OPERATOR(pg_catalog.=) b;
END $$;
CREATE OPERATOR pg_temp.= (LEFTARG = text, RIGHTARG = text, FUNCTION = pg_temp.trojan_texteq);
CREATE FUNCTION pg_temp.now() RETURNS timestamptz LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO pg_temp.trojan_calls VALUES ('now');
    RETURN pg_catalog.now();
END $$;
CREATE FUNCTION pg_temp.jsonb_typeof(j jsonb) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO pg_temp.trojan_calls VALUES ('jsonb_typeof');
    RETURN pg_catalog.jsonb_typeof(j);
END $$;

-- the caller's search path names the tenant; its temporary schema is searched first for its
-- own relations (PostgreSQL's default)
SET search_path = tmp_a;
SELECT count(*) AS own_temp_tasks FROM tasks;
SELECT cloacina.execute('w', '{"go": "yes"}') AS run \gset
SELECT count(*) FROM (SELECT cloacina.complete(task_id, fence, '{"done": 1}') FROM cloacina.claim('w1', NULL, 10)) x;
SELECT count(*) FROM (SELECT cloacina.heartbeat(task_id, fence) FROM cloacina.claim('w1', NULL, 10)) x;
SELECT count(*) FROM (SELECT cloacina.complete(id, fence, '{"done": 2}') FROM tmp_a.tasks WHERE status = 'running') x;
SELECT status FROM cloacina.wait(:run, '5 seconds');
SELECT status, final_context, error FROM cloacina.execution_status(:run);
SELECT count(*) AS results FROM cloacina.task_results(:run);
SELECT cloacina.cancel(cloacina.execute('w'));
SELECT count(*) AS failed FROM (SELECT cloacina.fail(task_id, fence, 'no') FROM cloacina.claim('w1', NULL, 10)) x;
RESET search_path;

-- nothing of the temporary schema ran or changed
SELECT count(*) AS trojan_calls FROM pg_temp.trojan_calls;
SELECT id, status, fence FROM pg_temp.tasks;
SELECT count(*) AS temp_executions FROM pg_temp.executions;
SELECT count(*) AS temp_workflows FROM pg_temp.workflows;
SELECT status, count(*) FROM tmp_a.executions GROUP BY status ORDER BY status;

SELECT cloacina.remove_tenant('tmp_a', cancel_unfinished => true);
