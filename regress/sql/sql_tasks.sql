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

-- cancel reaches a running SQL task: the task shows running while its SQL runs, cancel returns
-- at once, the task's statement is cancelled and its effects are rolled back.
SET search_path = sql_a;
CREATE FUNCTION pg_temp.wait_for(condition text, seconds int DEFAULT 30) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    deadline timestamptz := clock_timestamp() + make_interval(secs => seconds);
    holds boolean;
BEGIN
    LOOP
        EXECUTE condition INTO holds;
        IF holds THEN
            RETURN true;
        END IF;
        IF clock_timestamp() > deadline THEN
            RETURN false;
        END IF;
        PERFORM pg_sleep(0.02);
    END LOOP;
END
$$;
SELECT cloacina.register_workflow($${"name": "long", "tasks": [{"id": "sleepy", "kind": "sql",
    "retry": {"attempts": 3},
    "sql": "INSERT INTO trail (step, who, path) VALUES ('long', current_user, ''); SELECT pg_sleep(30)"}]}$$) IS NOT NULL AS registered;
SELECT cloacina.execute('long') AS long \gset
SELECT pg_temp.wait_for(format($$SELECT status = 'running' FROM sql_a.tasks WHERE execution_id = %s$$, :long)) AS running;
SELECT clock_timestamp() AS cancelled_at \gset
SELECT cloacina.cancel(:long);
SELECT status, error FROM cloacina.wait(:long, '5 seconds');
SELECT pg_temp.wait_for(format($$SELECT NOT cloacina._sql_task_alive('sql_a', id) FROM sql_a.tasks WHERE execution_id = %s$$, :long)) AS worker_let_go,
       clock_timestamp() - :'cancelled_at' < interval '2 seconds' AS within_2_seconds;
SELECT task, status, attempt FROM cloacina.task_results(:long);
SELECT count(*) AS long_effects FROM trail WHERE step = 'long';

-- A run's timeout reaches its running SQL task the same way.
SELECT cloacina.execute('long', '{}', '{"timeout_ms": 300}') AS timed \gset
SELECT status, error FROM cloacina.wait(:timed, '10 seconds');
SELECT pg_temp.wait_for(format($$SELECT NOT cloacina._sql_task_alive('sql_a', id) FROM sql_a.tasks WHERE execution_id = %s$$, :timed)) AS worker_let_go;
SELECT status, finished_at - created_at < interval '5 seconds' AS ended_soon FROM sql_a.executions WHERE id = :timed;
SELECT count(*) AS long_effects FROM trail WHERE step = 'long';

-- A task that catches the cancel of its timeout and carries on is stopped all the same: its
-- worker ends itself a second later (and starts again), and the attempt ends as abandoned.
SELECT cloacina.register_workflow($${"name": "stubborn", "tasks": [{"id": "loop", "kind": "sql",
    "timeout_ms": 200, "sql": "INSERT INTO trail (step, who, path) VALUES ('stubborn', current_user, ''); DO $b$ BEGIN LOOP BEGIN PERFORM pg_sleep(10); EXCEPTION WHEN query_canceled THEN NULL; END; END LOOP; END $b$"}]}$$) IS NOT NULL AS registered;
SELECT cloacina.execute('stubborn') AS stubborn \gset
SELECT pg_temp.wait_for(format($$SELECT status <> 'running' FROM sql_a.executions WHERE id = %s$$, :stubborn)) AS ended;
SELECT status, regexp_replace(error, 'sql worker \d+', 'sql worker N') AS error FROM cloacina.execution_status(:stubborn);
SELECT count(*) AS stubborn_effects FROM trail WHERE step = 'stubborn';
-- the pool is whole again: a new SQL task runs
SELECT cloacina.execute('etl', '{"day": "2026-11-27"}') AS again \gset
SELECT status FROM cloacina.wait(:again, '60 seconds');
RESET search_path;

-- A tenant without a role cannot register SQL tasks.
SELECT schema_name FROM cloacina.create_tenant('sql_norole');
SET search_path = sql_norole;
\set VERBOSITY terse
SELECT cloacina.register_workflow('{"name": "x", "tasks": [{"id": "t", "kind": "sql", "sql": "SELECT 1"}]}');
\set VERBOSITY default
RESET search_path;

SELECT cloacina.remove_tenant(t) FROM unnest(ARRAY['sql_a', 'sql_b', 'sql_norole']) t;
