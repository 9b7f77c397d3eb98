-- Workflow registration: defaults, versions, upsert by name, and refusal of every bad
-- definition with a message naming the offending item.
CREATE FUNCTION pg_temp.try(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;

-- Outside a tenant schema every tenant function is a clear error.
SELECT pg_temp.try($$SELECT cloacina.register_workflow('{"name": "w", "tasks": [{"id": "a"}]}')$$);
SELECT pg_temp.try($$SELECT * FROM cloacina.workflows$$);

SELECT schema_name FROM cloacina.create_tenant('tenant_wf');
SET search_path = tenant_wf;

-- Defaults are filled in; the version is a hash of the normalised definition.
SELECT cloacina.register_workflow('{"name": "customer_processing", "description": "Process customer data",
    "tasks": [{"id": "process_customer_data", "dependencies": []}]}') AS v1 \gset
SELECT name, version = :'v1' AS same_version, description, task_count,
       jsonb_pretty(definition -> 'tasks' -> 0) AS task
  FROM cloacina.workflows;

-- Registering the same definition again keeps the version; a change makes a new one.
SELECT cloacina.register_workflow('{"name": "customer_processing", "description": "Process customer data",
    "tasks": [{"id": "process_customer_data", "dependencies": []}]}') = :'v1' AS unchanged;
SELECT cloacina.register_workflow('{"name": "customer_processing",
    "tasks": [{"id": "process_customer_data", "retry": {"attempts": 3}}]}') <> :'v1' AS changed;
SELECT count(*) FROM cloacina.workflows;

-- A run keeps the version it started with.
SELECT cloacina.execute('customer_processing') AS run \gset
SELECT cloacina.register_workflow('{"name": "customer_processing",
    "tasks": [{"id": "renamed_task"}]}') IS NOT NULL AS reregistered;
SELECT task, max_attempts FROM tenant_wf.tasks WHERE execution_id = :run;
SELECT cloacina.cancel(:run);

-- Topological order and dependents are computed at registration.
SELECT cloacina.register_workflow('{"name": "diamond", "tasks": [
    {"id": "d", "dependencies": ["b", "c"]}, {"id": "c", "dependencies": ["a"]},
    {"id": "b", "dependencies": ["a"]}, {"id": "a"}]}') IS NOT NULL AS ok;
SELECT t ->> 'id' AS id, t -> 'position' AS position, t -> 'topo_index' AS topo_index, t -> 'dependents' AS dependents
  FROM cloacina.workflows w, jsonb_array_elements(w.definition -> 'tasks') t
 WHERE w.name = 'diamond' ORDER BY (t ->> 'topo_index')::int;

