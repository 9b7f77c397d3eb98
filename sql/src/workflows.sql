-- sql/src/workflows.sql: workflow registration and validation.

------------------------------------------------------------------------------------------------
-- 4. Workflow registration and validation
------------------------------------------------------------------------------------------------

-- Reads an integer from a JSON value, refusing anything else with a message naming "what".
CREATE FUNCTION cloacina._json_int(v jsonb, what text, lo bigint, hi bigint) RETURNS bigint
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n numeric;
BEGIN
    IF jsonb_typeof(v) IS DISTINCT FROM 'number' THEN
        RAISE EXCEPTION '% must be an integer (got %)', what, coalesce(v::text, 'nothing')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    n := v::numeric;
    IF n <> trunc(n) OR n < lo OR n > hi THEN
        RAISE EXCEPTION '% must be an integer between % and % (got %)', what, lo, hi, v::text
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN n::bigint;
END
$$;

-- Refuses keys of "obj" outside "allowed", naming the first unknown one.
CREATE FUNCTION cloacina._json_keys_allowed(obj jsonb, what text, allowed text[]) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    unknown text;
BEGIN
    IF jsonb_typeof(obj) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION '% must be a JSON object (got %)', what, coalesce(jsonb_typeof(obj), 'nothing')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT k INTO unknown FROM jsonb_object_keys(obj) k WHERE k <> ALL (allowed) ORDER BY k LIMIT 1;
    IF unknown IS NOT NULL THEN
        RAISE EXCEPTION '% has unknown key "%"', what, unknown
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Allowed keys: %s.', array_to_string(allowed, ', '));
    END IF;
END
$$;

