-- cloacina 0.1.0 -> 0.2.0: tenant tables get a layout version, and tenants migrate one at a
-- time (sql/src/migrations.sql). Existing tenants are at layout 1 until the background worker
-- (a batch each naptime) or CALL cloacina.migrate_tenants() migrates them; they are served the
-- same meanwhile. Runs can be cancelled in bulk, tenants removed with their unfinished runs,
-- DROP EXTENSION is refused while tenants exist, and a restored tenant schema can be adopted
-- (adopt_tenant); the tenant check consults the registry. Operators get figures, pictures,
-- retry, unregister_workflow, schedule controls and log lines. Released update scripts are
-- never edited.
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
        -- the engine reads them with their defaults the same as before (no overlap check, not paused)
        EXECUTE format($m$ALTER TABLE %I.schedules
                              ADD COLUMN overlap text NOT NULL DEFAULT 'allow'
                                  CONSTRAINT schedules_overlap_check CHECK (overlap IN ('allow', 'skip')),
                              ADD COLUMN paused boolean NOT NULL DEFAULT false$m$, s);
        -- The states and kinds the engine writes, enforced: a tenant writes its own tables too.
        -- Each check scans its table once, under the lock the migration holds anyway.
        EXECUTE format($m$
            ALTER TABLE %1$I.tenant_settings
                ADD CONSTRAINT tenant_settings_state_check CHECK (state IN ('active', 'suspended'));
            ALTER TABLE %1$I.executions
                ADD CONSTRAINT executions_status_check
                    CHECK (status IN ('running', 'paused', 'completed', 'failed', 'cancelled'));
            ALTER TABLE %1$I.tasks
                ADD CONSTRAINT tasks_kind_check CHECK (kind IN ('handler', 'sql')),
                ADD CONSTRAINT tasks_trigger_rule_check
                    CHECK (trigger_rule IN ('all_success', 'all_done', 'one_success', 'one_failed', 'always')),
                ADD CONSTRAINT tasks_backoff_check CHECK (backoff IN ('fixed', 'linear', 'exponential')),
                ADD CONSTRAINT tasks_status_check
                    CHECK (status IN ('waiting', 'ready', 'running', 'completed', 'failed', 'skipped', 'cancelled'));
            ALTER TABLE %1$I.schedules
                ADD CONSTRAINT schedules_catchup_check CHECK (catchup IN ('skip', 'run_all'))$m$, s);
        -- The claim's index by claim key, so that a claim can start at the tenant's claim floor
        -- (extension/claim_floor.c); the engine claims in the old index's order until then.
        EXECUTE format($m$
            CREATE INDEX tasks_claim_key ON %1$I.tasks ((-priority), ready_at, id)
                WHERE status = 'ready' AND kind = 'handler';
            DROP INDEX %1$I.tasks_claim_order$m$, s);
        -- The reaper's and the tick's ways to timed-out and running SQL tasks (tenant_ddl.sql).
        EXECUTE format($m$
            CREATE INDEX tasks_timeout_at ON %1$I.tasks
                (((started_at AT TIME ZONE 'UTC') + timeout_ms * interval '1 millisecond'))
                WHERE status = 'running' AND timeout_ms IS NOT NULL;
            CREATE INDEX tasks_sql_running ON %1$I.tasks (id) WHERE status = 'running' AND kind = 'sql'$m$, s);
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
            state          text NOT NULL DEFAULT 'active'
                           CONSTRAINT tenant_settings_state_check CHECK (state IN ('active', 'suspended')),
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
            status           text NOT NULL CONSTRAINT executions_status_check
                             CHECK (status IN ('running', 'paused', 'completed', 'failed', 'cancelled')),
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
            kind          text NOT NULL CONSTRAINT tasks_kind_check CHECK (kind IN ('handler', 'sql')),
            sql           text,
            dependencies  text[] NOT NULL,
            dependents    text[] NOT NULL,
            pending_deps  int NOT NULL,
            trigger_rule  text NOT NULL CONSTRAINT tasks_trigger_rule_check
                          CHECK (trigger_rule IN ('all_success', 'all_done', 'one_success', 'one_failed', 'always')),
            condition     jsonb,
            max_attempts  int NOT NULL,
            backoff       text NOT NULL CONSTRAINT tasks_backoff_check CHECK (backoff IN ('fixed', 'linear', 'exponential')),
            delay_ms      bigint NOT NULL,
            max_delay_ms  bigint NOT NULL,
            jitter        boolean NOT NULL,
            timeout_ms    bigint,
            priority      int NOT NULL,
            status        text NOT NULL CONSTRAINT tasks_status_check
                          CHECK (status IN ('waiting', 'ready', 'running', 'completed', 'failed', 'skipped', 'cancelled')),
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
        -- The claim walks this index in claim order (the greatest priority first), from the
        -- tenant's claim floor (extension/claim_floor.c); only claimable rows are in it.
        CREATE INDEX tasks_claim_key ON %1$I.tasks ((-priority), ready_at, id)
            WHERE status = 'ready' AND kind = 'handler';
        CREATE INDEX tasks_sql_claim_order ON %1$I.tasks (priority DESC, ready_at, id)
            WHERE status = 'ready' AND kind = 'sql';
        CREATE INDEX tasks_lease_expiry ON %1$I.tasks (lease_until) WHERE status = 'running';
        -- The reaper and the tick find timed-out and running SQL tasks without reading every
        -- running task (a tenant may hold millions): a running task is in the first only with a
        -- timeout, in the second only as a SQL task. The expression is in UTC, to be immutable.
        CREATE INDEX tasks_timeout_at ON %1$I.tasks
            (((started_at AT TIME ZONE 'UTC') + timeout_ms * interval '1 millisecond'))
            WHERE status = 'running' AND timeout_ms IS NOT NULL;
        CREATE INDEX tasks_sql_running ON %1$I.tasks (id) WHERE status = 'running' AND kind = 'sql';

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
            catchup     text NOT NULL CONSTRAINT schedules_catchup_check CHECK (catchup IN ('skip', 'run_all')),
            next_run_at timestamptz NOT NULL,
            created_at  timestamptz NOT NULL DEFAULT now(),
            updated_at  timestamptz NOT NULL DEFAULT now(),
            -- skip: not while its last run is unfinished
            overlap     text NOT NULL DEFAULT 'allow' CONSTRAINT schedules_overlap_check CHECK (overlap IN ('allow', 'skip')),
            paused      boolean NOT NULL DEFAULT false); -- while paused, next_run_at is infinity
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
CREATE OR REPLACE FUNCTION cloacina._create_tenant(s text, u text, pw text)
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
        PERFORM cloacina._citus_forget_role(registered_user);
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
    IF current_query() ~* '\mcloacina\M' THEN
        PERFORM cloacina._citus_drop_registry_shards();
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

-- Operating it (issue 15): figures per tenant and per workflow, DOT pictures, retry of an ended
-- run, unregister_workflow, schedules with @ macros, pause/resume, an overlap policy and a
-- listing view, and server log lines for the background workers' events. Layout 2 also adds
-- schedules.overlap and schedules.paused (_migrate_tenant above).

