-- cloacina 0.1.0: the install script as released (frozen: never edited). Later versions install
-- from sql/src/ and reach the current one from here through sql/cloacina--A--B.sql update scripts.
--
-- Security model in one paragraph: admin functions are SECURITY DEFINER with a pinned search_path,
-- revoked from PUBLIC and granted to cloacina_admin. Tenant functions are SECURITY INVOKER, so the
-- caller's own privileges decide what it can touch. The public tenant functions are thin SQL
-- wrappers (no search_path pinning, so they can read the caller's current_schema()); the engine
-- functions they call pin search_path to pg_catalog so that objects a tenant creates in its own
-- schema can never change how the engine's statements resolve operators or functions. The task
-- path (claim, heartbeat, complete, fail and their batches, wait) is C instead: those functions
-- read the caller's current schema themselves and pin the search path for their statements the
-- same way (extension/tenant_path.c).

\echo Use "CREATE EXTENSION cloacina" to load this file. \quit
-- sql/src/registry.sql: roles, the preload check and the admin registry: objects created once.

------------------------------------------------------------------------------------------------
-- 1. Roles, registry, helpers
------------------------------------------------------------------------------------------------

DO $roles$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'cloacina_admin') THEN
        CREATE ROLE cloacina_admin NOLOGIN;
    END IF;
END
$roles$;

GRANT USAGE ON SCHEMA cloacina TO PUBLIC;

-- Leases, timeouts, cron and SQL tasks need the background worker, which only a library loaded
-- at server start can run.
CREATE FUNCTION cloacina._preloaded() RETURNS boolean
    AS 'MODULE_PATHNAME', 'cloacina_preloaded_fn' LANGUAGE C STABLE;
DO $preload$
BEGIN
    IF NOT cloacina._preloaded() THEN
        RAISE EXCEPTION 'cloacina must be loaded via shared_preload_libraries'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Add cloacina to shared_preload_libraries in postgresql.conf, set cloacina.database, and restart the server.';
    END IF;
    IF current_database() <> current_setting('cloacina.database') THEN
        RAISE WARNING 'cloacina''s background worker serves database "%", not this one', current_setting('cloacina.database')
            USING DETAIL = 'Without it, expired leases, timeouts, schedules and SQL tasks are not handled here.',
                  HINT = 'Set cloacina.database to this database and restart the server.';
    END IF;
END
$preload$;

-- The admin registry: one row per tenant. Tenants cannot read it.
CREATE TABLE cloacina.tenant (
    schema_name text PRIMARY KEY,
    username    text UNIQUE,
    state       text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'suspended')),
    max_running int CHECK (max_running > 0),
    weight      int NOT NULL DEFAULT 1 CHECK (weight > 0),
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now()
);
SELECT pg_catalog.pg_extension_config_dump('cloacina.tenant', '');
REVOKE ALL ON cloacina.tenant FROM PUBLIC;
GRANT SELECT ON cloacina.tenant TO cloacina_admin;
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
CREATE FUNCTION cloacina._wait(schema_name text, execution_id bigint, timeout interval)
    RETURNS TABLE(status text, final_context jsonb, error text)
    AS 'MODULE_PATHNAME', 'cloacina_wait' LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION cloacina._generate_password(), cloacina._random_token(int),
    cloacina._scram_verifier(text) FROM PUBLIC;

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

-- Raises the standard error (3F000) for a call made outside a tenant schema, or permission
-- denied for a tenant the caller may not use (extension/tenant_path.c: the one tenant check).
CREATE FUNCTION cloacina._require_tenant(schema_name text) RETURNS void
    AS 'MODULE_PATHNAME', 'cloacina_require_tenant_fn' LANGUAGE C STABLE;
-- sql/src/tenant_ddl.sql: the tables, indexes and grants of one tenant schema (create_tenant runs them).

------------------------------------------------------------------------------------------------
-- 2. Per-tenant objects
------------------------------------------------------------------------------------------------