-- Reads a string that must be one of "choices" (or the default when absent).
CREATE FUNCTION cloacina._json_choice(v jsonb, what text, choices text[], fallback text) RETURNS text
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF v IS NULL OR v = 'null'::jsonb THEN
        RETURN fallback;
    END IF;
    IF jsonb_typeof(v) <> 'string' OR NOT (v #>> '{}') = ANY (choices) THEN
        RAISE EXCEPTION '% must be one of % (got %)', what, array_to_string(choices, ', '), v::text
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN v #>> '{}';
END
$$;

-- Checks a workflow definition completely and returns it normalised: every key present with its
-- default, plus each task's declaration position, topological index and dependents. Everything
-- the engine needs later is decided here, once, at registration.
-- The graph half of the validation (extension/workflow_graph.c): see _normalize_workflow.
CREATE FUNCTION cloacina._workflow_graph(workflow text, tasks jsonb) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'cloacina_workflow_graph' LANGUAGE C IMMUTABLE STRICT;

CREATE FUNCTION cloacina._normalize_workflow(def jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    name_pattern constant text := '^[A-Za-z][A-Za-z0-9_-]{0,62}$';
    max_tasks    constant int := 1000;
    wf_name   text;
    tasks     jsonb;
    n         int;
    t         jsonb;
    what      text;
    dep_list  text[];
    not_an_id jsonb;
    retry     jsonb;
    cond      jsonb;
    op        text;
    kind      text;
    attempts  bigint;
    delay     bigint;
    max_delay bigint;
    normalized jsonb[] := '{}';
    graph     jsonb;
BEGIN
    IF def IS NULL THEN
        RAISE EXCEPTION 'workflow definition must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    PERFORM cloacina._json_keys_allowed(def, 'workflow definition', ARRAY['name', 'description', 'tasks']);

    IF jsonb_typeof(def -> 'name') IS DISTINCT FROM 'string' OR (def ->> 'name') !~ name_pattern THEN
        RAISE EXCEPTION 'workflow name must be a string of letters, digits, "_" and "-" starting with a letter (got %)',
                        coalesce((def -> 'name')::text, 'nothing')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    wf_name := def ->> 'name';
    IF def ? 'description' AND jsonb_typeof(def -> 'description') NOT IN ('string', 'null') THEN
        RAISE EXCEPTION 'workflow "%": description must be a string', wf_name USING ERRCODE = 'invalid_parameter_value';
    END IF;

    tasks := def -> 'tasks';
    IF jsonb_typeof(tasks) IS DISTINCT FROM 'array' OR jsonb_array_length(tasks) = 0 THEN
        RAISE EXCEPTION 'workflow "%": tasks must be a non-empty array', wf_name
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    n := jsonb_array_length(tasks);
    IF n > max_tasks THEN
        RAISE EXCEPTION 'workflow "%" has % tasks, more than the limit of %', wf_name, n, max_tasks
            USING ERRCODE = 'program_limit_exceeded';
    END IF;

    -- First pass: ids (unique ones: _workflow_graph checks that with the dependencies).
    FOR i IN 0 .. n - 1 LOOP
        t := tasks -> i;
        IF jsonb_typeof(t) IS DISTINCT FROM 'object' THEN
            RAISE EXCEPTION 'workflow "%": task #% must be a JSON object', wf_name, i + 1
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF jsonb_typeof(t -> 'id') IS DISTINCT FROM 'string' OR (t ->> 'id') !~ name_pattern THEN
            RAISE EXCEPTION 'workflow "%": task #% needs an "id" of letters, digits, "_" and "-" starting with a letter (got %)',
                            wf_name, i + 1, coalesce((t -> 'id')::text, 'nothing')
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END LOOP;

    -- Second pass: every key of every task.
    FOR i IN 0 .. n - 1 LOOP
        t := tasks -> i;
        what := format('task "%s"', t ->> 'id');
        PERFORM cloacina._json_keys_allowed(t, what,
            ARRAY['id', 'description', 'dependencies', 'kind', 'sql', 'retry', 'timeout_ms',
                  'trigger_rule', 'when', 'priority']);

        dep_list := '{}';
        IF t ? 'dependencies' AND t -> 'dependencies' <> 'null'::jsonb THEN
            IF jsonb_typeof(t -> 'dependencies') <> 'array' THEN
                RAISE EXCEPTION '%: dependencies must be an array of task ids', what
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            -- known, not itself, not twice: checked by _workflow_graph, in linear time
            SELECT array_agg(d.value #>> '{}' ORDER BY d.ord),
                   (array_agg(d.value ORDER BY d.ord) FILTER (WHERE jsonb_typeof(d.value) <> 'string'))[1]
              INTO dep_list, not_an_id
              FROM jsonb_array_elements(t -> 'dependencies') WITH ORDINALITY AS d(value, ord);
            IF not_an_id IS NOT NULL THEN
                RAISE EXCEPTION '%: dependencies must be an array of task ids (got %)', what, not_an_id::text
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            dep_list := coalesce(dep_list, '{}');
        END IF;

        kind := cloacina._json_choice(t -> 'kind', what || ': kind', ARRAY['handler', 'sql'], 'handler');
        IF kind = 'sql' AND (jsonb_typeof(t -> 'sql') IS DISTINCT FROM 'string' OR btrim(t ->> 'sql') = '') THEN
            RAISE EXCEPTION '%: a task of kind "sql" needs a non-empty "sql" string', what
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF kind = 'handler' AND t ? 'sql' THEN
            RAISE EXCEPTION '%: "sql" is only allowed with "kind": "sql"', what
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF t ? 'description' AND jsonb_typeof(t -> 'description') NOT IN ('string', 'null') THEN
            RAISE EXCEPTION '%: description must be a string', what USING ERRCODE = 'invalid_parameter_value';
        END IF;

        retry := coalesce(nullif(t -> 'retry', 'null'::jsonb), '{}'::jsonb);
        PERFORM cloacina._json_keys_allowed(retry, what || ': retry',
            ARRAY['attempts', 'backoff', 'delay_ms', 'max_delay_ms', 'jitter']);
        attempts := CASE WHEN retry ? 'attempts'
                         THEN cloacina._json_int(retry -> 'attempts', what || ': retry.attempts', 1, 100) ELSE 1 END;
        delay := CASE WHEN retry ? 'delay_ms'
                      THEN cloacina._json_int(retry -> 'delay_ms', what || ': retry.delay_ms', 0, 86400000) ELSE 1000 END;
        max_delay := CASE WHEN retry ? 'max_delay_ms'
                          THEN cloacina._json_int(retry -> 'max_delay_ms', what || ': retry.max_delay_ms', 0, 86400000)
                          ELSE greatest(delay, 300000) END;
        IF max_delay < delay THEN
            RAISE EXCEPTION '%: retry.max_delay_ms (%) is less than retry.delay_ms (%)', what, max_delay, delay
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF retry ? 'jitter' AND jsonb_typeof(retry -> 'jitter') <> 'boolean' THEN
            RAISE EXCEPTION '%: retry.jitter must be true or false (got %)', what, (retry -> 'jitter')::text
                USING ERRCODE = 'invalid_parameter_value';
        END IF;

        cond := nullif(t -> 'when', 'null'::jsonb);
        IF cond IS NOT NULL THEN
            PERFORM cloacina._json_keys_allowed(cond, what || ': when', ARRAY['key', 'op', 'value']);
            IF jsonb_typeof(cond -> 'key') IS DISTINCT FROM 'string' OR (cond ->> 'key') = '' THEN
                RAISE EXCEPTION '%: when.key must be a non-empty string', what USING ERRCODE = 'invalid_parameter_value';
            END IF;
            op := cloacina._json_choice(cond -> 'op', what || ': when.op',
                ARRAY['equals', 'not_equals', 'gt', 'lt', 'contains', 'exists', 'not_exists'], NULL);
            IF op IS NULL THEN
                RAISE EXCEPTION '%: when.op is required', what USING ERRCODE = 'invalid_parameter_value';
            END IF;
            IF op IN ('exists', 'not_exists') AND cond ? 'value' THEN
                RAISE EXCEPTION '%: when.op "%" takes no value', what, op USING ERRCODE = 'invalid_parameter_value';
            ELSIF op NOT IN ('exists', 'not_exists') AND NOT cond ? 'value' THEN
                RAISE EXCEPTION '%: when.op "%" needs a value', what, op USING ERRCODE = 'invalid_parameter_value';
            END IF;
        END IF;

        normalized := normalized || jsonb_build_object(
            'id', t ->> 'id',
            'description', t -> 'description',
            'dependencies', to_jsonb(dep_list),
            'kind', kind,
            'sql', t -> 'sql',
            'retry', jsonb_build_object(
                'attempts', attempts,
                'backoff', cloacina._json_choice(retry -> 'backoff', what || ': retry.backoff',
                                                 ARRAY['fixed', 'linear', 'exponential'], 'exponential'),
                'delay_ms', delay,
                'max_delay_ms', max_delay,
                'jitter', coalesce((retry -> 'jitter')::boolean, false)),
            'timeout_ms', CASE WHEN t ? 'timeout_ms' AND t -> 'timeout_ms' <> 'null'::jsonb
                               THEN to_jsonb(cloacina._json_int(t -> 'timeout_ms', what || ': timeout_ms', 1, 604800000))
                               END,
            'trigger_rule', cloacina._json_choice(t -> 'trigger_rule', what || ': trigger_rule',
                ARRAY['all_success', 'all_done', 'one_success', 'one_failed', 'always'], 'all_success'),
            'when', cond,
            'priority', CASE WHEN t ? 'priority'
                             THEN cloacina._json_int(t -> 'priority', what || ': priority', -1000, 1000) ELSE 0 END,
            'position', i);
    END LOOP;

    -- Ids unique, dependencies known, no cycle; topological order (the earliest-declared ready
    -- task first: the order in which outputs merge into final_context) and dependents.
    graph := cloacina._workflow_graph(wf_name, to_jsonb(normalized));
    FOR i IN 1 .. n LOOP
        normalized[i] := normalized[i] || (graph -> (i - 1));
    END LOOP;

    RETURN jsonb_build_object('name', wf_name, 'description', def -> 'description',
                              'tasks', to_jsonb(normalized));
END
$$;
COMMENT ON FUNCTION cloacina._normalize_workflow(jsonb) IS
    'Validates a workflow definition and returns it with every default filled in';

CREATE FUNCTION cloacina._register_workflow(s text, def jsonb) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    sql_role text;
    normalized jsonb;
    version text;
BEGIN
    PERFORM cloacina._require_tenant(s);
    normalized := cloacina._normalize_workflow(def);
    IF jsonb_path_exists(normalized, '$.tasks[*] ? (@.kind == "sql")') THEN
        EXECUTE format('SELECT role_name FROM %I.tenant_settings', s) INTO sql_role;
        IF sql_role IS NULL THEN
            RAISE EXCEPTION 'workflow "%" has SQL tasks, but tenant "%" has no role to run them as', normalized ->> 'name', s
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'SQL tasks run as the tenant''s own role: create the tenant with a user name.';
        END IF;
    END IF;
    version := left(encode(sha256(convert_to(normalized::text, 'UTF8')), 'hex'), 16);
    EXECUTE format($q$
        INSERT INTO %I.workflows AS w (name, version, description, definition)
        VALUES ($1, $2, $3, $4)
        ON CONFLICT (name) DO UPDATE
            SET version = excluded.version, description = excluded.description,
                definition = excluded.definition,
                updated_at = CASE WHEN w.version = excluded.version THEN w.updated_at ELSE $5 END$q$, s)
        USING normalized ->> 'name', version, normalized ->> 'description', normalized, now();  -- docs/citus.md, rule 2
    RETURN version;
END
$$;

-- Removes a workflow's definition. Its unfinished runs go on (each run holds its own copy of its
-- tasks), and so does retry() of its ended runs; the schedules that start it must go first.
CREATE FUNCTION cloacina._unregister_workflow(s text, workflow text) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    schedules text[];
    removed text;
BEGIN
    PERFORM cloacina._require_tenant(s);
    EXECUTE format('SELECT name FROM %I.workflows WHERE name = $1 FOR UPDATE', s) INTO removed USING workflow;
    IF removed IS NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('SELECT array_agg(name ORDER BY name) FROM %I.schedules WHERE workflow = $1', s)
        INTO schedules USING workflow;
    IF schedules IS NOT NULL THEN
        RAISE EXCEPTION 'workflow "%" is started by % schedule(s): %', workflow, cardinality(schedules),
                        array_to_string(schedules, ', ')
            USING ERRCODE = 'dependent_objects_still_exist',
                  HINT = 'Remove them first with cloacina.unschedule(name).';
    END IF;
    EXECUTE format('DELETE FROM %I.workflows WHERE name = $1', s) USING workflow;
    RETURN true;
END
$$;
