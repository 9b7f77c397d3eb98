-- cloacina 0.1.0 -> 0.2.0: tenant tables get a layout version, and tenants migrate one at a
-- time (sql/src/migrations.sql). Existing tenants are at layout 1 until the background worker
-- (a batch each naptime) or CALL cloacina.migrate_tenants() migrates them; they are served the
-- same meanwhile. Runs can be cancelled in bulk, tenants removed with their unfinished runs,
-- DROP EXTENSION is refused while tenants exist, and a restored tenant schema can be adopted
-- (adopt_tenant); the tenant check consults the registry. Released update scripts are never
-- edited.
\echo Use "ALTER EXTENSION cloacina UPDATE TO '0.2.0'" to load this file. \quit

-- The registry records each tenant's layout; the tenants of 0.1.0 have layout 1.
ALTER TABLE cloacina.tenant ADD COLUMN layout_version int NOT NULL DEFAULT 1;
ALTER TABLE cloacina.tenant ALTER COLUMN layout_version DROP DEFAULT;
CREATE INDEX tenant_layout_version ON cloacina.tenant (layout_version);  -- tenants left to migrate

-- Whether a schema is a registered tenant: the registry is the authority for the tenant check
-- (extension/tenant_path.c), and tenants may not read it. Tells one boolean about a name.
CREATE FUNCTION cloacina._is_registered(schema_name text) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT EXISTS (SELECT FROM cloacina.tenant t WHERE t.schema_name = _is_registered.schema_name) $$;

-- The layout create_tenant makes and every tenant migrates to.
CREATE FUNCTION cloacina._tenant_layout() RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS 'SELECT 2';

-- Migrates one tenant to the current layout, step by step, in the caller's transaction, and
-- records the new layout in the tenant's settings and in the registry. Returns the layout the
-- tenant had. Waits for the tenant's locks only as long as the caller's lock_timeout allows.
CREATE FUNCTION cloacina._migrate_tenant(s text) RETURNS int
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    was int;
BEGIN
    SELECT t.layout_version INTO was FROM cloacina.tenant t WHERE t.schema_name = s FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'tenant "%" does not exist', s USING ERRCODE = 'invalid_schema_name';
    END IF;
    IF was < 2 THEN
        -- the engine does not read the column: the tenant is served the same before and after
        EXECUTE format('ALTER TABLE %I.tenant_settings ADD COLUMN layout_version int NOT NULL DEFAULT 2', s);
        EXECUTE format('ALTER TABLE %I.tenant_settings ALTER COLUMN layout_version DROP DEFAULT', s);
    END IF;
    IF was < cloacina._tenant_layout() THEN
        EXECUTE format('UPDATE %I.tenant_settings SET layout_version = $1', s) USING cloacina._tenant_layout();
        UPDATE cloacina.tenant t SET layout_version = cloacina._tenant_layout() WHERE t.schema_name = s;
    END IF;
    RETURN was;
END
$$;

-- Tenants whose tables are older than the current layout (at most max_tenants, oldest first).
CREATE FUNCTION cloacina._tenants_to_migrate(max_tenants int) RETURNS SETOF text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT t.schema_name FROM cloacina.tenant t
     WHERE t.layout_version < cloacina._tenant_layout()
     ORDER BY t.layout_version, t.schema_name LIMIT max_tenants
$$;

-- Migrates every tenant left, one per transaction, with a NOTICE of progress every 100; a tenant
-- whose tables stay locked for lock_wait is skipped (the background worker retries it later).
-- Call it outside a transaction block. (No SET clause: a procedure with one cannot commit.)
CREATE PROCEDURE cloacina.migrate_tenants(lock_wait interval DEFAULT '5 seconds')
LANGUAGE plpgsql AS $$
DECLARE
    pending text[];
    migrated int := 0;
    skipped int := 0;
BEGIN
    pending := ARRAY(SELECT cloacina._tenants_to_migrate(2147483647));
    FOR i IN 1 .. coalesce(cardinality(pending), 0) LOOP
        BEGIN
            PERFORM pg_catalog.set_config('lock_timeout', (extract(epoch FROM lock_wait) * 1000)::bigint::text, true);
            PERFORM cloacina._migrate_tenant(pending[i]);
            migrated := migrated + 1;
        EXCEPTION WHEN lock_not_available THEN
            skipped := skipped + 1;
            RAISE NOTICE 'cloacina: tenant % skipped: its tables stayed locked for %', pending[i], lock_wait;
        END;
        COMMIT;
        IF i % 100 = 0 THEN
            RAISE NOTICE 'cloacina: % of % tenants migrated', migrated, cardinality(pending);
        END IF;
    END LOOP;
    RAISE NOTICE 'cloacina: % tenants migrated to layout %, % skipped', migrated, cloacina._tenant_layout(), skipped;
