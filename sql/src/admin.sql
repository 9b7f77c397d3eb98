-- sql/src/admin.sql: the admin API: create_tenant, remove_tenant, tenants, suspend/resume, limits.

------------------------------------------------------------------------------------------------
-- 3. Admin API
------------------------------------------------------------------------------------------------

-- Creates the login role of tenant s with a generated password when pw is empty, lands it in
-- its schema, grants it what the tenant API needs and records it in the tenant's settings.
-- Its connections are limited (cloacina.tenant_connection_limit), so that no tenant can take
-- every connection of the server. Returns the password.
CREATE FUNCTION cloacina._create_tenant_role(s text, u text, pw text) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    verifier text;
BEGIN
    IF pw IS NULL OR pw = '' THEN
        pw := cloacina._generate_password();
    END IF;
    -- Only the SCRAM verifier is ever part of a statement, so the plaintext cannot reach the
    -- server log, an error context or pg_stat_statements.
    verifier := cloacina._scram_verifier(pw);
    EXECUTE format('CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION '
                   'NOBYPASSRLS INHERIT CONNECTION LIMIT %s PASSWORD %L', u,
                   current_setting('cloacina.tenant_connection_limit')::int, verifier);
    EXECUTE format('ALTER ROLE %I SET search_path = %I', u, s);
    PERFORM cloacina._grant_tenant_role(s, u);
    EXECUTE format('UPDATE %I.tenant_settings SET role_name = $1', s) USING u;
    RETURN pw;
END
$$;