-- Creates the tables and indexes of one tenant schema. Everything a tenant owns lives in its
-- schema (nothing on the tenant path touches the cloacina schema), so the schema can later be
-- moved as one unit (design §9).
CREATE FUNCTION cloacina._create_tenant_tables(s text, channel text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    EXECUTE format($ddl$
        CREATE TABLE %1$I.tenant_settings (
            singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
            state          text NOT NULL DEFAULT 'active',
            max_running    int,
            weight         int NOT NULL DEFAULT 1,
            notify_channel text NOT NULL,
            role_name      text);
        INSERT INTO %1$I.tenant_settings (notify_channel) VALUES (%2$L);

        CREATE TABLE %1$I.workflows (
            name        text PRIMARY KEY,
            version     text NOT NULL,
            description text,
            definition  jsonb NOT NULL,
            created_at  timestamptz NOT NULL DEFAULT now(),
            updated_at  timestamptz NOT NULL DEFAULT now());

        CREATE TABLE %1$I.executions (
            id               bigserial PRIMARY KEY,
            workflow         text NOT NULL,
            workflow_version text NOT NULL,
            status           text NOT NULL,
            input_context    jsonb NOT NULL,
            final_context    jsonb,
            error            text,
            priority         int NOT NULL DEFAULT 0,
            idempotency_key  text,
            run_at           timestamptz NOT NULL,
            deadline         timestamptz,
            task_count       int NOT NULL,   -- all its tasks
            pending_tasks    int NOT NULL,   -- those not finished yet
            created_at       timestamptz NOT NULL DEFAULT now(),
            finished_at      timestamptz);
        -- Partial: most runs have no key, and every write of their row would add an entry.
        CREATE UNIQUE INDEX ON %1$I.executions (idempotency_key) WHERE idempotency_key IS NOT NULL;
        CREATE INDEX ON %1$I.executions (created_at, id) WHERE status IN ('running', 'paused');
        CREATE INDEX ON %1$I.executions (finished_at) WHERE finished_at IS NOT NULL;
        CREATE INDEX ON %1$I.executions (deadline) WHERE deadline IS NOT NULL AND status IN ('running', 'paused');

        CREATE TABLE %1$I.tasks (
            id            bigserial PRIMARY KEY,
            execution_id  bigint NOT NULL,
            workflow      text NOT NULL,
            task          text NOT NULL,
            position      int NOT NULL,
            topo_index    int NOT NULL,
            kind          text NOT NULL,
            sql           text,
            dependencies  text[] NOT NULL,
            dependents    text[] NOT NULL,
            pending_deps  int NOT NULL,
            trigger_rule  text NOT NULL,
            condition     jsonb,
            max_attempts  int NOT NULL,
            backoff       text NOT NULL,
            delay_ms      bigint NOT NULL,
            max_delay_ms  bigint NOT NULL,
            jitter        boolean NOT NULL,
            timeout_ms    bigint,
            priority      int NOT NULL,
            status        text NOT NULL,
            attempt       int NOT NULL DEFAULT 0,
            fence         bigint NOT NULL DEFAULT 0,
            ready_at      timestamptz,
            lease         interval,
            lease_until   timestamptz,
            worker        text,
            input         jsonb,
            output        jsonb,
            error         text,
            started_at    timestamptz,
            finished_at   timestamptz,
            UNIQUE (execution_id, task)) WITH (fillfactor = 80);
        -- The claim walks this index in claim order; only claimable rows are in it.
        CREATE INDEX tasks_claim_order ON %1$I.tasks (priority DESC, ready_at, id)
            WHERE status = 'ready' AND kind = 'handler';
        CREATE INDEX tasks_sql_claim_order ON %1$I.tasks (priority DESC, ready_at, id)
            WHERE status = 'ready' AND kind = 'sql';
        CREATE INDEX tasks_lease_expiry ON %1$I.tasks (lease_until) WHERE status = 'running';

        -- One index: a run's history is read (and pruned) by run, in id order; a run's
        -- lifecycle writes several events, so a second index on id alone would cost as many
        -- more index insertions for no query.
        CREATE TABLE %1$I.execution_events (
            id           bigserial,
            execution_id bigint NOT NULL,
            task         text,
            attempt      int,
            from_status  text,
            to_status    text NOT NULL,
            detail       text,
            at           timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (execution_id, id));

        CREATE TABLE %1$I.schedules (
            id          bigserial PRIMARY KEY,
            name        text NOT NULL UNIQUE,
            workflow    text NOT NULL,
            cron        text NOT NULL,
            spec        jsonb NOT NULL,  -- cron parsed once, at schedule()
            timezone    text NOT NULL,
            context     jsonb NOT NULL,
            catchup     text NOT NULL,
            next_run_at timestamptz NOT NULL,
            created_at  timestamptz NOT NULL DEFAULT now(),
            updated_at  timestamptz NOT NULL DEFAULT now());
        CREATE INDEX ON %1$I.schedules (next_run_at);
        -- One row per fired slot: the unique key is what makes a slot fire at most once, also
        -- across crashes and restarts.
        CREATE TABLE %1$I.schedule_fires (
            schedule_id  bigint NOT NULL,
            slot         timestamptz NOT NULL,
            execution_id bigint NOT NULL,
            fired_at     timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (schedule_id, slot));
    $ddl$, s, channel);
END
$$;

-- Grants a tenant role exactly what the tenant API needs, on named objects only (a GRANT on
-- ALL TABLES IN SCHEMA scans all of pg_class, which is slow with thousands of tenants).
CREATE FUNCTION cloacina._grant_tenant_role(s text, r text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    EXECUTE format($g$
        GRANT USAGE, CREATE ON SCHEMA %1$I TO %2$I;
        GRANT SELECT ON %1$I.tenant_settings TO %2$I;
        GRANT SELECT, INSERT, UPDATE, DELETE ON %1$I.workflows TO %2$I;
        GRANT SELECT, INSERT, UPDATE ON %1$I.executions, %1$I.tasks TO %2$I;
        GRANT SELECT, INSERT ON %1$I.execution_events, %1$I.schedule_fires TO %2$I;
        GRANT SELECT, INSERT, UPDATE, DELETE ON %1$I.schedules TO %2$I;
        GRANT USAGE ON SEQUENCE %1$I.executions_id_seq, %1$I.tasks_id_seq,
                                %1$I.execution_events_id_seq, %1$I.schedules_id_seq TO %2$I;
    $g$, s, r);
END
$$;

-- A libpq URI for the tenant role on the server and database this session is using.
-- cloacina.connection_host overrides the host (for example behind a proxy).
CREATE FUNCTION cloacina._connection_string(username text, password text) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    host text := nullif(current_setting('cloacina.connection_host', true), '');
    port text := coalesce(inet_server_port()::text, current_setting('port'));
BEGIN
    IF host IS NULL AND inet_server_addr() IS NOT NULL THEN
        host := host(inet_server_addr());
        IF host LIKE '%:%' THEN
            host := '[' || host || ']';
        END IF;
    ELSIF host IS NULL THEN
        -- a Unix-socket session: point at the first socket directory, percent-encoded
        host := cloacina._url_escape(trim(split_part(current_setting('unix_socket_directories'), ',', 1)));
    END IF;
    RETURN format('postgresql://%s:%s@%s:%s/%s', cloacina._url_escape(username),
                  cloacina._url_escape(password), host, port,
                  cloacina._url_escape(current_database()));
END
$$;
-- sql/src/admin.sql: the admin API: create_tenant, remove_tenant, tenants, suspend/resume, limits.

------------------------------------------------------------------------------------------------
-- 3. Admin API
------------------------------------------------------------------------------------------------

-- The body of create_tenant. (plpgsql cannot name an output column like a parameter, which
-- the contract's signature does, so the public function is an SQL wrapper around this one.)
CREATE FUNCTION cloacina._create_tenant(s text, u text, pw text)
RETURNS TABLE(o_schema_name text, o_username text, o_password text, o_connection_string text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM cloacina._check_name('tenant schema name', s);
    IF u IS NOT NULL THEN
        PERFORM cloacina._check_name('tenant user name', u);
    END IF;
    IF pw IS NOT NULL AND pw <> '' AND u IS NULL THEN
        RAISE EXCEPTION 'a password was given without a user name'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass a user name to create a login role for the tenant.';
    END IF;

    -- Serialise creations and removals (they take milliseconds); the loser of a race for one
    -- name then sees the winner's registry row. A table lock, not an advisory key: a tenant
    -- could take the key and block the admin, but has no privilege on the registry.
    LOCK TABLE cloacina.tenant IN SHARE ROW EXCLUSIVE MODE;
    IF EXISTS (SELECT FROM cloacina.tenant t WHERE t.schema_name = s) THEN
        RAISE EXCEPTION 'tenant "%" already exists', s USING ERRCODE = 'duplicate_schema';
    END IF;
    IF EXISTS (SELECT FROM pg_namespace n WHERE n.nspname = s) THEN
        RAISE EXCEPTION 'schema "%" already exists', s
            USING ERRCODE = 'duplicate_schema',
                  DETAIL = 'It is not a cloacina tenant; cloacina will not take over an existing schema.';
    END IF;
    IF u IS NOT NULL THEN
        IF EXISTS (SELECT FROM pg_roles r WHERE r.rolname = u) THEN
            RAISE EXCEPTION 'role "%" already exists', u
                USING ERRCODE = 'duplicate_object',
                      DETAIL = 'cloacina creates a new role for each tenant and will not reuse an existing one.';
        END IF;
    END IF;

    EXECUTE format('CREATE SCHEMA %I', s);
    PERFORM cloacina._create_tenant_tables(s, 'cloacina_' || cloacina._random_token(18));
    -- cloacina_admin administers every tenant, also through the tenant API
    PERFORM cloacina._grant_tenant_role(s, 'cloacina_admin');

    IF u IS NOT NULL THEN
        IF pw IS NULL OR pw = '' THEN
            pw := cloacina._generate_password();
        END IF;
        -- Only the SCRAM verifier is ever part of a statement, so the plaintext cannot reach
        -- the server log, an error context or pg_stat_statements.
        EXECUTE format('CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION '
                       'NOBYPASSRLS INHERIT PASSWORD %L', u, cloacina._scram_verifier(pw));
        EXECUTE format('ALTER ROLE %I SET search_path = %I', u, s);
        PERFORM cloacina._grant_tenant_role(s, u);
        EXECUTE format('UPDATE %I.tenant_settings SET role_name = $1', s) USING u;
    ELSE
        pw := NULL;
    END IF;

    INSERT INTO cloacina.tenant (schema_name, username) VALUES (s, u);

    RETURN QUERY SELECT s, u, pw,
        CASE WHEN u IS NULL THEN NULL ELSE cloacina._connection_string(u, pw) END;
END
$$;

CREATE FUNCTION cloacina.create_tenant(schema_name text, username text DEFAULT NULL,
                                       password text DEFAULT '')
RETURNS TABLE(schema_name text, username text, password text, connection_string text)
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM cloacina._create_tenant(schema_name, username, password) $$;
COMMENT ON FUNCTION cloacina.create_tenant(text, text, text) IS
    'Creates a tenant (schema, tables, optional login role with a generated or given password) in one transaction';

CREATE FUNCTION cloacina.remove_tenant(schema_name text, username text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET client_min_messages = warning  -- no "drop cascades to" list for every table
SET lock_timeout = '5s'            -- the tenant holds locks on its tables: fail, never hang
AS $$
#variable_conflict use_variable
DECLARE
    s text := remove_tenant.schema_name;
    u text := remove_tenant.username;
    registered_user text;
    unfinished bigint;
BEGIN
    IF s IS NULL THEN
        RAISE EXCEPTION 'tenant schema name must not be empty' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    LOCK TABLE cloacina.tenant IN SHARE ROW EXCLUSIVE MODE;
    SELECT t.username INTO registered_user FROM cloacina.tenant t WHERE t.schema_name = s FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'tenant "%" does not exist', s USING ERRCODE = 'invalid_schema_name';
    END IF;
    IF u IS NOT NULL AND u IS DISTINCT FROM registered_user THEN
        RAISE EXCEPTION 'role "%" does not belong to tenant "%"', u, s
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('The tenant''s role is %s.', coalesce(quote_ident(registered_user), 'not set'));
    END IF;

    -- Refuse while work is unfinished: removing the schema would lose accepted runs.
    -- Lock the runs first so nothing new starts between the check and the drop.
    EXECUTE format('LOCK TABLE %1$I.executions, %1$I.tasks IN EXCLUSIVE MODE', s);
    EXECUTE format('SELECT count(*) FROM %I.executions WHERE status IN (''running'', ''paused'')', s)
        INTO unfinished;
    IF unfinished > 0 THEN
        RAISE EXCEPTION 'tenant "%" has unfinished runs', s
            USING ERRCODE = 'object_in_use',
                  DETAIL = format('%s runs are running or paused.', unfinished),
                  HINT = 'Suspend the tenant and let its runs finish, or cancel them with cloacina.cancel(), then remove it.';
    END IF;

    EXECUTE format('DROP SCHEMA %I CASCADE', s);
    IF registered_user IS NOT NULL THEN
        EXECUTE format('DROP OWNED BY %I', registered_user);
        EXECUTE format('DROP ROLE %I', registered_user);
    END IF;
    DELETE FROM cloacina.tenant t WHERE t.schema_name = s;
END
$$;
COMMENT ON FUNCTION cloacina.remove_tenant(text, text) IS
    'Removes a tenant''s schema and role; refuses while the tenant has unfinished runs';

-- Live counts of one tenant, for the tenants view (runs with the caller's privileges).
CREATE FUNCTION cloacina._tenant_counts(s text,
    OUT active_runs bigint, OUT ready_tasks bigint, OUT running_tasks bigint)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    EXECUTE format($q$SELECT (SELECT count(*) FROM %1$I.executions WHERE status IN ('running', 'paused')),
                             (SELECT count(*) FROM %1$I.tasks WHERE status = 'ready'),
                             (SELECT count(*) FROM %1$I.tasks WHERE status = 'running')$q$, s)
        INTO active_runs, ready_tasks, running_tasks;
END
$$;

CREATE VIEW cloacina.tenants AS
    SELECT t.schema_name, t.username, t.state, t.created_at, t.max_running, t.weight,
           c.active_runs, c.ready_tasks, c.running_tasks
    FROM cloacina.tenant t, LATERAL cloacina._tenant_counts(t.schema_name) c;
COMMENT ON VIEW cloacina.tenants IS 'Tenants with their state, limits and live counts (admin only)';

-- Copies the registry's state and limits into the tenant's own settings row, where the claim
-- path reads them without touching the cloacina schema.
CREATE FUNCTION cloacina._sync_tenant_settings(s text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    EXECUTE format('UPDATE %I.tenant_settings st SET state = t.state, max_running = t.max_running, '
                   'weight = t.weight FROM cloacina.tenant t WHERE t.schema_name = $1', s) USING s;
    PERFORM cloacina._due(s, now());  -- the background worker picks up the new state and limits
END
$$;

CREATE FUNCTION cloacina._set_tenant_state(s text, new_state text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE cloacina.tenant t SET state = new_state WHERE t.schema_name = s;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'tenant "%" does not exist', s USING ERRCODE = 'invalid_schema_name';
    END IF;
    PERFORM cloacina._sync_tenant_settings(s);
END
$$;

CREATE FUNCTION cloacina.suspend_tenant(schema_name text) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT cloacina._set_tenant_state(schema_name, 'suspended') $$;
COMMENT ON FUNCTION cloacina.suspend_tenant(text) IS
    'Suspends a tenant: nothing new is claimed (running tasks finish) and its schedules pause';

CREATE FUNCTION cloacina.resume_tenant(schema_name text) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT cloacina._set_tenant_state(schema_name, 'active') $$;
COMMENT ON FUNCTION cloacina.resume_tenant(text) IS 'Resumes a suspended tenant';

CREATE FUNCTION cloacina.set_tenant_limits(schema_name text, max_running int DEFAULT NULL,
                                           weight int DEFAULT 1) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
BEGIN
    IF max_running IS NOT NULL AND max_running < 1 THEN
        RAISE EXCEPTION 'max_running must be at least 1 (got %)', max_running
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass NULL for no limit.';
    END IF;
    IF weight IS NULL OR weight < 1 OR weight > 1000 THEN
        RAISE EXCEPTION 'weight must be between 1 and 1000 (got %)', coalesce(weight::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE cloacina.tenant t SET max_running = set_tenant_limits.max_running,
                                 weight = set_tenant_limits.weight
        WHERE t.schema_name = set_tenant_limits.schema_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'tenant "%" does not exist', schema_name USING ERRCODE = 'invalid_schema_name';
    END IF;
    PERFORM cloacina._sync_tenant_settings(schema_name);
END
$$;
COMMENT ON FUNCTION cloacina.set_tenant_limits(text, int, int) IS
    'Sets a tenant''s cap on concurrently running SQL tasks and its weight in fair sharing';

REVOKE ALL ON FUNCTION
    cloacina.create_tenant(text, text, text), cloacina._create_tenant(text, text, text),
    cloacina.remove_tenant(text, text),
    cloacina.suspend_tenant(text), cloacina.resume_tenant(text),
    cloacina.set_tenant_limits(text, int, int), cloacina._tenant_counts(text),
    cloacina._sync_tenant_settings(text), cloacina._set_tenant_state(text, text),
    cloacina._create_tenant_tables(text, text), cloacina._grant_tenant_role(text, text),
    cloacina._connection_string(text, text)
    FROM PUBLIC;
REVOKE ALL ON cloacina.tenants FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    cloacina.create_tenant(text, text, text), cloacina.remove_tenant(text, text),
    cloacina.suspend_tenant(text), cloacina.resume_tenant(text),
    cloacina.set_tenant_limits(text, int, int), cloacina._tenant_counts(text)
    TO cloacina_admin;
GRANT SELECT ON cloacina.tenants TO cloacina_admin;
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
                updated_at = CASE WHEN w.version = excluded.version THEN w.updated_at ELSE now() END$q$, s)
        USING normalized ->> 'name', version, normalized ->> 'description', normalized;
    RETURN version;
END
$$;
-- sql/src/engine.sql: the execution engine: start, claim, heartbeat, complete, fail, reap, cancel, pause, resume.

------------------------------------------------------------------------------------------------
-- 5. The execution engine. Every function takes the tenant schema as its first argument; the
--    public wrappers in section 6 pass current_schema(). All of them run as the caller.
--
--    Locking order, to stay free of deadlocks: a run's row in executions first, then its tasks.
--    Every state change of a run (complete, fail, cancel, pause, resume) takes the run's row
--    lock first; claim and heartbeat touch only task rows.
------------------------------------------------------------------------------------------------

-- Does a task's context condition ({"key", "op", "value"}) hold for its input context?
-- "key" may be a dotted path into nested objects.
CREATE FUNCTION cloacina._condition_holds(cond jsonb, ctx jsonb) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v    jsonb := ctx #> string_to_array(cond ->> 'key', '.');
    want jsonb := cond -> 'value';
BEGIN
    CASE cond ->> 'op'
    WHEN 'exists' THEN RETURN v IS NOT NULL;
    WHEN 'not_exists' THEN RETURN v IS NULL;
    WHEN 'equals' THEN RETURN v IS NOT NULL AND v = want;
    WHEN 'not_equals' THEN RETURN v IS NULL OR v <> want;
    WHEN 'gt', 'lt' THEN
        IF jsonb_typeof(v) = 'number' AND jsonb_typeof(want) = 'number' THEN
            RETURN CASE cond ->> 'op' WHEN 'gt' THEN v::numeric > want::numeric ELSE v::numeric < want::numeric END;
        ELSIF jsonb_typeof(v) = 'string' AND jsonb_typeof(want) = 'string' THEN
            RETURN CASE cond ->> 'op' WHEN 'gt' THEN (v #>> '{}') > (want #>> '{}') COLLATE "C"
                                      ELSE (v #>> '{}') < (want #>> '{}') COLLATE "C" END;
        END IF;
        RETURN false;
    WHEN 'contains' THEN
        IF jsonb_typeof(v) = 'string' AND jsonb_typeof(want) = 'string' THEN
            RETURN strpos(v #>> '{}', want #>> '{}') > 0;
        ELSIF jsonb_typeof(v) = 'array' THEN
            RETURN v @> jsonb_build_array(want) OR (jsonb_typeof(want) = 'array' AND v @> want);
        ELSIF jsonb_typeof(v) = 'object' AND jsonb_typeof(want) = 'object' THEN
            RETURN v @> want;
        END IF;
        RETURN false;
    END CASE;
END
$$;

-- Delay before retry number "attempt" + 1. Exponential doubles from delay_ms; jitter keeps a
-- random point in the upper half of the delay ("equal jitter"), so retries spread but never
-- come sooner than half the planned delay.
CREATE FUNCTION cloacina._retry_delay(attempt int, backoff text, delay_ms bigint,
                                      max_delay_ms bigint, jitter boolean) RETURNS interval
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT make_interval(secs => d * CASE WHEN jitter THEN 0.5 + random() * 0.5 ELSE 1 END / 1000.0)
    FROM (SELECT least(max_delay_ms::float8,
                       CASE backoff
                           WHEN 'fixed' THEN delay_ms::float8
                           WHEN 'linear' THEN delay_ms::float8 * attempt
                           ELSE delay_ms::float8 * power(2, least(attempt - 1, 60))
                       END) AS d) x
$$;

-- A wake-up hint for the tenant's workers, on the tenant's private channel.
CREATE FUNCTION cloacina._hint(s text, payload text) RETURNS void
AS 'MODULE_PATHNAME', 'cloacina_hint_sql' LANGUAGE C;

CREATE FUNCTION cloacina._event(s text, eid bigint, task text, attempt int,
                                from_status text, to_status text, detail text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    EXECUTE format('INSERT INTO %I.execution_events (execution_id, task, attempt, from_status, to_status, detail) '
                   'VALUES ($1, $2, $3, $4, $5, $6)', s)
        USING eid, task, attempt, from_status, to_status, detail;
END
$$;

-- Locks a run's row (the first lock of every run state change) and returns its status,
-- or raises if the run does not exist.
CREATE FUNCTION cloacina._lock_run(s text, eid bigint) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    st text;
BEGIN
    EXECUTE format('SELECT status FROM %I.executions WHERE id = $1 FOR UPDATE', s) INTO st USING eid;
    IF st IS NULL THEN
        RAISE EXCEPTION 'execution % does not exist', coalesce(eid::text, 'NULL')
            USING ERRCODE = 'undefined_object';
    END IF;
    RETURN st;
END
$$;

-- Ends runs: status (derived from their tasks unless forced), final_context (the input merged
-- with every completed task's output in topological order), one event each, and the waiters'
-- wake-up. The caller holds the runs' row locks.
CREATE FUNCTION cloacina._finalize(s text, eids bigint[], forced_status text DEFAULT NULL,
                                   forced_error text DEFAULT NULL) RETURNS void
AS 'MODULE_PATHNAME', 'cloacina_finalize' LANGUAGE C;

-- After tasks of a run became terminal: counts them down on their dependents; a dependent whose
-- last dependency just ended is evaluated (trigger rule, then context condition) and becomes
-- ready (held as waiting while the run is paused) or skipped, and skips cascade. When no task
-- of the run is left, the run is finalised. All inside the caller's transaction.
CREATE FUNCTION cloacina._propagate(s text, eid bigint, finished text[]) RETURNS void
AS 'MODULE_PATHNAME', 'cloacina_propagate' LANGUAGE C;

-- Starts runs (extension/start.c): one per context in context order, each with its creation event
-- and its tasks; options: priority, idempotency_key (execute only; returns the run that first
-- used the key), run_at, timeout_ms.
CREATE FUNCTION cloacina._execute(s text, workflow text, context jsonb, options jsonb) RETURNS bigint
AS 'MODULE_PATHNAME', 'cloacina_execute' LANGUAGE C;

CREATE FUNCTION cloacina._execute_batch(s text, workflow text, contexts jsonb[], options jsonb)
RETURNS TABLE(ordinal int, execution_id bigint)
AS 'MODULE_PATHNAME', 'cloacina_execute_batch' LANGUAGE C;

-- Claims up to max_tasks ready handler tasks in claim order with a lease and a new fence (claim.c).
CREATE FUNCTION cloacina._claim(s text, worker text, task_names text[], max_tasks int, lease interval)
RETURNS TABLE(task_id bigint, execution_id bigint, workflow text, task text, attempt int,
              fence bigint, context jsonb)
AS 'MODULE_PATHNAME', 'cloacina_claim' LANGUAGE C;

-- Renews the leases of claimed tasks, one set-based statement for all of them (heartbeat.c).
CREATE FUNCTION cloacina._heartbeat_batch(s text, task_ids bigint[], fences bigint[])
RETURNS TABLE(task_id bigint, status text)
AS 'MODULE_PATHNAME', 'cloacina_heartbeat_batch' LANGUAGE C;

CREATE FUNCTION cloacina._heartbeat(s text, task_id bigint, fence bigint) RETURNS text
AS 'MODULE_PATHNAME', 'cloacina_heartbeat' LANGUAGE C;

CREATE FUNCTION cloacina._complete(s text, task_id bigint, fence bigint, output jsonb) RETURNS boolean
AS 'MODULE_PATHNAME', 'cloacina_complete' LANGUAGE C;

-- Fails claimed tasks, set-based like _complete_batch (fail.c): a retryable failure with
-- attempts left goes back to ready at its backoff time, otherwise the task fails and its
-- dependents are evaluated.
CREATE FUNCTION cloacina._fail(s text, task_id bigint, fence bigint, error text, retryable boolean)
RETURNS boolean
AS 'MODULE_PATHNAME', 'cloacina_fail' LANGUAGE C;

-- Time-based duty for one tenant: running tasks whose lease ran out (the worker vanished) or
-- whose timeout passed. Each such attempt counts as failed: the task goes back to ready for its
-- next attempt, or fails as abandoned once its attempts are used up. The background worker
-- calls this; it is also safe to call by hand. Returns how many tasks it handled.
CREATE FUNCTION cloacina._reap(s text, max_tasks int DEFAULT 1000) RETURNS int
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    due_condition constant text := format($c$
        (lease_until < now()
         OR CASE WHEN kind = 'sql' THEN NOT cloacina._sql_task_alive(%L, id)
                 ELSE timeout_ms IS NOT NULL AND started_at + timeout_ms * interval '1 millisecond' < now() END)$c$, s);
    r record;
    handled int := 0;
    tname text;
    tattempt int;
    new_status text;
    why text;
    any_ready boolean := false;
BEGIN
    PERFORM cloacina._require_tenant(s);
    -- A SQL task's worker enforces its timeout itself; its attempt is over here only when no
    -- pool worker runs it any more (killed, or the server restarted) or its lease ran out.
    FOR r IN EXECUTE format($q$
        SELECT id, execution_id, fence FROM %1$I.tasks
         WHERE status = 'running' AND %2$s
         ORDER BY execution_id, id LIMIT $1$q$, s, due_condition) USING max_tasks  -- run order: the locking order
    LOOP
        PERFORM cloacina._lock_run(s, r.execution_id);
        EXECUTE format($q$
            UPDATE %I.tasks
               SET status = CASE WHEN attempt < max_attempts THEN 'ready' ELSE 'failed' END,
                   error = CASE WHEN kind = 'handler' AND timeout_ms IS NOT NULL
                                     AND started_at + timeout_ms * interval '1 millisecond' < now()
                                THEN format('attempt %%s timed out after %%s ms', attempt, timeout_ms)
                                WHEN kind = 'sql' AND lease_until >= now()
                                THEN format('attempt %%s abandoned: its worker %%s stopped while running it', attempt, quote_literal(worker))
                                ELSE format('attempt %%s abandoned: the lease of worker %%s expired', attempt, quote_literal(worker))
                           END
                           || CASE WHEN attempt < max_attempts THEN '' ELSE ' (no attempts left)' END,
                   ready_at = CASE WHEN attempt < max_attempts THEN now() ELSE ready_at END,
                   finished_at = CASE WHEN attempt < max_attempts THEN NULL ELSE now() END,
                   output = NULL, lease_until = NULL
             WHERE id = $1 AND fence = $2 AND status = 'running' AND %2$s
            RETURNING task, attempt, status, error, kind$q$, s, due_condition)
            INTO tname, tattempt, new_status, why USING r.id, r.fence;
        CONTINUE WHEN tname IS NULL;  -- completed or cancelled meanwhile
        handled := handled + 1;
        PERFORM cloacina._event(s, r.execution_id, tname, tattempt, 'running', new_status, why);
        IF new_status = 'failed' THEN
            PERFORM cloacina._propagate(s, r.execution_id, ARRAY[tname]);
        ELSE
            any_ready := true;
        END IF;
    END LOOP;
    IF any_ready THEN
        PERFORM cloacina._hint(s, 'ready');
    END IF;
    RETURN handled;
END
$$;

-- Completes tasks, set-based: every task still running under the given fence records its output
-- and its event in one statement. Runs are locked first, in id order (the locking order), so
-- two batches sharing runs never deadlock. Tasks with dependents go through _propagate; for the
-- others the runs are counted down together and the runs with nothing left end together.
CREATE FUNCTION cloacina._complete_batch(s text, task_ids bigint[], fences bigint[], outputs jsonb[])
RETURNS TABLE(task_id bigint, accepted boolean)
AS 'MODULE_PATHNAME', 'cloacina_complete_batch' LANGUAGE C;

CREATE FUNCTION cloacina._fail_batch(s text, task_ids bigint[], fences bigint[], errors text[],
                                     retryable boolean[])
RETURNS TABLE(task_id bigint, accepted boolean)
AS 'MODULE_PATHNAME', 'cloacina_fail_batch' LANGUAGE C;

-- Ends a run early: as "cancelled" by default, or as "failed" with a reason (a run timeout).
CREATE FUNCTION cloacina._cancel(s text, eid bigint, failure text DEFAULT NULL) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM cloacina._require_tenant(s);
    IF cloacina._lock_run(s, eid) NOT IN ('running', 'paused') THEN
        RETURN false;  -- already ended; a finished run never changes
    END IF;
    -- Running tasks are cancelled too: their workers learn it from heartbeat() and their
    -- complete()/fail() are refused; a running SQL task's statement is cancelled at commit.
    PERFORM cloacina._cancel_sql_tasks(s, eid);
    EXECUTE format($q$
        WITH old AS (SELECT id, status FROM %1$I.tasks
                      WHERE execution_id = $1 AND status IN ('waiting', 'ready', 'running') FOR UPDATE),
        cancelled AS (
            UPDATE %1$I.tasks t SET status = 'cancelled', finished_at = now(), lease_until = NULL
              FROM old WHERE t.id = old.id
            RETURNING t.task, t.attempt, old.status AS from_status)
        INSERT INTO %1$I.execution_events (execution_id, task, attempt, from_status, to_status)
        SELECT $1, task, attempt, from_status, 'cancelled' FROM cancelled$q$, s) USING eid;
    IF failure IS NULL THEN
        PERFORM cloacina._finalize(s, ARRAY[eid], 'cancelled');
    ELSE
        PERFORM cloacina._finalize(s, ARRAY[eid], 'failed', failure);
    END IF;
    RETURN true;
END
$$;

CREATE FUNCTION cloacina._pause(s text, eid bigint) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM cloacina._require_tenant(s);
    IF cloacina._lock_run(s, eid) <> 'running' THEN
        RETURN false;
    END IF;
    -- Ready tasks are held back as waiting (with no pending dependencies) until resume.
    EXECUTE format($q$
        WITH held AS (
            UPDATE %1$I.tasks SET status = 'waiting'
             WHERE execution_id = $1 AND status = 'ready'
            RETURNING task, attempt),
        logged AS (
            INSERT INTO %1$I.execution_events (execution_id, task, attempt, from_status, to_status, detail)
            SELECT $1, task, attempt, 'ready', 'waiting', 'run paused' FROM held)
        UPDATE %1$I.executions SET status = 'paused' WHERE id = $1$q$, s) USING eid;
    PERFORM cloacina._event(s, eid, NULL, NULL, 'running', 'paused');
    RETURN true;
END
$$;

CREATE FUNCTION cloacina._resume(s text, eid bigint) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    released bigint;
BEGIN
    PERFORM cloacina._require_tenant(s);
    IF cloacina._lock_run(s, eid) <> 'paused' THEN
        RETURN false;
    END IF;
    EXECUTE format($q$
        WITH released AS (
            UPDATE %1$I.tasks SET status = 'ready'
             WHERE execution_id = $1 AND status = 'waiting' AND pending_deps = 0
            RETURNING task, attempt),
        logged AS (
            INSERT INTO %1$I.execution_events (execution_id, task, attempt, from_status, to_status, detail)
            SELECT $1, task, attempt, 'waiting', 'ready', 'run resumed' FROM released),
        run AS (UPDATE %1$I.executions SET status = 'running' WHERE id = $1)
        SELECT count(*) FROM released$q$, s) INTO released USING eid;
    PERFORM cloacina._event(s, eid, NULL, NULL, 'paused', 'running');
    IF released > 0 THEN
        PERFORM cloacina._hint(s, 'ready');
        PERFORM cloacina._due(s, now());  -- any SQL tasks among them: the worker's tick finds them
    END IF;
    RETURN true;
END
$$;

CREATE FUNCTION cloacina._execution_status(s text, eid bigint)
RETURNS TABLE(status text, final_context jsonb, error text)
AS 'MODULE_PATHNAME', 'cloacina_execution_status' LANGUAGE C STABLE;

CREATE FUNCTION cloacina._task_results(s text, eid bigint)
RETURNS TABLE(task text, status text, attempt int, output jsonb, error text,
              started_at timestamptz, finished_at timestamptz)
AS 'MODULE_PATHNAME', 'cloacina_task_results' LANGUAGE C STABLE;

CREATE FUNCTION cloacina._notify_channel(s text) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    channel text;
BEGIN
    PERFORM cloacina._require_tenant(s);
    EXECUTE format('SELECT notify_channel FROM %I.tenant_settings', s) INTO channel;
    RETURN channel;
END
$$;
-- sql/src/api.sql: the public tenant API: the functions a tenant calls, in its current schema.

------------------------------------------------------------------------------------------------
-- 6. Public tenant API. The tenant is the caller's current schema. These wrappers deliberately
--    have no SET clause (that would hide the caller's schema) and contain nothing but a fully
--    qualified call, so nothing in them resolves through the caller's search_path.
------------------------------------------------------------------------------------------------

CREATE FUNCTION cloacina.register_workflow(definition jsonb) RETURNS text
LANGUAGE sql AS $$ SELECT cloacina._register_workflow(pg_catalog.current_schema(), definition) $$;
COMMENT ON FUNCTION cloacina.register_workflow(jsonb) IS
    'Validates and stores (upsert by name) a workflow definition in the current tenant; returns its version hash';

CREATE FUNCTION cloacina._list_workflows(s text)
RETURNS TABLE(name text, version text, description text, task_count int, definition jsonb,
              created_at timestamptz, updated_at timestamptz)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM cloacina._require_tenant(s);
    RETURN QUERY EXECUTE format('SELECT name, version, description, jsonb_array_length(definition -> ''tasks''), '
                                'definition, created_at, updated_at FROM %I.workflows ORDER BY name', s);
END
$$;

CREATE VIEW cloacina.workflows WITH (security_invoker = true) AS
    SELECT * FROM cloacina._list_workflows(pg_catalog.current_schema());
COMMENT ON VIEW cloacina.workflows IS 'The workflows registered in the current tenant';
GRANT SELECT ON cloacina.workflows TO PUBLIC;

CREATE FUNCTION cloacina.execute(workflow text, context jsonb DEFAULT '{}', options jsonb DEFAULT '{}')
RETURNS bigint
AS 'MODULE_PATHNAME', 'cloacina_execute_current' LANGUAGE C;
COMMENT ON FUNCTION cloacina.execute(text, jsonb, jsonb) IS
    'Starts a run of a workflow with an input context; options: priority, idempotency_key, run_at';

CREATE FUNCTION cloacina.execute_batch(workflow text, contexts jsonb[], options jsonb DEFAULT '{}')
RETURNS TABLE(ordinal int, execution_id bigint)
AS 'MODULE_PATHNAME', 'cloacina_execute_batch_current' LANGUAGE C;
COMMENT ON FUNCTION cloacina.execute_batch(text, jsonb[], jsonb) IS
    'Starts one run per context in one call; returns the run ids in input order';

CREATE FUNCTION cloacina.execution_status(execution_id bigint)
RETURNS TABLE(status text, final_context jsonb, error text)
AS 'MODULE_PATHNAME', 'cloacina_execution_status_current' LANGUAGE C STABLE;
COMMENT ON FUNCTION cloacina.execution_status(bigint) IS 'The status, final context and error of a run';

CREATE FUNCTION cloacina.wait(execution_id bigint, timeout interval DEFAULT '30 seconds')
RETURNS TABLE(status text, final_context jsonb, error text)
AS 'MODULE_PATHNAME', 'cloacina_wait_current' LANGUAGE C;
COMMENT ON FUNCTION cloacina.wait(bigint, interval) IS
    'Blocks until the run ends or the timeout passes, then returns its status';

CREATE FUNCTION cloacina.task_results(execution_id bigint)
RETURNS TABLE(task text, status text, attempt int, output jsonb, error text,
              started_at timestamptz, finished_at timestamptz)
AS 'MODULE_PATHNAME', 'cloacina_task_results_current' LANGUAGE C STABLE;
COMMENT ON FUNCTION cloacina.task_results(bigint) IS 'The tasks of a run in topological order, with their outcome';

CREATE FUNCTION cloacina.claim(worker text, task_names text[] DEFAULT NULL, max_tasks int DEFAULT 1,
                               lease interval DEFAULT '30 seconds')
RETURNS TABLE(task_id bigint, execution_id bigint, workflow text, task text, attempt int,
              fence bigint, context jsonb)
AS 'MODULE_PATHNAME', 'cloacina_claim_current' LANGUAGE C;
COMMENT ON FUNCTION cloacina.claim(text, text[], int, interval) IS
    'Claims up to max_tasks ready handler tasks (by task id or workflow.task) with a lease and a new fence';

CREATE FUNCTION cloacina.heartbeat(task_id bigint, fence bigint) RETURNS text
AS 'MODULE_PATHNAME', 'cloacina_heartbeat_current' LANGUAGE C;
COMMENT ON FUNCTION cloacina.heartbeat(bigint, bigint) IS
    'Extends a claimed task''s lease; returns ok, lost (fence no longer current) or cancelled';

CREATE FUNCTION cloacina.heartbeat_batch(task_ids bigint[], fences bigint[])
RETURNS TABLE(task_id bigint, status text)
AS 'MODULE_PATHNAME', 'cloacina_heartbeat_batch_current' LANGUAGE C;
COMMENT ON FUNCTION cloacina.heartbeat_batch(bigint[], bigint[]) IS
    'heartbeat() for many tasks in one call, one row per task in the order given';

CREATE FUNCTION cloacina.complete(task_id bigint, fence bigint, context jsonb) RETURNS boolean
AS 'MODULE_PATHNAME', 'cloacina_complete_current' LANGUAGE C;
COMMENT ON FUNCTION cloacina.complete(bigint, bigint, jsonb) IS
    'Completes a claimed task with its output context; false if the fence is stale or the task is no longer running';

CREATE FUNCTION cloacina.fail(task_id bigint, fence bigint, error text, retryable boolean DEFAULT true)
RETURNS boolean
AS 'MODULE_PATHNAME', 'cloacina_fail_current' LANGUAGE C;
COMMENT ON FUNCTION cloacina.fail(bigint, bigint, text, boolean) IS
    'Fails a claimed task; it is retried by its policy when retryable and attempts remain';

CREATE FUNCTION cloacina.complete_batch(task_ids bigint[], fences bigint[], contexts jsonb[])
RETURNS TABLE(task_id bigint, accepted boolean)
AS 'MODULE_PATHNAME', 'cloacina_complete_batch_current' LANGUAGE C;
COMMENT ON FUNCTION cloacina.complete_batch(bigint[], bigint[], jsonb[]) IS
    'complete() for many tasks in one call';

CREATE FUNCTION cloacina.fail_batch(task_ids bigint[], fences bigint[], errors text[], retryable boolean[])
RETURNS TABLE(task_id bigint, accepted boolean)
AS 'MODULE_PATHNAME', 'cloacina_fail_batch_current' LANGUAGE C;
COMMENT ON FUNCTION cloacina.fail_batch(bigint[], bigint[], text[], boolean[]) IS
    'fail() for many tasks in one call';

CREATE FUNCTION cloacina.cancel(execution_id bigint) RETURNS boolean
LANGUAGE sql AS $$ SELECT cloacina._cancel(pg_catalog.current_schema(), execution_id) $$;
COMMENT ON FUNCTION cloacina.cancel(bigint) IS
    'Cancels a run: nothing new starts, unfinished tasks become cancelled, waiters return; false if it had ended';

CREATE FUNCTION cloacina.pause(execution_id bigint) RETURNS boolean
LANGUAGE sql AS $$ SELECT cloacina._pause(pg_catalog.current_schema(), execution_id) $$;
COMMENT ON FUNCTION cloacina.pause(bigint) IS 'Pauses a running run: nothing of it is claimed until resume';

CREATE FUNCTION cloacina.resume(execution_id bigint) RETURNS boolean
LANGUAGE sql AS $$ SELECT cloacina._resume(pg_catalog.current_schema(), execution_id) $$;
COMMENT ON FUNCTION cloacina.resume(bigint) IS 'Resumes a paused run';

CREATE FUNCTION cloacina.notify_channel() RETURNS text
LANGUAGE sql AS $$ SELECT cloacina._notify_channel(pg_catalog.current_schema()) $$;
COMMENT ON FUNCTION cloacina.notify_channel() IS
    'The current tenant''s private LISTEN channel for wake-up hints (ready, finished)';

CREATE FUNCTION cloacina.version() RETURNS text
LANGUAGE sql STABLE
AS $$ SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'cloacina' $$;
COMMENT ON FUNCTION cloacina.version() IS
    'The installed version of the cloacina extension (what ALTER EXTENSION cloacina UPDATE changes)';
-- sql/src/cron.sql: cron schedules: parsing, next slots, schedule/unschedule, firing.

------------------------------------------------------------------------------------------------
-- 7. Cron schedules
------------------------------------------------------------------------------------------------

-- Parses one cron field into its sorted list of allowed values. Items are separated by commas;
-- each is *, a value, a range a-b, optionally followed by /step (a value with a step runs to
-- the field's maximum). Month and weekday fields also take names (JAN, MON, ...).
CREATE FUNCTION cloacina._cron_field(field text, what text, lo int, hi int, names text[] DEFAULT NULL)
RETURNS int[]
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    item text;
    m text[];
    a int;
    b int;
    step int;
    vals int[] := '{}';
    token text;
    n int;
BEGIN
    IF field IS NULL OR field = '' THEN
        RAISE EXCEPTION 'cron % field is empty', what USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- names to numbers (JAN -> 1 for months, SUN -> 0 for weekdays)
    IF names IS NOT NULL THEN
        FOR i IN 1 .. cardinality(names) LOOP
            field := regexp_replace(field, '(?i)\m' || names[i] || '\M', (i - 1 + lo)::text, 'g');
        END LOOP;
    END IF;
    FOREACH item IN ARRAY string_to_array(field, ',') LOOP
        m := regexp_match(item, '^(\*|\d+)(?:-(\d+))?(?:/(\d+))?$');
        IF m IS NULL THEN
            RAISE EXCEPTION 'invalid cron % field "%"', what, field
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Use *, a number, a range a-b, a list a,b and steps */n or a-b/n.';
        END IF;
        IF m[1] = '*' THEN
            IF m[2] IS NOT NULL THEN
                RAISE EXCEPTION 'invalid cron % field "%"', what, field USING ERRCODE = 'invalid_parameter_value';
            END IF;
            a := lo;
            b := hi;
        ELSE
            a := m[1]::int;
            b := coalesce(m[2]::int, CASE WHEN m[3] IS NOT NULL THEN hi ELSE a END);
        END IF;
        step := coalesce(m[3]::int, 1);
        IF a < lo OR b > hi OR a > b OR step < 1 THEN
            RAISE EXCEPTION 'cron % field "%" is out of range %-%', what, field, lo, hi
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        n := a;
        WHILE n <= b LOOP
            vals := vals || n;
            n := n + step;
        END LOOP;
    END LOOP;
    RETURN ARRAY(SELECT DISTINCT v FROM unnest(vals) v ORDER BY v);
END
$$;

-- Parses a 5-field (minute hour day month weekday) or 6-field (second first) expression of at
-- most max_length characters (a real one needs a few dozen; parsing costs grow with the length).
CREATE FUNCTION cloacina._cron_parse(expr text) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    max_length constant int := 256;
    f text[];
BEGIN
    IF length(expr) > max_length THEN
        RAISE EXCEPTION 'cron expression is too long (% characters, the limit is %)', length(expr), max_length
            USING ERRCODE = 'program_limit_exceeded';
    END IF;
    f := regexp_split_to_array(btrim(coalesce(expr, '')), '\s+');
    IF cardinality(f) = 5 THEN
        f := ARRAY['0'] || f;
    ELSIF cardinality(f) <> 6 THEN
        RAISE EXCEPTION 'cron expression "%" must have 5 or 6 fields', coalesce(expr, '')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = '[second] minute hour day-of-month month day-of-week, for example "*/5 * * * *".';
    END IF;
    RETURN jsonb_build_object(
        'second', cloacina._cron_field(f[1], 'second', 0, 59),
        'minute', cloacina._cron_field(f[2], 'minute', 0, 59),
        'hour', cloacina._cron_field(f[3], 'hour', 0, 23),
        'day', cloacina._cron_field(f[4], 'day-of-month', 1, 31),
        'month', cloacina._cron_field(f[5], 'month', 1, 12,
                    ARRAY['jan','feb','mar','apr','may','jun','jul','aug','sep','oct','nov','dec']),
        -- weekday 7 is Sunday, like 0
        'weekday', ARRAY(SELECT DISTINCT v % 7 FROM unnest(cloacina._cron_field(f[6], 'weekday', 0, 7,
                    ARRAY['sun','mon','tue','wed','thu','fri','sat'])) v ORDER BY 1),
        'day_restricted', f[4] <> '*',
        'weekday_restricted', f[6] <> '*');
END
$$;

-- The first slot of a parsed expression strictly after "after", in time zone "tz". Slots are
-- found in local time, so "0 9 * * *" stays at 09:00 across daylight-saving changes; a local
-- time that does not exist (spring forward) fires when the gap ends; a repeated local time
-- (fall back) fires once.
CREATE FUNCTION cloacina._cron_next(spec jsonb, tz text, after timestamptz) RETURNS timestamptz
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    secs    int[] := ARRAY(SELECT jsonb_array_elements_text(spec -> 'second')::int);
    mins    int[] := ARRAY(SELECT jsonb_array_elements_text(spec -> 'minute')::int);
    hours   int[] := ARRAY(SELECT jsonb_array_elements_text(spec -> 'hour')::int);
    days    int[] := ARRAY(SELECT jsonb_array_elements_text(spec -> 'day')::int);
    months  int[] := ARRAY(SELECT jsonb_array_elements_text(spec -> 'month')::int);
    wdays   int[] := ARRAY(SELECT jsonb_array_elements_text(spec -> 'weekday')::int);
    day_r   boolean := (spec ->> 'day_restricted')::boolean;
    wday_r  boolean := (spec ->> 'weekday_restricted')::boolean;
    t       timestamp := date_trunc('second', after AT TIME ZONE tz) + interval '1 second';
    limit_t timestamp := t + interval '5 years';
    day_ok  boolean;
    nxt     int;
    candidate timestamptz;
BEGIN
    WHILE t < limit_t LOOP
        IF NOT extract(month FROM t)::int = ANY (months) THEN
            t := date_trunc('month', t) + interval '1 month';
            CONTINUE;
        END IF;
        day_ok := CASE WHEN day_r AND wday_r THEN extract(day FROM t)::int = ANY (days) OR extract(dow FROM t)::int = ANY (wdays)
                       ELSE extract(day FROM t)::int = ANY (days) AND extract(dow FROM t)::int = ANY (wdays) END;
        IF NOT day_ok THEN
            t := date_trunc('day', t) + interval '1 day';
            CONTINUE;
        END IF;
        IF NOT extract(hour FROM t)::int = ANY (hours) THEN
            t := date_trunc('hour', t) + interval '1 hour';
            CONTINUE;
        END IF;
        IF NOT extract(minute FROM t)::int = ANY (mins) THEN
            t := date_trunc('minute', t) + interval '1 minute';
            CONTINUE;
        END IF;
        SELECT min(v) INTO nxt FROM unnest(secs) v WHERE v >= extract(second FROM t)::int;
        IF nxt IS NULL THEN
            t := date_trunc('minute', t) + interval '1 minute';
            CONTINUE;
        END IF;
        t := date_trunc('minute', t) + make_interval(secs => nxt);
        candidate := t AT TIME ZONE tz;
        IF candidate > after THEN
            RETURN candidate;
        END IF;
        t := t + interval '1 second';
    END LOOP;
    RETURN NULL;  -- no slot within five years (for example 30 February)
END
$$;

CREATE FUNCTION cloacina._schedule(s text, name text, workflow text, cron text, timezone text,
                                   context jsonb, catchup text) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    spec jsonb;
    first_slot timestamptz;
    exists_wf boolean;
    sid bigint;
BEGIN
    PERFORM cloacina._require_tenant(s);
    IF name IS NULL OR name !~ '^[A-Za-z][A-Za-z0-9_.-]{0,62}$' THEN
        RAISE EXCEPTION 'invalid schedule name %', coalesce(quote_literal(name), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'Schedule names start with a letter and contain letters, digits, "_", "." and "-" (at most 63).';
    END IF;
    EXECUTE format('SELECT true FROM %I.workflows WHERE name = $1', s) INTO exists_wf USING workflow;
    IF exists_wf IS NULL THEN
        RAISE EXCEPTION 'workflow "%" is not registered in tenant "%"', workflow, s
            USING ERRCODE = 'undefined_object', HINT = 'Register it with cloacina.register_workflow().';
    END IF;
    context := coalesce(context, '{}'::jsonb);
    IF jsonb_typeof(context) <> 'object' THEN
        RAISE EXCEPTION 'context must be a JSON object (got %)', jsonb_typeof(context) USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM cloacina._check_context(context, 'the schedule''s context');
    IF catchup IS NULL OR catchup NOT IN ('skip', 'run_all') THEN
        RAISE EXCEPTION 'catchup must be skip or run_all (got %)', coalesce(quote_literal(catchup), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    BEGIN
        PERFORM now() AT TIME ZONE timezone;
    EXCEPTION WHEN invalid_parameter_value OR null_value_not_allowed THEN
        RAISE EXCEPTION 'unknown time zone %', coalesce(quote_literal(timezone), 'NULL')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Use an IANA name such as Europe/Paris, or UTC.';
    END;
    IF timezone IS NULL THEN
        RAISE EXCEPTION 'unknown time zone NULL' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    spec := cloacina._cron_parse(cron);
    first_slot := cloacina._cron_next(spec, timezone, now());
    IF first_slot IS NULL THEN
        RAISE EXCEPTION 'cron expression "%" never fires', cron USING ERRCODE = 'invalid_parameter_value';
    END IF;
    EXECUTE format($q$
        INSERT INTO %I.schedules AS sc (name, workflow, cron, spec, timezone, context, catchup, next_run_at)
        VALUES ($1, $2, $3, $8, $4, $5, $6, $7)
        ON CONFLICT (name) DO UPDATE
            SET workflow = excluded.workflow, cron = excluded.cron, spec = excluded.spec,
                timezone = excluded.timezone, context = excluded.context, catchup = excluded.catchup,
                next_run_at = excluded.next_run_at, updated_at = now()
        RETURNING id$q$, s)
        INTO sid USING name, workflow, btrim(cron), timezone, context, catchup, first_slot, spec;
    PERFORM cloacina._due(s, first_slot);
    RETURN sid;
END
$$;

CREATE FUNCTION cloacina._unschedule(s text, name text) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    removed bigint;
BEGIN
    PERFORM cloacina._require_tenant(s);
    EXECUTE format('DELETE FROM %I.schedules WHERE name = $1 RETURNING id', s) INTO removed USING name;
    RETURN removed IS NOT NULL;
END
$$;

-- Fires the due slots of one tenant's schedules: each fire records (schedule, slot), starts the
-- run and advances next_run_at in the caller's transaction; the unique key makes a slot fire at
-- most once. Slots missed while the scheduler was not running ("startup") or by more than five
-- seconds are catch-up slots: "skip" drops them (the next future slot fires), "run_all" fires
-- each of them once, at most max_catchup per schedule. A suspended tenant fires nothing.
CREATE FUNCTION cloacina._fire_schedules(s text, startup boolean, max_catchup int DEFAULT 100) RETURNS int
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    grace constant interval := interval '5 seconds';
    sc record;
    slot timestamptz;
    fired int := 0;
    n int;
    eid bigint;
    inserted boolean;
    st text;
BEGIN
    EXECUTE format('SELECT state FROM %I.tenant_settings', s) INTO st;
    IF st <> 'active' THEN
        RETURN 0;
    END IF;
    FOR sc IN EXECUTE format('SELECT * FROM %I.schedules WHERE next_run_at <= now() ORDER BY next_run_at FOR UPDATE SKIP LOCKED', s) LOOP
        slot := sc.next_run_at;
        n := 0;
        WHILE slot IS NOT NULL AND slot <= now() AND n < max_catchup LOOP
            IF sc.catchup = 'run_all' OR NOT (startup OR now() - slot > grace) THEN
                EXECUTE format('INSERT INTO %I.schedule_fires (schedule_id, slot, execution_id) VALUES ($1, $2, 0) '
                               'ON CONFLICT DO NOTHING RETURNING true', s) INTO inserted USING sc.id, slot;
                IF inserted THEN
                    eid := cloacina._execute(s, sc.workflow,
                        sc.context || jsonb_build_object('scheduled_at', slot, 'schedule', sc.name), '{}');
                    EXECUTE format('UPDATE %I.schedule_fires SET execution_id = $3 WHERE schedule_id = $1 AND slot = $2', s)
                        USING sc.id, slot, eid;
                    fired := fired + 1;
                    n := n + 1;
                END IF;
            END IF;
            slot := cloacina._cron_next(sc.spec, sc.timezone, slot);
        END LOOP;
        IF slot IS NOT NULL AND slot <= now() THEN
            -- run_all hit its cap: the rest of the backlog is dropped, continue from now
            slot := cloacina._cron_next(sc.spec, sc.timezone, now());
        END IF;
        EXECUTE format('UPDATE %I.schedules SET next_run_at = $2 WHERE id = $1', s)
            USING sc.id, coalesce(slot, 'infinity');
    END LOOP;
    RETURN fired;
END
$$;

CREATE FUNCTION cloacina.schedule(name text, workflow text, cron text, timezone text DEFAULT 'UTC',
                                  context jsonb DEFAULT '{}', catchup text DEFAULT 'skip') RETURNS bigint
LANGUAGE sql AS $$
    SELECT cloacina._schedule(pg_catalog.current_schema(), name, workflow, cron, timezone, context, catchup)
$$;
COMMENT ON FUNCTION cloacina.schedule(text, text, text, text, jsonb, text) IS
    'Creates or replaces (by name) a cron schedule that starts a workflow; 5 or 6 fields, IANA time zone, catchup skip or run_all';

CREATE FUNCTION cloacina.unschedule(name text) RETURNS boolean
LANGUAGE sql AS $$ SELECT cloacina._unschedule(pg_catalog.current_schema(), name) $$;
COMMENT ON FUNCTION cloacina.unschedule(text) IS 'Removes a schedule; false if there was none of that name';
-- sql/src/background.sql: the background worker's duties per tenant: tick, expiry, pruning, SQL-task claims.

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
BEGIN
    IF NOT EXISTS (SELECT FROM cloacina.tenant t WHERE t.schema_name = s) THEN
        RETURN;  -- removed: no row tells the worker to forget it
    END IF;
    PERFORM cloacina._reap(s);
    PERFORM cloacina._expire_runs(s);
    PERFORM cloacina._fire_schedules(s, startup);
    -- Retries (and delayed runs) that came due since the last pass: wake the tenant's workers.
    EXECUTE format($q$SELECT cloacina._hint(%L, 'ready') WHERE EXISTS (
        SELECT FROM %I.tasks WHERE status = 'ready' AND kind = 'handler'
           AND ready_at <= now() AND ready_at > now() - interval '10 seconds')$q$, s, s);
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

-- Claims one ready SQL task of a tenant for the background worker's pool. The claim commits on
-- its own (extension/sqltask.c), so it locks the task alone; the run's deadline comes with it.
CREATE FUNCTION cloacina._claim_sql(s text, worker text, lease interval)
RETURNS TABLE(task_id bigint, execution_id bigint, fence bigint, sql text, context jsonb,
              role_name text, timeout_ms bigint, deadline timestamptz)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN QUERY EXECUTE format($q$
        WITH picked AS (
            SELECT t.id FROM %1$I.tasks t
             WHERE t.status = 'ready' AND t.kind = 'sql' AND t.ready_at <= now()
               AND (SELECT state FROM %1$I.tenant_settings) = 'active'
             ORDER BY t.priority DESC, t.ready_at, t.id
             LIMIT 1
             FOR UPDATE SKIP LOCKED),
        claimed AS (
            UPDATE %1$I.tasks t
               SET status = 'running', attempt = t.attempt + 1, fence = t.fence + 1, lease = $2,
                   lease_until = now() + $2, worker = $1, started_at = now()
              FROM picked
             WHERE t.id = picked.id
            RETURNING t.id, t.execution_id, t.task, t.attempt, t.fence, t.sql, t.input, t.timeout_ms),
        logged AS (
            INSERT INTO %1$I.execution_events (execution_id, task, attempt, from_status, to_status, detail)
            SELECT c.execution_id, c.task, c.attempt, 'ready', 'running', 'claimed by ' || $1 FROM claimed c)
        SELECT c.id, c.execution_id, c.fence, c.sql, c.input, st.role_name, c.timeout_ms, e.deadline
          FROM claimed c JOIN %1$I.executions e ON e.id = c.execution_id, %1$I.tenant_settings st$q$, s)
        USING worker, lease;
END
$$;

-- Every tenant schema, for the worker's one scan at start.
CREATE FUNCTION cloacina._tenant_schemas() RETURNS SETOF text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$ SELECT schema_name FROM cloacina.tenant ORDER BY schema_name $$;

-- The background duties are the background worker's alone (an admin may run them by hand).
REVOKE ALL ON FUNCTION cloacina._tenant_tick(text, boolean, interval), cloacina._prune(text, interval, int),
    cloacina._claim_sql(text, text, interval), cloacina._tenant_schemas(),
    cloacina._fire_schedules(text, boolean, int), cloacina._reap(text, int), cloacina._expire_runs(text),
    cloacina._sql_task_alive(text, bigint) FROM PUBLIC;
