-- sql/src/helpers.sql: C helpers, name checks, the context merge, the tenant check.

-- C helpers (extension/secret.c, extension/wait.c)
CREATE FUNCTION cloacina._generate_password() RETURNS text
    AS 'MODULE_PATHNAME', 'cloacina_generate_password' LANGUAGE C VOLATILE STRICT;
CREATE FUNCTION cloacina._random_token(nbytes int) RETURNS text
    AS 'MODULE_PATHNAME', 'cloacina_random_token' LANGUAGE C VOLATILE STRICT;
CREATE FUNCTION cloacina._scram_verifier(password text) RETURNS text
    AS 'MODULE_PATHNAME', 'cloacina_scram_verifier' LANGUAGE C VOLATILE STRICT;
CREATE FUNCTION cloacina._url_escape(value text) RETURNS text
    AS 'MODULE_PATHNAME', 'cloacina_url_escape' LANGUAGE C IMMUTABLE STRICT;
CREATE FUNCTION cloacina._due(schema_name text, due_at timestamptz, sql_ready boolean DEFAULT false) RETURNS void
    AS 'MODULE_PATHNAME', 'cloacina_due' LANGUAGE C VOLATILE;
-- The SQL-task pool's slots (extension/sqlslot.c): is a SQL task being run by a pool worker
-- now (the reaper ends the attempt of one that is not), and cancel the running SQL tasks of a
-- run when the caller's transaction commits. Both only for a schema the caller may use.
CREATE FUNCTION cloacina._sql_task_alive(schema_name text, task_id bigint) RETURNS boolean
    AS 'MODULE_PATHNAME', 'cloacina_sql_task_alive' LANGUAGE C VOLATILE;
CREATE FUNCTION cloacina._cancel_sql_tasks(schema_name text, execution_id bigint) RETURNS void
    AS 'MODULE_PATHNAME', 'cloacina_cancel_sql_tasks' LANGUAGE C VOLATILE;
-- Refuses a context over cloacina.max_context_bytes or cloacina.max_context_depth (54000).
CREATE FUNCTION cloacina._check_context(context jsonb, what text) RETURNS void
    AS 'MODULE_PATHNAME', 'cloacina_check_context_fn' LANGUAGE C STABLE;
-- A server log line about a tenant at cloacina.event_log_level (extension/event_log.c): the
-- background workers' duties call it; tenants may not write the server log.
CREATE FUNCTION cloacina._log_event(schema_name text, message text) RETURNS void
    AS 'MODULE_PATHNAME', 'cloacina_log_event_fn' LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION cloacina._generate_password(), cloacina._random_token(int),
    cloacina._scram_verifier(text), cloacina._log_event(text, text) FROM PUBLIC;

-- Refuses a tenant or role name that is not a plain lower-case identifier, or that is reserved.
-- Names are also quoted everywhere they are used; this check keeps them predictable and
-- URL-safe, and makes mixed case an error instead of a second tenant.
CREATE FUNCTION cloacina._check_name(kind text, name text) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF name IS NULL OR name = '' THEN
        RAISE EXCEPTION '% must not be empty', kind USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF octet_length(name) > 63 THEN
        RAISE EXCEPTION '% is too long (% bytes)', kind, octet_length(name)
            USING ERRCODE = 'name_too_long', HINT = 'Use at most 63 characters.';
    END IF;
    IF name ~ '^[A-Za-z][A-Za-z0-9_]*$' AND name <> lower(name) THEN
        RAISE EXCEPTION '% "%" contains upper-case letters', kind, name
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Names are lower case; use "%s".', lower(name));
    END IF;
    IF name !~ '^[a-z][a-z0-9_]*$' THEN
        RAISE EXCEPTION 'invalid % %', kind, quote_literal(name)
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'Names start with a lower-case ASCII letter and contain only lower-case ASCII letters, digits and underscores.';
    END IF;
    IF name IN ('public', 'information_schema', 'none', 'current_user', 'session_user',
                'current_role', 'current_schema', 'postgres')
       OR name LIKE 'pg\_%' OR name = 'cloacina' OR name LIKE 'cloacina\_%' THEN
        RAISE EXCEPTION '% "%" is reserved', kind, name USING ERRCODE = 'reserved_name';
    END IF;
END
$$;

-- Deep merge of two JSON values: objects merge key by key recursively, anything else in
-- "patch" replaces "base". This is how a task's input and a run's final_context are built.
CREATE FUNCTION cloacina.context_merge(base jsonb, patch jsonb) RETURNS jsonb
AS 'MODULE_PATHNAME', 'cloacina_context_merge' LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION cloacina.context_merge(jsonb, jsonb) IS
    'Deep-merges patch into base: objects merge recursively, anything else in patch wins';

CREATE AGGREGATE cloacina.context_merge_agg(jsonb) (
    SFUNC = cloacina.context_merge, STYPE = jsonb);
COMMENT ON AGGREGATE cloacina.context_merge_agg(jsonb) IS
    'Folds cloacina.context_merge over its inputs in the aggregate''s ORDER BY';

-- Whether a schema is a registered tenant: the registry is the authority for the tenant check
-- (extension/tenant_path.c), and tenants may not read it. Tells one boolean about a name.
CREATE FUNCTION cloacina._is_registered(schema_name text) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT EXISTS (SELECT FROM cloacina.tenant t WHERE t.schema_name = _is_registered.schema_name) $$;

-- Raises the standard error (3F000) for a call made outside a tenant schema, or permission
-- denied for a tenant the caller may not use (extension/tenant_path.c: the one tenant check).
CREATE FUNCTION cloacina._require_tenant(schema_name text) RETURNS void
    AS 'MODULE_PATHNAME', 'cloacina_require_tenant_fn' LANGUAGE C STABLE;