-- The body of create_tenant. (plpgsql cannot name an output column like a parameter, which
-- the contract's signature does, so the public function is an SQL wrapper around this one.)
CREATE FUNCTION cloacina._create_tenant(s text, u text, pw text)
RETURNS TABLE(o_schema_name text, o_username text, o_password text, o_connection_string text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    distributed boolean := cloacina._citus_distributes_schemas();
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

    IF distributed THEN  -- made local, distributed with its tables at the end
        PERFORM set_config('citus.enable_schema_based_sharding', 'off', true);
    END IF;
    EXECUTE format('CREATE SCHEMA %I', s);
    PERFORM cloacina._create_tenant_tables(s, 'cloacina_' || cloacina._random_token(18));
    -- cloacina_admin administers every tenant, also through the tenant API
    PERFORM cloacina._grant_tenant_role(s, 'cloacina_admin');

    IF u IS NOT NULL THEN
        pw := cloacina._create_tenant_role(s, u, pw);
    ELSE
        pw := NULL;
    END IF;

    INSERT INTO cloacina.tenant (schema_name, username, layout_version) VALUES (s, u, cloacina._tenant_layout());
    IF distributed THEN
        PERFORM set_config('citus.enable_schema_based_sharding', 'on', true);
        PERFORM cloacina._citus_distribute_tenant(s, u, pw);
    END IF;

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

CREATE FUNCTION cloacina.remove_tenant(schema_name text, username text DEFAULT NULL,
                                       cancel_unfinished boolean DEFAULT false) RETURNS void
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
    IF unfinished > 0 AND cancel_unfinished THEN
        -- running SQL tasks are stopped and waiters answered when this commits
        PERFORM cloacina._cancel_matching(s, NULL, ARRAY['running', 'paused']);
    ELSIF unfinished > 0 THEN
        RAISE EXCEPTION 'tenant "%" has unfinished runs', s
            USING ERRCODE = 'object_in_use',
                  DETAIL = format('%s runs are running or paused.', unfinished),
                  HINT = 'Suspend the tenant and let its runs finish, or remove it with cancel_unfinished => true.';
    END IF;

    EXECUTE format('DROP SCHEMA %I CASCADE', s);
    IF registered_user IS NOT NULL THEN
        EXECUTE format('DROP OWNED BY %I', registered_user);
        EXECUTE format('DROP ROLE %I', registered_user);
        PERFORM cloacina._citus_forget_role(registered_user);
    END IF;
    DELETE FROM cloacina.tenant t WHERE t.schema_name = s;
END
$$;
-- The body of adopt_tenant: takes a schema restored from a tenant's dump (pg_dump -n, then
-- pg_restore, best with --no-owner --no-privileges) back into the registry. Checks that it has
-- a tenant's tables in a layout this version knows, gives its objects to cloacina (the tenant
-- check requires that), grants cloacina_admin and the role (created with a generated password
-- when it does not exist; an existing one must be a plain login role of no other tenant),
-- migrates it to the current layout, and hands it to the background worker at once, which
-- takes over the leases that expired meanwhile.
CREATE FUNCTION cloacina._adopt_tenant(s text, u text)
RETURNS TABLE(o_schema_name text, o_username text, o_password text, o_connection_string text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    tables constant text[] := ARRAY['tenant_settings', 'workflows', 'executions', 'tasks',
                                    'execution_events', 'schedules', 'schedule_fires'];
    layout int := 1;
    pw text;
BEGIN
    PERFORM cloacina._check_name('tenant schema name', s);
    IF u IS NOT NULL THEN
        PERFORM cloacina._check_name('tenant user name', u);
    END IF;
    LOCK TABLE cloacina.tenant IN SHARE ROW EXCLUSIVE MODE;
    IF EXISTS (SELECT FROM cloacina.tenant t WHERE t.schema_name = s) THEN
        RAISE EXCEPTION 'tenant "%" already exists', s USING ERRCODE = 'duplicate_schema';
    END IF;
    IF NOT EXISTS (SELECT FROM pg_namespace n WHERE n.nspname = s) THEN
        RAISE EXCEPTION 'schema "%" does not exist', s
            USING ERRCODE = 'invalid_schema_name',
                  HINT = 'Restore the tenant''s dump first (pg_restore --no-owner --no-privileges).';
    END IF;
    FOR i IN 1 .. cardinality(tables) LOOP
        IF to_regclass(format('%I.%I', s, tables[i])) IS NULL THEN
            RAISE EXCEPTION 'schema "%" does not have the tables of a cloacina tenant: % is missing', s, tables[i]
                USING ERRCODE = 'object_not_in_prerequisite_state';
        END IF;
    END LOOP;
    IF EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = to_regclass(format('%I.tenant_settings', s))
                  AND a.attname = 'layout_version' AND NOT a.attisdropped) THEN
        EXECUTE format('SELECT layout_version FROM %I.tenant_settings', s) INTO layout;
    END IF;
    IF layout IS NULL OR layout > cloacina._tenant_layout() THEN
        RAISE EXCEPTION 'schema "%" has table layout %, newer than this version''s %', s,
                        coalesce(layout::text, 'NULL'), cloacina._tenant_layout()
            USING ERRCODE = 'object_not_in_prerequisite_state', HINT = 'Update the extension first.';
    END IF;
    IF u IS NOT NULL AND EXISTS (SELECT FROM cloacina.tenant t WHERE t.username = u) THEN
        RAISE EXCEPTION 'role "%" belongs to another tenant', u USING ERRCODE = 'duplicate_object';
    END IF;
    IF u IS NOT NULL AND EXISTS (SELECT FROM pg_roles r WHERE r.rolname = u AND (NOT r.rolcanlogin
            OR r.rolsuper OR r.rolcreaterole OR r.rolcreatedb OR r.rolreplication OR r.rolbypassrls)) THEN
        RAISE EXCEPTION 'role "%" is not a plain login role', u
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A tenant role logs in and has no other attribute: SQL tasks run as it.';
    END IF;

    -- cloacina owns a tenant's objects (the tenant check requires it): take over the restored ones
    EXECUTE format('ALTER SCHEMA %I OWNER TO %I', s, current_user);
    FOR i IN 1 .. cardinality(tables) LOOP
        EXECUTE format('ALTER TABLE %I.%I OWNER TO %I', s, tables[i], current_user);
    END LOOP;
    PERFORM cloacina._grant_tenant_role(s, 'cloacina_admin');
    INSERT INTO cloacina.tenant (schema_name, username, layout_version) VALUES (s, u, layout);
    IF u IS NULL THEN
        EXECUTE format('UPDATE %I.tenant_settings SET role_name = NULL', s);
    ELSIF EXISTS (SELECT FROM pg_roles r WHERE r.rolname = u) THEN
        EXECUTE format('ALTER ROLE %I SET search_path = %I', u, s);
        PERFORM cloacina._grant_tenant_role(s, u);
        EXECUTE format('UPDATE %I.tenant_settings SET role_name = $1', s) USING u;
    ELSE
        pw := cloacina._create_tenant_role(s, u, '');
    END IF;
    PERFORM cloacina._migrate_tenant(s);
    PERFORM cloacina._sync_tenant_settings(s);  -- state and limits; the worker looks at it now
    RETURN QUERY SELECT s, u, pw, CASE WHEN pw IS NULL THEN NULL ELSE cloacina._connection_string(u, pw) END;
END
$$;

CREATE FUNCTION cloacina.adopt_tenant(schema_name text, username text DEFAULT NULL)
RETURNS TABLE(schema_name text, username text, password text, connection_string text)
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM cloacina._adopt_tenant(schema_name, username) $$;
COMMENT ON FUNCTION cloacina.adopt_tenant(text, text) IS
    'Takes a schema restored from a tenant''s dump back as a tenant (checked, migrated, served at once); a new password when it creates the role';