-- Raises a clear error when a feature needs a newer layout than tenant s has yet (between an
-- update and the tenant's migration, which the background worker does within seconds).
-- SECURITY DEFINER: tenants may not read the registry; this tells only a layout number.
CREATE FUNCTION cloacina._require_layout(s text, needed int, what text) RETURNS void
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    has int;
BEGIN
    SELECT t.layout_version INTO has FROM cloacina.tenant t WHERE t.schema_name = s;
    IF has < needed THEN
        RAISE EXCEPTION '% needs tenant "%" migrated to table layout %; it has layout %', what, s, needed, has
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'The background worker migrates tenants after an update within seconds; an admin can run CALL cloacina.migrate_tenants().';
    END IF;
END
$$;

-- A server log line about a tenant at cloacina.event_log_level (extension/event_log.c): the
-- background workers' duties call it; tenants may not write the server log.
CREATE FUNCTION cloacina._log_event(schema_name text, message text) RETURNS void
    AS 'MODULE_PATHNAME', 'cloacina_log_event_fn' LANGUAGE C VOLATILE;

REVOKE ALL ON FUNCTION cloacina._log_event(text, text) FROM PUBLIC;

-- Time-based duty for one tenant (extension/reap.c): running tasks whose lease ran out (the
-- worker vanished) or whose timeout passed, and SQL tasks no pool worker runs any more. Each
-- such attempt fails as a failed attempt does (fail.c), retried at once while attempts are left.
-- The background worker calls this; it is also safe to call by hand. Returns how many it ended.
CREATE OR REPLACE FUNCTION cloacina._reap(s text, max_tasks int DEFAULT 1000) RETURNS int
AS 'MODULE_PATHNAME', 'cloacina_reap' LANGUAGE C;

-- Runs past their timeout (execute option timeout_ms) fail: their unfinished tasks are cancelled.
CREATE OR REPLACE FUNCTION cloacina._expire_runs(s text) RETURNS int
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
            PERFORM cloacina._log_event(s, format('run %s failed: it timed out after %s ms', r.id, round(r.ms)));
        END IF;
    END LOOP;
    RETURN expired;
END
$$;

-- The expression an @ macro stands for (pg_cron's and Vixie cron's set, less @reboot).
CREATE FUNCTION cloacina._cron_macro(macro text) RETURNS text
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    CASE lower(macro)
    WHEN '@yearly', '@annually' THEN RETURN '0 0 1 1 *';
    WHEN '@monthly' THEN RETURN '0 0 1 * *';
    WHEN '@weekly' THEN RETURN '0 0 * * 0';
    WHEN '@daily', '@midnight' THEN RETURN '0 0 * * *';
    WHEN '@hourly' THEN RETURN '0 * * * *';
    ELSE
        RAISE EXCEPTION 'unknown cron macro "%"', macro
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use @yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly.';
    END CASE;
END
$$;

-- Parses a 5-field (minute hour day month weekday) or 6-field (second first) expression of at
-- most max_length characters (a real one needs a few dozen; parsing costs grow with the length),
-- or an @ macro.
CREATE OR REPLACE FUNCTION cloacina._cron_parse(expr text) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    max_length constant int := 256;
    f text[];
BEGIN
    IF length(expr) > max_length THEN
        RAISE EXCEPTION 'cron expression is too long (% characters, the limit is %)', length(expr), max_length
            USING ERRCODE = 'program_limit_exceeded';
    END IF;
    IF btrim(expr) LIKE '@%' THEN
        expr := cloacina._cron_macro(btrim(expr));
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

DROP FUNCTION cloacina.schedule(text, text, text, text, jsonb, text);
DROP FUNCTION cloacina._schedule(text, text, text, text, text, jsonb, text);

-- Creates or replaces a schedule by name. A replaced schedule keeps its pause: a paused one
-- stays paused (next_run_at infinity) with its new definition.
CREATE FUNCTION cloacina._schedule(s text, name text, workflow text, cron text, timezone text,
                                   context jsonb, catchup text, overlap text) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    spec jsonb;
    first_slot timestamptz;
    exists_wf boolean;
    sid bigint;
BEGIN
    PERFORM cloacina._require_tenant(s);
    PERFORM cloacina._require_layout(s, 2, 'scheduling');
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
    IF overlap IS NULL OR overlap NOT IN ('allow', 'skip') THEN
        RAISE EXCEPTION 'overlap must be allow or skip (got %)', coalesce(quote_literal(overlap), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'skip: a slot does not fire while the schedule''s previous run is unfinished.';
    END IF;
    IF timezone IS NULL THEN
        RAISE EXCEPTION 'unknown time zone NULL' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    spec := cloacina._cron_parse(cron);
    first_slot := cloacina._cron_next(spec, timezone, now());
    IF first_slot IS NULL THEN
        RAISE EXCEPTION 'cron expression "%" never fires', cron USING ERRCODE = 'invalid_parameter_value';
    END IF;
    EXECUTE format($q$
        INSERT INTO %I.schedules AS sc (name, workflow, cron, spec, timezone, context, catchup, overlap, next_run_at)
        VALUES ($1, $2, $3, $8, $4, $5, $6, $9, $7)
        ON CONFLICT (name) DO UPDATE
            SET workflow = excluded.workflow, cron = excluded.cron, spec = excluded.spec,
                timezone = excluded.timezone, context = excluded.context, catchup = excluded.catchup,
                overlap = excluded.overlap,
                next_run_at = CASE WHEN sc.paused THEN 'infinity' ELSE excluded.next_run_at END,
                updated_at = $10
        RETURNING id$q$, s)
        INTO sid USING name, workflow, btrim(cron), timezone, context, catchup, first_slot, spec, overlap, now();
    PERFORM cloacina._due(s, first_slot);
    RETURN sid;
END
$$;

-- Pauses (next_run_at infinity: nothing fires, the worker's tick does not look at it) or
-- resumes (the next slot after now: what was missed while paused does not fire) a schedule.
-- Returns false if it already was in that state.
CREATE FUNCTION cloacina._set_schedule_paused(s text, name text, pause boolean) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    sc record;
    next_slot timestamptz;
BEGIN
    PERFORM cloacina._require_tenant(s);
    PERFORM cloacina._require_layout(s, 2, 'pausing a schedule');
    EXECUTE format('SELECT id, paused, spec, timezone FROM %I.schedules WHERE name = $1 FOR UPDATE', s)
        INTO sc USING name;
    IF sc.id IS NULL THEN
        RAISE EXCEPTION 'schedule % does not exist in tenant "%"', coalesce(quote_literal(name), 'NULL'), s
            USING ERRCODE = 'undefined_object';
    END IF;
    IF sc.paused = pause THEN
        RETURN false;
    END IF;
    next_slot := CASE WHEN pause THEN 'infinity' ELSE cloacina._cron_next(sc.spec, sc.timezone, now()) END;
    EXECUTE format('UPDATE %I.schedules SET paused = $2, next_run_at = $3, updated_at = now() WHERE id = $1', s)
        USING sc.id, pause, coalesce(next_slot, 'infinity');
    IF NOT pause AND next_slot IS NOT NULL THEN
        PERFORM cloacina._due(s, next_slot);
    END IF;
    RETURN true;
END
$$;

-- Fires the due slots of one tenant's schedules: each fire records (schedule, slot), starts the
-- run and advances next_run_at in the caller's transaction; the unique key makes a slot fire at
-- most once. Slots missed while the scheduler was not running ("startup") or by more than five
-- seconds are catch-up slots: "skip" drops them (the next future slot fires), "run_all" fires
-- each of them once, at most max_catchup per schedule. Except at startup, the latest slot due
-- fires however late the tick (a busy scheduler reaches thousands of tenants due at the same
-- second one after the other: "skip" drops backlogs, not the slot that is due now). With
-- overlap "skip", a slot whose schedule's previous run is unfinished does not fire. Except at
-- startup, one call looks at per_tick schedules at most and stops once it fired per_tick slots:
-- the schedules left are still due, so the scheduler comes back to them after the tenants that
-- waited longer (a tenant with thousands of schedules cannot hold the scheduler for long). A
-- suspended tenant fires nothing. Each fire and skip is logged at cloacina.event_log_level.
CREATE OR REPLACE FUNCTION cloacina._fire_schedules(s text, startup boolean, max_catchup int DEFAULT 100) RETURNS int
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    grace constant interval := interval '5 seconds';
    per_tick constant int := 100;
    sc record;
    slot timestamptz;
    next_slot timestamptz;
    fired int := 0;
    n int;
    eid bigint;
    inserted boolean;
    st text;
    busy_run bigint;
BEGIN
    EXECUTE format('SELECT state FROM %I.tenant_settings', s) INTO st;
    FOR sc IN EXECUTE format('SELECT * FROM %I.schedules WHERE next_run_at <= now() ORDER BY next_run_at LIMIT $1 FOR UPDATE SKIP LOCKED', s)
              USING CASE WHEN NOT startup THEN per_tick END LOOP
        EXIT WHEN NOT startup AND fired >= per_tick;
        slot := sc.next_run_at;
        n := 0;
        -- Suspended: its schedules pause, and the slots due are skipped (below, the schedule
        -- moves on to its next slot from now). Left due, the past slot would be the tick's next
        -- due time and the tenant ticked again at once for as long as it stays suspended.
        WHILE st = 'active' AND slot IS NOT NULL AND slot <= now() AND n < max_catchup LOOP
            next_slot := cloacina._cron_next(sc.spec, sc.timezone, slot);
            busy_run := NULL;
            IF to_jsonb(sc) ->> 'overlap' = 'skip' THEN  -- (no such column before layout 2)
                EXECUTE format($q$SELECT e.id FROM (SELECT execution_id FROM %1$I.schedule_fires
                                                     WHERE schedule_id = $1 ORDER BY slot DESC LIMIT 1) f
                                    JOIN %1$I.executions e ON e.id = f.execution_id
                                   WHERE e.status IN ('running', 'paused')$q$, s)
                    INTO busy_run USING sc.id;
            END IF;
            IF busy_run IS NOT NULL THEN
                PERFORM cloacina._log_event(s, format('schedule %s skipped slot %s: its run %s is unfinished',
                                                      quote_literal(sc.name), slot, busy_run));
            ELSIF sc.catchup = 'run_all'
                  OR NOT startup AND (now() - slot <= grace OR next_slot IS NULL OR next_slot > now()) THEN
                EXECUTE format('INSERT INTO %I.schedule_fires (schedule_id, slot, execution_id) VALUES ($1, $2, 0) '
                               'ON CONFLICT DO NOTHING RETURNING true', s) INTO inserted USING sc.id, slot;
                IF inserted THEN
                    eid := cloacina._execute(s, sc.workflow,
                        sc.context || jsonb_build_object('scheduled_at', slot, 'schedule', sc.name), '{}');
                    EXECUTE format('UPDATE %I.schedule_fires SET execution_id = $3 WHERE schedule_id = $1 AND slot = $2', s)
                        USING sc.id, slot, eid;
                    PERFORM cloacina._log_event(s, format('schedule %s fired slot %s: run %s of workflow %s',
                                                          quote_literal(sc.name), slot, eid, quote_literal(sc.workflow)));
                    fired := fired + 1;
                    n := n + 1;
                END IF;
            END IF;
            slot := next_slot;
        END LOOP;
        IF slot IS NOT NULL AND slot <= now() THEN
            -- run_all hit its cap, or the tenant is suspended: the rest of the backlog is
            -- dropped, continue from now
            slot := cloacina._cron_next(sc.spec, sc.timezone, now());
        END IF;
        EXECUTE format('UPDATE %I.schedules SET next_run_at = $2 WHERE id = $1', s)
            USING sc.id, coalesce(slot, 'infinity');
    END LOOP;
    RETURN fired;
END
$$;

CREATE FUNCTION cloacina.schedule(name text, workflow text, cron text, timezone text DEFAULT 'UTC',
                                  context jsonb DEFAULT '{}', catchup text DEFAULT 'skip',
                                  overlap text DEFAULT 'allow') RETURNS bigint
LANGUAGE sql AS $$
    SELECT cloacina._schedule(pg_catalog.current_schema(), name, workflow, cron, timezone, context, catchup, overlap)
$$;
COMMENT ON FUNCTION cloacina.schedule(text, text, text, text, jsonb, text, text) IS
    'Creates or replaces (by name) a cron schedule that starts a workflow; 5 or 6 fields or an @ macro, IANA time zone, catchup skip or run_all, overlap allow or skip';

CREATE FUNCTION cloacina.pause_schedule(name text) RETURNS boolean
LANGUAGE sql AS $$ SELECT cloacina._set_schedule_paused(pg_catalog.current_schema(), name, true) $$;
COMMENT ON FUNCTION cloacina.pause_schedule(text) IS
    'Pauses a schedule: no slot fires until resume_schedule; false if it was paused already';

CREATE FUNCTION cloacina.resume_schedule(name text) RETURNS boolean
LANGUAGE sql AS $$ SELECT cloacina._set_schedule_paused(pg_catalog.current_schema(), name, false) $$;
COMMENT ON FUNCTION cloacina.resume_schedule(text) IS
    'Resumes a paused schedule from its next slot after now (missed slots do not fire); false if it was not paused';

-- The schedules of tenant s with their next fire and the outcome of their last run.
CREATE FUNCTION cloacina._list_schedules(s text)
RETURNS TABLE(name text, workflow text, cron text, timezone text, catchup text, overlap text,
              paused boolean, next_run_at timestamptz, last_slot timestamptz, last_execution_id bigint,
              last_status text, last_finished_at timestamptz, context jsonb,
              created_at timestamptz, updated_at timestamptz)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM cloacina._require_tenant(s);
    PERFORM cloacina._require_layout(s, 2, 'listing schedules');
    RETURN QUERY EXECUTE format($q$
        SELECT sc.name, sc.workflow, sc.cron, sc.timezone, sc.catchup, sc.overlap, sc.paused,
               CASE WHEN sc.paused OR sc.next_run_at = 'infinity' THEN NULL ELSE sc.next_run_at END,
               f.slot, f.execution_id, e.status, e.finished_at, sc.context, sc.created_at, sc.updated_at
          FROM %1$I.schedules sc
          LEFT JOIN LATERAL (SELECT slot, execution_id FROM %1$I.schedule_fires
                              WHERE schedule_id = sc.id ORDER BY slot DESC LIMIT 1) f ON true
          LEFT JOIN %1$I.executions e ON e.id = f.execution_id
         ORDER BY sc.name$q$, s);
END
$$;

CREATE VIEW cloacina.schedules WITH (security_invoker = true) AS
    SELECT * FROM cloacina._list_schedules(pg_catalog.current_schema());

COMMENT ON VIEW cloacina.schedules IS
    'The current tenant''s schedules: next fire time (NULL while paused) and the last run''s outcome';
GRANT SELECT ON cloacina.schedules TO PUBLIC;

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

CREATE FUNCTION cloacina.unregister_workflow(name text) RETURNS boolean
LANGUAGE sql AS $$ SELECT cloacina._unregister_workflow(pg_catalog.current_schema(), name) $$;
COMMENT ON FUNCTION cloacina.unregister_workflow(text) IS
    'Removes a workflow''s definition (its runs go on); refused while schedules start it; false if there was none';

-- Runs an ended run again from where it failed: its failed, skipped and cancelled tasks start
-- over (attempts counted anew, one "retried" event each), its completed tasks keep their
-- outputs, and the run is running again (with a fresh run timeout, if it had one). A task is
-- decided as in a new run: roots by their condition, the others by _propagate as their
-- dependencies end, here by replaying the end of every completed task. Returns how many tasks
-- start over.
CREATE FUNCTION cloacina._retry(s text, eid bigint) RETURNS int
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    st text;
    again int;
    kept text[];
    skipped_roots text[];
    any_ready boolean;
    any_sql boolean;
BEGIN
    PERFORM cloacina._require_tenant(s);
    st := cloacina._lock_run(s, eid);
    IF st IN ('running', 'paused') THEN
        RAISE EXCEPTION 'execution % is still %', eid, st
            USING ERRCODE = 'object_not_in_prerequisite_state', HINT = 'Only an ended run (failed or cancelled) can be retried.';
    ELSIF st = 'completed' THEN
        RAISE EXCEPTION 'execution % completed; there is nothing to retry', eid
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    -- Every task that did not complete starts over, waiting for its dependencies that start over too.
    EXECUTE format($q$
        WITH again AS (
            SELECT id, task, status FROM %1$I.tasks
             WHERE execution_id = $1 AND status IN ('failed', 'skipped', 'cancelled') ORDER BY id FOR UPDATE),
        reset AS (
            UPDATE %1$I.tasks t
               SET status = 'waiting', attempt = 0, error = NULL, output = NULL, input = NULL,
                   pending_deps = cardinality(t.dependencies), ready_at = NULL, lease = NULL,
                   lease_until = NULL, worker = NULL, started_at = NULL, finished_at = NULL
              FROM again a WHERE t.id = a.id
            RETURNING t.id, t.task, a.status AS from_status),
        logged AS (
            INSERT INTO %1$I.execution_events (execution_id, task, attempt, from_status, to_status, detail)
            SELECT $1, task, 0, from_status, 'waiting', 'run retried' FROM reset ORDER BY id)
        SELECT count(*)::int FROM reset$q$, s) INTO again USING eid;
    EXECUTE format('SELECT coalesce(array_agg(task ORDER BY id), ''{}'') FROM %I.tasks
                     WHERE execution_id = $1 AND status = ''completed''', s) INTO kept USING eid;
    -- pending_tasks counts every task _propagate will see end: the kept ones replayed, and those
    -- that start over.
    EXECUTE format($q$UPDATE %I.executions
                         SET status = 'running', error = NULL, final_context = NULL, finished_at = NULL,
                             pending_tasks = $2 + $3,
                             deadline = ($4 + (deadline - run_at)) AT TIME ZONE 'UTC'
                       WHERE id = $1$q$, s)
        USING eid, again, cardinality(kept), now() AT TIME ZONE 'UTC';  -- docs/citus.md, rule 2
    PERFORM cloacina._event(s, eid, NULL, NULL, st, 'running', 'run retried');
    -- Roots that start over: ready, or skipped by their condition, as in a new run.
    EXECUTE format($q$
        WITH decided AS (
            SELECT t.id, e.input_context,
                   CASE WHEN t.condition IS NULL OR cloacina._condition_holds(t.condition, e.input_context)
                        THEN 'ready' ELSE 'skipped' END AS status
              FROM %1$I.tasks t JOIN %1$I.executions e ON e.id = t.execution_id
             WHERE t.execution_id = $1 AND t.status = 'waiting' AND cardinality(t.dependencies) = 0),
        roots AS (
            UPDATE %1$I.tasks t
               SET status = d.status, input = d.input_context, ready_at = $2,
                   finished_at = CASE WHEN d.status = 'skipped' THEN $2 END
              FROM decided d
             WHERE t.id = d.id
            RETURNING t.id, t.task, t.kind, t.status),
        logged AS (
            INSERT INTO %1$I.execution_events (execution_id, task, attempt, from_status, to_status, detail)
            SELECT $1, task, 0, 'waiting', status, CASE WHEN status = 'skipped' THEN 'condition not met' END
              FROM roots ORDER BY id)
        SELECT coalesce(array_agg(task ORDER BY id) FILTER (WHERE status = 'skipped'), '{}'),
               coalesce(bool_or(status = 'ready' AND kind = 'handler'), false),
               coalesce(bool_or(status = 'ready' AND kind = 'sql'), false)
          FROM roots$q$, s) INTO skipped_roots, any_ready, any_sql USING eid, now();
    IF any_ready THEN
        PERFORM cloacina._hint(s, 'ready');
    END IF;
    IF any_sql THEN
        PERFORM cloacina._due(s, now(), true);
    END IF;
    -- The dependents of every ended task are decided, as when those tasks ended.
    PERFORM cloacina._propagate(s, eid, kept || skipped_roots);
    RETURN again;
END
$$;

CREATE FUNCTION cloacina.retry(execution_id bigint) RETURNS int
LANGUAGE sql AS $$ SELECT cloacina._retry(pg_catalog.current_schema(), execution_id) $$;
COMMENT ON FUNCTION cloacina.retry(bigint) IS
    'Runs a failed or cancelled run again from where it failed: its failed, skipped and cancelled tasks start over, completed outputs are kept; returns how many tasks start over';

-- The figures of tenant s, one row per workflow (every registered one, and any other that has
-- runs) and a total row whose workflow is NULL. Queue figures are live; run counts and task
-- durations cover the runs that ended within window_length (durations: the completed tasks of
-- those runs, from claim to completion). Each figure but the workflow list has a partial index
-- of the tenant's tables to be read through.
-- The figures are read in a subtransaction that is rolled back on purpose: that releases the
-- locks the read took (a dozen relations per tenant), so one query over thousands of tenants
-- does not run out of the shared lock table.
CREATE FUNCTION cloacina._stats(s text, window_length interval)
RETURNS TABLE(workflow text, ready_tasks bigint, oldest_ready_seconds double precision,
              running_tasks bigint, active_runs bigint, completed_runs bigint, failed_runs bigint,
              cancelled_runs bigint, task_p50_ms double precision, task_p95_ms double precision,
              task_p99_ms double precision)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    figures jsonb;
BEGIN
    PERFORM cloacina._require_tenant(s);
    IF window_length IS NULL OR window_length <= interval '0' THEN
        RAISE EXCEPTION 'window_length must be a positive interval (got %)', coalesce(window_length::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    BEGIN
        EXECUTE format($q$
            SELECT jsonb_agg(to_jsonb(f) ORDER BY f.workflow NULLS FIRST) FROM (
            SELECT x.workflow,
                   count(*) FILTER (WHERE x.k = 'ready') AS ready_tasks,
                   extract(epoch FROM now() - min(x.at) FILTER (WHERE x.k = 'ready'))::double precision AS oldest_ready_seconds,
                   count(*) FILTER (WHERE x.k = 'running') AS running_tasks,
                   count(*) FILTER (WHERE x.k = 'active') AS active_runs,
                   count(*) FILTER (WHERE x.k = 'completed') AS completed_runs,
                   count(*) FILTER (WHERE x.k = 'failed') AS failed_runs,
                   count(*) FILTER (WHERE x.k = 'cancelled') AS cancelled_runs,
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY x.ms) FILTER (WHERE x.k = 'duration') AS task_p50_ms,
                   percentile_cont(0.95) WITHIN GROUP (ORDER BY x.ms) FILTER (WHERE x.k = 'duration') AS task_p95_ms,
                   percentile_cont(0.99) WITHIN GROUP (ORDER BY x.ms) FILTER (WHERE x.k = 'duration') AS task_p99_ms
              FROM (SELECT name AS workflow, 'registered' AS k, NULL::timestamptz AS at, NULL::float8 AS ms
                      FROM %1$I.workflows
                    UNION ALL
                    SELECT workflow, 'ready', ready_at, NULL FROM %1$I.tasks
                     WHERE status = 'ready' AND ready_at <= now()
                    UNION ALL
                    SELECT workflow, 'running', NULL, NULL FROM %1$I.tasks WHERE status = 'running'
                    UNION ALL
                    SELECT workflow, 'active', NULL, NULL FROM %1$I.executions WHERE status IN ('running', 'paused')
                    UNION ALL
                    SELECT workflow, status, NULL, NULL FROM %1$I.executions
                     WHERE finished_at IS NOT NULL AND finished_at >= now() - $1
                    UNION ALL
                    SELECT t.workflow, 'duration', NULL, extract(epoch FROM t.finished_at - t.started_at) * 1000
                      FROM %1$I.executions e JOIN %1$I.tasks t ON t.execution_id = e.id
                     WHERE e.finished_at IS NOT NULL AND e.finished_at >= now() - $1
                       AND t.status = 'completed' AND t.started_at IS NOT NULL) x
             GROUP BY ROLLUP (x.workflow)) f$q$, s) INTO figures USING window_length;
        RAISE EXCEPTION USING ERRCODE = 'CLRLK';  -- roll back: release the locks, keep "figures"
    EXCEPTION WHEN SQLSTATE 'CLRLK' THEN
        NULL;
    END;
    RETURN QUERY SELECT * FROM jsonb_to_recordset(figures) AS f(
        workflow text, ready_tasks bigint, oldest_ready_seconds double precision, running_tasks bigint,
        active_runs bigint, completed_runs bigint, failed_runs bigint, cancelled_runs bigint,
        task_p50_ms double precision, task_p95_ms double precision, task_p99_ms double precision);
END
$$;

-- The tenants the caller may see: all of them for an admin, its own for a tenant role.
CREATE FUNCTION cloacina._visible_tenants() RETURNS SETOF text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT n.nspname::text FROM pg_namespace n
     WHERE has_schema_privilege(n.oid, 'USAGE') AND cloacina._is_registered(n.nspname)
     ORDER BY 1
$$;

CREATE FUNCTION cloacina.tenant_stats(window_length interval DEFAULT '1 hour')
RETURNS TABLE(schema_name text, ready_tasks bigint, oldest_ready_seconds double precision,
              running_tasks bigint, active_runs bigint, completed_runs bigint, failed_runs bigint,
              cancelled_runs bigint, task_p50_ms double precision, task_p95_ms double precision,
              task_p99_ms double precision)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT v.s, st.ready_tasks, st.oldest_ready_seconds, st.running_tasks, st.active_runs,
           st.completed_runs, st.failed_runs, st.cancelled_runs, st.task_p50_ms, st.task_p95_ms,
           st.task_p99_ms
      FROM cloacina._visible_tenants() v(s), LATERAL cloacina._stats(v.s, window_length) st
     WHERE st.workflow IS NULL
$$;
COMMENT ON FUNCTION cloacina.tenant_stats(interval) IS
    'One row per tenant the caller may see (an admin: all; a tenant: its own): ready depth, oldest ready age, running tasks, active runs, runs ended and task duration percentiles over the window';

CREATE FUNCTION cloacina.workflow_stats(window_length interval DEFAULT '1 hour')
RETURNS TABLE(schema_name text, workflow text, ready_tasks bigint, oldest_ready_seconds double precision,
              running_tasks bigint, active_runs bigint, completed_runs bigint, failed_runs bigint,
              cancelled_runs bigint, task_p50_ms double precision, task_p95_ms double precision,
              task_p99_ms double precision)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT v.s, st.*
      FROM cloacina._visible_tenants() v(s), LATERAL cloacina._stats(v.s, window_length) st
     WHERE st.workflow IS NOT NULL
$$;
COMMENT ON FUNCTION cloacina.workflow_stats(interval) IS
    'tenant_stats() per workflow: one row per workflow of every tenant the caller may see';

-- Graphviz DOT. Task and workflow names are identifiers (letters, digits, "_", "-"), so they
-- need no escaping inside quotes.
CREATE FUNCTION cloacina._dot_graph(title text, nodes text[], edges text[]) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT format(E'digraph "%s" {\n  rankdir=LR;\n  node [shape=box, style="rounded,filled", fillcolor=white, fontname="Helvetica"];\n%s%s}\n',
                  title,
                  coalesce((SELECT string_agg('  ' || n || E';\n', '' ORDER BY o) FROM unnest(nodes) WITH ORDINALITY u(n, o)), ''),
                  coalesce((SELECT string_agg('  ' || e || E';\n', '' ORDER BY o) FROM unnest(edges) WITH ORDINALITY u(e, o)), ''))
$$;

-- A workflow's DAG: a node per task (SQL tasks as cylinders), an edge per dependency labelled
-- with the dependent's trigger rule where it is not all_success.
CREATE FUNCTION cloacina._workflow_dot(s text, workflow text) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    def jsonb;
BEGIN
    PERFORM cloacina._require_tenant(s);
    EXECUTE format('SELECT definition FROM %I.workflows WHERE name = $1', s) INTO def USING workflow;
    IF def IS NULL THEN
        RAISE EXCEPTION 'workflow "%" is not registered in tenant "%"', workflow, s USING ERRCODE = 'undefined_object';
    END IF;
    RETURN cloacina._dot_graph(workflow,
        ARRAY(SELECT format('"%s"%s', t ->> 'id', CASE WHEN t ->> 'kind' = 'sql' THEN ' [shape=cylinder]' ELSE '' END)
                FROM jsonb_array_elements(def -> 'tasks') WITH ORDINALITY a(t, o) ORDER BY o),
        ARRAY(SELECT format('"%s" -> "%s"%s', d, t ->> 'id',
                            CASE WHEN t ->> 'trigger_rule' <> 'all_success' THEN format(' [label="%s"]', t ->> 'trigger_rule') ELSE '' END)
                FROM jsonb_array_elements(def -> 'tasks') WITH ORDINALITY a(t, o),
                     jsonb_array_elements_text(t -> 'dependencies') WITH ORDINALITY b(d, p)
               ORDER BY o, p));
END
$$;

-- One run's DAG, each task filled by its state and labelled with its attempt.
CREATE FUNCTION cloacina._run_dot(s text, eid bigint) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    colour constant jsonb := '{"waiting": "white", "ready": "lightgoldenrod1", "running": "lightskyblue",
                               "completed": "palegreen", "failed": "salmon", "skipped": "gray90",
                               "cancelled": "gray70"}';
    title text;
    nodes text[];
    edges text[];
BEGIN
    PERFORM cloacina._require_tenant(s);
    EXECUTE format('SELECT format(''%%s run %%s (%%s)'', workflow, id, status) FROM %I.executions WHERE id = $1', s)
        INTO title USING eid;
    IF title IS NULL THEN
        RAISE EXCEPTION 'execution % does not exist', coalesce(eid::text, 'NULL') USING ERRCODE = 'undefined_object';
    END IF;
    EXECUTE format($q$
        SELECT array_agg(format('"%%s" [label="%%s\n%%s%%s", fillcolor=%%s%%s]', task, task, status,
                                CASE WHEN attempt > 1 THEN format(' (attempt %%s)', attempt) ELSE '' END,
                                $2 ->> status,
                                CASE WHEN kind = 'sql' THEN ', shape=cylinder' ELSE '' END) ORDER BY position),
               (SELECT array_agg(format('"%%s" -> "%%s"', d, t2.task) ORDER BY t2.position, p)
                  FROM %1$I.tasks t2, unnest(t2.dependencies) WITH ORDINALITY u(d, p) WHERE t2.execution_id = $1)
          FROM %1$I.tasks WHERE execution_id = $1$q$, s)
        INTO nodes, edges USING eid, colour;
    RETURN cloacina._dot_graph(title, nodes, coalesce(edges, '{}'));
END
$$;

CREATE FUNCTION cloacina.workflow_dot(workflow text) RETURNS text
LANGUAGE sql AS $$ SELECT cloacina._workflow_dot(pg_catalog.current_schema(), workflow) $$;
COMMENT ON FUNCTION cloacina.workflow_dot(text) IS
    'A registered workflow''s DAG as Graphviz DOT (render with dot -Tsvg)';

CREATE FUNCTION cloacina.run_dot(execution_id bigint) RETURNS text
LANGUAGE sql AS $$ SELECT cloacina._run_dot(pg_catalog.current_schema(), execution_id) $$;
COMMENT ON FUNCTION cloacina.run_dot(bigint) IS
    'One run''s DAG as Graphviz DOT, each task coloured by its state';

-- Live counts of one tenant, for the tenants view (runs with the caller's privileges). Read in
-- a subtransaction rolled back on purpose, which releases its locks (see cloacina._stats).
CREATE OR REPLACE FUNCTION cloacina._tenant_counts(s text,
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

-- create_tenant's connection strings can name a pooler's port (cloacina.connection_port).
-- A libpq URI for the tenant role on the server and database this session is using.
-- cloacina.connection_host and cloacina.connection_port override the host and the port (for
-- example a connection pooler's).
CREATE OR REPLACE FUNCTION cloacina._connection_string(username text, password text) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    host text := nullif(current_setting('cloacina.connection_host', true), '');
    port text := coalesce(nullif(nullif(current_setting('cloacina.connection_port', true), ''), '0'),
                          inet_server_port()::text, current_setting('port'));
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

-- One implementation of each transition: the SQL-task pool claims, completes and fails through
-- the C of the API (claim.c, complete.c, fail.c), so the internal entry points that took a
-- tenant schema, which only tests used, are gone (their C symbols stay for the 0.1.0 script:
-- extension/removed.c).
DROP FUNCTION cloacina._claim_sql(text, text, interval);
DROP FUNCTION cloacina._claim(text, text, text[], int, interval);
DROP FUNCTION cloacina._heartbeat(text, bigint, bigint);
DROP FUNCTION cloacina._heartbeat_batch(text, bigint[], bigint[]);
DROP FUNCTION cloacina._complete(text, bigint, bigint, jsonb);
DROP FUNCTION cloacina._complete_batch(text, bigint[], bigint[], jsonb[]);
DROP FUNCTION cloacina._fail(text, bigint, bigint, text, boolean);
DROP FUNCTION cloacina._fail_batch(text, bigint[], bigint[], text[], boolean[]);
DROP FUNCTION cloacina._execute_batch(text, text, jsonb[], jsonb);
DROP FUNCTION cloacina._execution_status(text, bigint);
DROP FUNCTION cloacina._task_results(text, bigint);
DROP FUNCTION cloacina._wait(text, bigint, interval);

-- C symbols follow their SQL functions (docs/architecture.md); 0.1.0's name stays as an alias.
CREATE OR REPLACE FUNCTION cloacina._hint(s text, payload text) RETURNS void
AS 'MODULE_PATHNAME', 'cloacina_hint_fn' LANGUAGE C;

-- docs/citus.md rule 2: the time of an upsert's DO UPDATE SET is a parameter, not now().
CREATE OR REPLACE FUNCTION cloacina._register_workflow(s text, def jsonb) RETURNS text
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

-- docs/citus.md rule 2: the retry's jitter is drawn by the caller, so the failure statement is
-- not volatile.
DROP FUNCTION cloacina._retry_delay(int, text, bigint, bigint, boolean);
-- Delay before retry number "attempt" + 1. Exponential doubles from delay_ms; jitter keeps a
-- point in the upper half of the delay ("equal jitter"), chosen by "chance" (a random number in
-- [0, 1) the caller draws: the statement that calls this must not be volatile on Citus), so
-- retries spread but never come sooner than half the planned delay.
CREATE FUNCTION cloacina._retry_delay(attempt int, backoff text, delay_ms bigint,
                                      max_delay_ms bigint, jitter boolean, chance float8) RETURNS interval
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT make_interval(secs => d * CASE WHEN jitter THEN 0.5 + chance * 0.5 ELSE 1 END / 1000.0)
    FROM (SELECT least(max_delay_ms::float8,
                       CASE backoff
                           WHEN 'fixed' THEN delay_ms::float8
                           WHEN 'linear' THEN delay_ms::float8 * attempt
                           ELSE delay_ms::float8 * power(2, least(attempt - 1, 60))
                       END) AS d) x
$$;

-- The tenant's ready queues around time t: the first ready time still to come (a retry or a
-- delayed run), whether a handler task came due in the 10 seconds up to t (its workers are
-- woken), and whether a SQL task is due. Read one priority at a time, a few index descents per
-- priority, never by reading the queue: a backlog of millions of ready tasks must not hold the
-- background worker, which serves every tenant (a scan of the queue took seconds per tick in a
-- 19-million-run burn-down). Past max_levels priorities the answer is "look again in a second".
CREATE FUNCTION cloacina._ready_queue_times(s text, t timestamptz, max_levels int DEFAULT 100,
                                            OUT next_ready timestamptz, OUT came_due boolean,
                                            OUT sql_due boolean)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    -- One kind's queue, in its claim index: %2$s is the index's priority key, %4$s the order
    -- that reads the index backward, %5$s the step to the next level that way. Each level is
    -- one backward step from the level before (where it lands, a level's newest entries, are
    -- rarely claimed ones); within a level, (key, $1) is where a descent starts. The LIMITs
    -- keep each lookup a descent per level, never a join over the whole index.
    walk constant text := $q$
        WITH RECURSIVE levels(k, n) AS (
            (SELECT %2$s, 1 FROM %1$I.tasks WHERE status = 'ready' AND kind = %3$L
              ORDER BY %2$s %4$s LIMIT 1)
          UNION ALL
            SELECT x.k, l.n + 1 FROM levels l, LATERAL (
                SELECT %2$s AS k FROM %1$I.tasks
                 WHERE status = 'ready' AND kind = %3$L AND %2$s %5$s l.k
                 ORDER BY %2$s %4$s LIMIT 1) x
             WHERE l.n < $3)
        SELECT (SELECT min((SELECT ready_at FROM %1$I.tasks
                             WHERE status = 'ready' AND kind = %3$L AND %2$s = l.k AND ready_at > $1
                             ORDER BY ready_at LIMIT 1)) FROM levels l),
               coalesce((SELECT max(n) >= $3 FROM levels), false),
               EXISTS (SELECT FROM levels l, LATERAL (
                   SELECT FROM %1$I.tasks WHERE status = 'ready' AND kind = %3$L AND %2$s = l.k
                      AND ready_at <= $1 AND ready_at > $2 LIMIT 1) x)$q$;
    layout int;
    handler_next timestamptz;
    handler_capped boolean;
    sql_next timestamptz;
    sql_capped boolean;
BEGIN
    SELECT tn.layout_version INTO layout FROM cloacina.tenant tn WHERE tn.schema_name = s;
    IF layout >= 2 THEN  -- tasks_claim_key
        EXECUTE format(walk, s, '(-priority)', 'handler', 'DESC', '<')
            INTO handler_next, handler_capped, came_due USING t, t - interval '10 seconds', max_levels;
    ELSE                 -- tasks_claim_order (priority DESC), until the tenant is migrated
        EXECUTE format(walk, s, 'priority', 'handler', 'ASC', '>')
            INTO handler_next, handler_capped, came_due USING t, t - interval '10 seconds', max_levels;
    END IF;
    EXECUTE format(walk, s, 'priority', 'sql', 'ASC', '>')  -- tasks_sql_claim_order (priority DESC)
        INTO sql_next, sql_capped, sql_due USING t, '-infinity'::timestamptz, max_levels;
    next_ready := least(handler_next, sql_next,
                        CASE WHEN handler_capped OR sql_capped THEN t + interval '1 second' END);
END
$$;

REVOKE ALL ON FUNCTION cloacina._ready_queue_times(text, timestamptz, int) FROM PUBLIC;

-- When the first lease of the tenant's running tasks runs out (extension/earliest_lease.c), or a
-- time no later than that: past max_dead entries of finished tasks in tasks_lease_expiry, where
-- it stopped reading (the worker ticks the tenant then and reads on). A busy tenant's lease
-- index holds a lease's worth of finished claims before its live ones until vacuum.
CREATE FUNCTION cloacina._earliest_lease(s text, max_dead int DEFAULT 20000) RETURNS timestamptz
AS 'MODULE_PATHNAME', 'cloacina_earliest_lease' LANGUAGE C;
REVOKE ALL ON FUNCTION cloacina._earliest_lease(text, int) FROM PUBLIC;

-- docs/citus.md rule 3: the tick reads, then hints.
CREATE OR REPLACE FUNCTION cloacina._tenant_tick(s text, startup boolean, retention interval)
RETURNS TABLE(next_due timestamptz, sql_ready boolean, max_running int, weight int)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    queue record;
BEGIN
    IF NOT EXISTS (SELECT FROM cloacina.tenant t WHERE t.schema_name = s) THEN
        RETURN;  -- removed: no row tells the worker to forget it
    END IF;
    PERFORM cloacina._reap(s);
    PERFORM cloacina._expire_runs(s);
    PERFORM cloacina._fire_schedules(s, startup);
    -- Retries (and delayed runs) that came due since the last pass: wake the tenant's workers.
    -- (Read, then hinted: a query over tenant tables calls no cloacina function, docs/citus.md.)
    queue := cloacina._ready_queue_times(s, now());
    IF queue.came_due THEN
        PERFORM cloacina._hint(s, 'ready');
    END IF;
    IF retention IS NOT NULL THEN
        PERFORM cloacina._prune(s, retention);
    END IF;
    RETURN QUERY EXECUTE format($q$
        SELECT least($4,
                     (SELECT min((started_at AT TIME ZONE 'UTC') + timeout_ms * interval '1 millisecond')
                        FROM %1$I.tasks WHERE status = 'running' AND timeout_ms IS NOT NULL) AT TIME ZONE 'UTC',
                     $2,
                     (SELECT min(next_run_at) FROM %1$I.schedules),
                     (SELECT min(deadline) FROM %1$I.executions WHERE deadline IS NOT NULL AND status IN ('running', 'paused')),
                     (SELECT min(finished_at) + $1 FROM %1$I.executions WHERE finished_at IS NOT NULL)),
               $3, st.max_running, st.weight
          FROM %1$I.tenant_settings st$q$, s)
        USING retention, queue.next_ready, queue.sql_due, cloacina._earliest_lease(s);
END
$$;

-- create_tenant makes a distributed schema on Citus (design §9).
-- Whether create_tenant makes distributed schemas: Citus is installed in this database and
-- citus.enable_schema_based_sharding is on (a tenant is then what CREATE SCHEMA would make).
CREATE FUNCTION cloacina._citus_distributes_schemas() RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'citus')
           AND coalesce(current_setting('citus.enable_schema_based_sharding', true), 'off') = 'on'
$$;

-- Makes the new tenant schema s, made local (Citus does not propagate DDL run in a function),
-- a distributed schema with all its tables, in the caller's transaction; its role u, if any,
-- gets the password pw for the connections the coordinator opens to other nodes on its behalf
-- (pg_dist_authinfo, readable by superusers only; passed as a parameter, so the password is in
-- no statement text). The first such tenant makes the registry a reference table, a copy on every
-- node, so that a tenant's clients can be served by the node that holds its tables.
CREATE FUNCTION cloacina._citus_distribute_tenant(s text, u text, pw text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
SET client_min_messages = warning  -- no notices of the copy for each table
AS $$
DECLARE
    registry_replicated boolean;
BEGIN
    EXECUTE 'SELECT EXISTS (SELECT FROM pg_dist_partition WHERE logicalrelid = $1)'
        INTO registry_replicated USING 'cloacina.tenant'::regclass;
    IF NOT registry_replicated THEN
        EXECUTE 'SELECT create_reference_table($1)' USING 'cloacina.tenant'::regclass;
        EXECUTE 'SELECT truncate_local_data_after_distributing_table($1)'
            USING 'cloacina.tenant'::regclass;
    END IF;
    EXECUTE 'SELECT citus_schema_distribute($1)' USING quote_ident(s)::regnamespace;
    -- The settings row was copied into the shard; the local copy is dead weight.
    EXECUTE 'SELECT truncate_local_data_after_distributing_table($1)'
        USING format('%I.tenant_settings', s)::regclass;
    IF u IS NOT NULL THEN
        EXECUTE 'INSERT INTO pg_dist_authinfo (nodeid, rolename, authinfo) VALUES (0, $1, $2)'
            USING u, 'password=''' || replace(replace(pw, '\', '\\'), '''', '\''') || '''';
    END IF;
END
$$;

-- Forgets the password of a removed tenant's role u (its pg_dist_authinfo row), where Citus is
-- installed.
CREATE FUNCTION cloacina._citus_forget_role(u text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT FROM pg_extension WHERE extname = 'citus') THEN
        EXECUTE 'DELETE FROM pg_dist_authinfo WHERE rolename = $1' USING u;
    END IF;
END
$$;

-- Whether this node's background worker relays rather than serves (extension/relay.c): Citus
-- is installed and this node is one of its workers, not the coordinator.
CREATE FUNCTION cloacina._citus_relay_node() RETURNS boolean
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    coordinator boolean;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_extension WHERE extname = 'citus') THEN
        RETURN false;
    END IF;
    EXECUTE 'SELECT citus_is_coordinator()' INTO coordinator;
    RETURN NOT coordinator;
END
$$;

-- On a worker node: hands the due times that this node's backends pushed to the coordinator's
-- background worker, in one command (run_command_on_coordinator: a connection of its own, as
-- this node's superuser). Times travel as epoch seconds, which no DateStyle can misread.
CREATE FUNCTION cloacina._citus_relay_due(schemas text[], due timestamptz[], sql_ready boolean[])
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    handed boolean;
    answer text;
BEGIN
    EXECUTE 'SELECT success, result FROM run_command_on_coordinator($1)' INTO handed, answer
        USING format('SELECT cloacina._due_relayed(%L, %L, %L)', schemas,
                     ARRAY(SELECT extract(epoch FROM d) FROM unnest(due) WITH ORDINALITY u(d, i) ORDER BY i),
                     sql_ready);
    IF handed IS NOT TRUE THEN
        RAISE EXCEPTION 'cloacina could not hand % due times to the Citus coordinator: %',
            cardinality(schemas), answer;
    END IF;
END
$$;

-- On the coordinator: due times a worker node handed over (_citus_relay_due), pushed as the
-- backends there would have, for the tenants that still exist. Returns how many.
CREATE FUNCTION cloacina._due_relayed(schemas text[], due_epochs numeric[], sql_ready boolean[])
RETURNS int
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    pushed int := 0;
BEGIN
    FOR i IN 1 .. coalesce(cardinality(schemas), 0) LOOP
        IF cloacina._is_registered(schemas[i]) THEN
            PERFORM cloacina._due(schemas[i], to_timestamp(due_epochs[i]::float8), sql_ready[i]);
            pushed := pushed + 1;
        END IF;
    END LOOP;
    RETURN pushed;
END
$$;

-- Before DROP EXTENSION cloacina, once no tenant is left (its guard, _refuse_drop_with_tenants,
-- calls this): drops the registry's shards on every node, which dropping the extension's table
-- would leave behind.
CREATE FUNCTION cloacina._citus_drop_registry_shards() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    replicated boolean := false;
BEGIN
    IF EXISTS (SELECT FROM pg_extension WHERE extname = 'citus') THEN
        EXECUTE 'SELECT EXISTS (SELECT FROM pg_dist_partition WHERE logicalrelid = $1)'
            INTO replicated USING 'cloacina.tenant'::regclass;
    END IF;
    IF replicated THEN
        EXECUTE 'SELECT citus_drop_all_shards($1, $2, $3)'
            USING 'cloacina.tenant'::regclass, 'cloacina', 'tenant';
    END IF;
END
$$;

REVOKE ALL ON FUNCTION cloacina._citus_distributes_schemas(),
    cloacina._citus_distribute_tenant(text, text, text), cloacina._citus_forget_role(text),
    cloacina._citus_relay_node(), cloacina._citus_relay_due(text[], timestamptz[], boolean[]),
    cloacina._due_relayed(text[], numeric[], boolean[]), cloacina._citus_drop_registry_shards()
    FROM PUBLIC;

-- A claim can wait server-side for work (wait, cut to cloacina.max_claim_wait): a worker's
-- wake-up and its claim are one round trip. The C symbol reads the wait only when given.
DROP FUNCTION cloacina.claim(text, text[], int, interval);
CREATE FUNCTION cloacina.claim(worker text, task_names text[] DEFAULT NULL, max_tasks int DEFAULT 1,
                               lease interval DEFAULT '30 seconds', wait interval DEFAULT NULL)
RETURNS TABLE(task_id bigint, execution_id bigint, workflow text, task text, attempt int,
              fence bigint, context jsonb)
AS 'MODULE_PATHNAME', 'cloacina_claim_current' LANGUAGE C;
COMMENT ON FUNCTION cloacina.claim(text, text[], int, interval, interval) IS
    'Claims up to max_tasks ready handler tasks (by task id or workflow.task) with a lease and a new fence; when none is ready, waits for one up to wait (at most cloacina.max_claim_wait)';

-- What the background worker's scheduler is behind on (extension/due.c): the tenants it tracks,
-- those due now and waiting for their tick, and how long the most overdue has waited (NULL when
-- none is due). Admins only: it counts every tenant.
CREATE FUNCTION cloacina.scheduler_status(OUT tracked_tenants int, OUT due_tenants int,
                                          OUT oldest_due_seconds double precision)
    AS 'MODULE_PATHNAME', 'cloacina_scheduler_status' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION cloacina.scheduler_status() IS
    'The tenants the scheduler tracks, how many are due now and how long the most overdue has waited: a wait of more than a few seconds says it cannot keep up';
REVOKE ALL ON FUNCTION cloacina.scheduler_status() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cloacina.scheduler_status() TO cloacina_admin;

-- Where a tenant's claims start in its queue (extension/claim_floor.c), for an operator who asks
-- why a claim reads more than it takes, or when a task its tables say is ready will be claimed.
-- Admins only: it names keys of any tenant.
CREATE FUNCTION cloacina.claim_floor(schema_name text, OUT state text, OUT priority int,
                                     OUT ready_at timestamptz, OUT task_id bigint,
                                     OUT refreshed_seconds_ago double precision,
                                     OUT rescanned_seconds_ago double precision)
    AS 'MODULE_PATHNAME', 'cloacina_claim_floor_status' LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION cloacina.claim_floor(text) IS
    'Where the tenant''s claims start: "start" (the first entry of its queue), "key" (from priority, ready_at, task_id) or "end" (no ready task when last looked); raised every few milliseconds, found again from the start every second (up to ten while that reads a long run of claimed tasks)';
REVOKE ALL ON FUNCTION cloacina.claim_floor(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cloacina.claim_floor(text) TO cloacina_admin;