END
$$;
COMMENT ON PROCEDURE cloacina.migrate_tenants(interval) IS
    'Migrates every tenant to the current table layout now, one tenant per transaction (the background worker also does it on its own)';

REVOKE ALL ON FUNCTION cloacina._migrate_tenant(text), cloacina._tenants_to_migrate(int) FROM PUBLIC;
REVOKE ALL ON PROCEDURE cloacina.migrate_tenants(interval) FROM PUBLIC;

-- New tenants get the current layout; restored tenants can be adopted.
-- Creates the tables and indexes of one tenant schema. Everything a tenant owns lives in its
-- schema (nothing on the tenant path touches the cloacina schema), so the schema can later be
-- moved as one unit (design §9).
CREATE OR REPLACE FUNCTION cloacina._create_tenant_tables(s text, channel text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    EXECUTE format($ddl$
        CREATE TABLE %1$I.tenant_settings (
            singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
            state          text NOT NULL DEFAULT 'active',
            max_running    int,
            weight         int NOT NULL DEFAULT 1,
            notify_channel text NOT NULL,
            role_name      text,
            layout_version int NOT NULL);  -- the layout of this schema's tables (migrations.sql)
        INSERT INTO %1$I.tenant_settings (notify_channel, layout_version) VALUES (%2$L, %3$s);

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
    $ddl$, s, channel, cloacina._tenant_layout());
END
$$;

-- Creates the login role of tenant s with a generated password when pw is empty, lands it in
-- its schema, grants it what the tenant API needs and records it in the tenant's settings.
-- Returns the password.
CREATE FUNCTION cloacina._create_tenant_role(s text, u text, pw text) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF pw IS NULL OR pw = '' THEN
        pw := cloacina._generate_password();
    END IF;
    -- Only the SCRAM verifier is ever part of a statement, so the plaintext cannot reach the
    -- server log, an error context or pg_stat_statements.
    EXECUTE format('CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION '
                   'NOBYPASSRLS INHERIT PASSWORD %L', u, cloacina._scram_verifier(pw));
    EXECUTE format('ALTER ROLE %I SET search_path = %I', u, s);
    PERFORM cloacina._grant_tenant_role(s, u);
    EXECUTE format('UPDATE %I.tenant_settings SET role_name = $1', s) USING u;
    RETURN pw;
END
$$;

-- The body of create_tenant. (plpgsql cannot name an output column like a parameter, which
-- the contract's signature does, so the public function is an SQL wrapper around this one.)
CREATE OR REPLACE FUNCTION cloacina._create_tenant(s text, u text, pw text)
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
        pw := cloacina._create_tenant_role(s, u, pw);
    ELSE
        pw := NULL;
    END IF;

    INSERT INTO cloacina.tenant (schema_name, username, layout_version) VALUES (s, u, cloacina._tenant_layout());

    RETURN QUERY SELECT s, u, pw,
        CASE WHEN u IS NULL THEN NULL ELSE cloacina._connection_string(u, pw) END;
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

-- Runs are cancelled set-based, also in bulk (cancel_runs).
-- Ends runs early, set-based: as "cancelled" by default, or as "failed" with a reason (a run
-- timeout). Runs that already ended are left as they are (a finished run never changes); returns
-- the runs it ended. Their unfinished tasks are cancelled: running handler tasks' workers learn
-- it from heartbeat() and their complete()/fail() are refused; a running SQL task's statement is
-- cancelled when this transaction commits.
CREATE FUNCTION cloacina._cancel_run_ids(s text, eids bigint[], failure text DEFAULT NULL) RETURNS bigint[]
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ended bigint[];
BEGIN
    PERFORM cloacina._require_tenant(s);
    -- the runs' rows first, in id order: the locking order
    EXECUTE format($q$SELECT coalesce(array_agg(id ORDER BY id), '{}') FROM (
                          SELECT id FROM %I.executions WHERE id = ANY ($1) AND status IN ('running', 'paused')
                           ORDER BY id FOR UPDATE) r$q$, s)
        INTO ended USING eids;
    IF cardinality(ended) = 0 THEN
        RETURN ended;
    END IF;
    EXECUTE format($q$SELECT count(cloacina._cancel_sql_tasks(%L, execution_id)) FROM (
                          SELECT DISTINCT execution_id FROM %I.tasks
                           WHERE execution_id = ANY ($1) AND kind = 'sql' AND status = 'running') r$q$, s, s)
        USING ended;
    EXECUTE format($q$
        WITH old AS (SELECT id, status FROM %1$I.tasks
                      WHERE execution_id = ANY ($1) AND status IN ('waiting', 'ready', 'running')
                      ORDER BY id FOR UPDATE),
        cancelled AS (
            UPDATE %1$I.tasks t SET status = 'cancelled', finished_at = now(), lease_until = NULL
              FROM old WHERE t.id = old.id
            RETURNING t.execution_id, t.task, t.attempt, old.status AS from_status)
        INSERT INTO %1$I.execution_events (execution_id, task, attempt, from_status, to_status)
        SELECT execution_id, task, attempt, from_status, 'cancelled' FROM cancelled$q$, s) USING ended;
    IF failure IS NULL THEN
        PERFORM cloacina._finalize(s, ended, 'cancelled');
    ELSE
        PERFORM cloacina._finalize(s, ended, 'failed', failure);
    END IF;
    RETURN ended;
END
$$;

-- Ends one run early (see _cancel_run_ids); false if it had ended, an error if there is none.
CREATE OR REPLACE FUNCTION cloacina._cancel(s text, eid bigint, failure text DEFAULT NULL) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF cardinality(cloacina._cancel_run_ids(s, ARRAY[eid], failure)) > 0 THEN
        RETURN true;
    END IF;
    PERFORM cloacina._lock_run(s, eid);  -- raises for a run that does not exist
    RETURN false;  -- already ended; a finished run never changes
END
$$;

-- Cancels every unfinished run of the tenant in one transaction, or those of one workflow, or
-- those in the given states (running, paused); returns how many it cancelled.
CREATE FUNCTION cloacina._cancel_matching(s text, workflow text, statuses text[]) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ids bigint[];
BEGIN
    PERFORM cloacina._require_tenant(s);
    IF statuses IS NULL OR cardinality(statuses) = 0 OR NOT statuses <@ ARRAY['running', 'paused'] THEN
        RAISE EXCEPTION 'statuses must list running and/or paused (got %)', coalesce(statuses::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Only unfinished runs can be cancelled.';
    END IF;
    EXECUTE format('SELECT coalesce(array_agg(id), ''{}'') FROM %I.executions
                     WHERE status = ANY ($1) AND ($2::text IS NULL OR workflow = $2)', s)
        INTO ids USING statuses, workflow;
    RETURN cardinality(cloacina._cancel_run_ids(s, ids));
END
$$;

CREATE FUNCTION cloacina.cancel_runs(workflow text DEFAULT NULL,
                                     statuses text[] DEFAULT ARRAY['running', 'paused']) RETURNS bigint
LANGUAGE sql AS $$ SELECT cloacina._cancel_matching(pg_catalog.current_schema(), workflow, statuses) $$;
COMMENT ON FUNCTION cloacina.cancel_runs(text, text[]) IS
    'Cancels unfinished runs in bulk, in one transaction: all of them, or one workflow''s, or those running or paused; returns how many';

-- remove_tenant can cancel unfinished runs; every tenant can be removed in one call; DROP
-- EXTENSION is refused while tenants exist.
DROP FUNCTION cloacina.remove_tenant(text, text);
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
    END IF;
    DELETE FROM cloacina.tenant t WHERE t.schema_name = s;
END
$$;
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
END
$$;
CREATE EVENT TRIGGER cloacina_refuse_drop_with_tenants ON ddl_command_start
    WHEN TAG IN ('DROP EXTENSION') EXECUTE FUNCTION cloacina._refuse_drop_with_tenants();

REVOKE ALL ON FUNCTION cloacina.remove_tenant(text, text, boolean), cloacina._create_tenant_role(text, text, text),
    cloacina.adopt_tenant(text, text), cloacina._adopt_tenant(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cloacina.remove_tenant(text, text, boolean), cloacina.adopt_tenant(text, text) TO cloacina_admin;
REVOKE ALL ON PROCEDURE cloacina.remove_all_tenants() FROM PUBLIC;
GRANT EXECUTE ON PROCEDURE cloacina.remove_all_tenants() TO cloacina_admin;