COMMENT ON FUNCTION cloacina.remove_tenant(text, text, boolean) IS
    'Removes a tenant''s schema and role; refuses while the tenant has unfinished runs unless cancel_unfinished cancels them';

-- Removes every tenant, one per transaction, cancelling their unfinished runs: what DROP
-- EXTENSION asks for first. Call it outside a transaction block.
CREATE PROCEDURE cloacina.remove_all_tenants()
LANGUAGE plpgsql AS $$
DECLARE
    s text;
    removed int := 0;
BEGIN
    FOR s IN SELECT t.schema_name FROM cloacina.tenant t ORDER BY t.schema_name LOOP
        PERFORM cloacina.remove_tenant(s, NULL, true);
        COMMIT;
        removed := removed + 1;
    END LOOP;
    RAISE NOTICE 'cloacina: % tenants removed', removed;
END
$$;
COMMENT ON PROCEDURE cloacina.remove_all_tenants() IS
    'Removes every tenant (schema, role, runs), one per transaction; DROP EXTENSION cloacina needs it first';

-- DROP EXTENSION cloacina while tenants exist would leave their schemas and roles behind,
-- unserved: refused, with the way out. (A ddl_command_start trigger, since one on sql_drop would
-- be dropped with the extension before it fires; it recognises the extension by the statement.)
CREATE FUNCTION cloacina._refuse_drop_with_tenants() RETURNS event_trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF current_query() ~* '\mcloacina\M' AND EXISTS (SELECT FROM cloacina.tenant) THEN
        RAISE EXCEPTION 'cloacina still has % tenants', (SELECT count(*) FROM cloacina.tenant)
            USING ERRCODE = 'dependent_objects_still_exist',
                  DETAIL = 'Dropping the extension would leave every tenant''s schema and role behind, unserved.',
                  HINT = 'Remove them first with CALL cloacina.remove_all_tenants(); (it cancels their unfinished runs).';
    END IF;
    IF current_query() ~* '\mcloacina\M' THEN
        PERFORM cloacina._citus_drop_registry_shards();
    END IF;
END
$$;
CREATE EVENT TRIGGER cloacina_refuse_drop_with_tenants ON ddl_command_start
    WHEN TAG IN ('DROP EXTENSION') EXECUTE FUNCTION cloacina._refuse_drop_with_tenants();

-- Live counts of one tenant, for the tenants view (runs with the caller's privileges). Read in
-- a subtransaction rolled back on purpose, which releases its locks (see cloacina._stats).
CREATE FUNCTION cloacina._tenant_counts(s text,
    OUT active_runs bigint, OUT ready_tasks bigint, OUT running_tasks bigint)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    BEGIN
        EXECUTE format($q$SELECT (SELECT count(*) FROM %1$I.executions WHERE status IN ('running', 'paused')),
                                 (SELECT count(*) FROM %1$I.tasks WHERE status = 'ready'),
                                 (SELECT count(*) FROM %1$I.tasks WHERE status = 'running')$q$, s)
            INTO active_runs, ready_tasks, running_tasks;
        RAISE EXCEPTION USING ERRCODE = 'CLRLK';
    EXCEPTION WHEN SQLSTATE 'CLRLK' THEN
        NULL;
    END;
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
    cloacina._create_tenant_role(text, text, text),
    cloacina.adopt_tenant(text, text), cloacina._adopt_tenant(text, text),
    cloacina.remove_tenant(text, text, boolean),
    cloacina.suspend_tenant(text), cloacina.resume_tenant(text),
    cloacina.set_tenant_limits(text, int, int), cloacina._tenant_counts(text),
    cloacina._sync_tenant_settings(text), cloacina._set_tenant_state(text, text),
    cloacina._create_tenant_tables(text, text), cloacina._grant_tenant_role(text, text),
    cloacina._connection_string(text, text)
    FROM PUBLIC;
REVOKE ALL ON cloacina.tenants FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    cloacina.create_tenant(text, text, text), cloacina.remove_tenant(text, text, boolean),
    cloacina.adopt_tenant(text, text), cloacina.suspend_tenant(text), cloacina.resume_tenant(text),
    cloacina.set_tenant_limits(text, int, int), cloacina._tenant_counts(text)
    TO cloacina_admin;
GRANT SELECT ON cloacina.tenants TO cloacina_admin;
REVOKE ALL ON PROCEDURE cloacina.remove_all_tenants() FROM PUBLIC;
GRANT EXECUTE ON PROCEDURE cloacina.remove_all_tenants() TO cloacina_admin;
