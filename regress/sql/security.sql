-- Tenant isolation. A tenant role tries every tenant table and every tenant function of another
-- tenant (schema-qualified, after SET search_path, and through the internal functions with the
-- other schema's name), the admin functions, the registry and role escalation. Every probe must
-- be denied by PostgreSQL (42501) or refused by cloacina (3F000). Then the same tenant plants
-- look-alike operators and functions in its own schema and an admin uses the tenant API there:
-- none of them may ever run.
-- The probes run over a real login as the tenant's role (a superuser session that merely did
-- SET ROLE could still switch to any role), so the harness lives in an ordinary schema.
CREATE SCHEMA regress_probe;
GRANT USAGE ON SCHEMA regress_probe TO PUBLIC;
CREATE FUNCTION regress_probe.try(path text, q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    saved text := current_setting('search_path');
BEGIN
    PERFORM set_config('search_path', path, false);
    EXECUTE q;
    PERFORM set_config('search_path', saved, false);
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    PERFORM set_config('search_path', saved, false);
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;

SELECT schema_name, username FROM cloacina.create_tenant('sec_a', 'sec_a_user');
SELECT schema_name, username FROM cloacina.create_tenant('sec_b', 'sec_b_user');

-- The victim has a workflow, a run and a claimed task.
SET search_path = sec_b;
SELECT cloacina.register_workflow('{"name": "secret_work", "tasks": [{"id": "s1"}, {"id": "s2", "dependencies": ["s1"]}]}') IS NOT NULL AS registered;
SELECT cloacina.execute('secret_work', '{"credit_card": "4111"}') AS victim_run;
SELECT task_id, fence FROM cloacina.claim('victim-worker');
RESET search_path;

CREATE TABLE regress_probe.probes (label text, path text, q text);
GRANT SELECT ON regress_probe.probes TO PUBLIC;
-- Tables, schema-qualified and through search_path.
INSERT INTO regress_probe.probes
SELECT format('%s %s (%s)', op, tbl, how), path, format(stmt, qual || tbl)
  FROM unnest(ARRAY['tenant_settings', 'workflows', 'executions', 'tasks', 'execution_events']) tbl,
       (VALUES ('select', 'SELECT * FROM %s'),
               ('insert', 'INSERT INTO %s DEFAULT VALUES'),
               ('update', 'UPDATE %s SET id = id'),
               ('delete', 'DELETE FROM %s'),
               ('truncate', 'TRUNCATE %s'),
               ('lock', 'LOCK TABLE %s')) ops(op, stmt),
       (VALUES ('qualified', 'sec_a', 'sec_b.'), ('search_path', 'sec_b', '')) hows(how, path, qual);
UPDATE regress_probe.probes SET q = replace(q, 'SET id = id', 'SET singleton = singleton') WHERE q LIKE '%tenant_settings%SET id%';
UPDATE regress_probe.probes SET q = replace(q, 'SET id = id', 'SET name = name') WHERE q LIKE '%workflows%SET id%';
INSERT INTO regress_probe.probes VALUES
    ('sequence nextval', 'sec_a', $$SELECT nextval('sec_b.tasks_id_seq')$$),
    ('create in other schema', 'sec_a', 'CREATE TABLE sec_b.planted (x int)'),
    ('create in cloacina schema', 'sec_a', 'CREATE TABLE cloacina.planted (x int)'),
    ('shadow an API function', 'sec_a', 'CREATE FUNCTION cloacina.claim(text) RETURNS int LANGUAGE sql AS $f$ SELECT 1 $f$'),
    ('drop other schema', 'sec_a', 'DROP SCHEMA sec_b CASCADE');
-- Every tenant function, with the other tenant as current schema.
INSERT INTO regress_probe.probes (label, path, q) VALUES
    ('register_workflow', 'sec_b', $$SELECT cloacina.register_workflow('{"name": "evil", "tasks": [{"id": "x"}]}')$$),
    ('workflows view', 'sec_b', 'SELECT * FROM cloacina.workflows'),
    ('execute', 'sec_b', $$SELECT cloacina.execute('secret_work')$$),
    ('execute_batch', 'sec_b', $$SELECT * FROM cloacina.execute_batch('secret_work', ARRAY['{}']::jsonb[])$$),
    ('execution_status', 'sec_b', 'SELECT * FROM cloacina.execution_status(1)'),
    ('wait', 'sec_b', $$SELECT * FROM cloacina.wait(1, '10 milliseconds')$$),
    ('task_results', 'sec_b', 'SELECT * FROM cloacina.task_results(1)'),
    ('claim', 'sec_b', $$SELECT * FROM cloacina.claim('thief')$$),
    ('heartbeat', 'sec_b', 'SELECT cloacina.heartbeat(1, 1)'),
    ('heartbeat_batch', 'sec_b', 'SELECT * FROM cloacina.heartbeat_batch(ARRAY[1], ARRAY[1])'),
    ('complete', 'sec_b', $$SELECT cloacina.complete(1, 1, '{"stolen": true}')$$),
    ('fail', 'sec_b', $$SELECT cloacina.fail(1, 1, 'sabotage', false)$$),
    ('complete_batch', 'sec_b', $$SELECT * FROM cloacina.complete_batch(ARRAY[1], ARRAY[1], ARRAY['{}']::jsonb[])$$),
    ('fail_batch', 'sec_b', $$SELECT * FROM cloacina.fail_batch(ARRAY[1], ARRAY[1], ARRAY['x'], ARRAY[false])$$),
    ('cancel', 'sec_b', 'SELECT cloacina.cancel(1)'),
    ('pause', 'sec_b', 'SELECT cloacina.pause(1)'),
    ('resume', 'sec_b', 'SELECT cloacina.resume(1)'),
    ('notify_channel', 'sec_b', 'SELECT cloacina.notify_channel()'),
    ('tenant function, search_path with own schema first', 'sec_a, sec_b', $$SELECT * FROM sec_b.tasks$$);
-- The engine functions, called directly with the other tenant's schema name.
INSERT INTO regress_probe.probes (label, path, q) VALUES
    ('_register_workflow', 'sec_a', $$SELECT cloacina._register_workflow('sec_b', '{"name": "evil", "tasks": [{"id": "x"}]}')$$),
    ('_list_workflows', 'sec_a', $$SELECT * FROM cloacina._list_workflows('sec_b')$$),
    ('_execute', 'sec_a', $$SELECT cloacina._execute('sec_b', 'secret_work', '{}', '{}')$$),
    ('_cancel', 'sec_a', $$SELECT cloacina._cancel('sec_b', 1)$$),
    ('_pause', 'sec_a', $$SELECT cloacina._pause('sec_b', 1)$$),
    ('_resume', 'sec_a', $$SELECT cloacina._resume('sec_b', 1)$$),
    ('_propagate', 'sec_a', $$SELECT cloacina._propagate('sec_b', 1, ARRAY['s1'])$$),
    ('_finalize', 'sec_a', $$SELECT cloacina._finalize('sec_b', ARRAY[1]::bigint[], 'completed')$$),
    ('_lock_run', 'sec_a', $$SELECT cloacina._lock_run('sec_b', 1)$$),
    ('_event', 'sec_a', $$SELECT cloacina._event('sec_b', 1, 's1', 1, 'running', 'completed')$$),
    ('_hint', 'sec_a', $$SELECT cloacina._hint('sec_b', 'ready')$$),
    ('_notify_channel', 'sec_a', $$SELECT cloacina._notify_channel('sec_b')$$),
    ('_tenant_counts', 'sec_a', $$SELECT * FROM cloacina._tenant_counts('sec_b')$$),
    ('_sync_tenant_settings', 'sec_a', $$SELECT cloacina._sync_tenant_settings('sec_b')$$),
    ('_set_tenant_state', 'sec_a', $$SELECT cloacina._set_tenant_state('sec_b', 'suspended')$$),
    ('_create_tenant_tables', 'sec_a', $$SELECT cloacina._create_tenant_tables('sec_b', 'x')$$),
    ('_grant_tenant_role', 'sec_a', $$SELECT cloacina._grant_tenant_role('sec_b', 'sec_a_user')$$),
    ('_create_tenant', 'sec_a', $$SELECT * FROM cloacina._create_tenant('evil', 'evil_user', '')$$),
    ('_connection_string', 'sec_a', $$SELECT cloacina._connection_string('sec_b_user', 'x')$$),
    ('_generate_password', 'sec_a', 'SELECT cloacina._generate_password()'),
    ('_scram_verifier', 'sec_a', $$SELECT cloacina._scram_verifier('x')$$),
    ('_random_token', 'sec_a', 'SELECT cloacina._random_token(8)'),
    ('_sql_task_alive', 'sec_a', $$SELECT cloacina._sql_task_alive('sec_b', 1)$$),
    ('_cancel_sql_tasks', 'sec_a', $$SELECT cloacina._cancel_sql_tasks('sec_b', 1)$$),
    ('_reap', 'sec_a', $$SELECT cloacina._reap('sec_b')$$),
    ('_expire_runs', 'sec_a', $$SELECT cloacina._expire_runs('sec_b')$$),
    ('_due', 'sec_a', $$SELECT cloacina._due('sec_b', now(), true)$$),
    ('_due (not a tenant)', 'sec_a', $$SELECT cloacina._due('public', now(), true)$$);
-- Admin functions, the registry, roles.
INSERT INTO regress_probe.probes (label, path, q) VALUES
    ('create_tenant', 'sec_a', $$SELECT * FROM cloacina.create_tenant('evil_tenant')$$),
    ('remove_tenant', 'sec_a', $$SELECT cloacina.remove_tenant('sec_b')$$),
    ('suspend_tenant', 'sec_a', $$SELECT cloacina.suspend_tenant('sec_b')$$),
    ('resume_tenant', 'sec_a', $$SELECT cloacina.resume_tenant('sec_b')$$),
    ('set_tenant_limits', 'sec_a', $$SELECT cloacina.set_tenant_limits('sec_b', 1, 1)$$),
    ('registry select', 'sec_a', 'SELECT * FROM cloacina.tenant'),
    ('registry update', 'sec_a', $$UPDATE cloacina.tenant SET state = 'suspended'$$),
    ('tenants view', 'sec_a', 'SELECT * FROM cloacina.tenants'),
    ('set role to other tenant', 'sec_a', 'SET ROLE sec_b_user'),
    ('set role to admin', 'sec_a', 'SET ROLE cloacina_admin'),
    ('set session authorization', 'sec_a', 'SET SESSION AUTHORIZATION sec_b_user'),
    ('grant self other role', 'sec_a', 'GRANT sec_b_user TO sec_a_user'),
    ('grant self admin role', 'sec_a', 'GRANT cloacina_admin TO sec_a_user'),
    ('make self superuser', 'sec_a', 'ALTER ROLE sec_a_user SUPERUSER'),
    ('change other password', 'sec_a', $$ALTER ROLE sec_b_user PASSWORD 'owned'$$),
    ('create role', 'sec_a', 'CREATE ROLE evil_role');

\c - sec_a_user
SELECT current_user, session_user, current_schema();
SELECT label, split_part(regress_probe.try(path, q), ':', 1) AS sqlstate FROM regress_probe.probes ORDER BY label;
-- Denied means 42501 (permission denied) or 3F000 (cloacina: not a tenant). An unqualified
-- name after SET search_path gives 42P01 instead: PostgreSQL skips schemas the role may not use,
-- so the other tenant's table is simply not found.
SELECT count(*) AS probes,
       count(*) FILTER (WHERE regress_probe.try(path, q) !~ '^(42501|3F000): '
                          AND NOT (label LIKE '%(search_path)' AND regress_probe.try(path, q) ~ '^42P01: ')) AS crossed
  FROM regress_probe.probes;
-- The same calls on its own tenant work (the probes fail for the right reason).
SET search_path = sec_a;
SELECT cloacina.register_workflow('{"name": "own_work", "tasks": [{"id": "o1"}]}') IS NOT NULL AS own_register;
SELECT cloacina.execute('own_work') AS own_run;
SELECT task, attempt FROM cloacina.claim('own-worker');
SELECT count(*) AS own_tasks FROM sec_a.tasks;
-- The other tenant's notification channel is kept in a table this role cannot read, and a
-- GRANT on the other schema is refused and changes nothing.
SELECT regress_probe.try('sec_a', 'SELECT notify_channel FROM sec_b.tenant_settings') AS read_other_channel;
SELECT regress_probe.try('sec_a', 'GRANT USAGE ON SCHEMA sec_b TO sec_a_user') AS grant_other_schema;
SELECT has_schema_privilege('sec_b', 'USAGE') AS gained_usage;

-- Trojans: the tenant plants look-alikes of what the engine uses, then an admin works in the
-- tenant with the tenant's schema placed before pg_catalog. Not one of them may run.
CREATE TABLE sec_a.trojan_calls (who text, what text);
CREATE FUNCTION sec_a.trojan_texteq(a text, b text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO sec_a.trojan_calls VALUES (current_user, 'operator =');
    RETURN a OPERATOR(pg_catalog.=) b;
END $$;
CREATE OPERATOR sec_a.= (LEFTARG = text, RIGHTARG = text, FUNCTION = sec_a.trojan_texteq);
CREATE FUNCTION sec_a.jsonb_typeof(j jsonb) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO sec_a.trojan_calls VALUES (current_user, 'jsonb_typeof');
    RETURN pg_catalog.jsonb_typeof(j);
END $$;
CREATE FUNCTION sec_a.format(f text, VARIADIC a text[]) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO sec_a.trojan_calls VALUES (current_user, 'format');
    RETURN pg_catalog.format(f, VARIADIC a);
END $$;
CREATE FUNCTION sec_a.now() RETURNS timestamptz LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO sec_a.trojan_calls VALUES (current_user, 'now');
    RETURN pg_catalog.now();
END $$;
GRANT INSERT ON sec_a.trojan_calls TO PUBLIC;
\c - postgres
-- Nothing of the victim changed.
SELECT status, attempt, fence FROM sec_b.tasks ORDER BY id;
SELECT count(*) AS victim_runs, count(*) FILTER (WHERE status = 'running') AS still_running FROM sec_b.executions;
SELECT name FROM sec_b.workflows;
SELECT count(*) AS planted FROM pg_class WHERE relname = 'planted';
SELECT state FROM cloacina.tenant WHERE schema_name = 'sec_b';


SET search_path = sec_a, pg_catalog;
SELECT 'x'::text = 'x'::text AS trojan_works_when_called_directly;
DELETE FROM sec_a.trojan_calls;
SELECT cloacina.register_workflow('{"name": "admin_work", "tasks": [{"id": "t1"}, {"id": "t2", "dependencies": ["t1"], "when": {"key": "go", "op": "equals", "value": "yes"}}]}') IS NOT NULL AS registered;
SELECT cloacina.execute('admin_work', '{"go": "yes"}') AS admin_run \gset
SELECT count(*) FROM (SELECT cloacina.complete(task_id, fence, '{"done": 1}') FROM cloacina.claim('admin-worker', NULL, 10)) x;
SELECT count(*) FROM (SELECT cloacina.complete(task_id, fence, '{"done": 2}') FROM cloacina.claim('admin-worker', NULL, 10)) x;
SELECT status FROM cloacina.wait(:admin_run, '5 seconds');
SELECT * FROM cloacina.execution_status(:admin_run);
SELECT count(*) FROM cloacina.task_results(:admin_run);
SELECT count(*) FROM cloacina.workflows;
SELECT cloacina.cancel(cloacina.execute('admin_work'));
SELECT cloacina.notify_channel() LIKE 'cloacina\_%' AS channel;
RESET search_path;
SELECT who, what FROM sec_a.trojan_calls;

SET search_path = sec_a;
SELECT count(*) FILTER (WHERE cloacina.cancel(id)) AS cancelled FROM sec_a.executions WHERE status = 'running';
RESET search_path;
SELECT cloacina.remove_tenant('sec_a');
SET search_path = sec_b;
SELECT cloacina.cancel(id) FROM sec_b.executions WHERE status = 'running';
RESET search_path;
SELECT cloacina.remove_tenant('sec_b');
DROP SCHEMA regress_probe CASCADE;