-- The bad-definition corpus.
CREATE TEMP TABLE bad_definitions (label text, definition text);
INSERT INTO bad_definitions VALUES
    ('not an object', '[1, 2]'),
    ('a string', '"workflow"'),
    ('null', 'null'),
    ('unknown top-level key', '{"name": "w", "tasks": [{"id": "a"}], "taks": []}'),
    ('missing name', '{"tasks": [{"id": "a"}]}'),
    ('name not a string', '{"name": 5, "tasks": [{"id": "a"}]}'),
    ('name with a dot', '{"name": "w.x", "tasks": [{"id": "a"}]}'),
    ('name with a quote', '{"name": "w''; drop table x; --", "tasks": [{"id": "a"}]}'),
    ('name too long', '{"name": "' || repeat('w', 64) || '", "tasks": [{"id": "a"}]}'),
    ('description not a string', '{"name": "w", "description": 1, "tasks": [{"id": "a"}]}'),
    ('no tasks', '{"name": "w"}'),
    ('empty tasks', '{"name": "w", "tasks": []}'),
    ('tasks not an array', '{"name": "w", "tasks": {"id": "a"}}'),
    ('task not an object', '{"name": "w", "tasks": ["a"]}'),
    ('task without id', '{"name": "w", "tasks": [{"dependencies": []}]}'),
    ('task id empty', '{"name": "w", "tasks": [{"id": ""}]}'),
    ('task id with space', '{"name": "w", "tasks": [{"id": "a b"}]}'),
    ('duplicate task id', '{"name": "w", "tasks": [{"id": "a"}, {"id": "a"}]}'),
    ('unknown task key', '{"name": "w", "tasks": [{"id": "a", "retires": 3}]}'),
    ('self dependency', '{"name": "w", "tasks": [{"id": "a", "dependencies": ["a"]}]}'),
    ('missing dependency', '{"name": "w", "tasks": [{"id": "a", "dependencies": ["ghost"]}]}'),
    ('dependency twice', '{"name": "w", "tasks": [{"id": "a"}, {"id": "b", "dependencies": ["a", "a"]}]}'),
    ('dependencies not an array', '{"name": "w", "tasks": [{"id": "a"}, {"id": "b", "dependencies": "a"}]}'),
    ('dependency not a string', '{"name": "w", "tasks": [{"id": "a"}, {"id": "b", "dependencies": [1]}]}'),
    ('two-task cycle', '{"name": "w", "tasks": [{"id": "a", "dependencies": ["b"]}, {"id": "b", "dependencies": ["a"]}]}'),
    ('three-task cycle behind a root', '{"name": "w", "tasks": [{"id": "r"}, {"id": "a", "dependencies": ["r", "c"]},
        {"id": "b", "dependencies": ["a"]}, {"id": "c", "dependencies": ["b"]}]}'),
    ('misspelt backoff', '{"name": "w", "tasks": [{"id": "a", "retry": {"backoff": "expo"}}]}'),
    ('unknown retry key', '{"name": "w", "tasks": [{"id": "a", "retry": {"attempts": 2, "delay": 5}}]}'),
    ('retry not an object', '{"name": "w", "tasks": [{"id": "a", "retry": 3}]}'),
    ('zero attempts', '{"name": "w", "tasks": [{"id": "a", "retry": {"attempts": 0}}]}'),
    ('fractional attempts', '{"name": "w", "tasks": [{"id": "a", "retry": {"attempts": 2.5}}]}'),
    ('attempts as a string', '{"name": "w", "tasks": [{"id": "a", "retry": {"attempts": "3"}}]}'),
    ('too many attempts', '{"name": "w", "tasks": [{"id": "a", "retry": {"attempts": 1000}}]}'),
    ('negative delay', '{"name": "w", "tasks": [{"id": "a", "retry": {"delay_ms": -1}}]}'),
    ('max delay below delay', '{"name": "w", "tasks": [{"id": "a", "retry": {"delay_ms": 500, "max_delay_ms": 100}}]}'),
    ('jitter not a boolean', '{"name": "w", "tasks": [{"id": "a", "retry": {"jitter": "yes"}}]}'),
    ('zero timeout', '{"name": "w", "tasks": [{"id": "a", "timeout_ms": 0}]}'),
    ('huge timeout', '{"name": "w", "tasks": [{"id": "a", "timeout_ms": 1e12}]}'),
    ('misspelt trigger rule', '{"name": "w", "tasks": [{"id": "a", "trigger_rule": "all_succes"}]}'),
    ('trigger rule not a string', '{"name": "w", "tasks": [{"id": "a", "trigger_rule": true}]}'),
    ('unknown kind', '{"name": "w", "tasks": [{"id": "a", "kind": "python"}]}'),
    ('sql kind without sql', '{"name": "w", "tasks": [{"id": "a", "kind": "sql"}]}'),
    ('sql kind with blank sql', '{"name": "w", "tasks": [{"id": "a", "kind": "sql", "sql": "  "}]}'),
    ('sql on a handler', '{"name": "w", "tasks": [{"id": "a", "sql": "select 1"}]}'),
    ('priority out of range', '{"name": "w", "tasks": [{"id": "a", "priority": 5000}]}'),
    ('condition without op', '{"name": "w", "tasks": [{"id": "a", "when": {"key": "k", "value": 1}}]}'),
    ('condition with unknown op', '{"name": "w", "tasks": [{"id": "a", "when": {"key": "k", "op": "like", "value": 1}}]}'),
    ('condition missing value', '{"name": "w", "tasks": [{"id": "a", "when": {"key": "k", "op": "equals"}}]}'),
    ('exists with a value', '{"name": "w", "tasks": [{"id": "a", "when": {"key": "k", "op": "exists", "value": 1}}]}'),
    ('condition unknown key', '{"name": "w", "tasks": [{"id": "a", "when": {"key": "k", "op": "exists", "x": 1}}]}'),
    ('condition empty key', '{"name": "w", "tasks": [{"id": "a", "when": {"key": "", "op": "exists"}}]}'),
    ('too many tasks', (SELECT jsonb_build_object('name', 'big', 'tasks',
        jsonb_agg(jsonb_build_object('id', 't' || i)))::text FROM generate_series(1, 1001) i));
SELECT label, pg_temp.try(format('SELECT cloacina.register_workflow(%L)', definition)) AS result
  FROM bad_definitions ORDER BY label;
SELECT count(*) AS cases,
       count(*) FILTER (WHERE pg_temp.try(format('SELECT cloacina.register_workflow(%L)', definition)) = 'ok') AS accepted,
       count(*) FILTER (WHERE pg_temp.try(format('SELECT cloacina.register_workflow(%L)', definition)) !~ '^(22023|22004|54000): ') AS other_sqlstate
  FROM bad_definitions;
-- Nothing of them was stored.
SELECT name FROM cloacina.workflows ORDER BY name;

-- The largest allowed workflow: 1000 tasks in a chain registers and starts.
SELECT cloacina.register_workflow(jsonb_build_object('name', 'long_chain', 'tasks',
    (SELECT jsonb_agg(CASE WHEN i = 1 THEN jsonb_build_object('id', 't1')
                           ELSE jsonb_build_object('id', 't' || i, 'dependencies', jsonb_build_array('t' || (i - 1))) END
                      ORDER BY i)
     FROM generate_series(1, 1000) i))) IS NOT NULL AS registered;
SELECT cloacina.execute('long_chain') AS chain \gset
SELECT status, count(*) FROM tenant_wf.tasks WHERE execution_id = :chain GROUP BY status ORDER BY status;
SELECT cloacina.cancel(:chain);

RESET search_path;
SELECT cloacina.remove_tenant('tenant_wf');
