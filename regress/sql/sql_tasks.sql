-- SQL tasks: run by the background worker's pool, in dependency order, as the tenant's role
-- with its search_path; errors are recorded with their SQLSTATE and retried by policy; a task
-- that reaches into another tenant is denied and changes nothing there. Needs the background
-- worker serving this database (scripts/pgcluster sets cloacina.database).
SELECT schema_name FROM cloacina.create_tenant('sql_a', 'sql_a_user');
SELECT schema_name FROM cloacina.create_tenant('sql_b', 'sql_b_user');

-- Tenant B keeps a table that A will try to reach.
CREATE TABLE sql_b.ledger (entry text);
INSERT INTO sql_b.ledger VALUES ('b-private');
GRANT SELECT ON sql_b.ledger TO sql_b_user;

-- Tenant A's own table, written by its SQL tasks.
CREATE TABLE sql_a.trail (step text, who text, path text, at timestamptz DEFAULT clock_timestamp());
ALTER TABLE sql_a.trail OWNER TO sql_a_user;

SET search_path = sql_a;
SELECT cloacina.register_workflow($${"name": "etl", "tasks": [
    {"id": "extract", "kind": "sql",
     "sql": "INSERT INTO trail (step, who, path) VALUES ('extract', current_user, current_setting('search_path')) RETURNING jsonb_build_object('rows', 3, 'day', $1 ->> 'day')"},
    {"id": "transform", "kind": "sql", "dependencies": ["extract"],
     "sql": "INSERT INTO trail (step, who, path) SELECT 'transform', current_user, current_setting('search_path') RETURNING jsonb_build_object('seen_rows', ($1 ->> 'rows')::int)"},
    {"id": "load", "kind": "sql", "dependencies": ["transform"],
     "sql": "INSERT INTO trail (step, who, path) VALUES ('load', current_user, current_setting('search_path'))"}]}$$) IS NOT NULL AS registered;
SELECT cloacina.execute('etl', '{"day": "2026-11-26"}') AS etl \gset
SELECT status, final_context, error FROM cloacina.wait(:etl, '60 seconds');
SELECT step, who, path FROM sql_a.trail ORDER BY at;
SELECT task, status, attempt FROM cloacina.task_results(:etl);

-- An error is recorded with its SQLSTATE and retried; the last attempt fails the run.
SELECT cloacina.register_workflow($${"name": "broken", "tasks": [
    {"id": "divide", "kind": "sql", "retry": {"attempts": 2, "delay_ms": 0}, "sql": "SELECT 1 / 0"}]}$$) IS NOT NULL AS registered;
SELECT cloacina.execute('broken') AS broken \gset
SELECT status, error FROM cloacina.wait(:broken, '60 seconds');
SELECT attempt, from_status, to_status, regexp_replace(detail, 'retry at [^:]*:[^:]*:[^:]*: ', 'retry at ...: ') AS detail
  FROM sql_a.execution_events
 WHERE execution_id = :broken AND task = 'divide' AND to_status IN ('ready', 'failed') ORDER BY id;

-- timeout_ms bounds a SQL task as a statement timeout: the attempt fails with 57014.
SELECT cloacina.register_workflow($${"name": "slow", "tasks": [
    {"id": "nap", "kind": "sql", "timeout_ms": 200, "sql": "SELECT pg_sleep(30)"}]}$$) IS NOT NULL AS registered;
SELECT cloacina.execute('slow') AS slow \gset
SELECT status, error FROM cloacina.wait(:slow, '20 seconds');

-- Reaching into tenant B: denied, recorded, and B's table is untouched.
SELECT cloacina.register_workflow($${"name": "trespass", "tasks": [
    {"id": "read_b", "kind": "sql", "sql": "SELECT jsonb_build_object('stolen', (SELECT string_agg(entry, ',') FROM sql_b.ledger))"},
    {"id": "write_b", "kind": "sql", "sql": "INSERT INTO sql_b.ledger VALUES ('planted by a')"},
    {"id": "escalate", "kind": "sql", "sql": "RESET ROLE; INSERT INTO sql_b.ledger VALUES ('planted as superuser')"},
    {"id": "become_b", "kind": "sql", "sql": "SET ROLE sql_b_user; INSERT INTO sql_b.ledger VALUES ('planted as b')"}]}$$) IS NOT NULL AS registered;
SELECT cloacina.execute('trespass') AS trespass \gset
SELECT status FROM cloacina.wait(:trespass, '60 seconds');
SELECT task, status, error FROM cloacina.task_results(:trespass) ORDER BY task;
RESET search_path;
SELECT entry FROM sql_b.ledger;

-- A tenant without a role cannot register SQL tasks.
SELECT schema_name FROM cloacina.create_tenant('sql_norole');
SET search_path = sql_norole;
\set VERBOSITY terse
SELECT cloacina.register_workflow('{"name": "x", "tasks": [{"id": "t", "kind": "sql", "sql": "SELECT 1"}]}');
\set VERBOSITY default
RESET search_path;

SELECT cloacina.remove_tenant(t) FROM unnest(ARRAY['sql_a', 'sql_b', 'sql_norole']) t;
