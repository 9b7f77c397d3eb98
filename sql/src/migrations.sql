-- sql/src/migrations.sql: tenant layouts and their migrations.
--
-- Every tenant schema records the layout of its tables (tenant_settings.layout_version, mirrored
-- in the registry); create_tenant makes the current one. An update that changes tenant tables
-- raises _tenant_layout() and adds a step to _migrate_tenant(); the tenants then migrate one
-- per transaction, never all in one (10,000 tenants do not fit one transaction's lock table):
-- the background worker migrates a batch every naptime on its own (extension/scheduler.c), and
-- CALL cloacina.migrate_tenants() does all that are left at once. The engine serves a tenant
-- the same before and after its migration (each step says how).
--
-- Layouts: 1 = the tables of 0.1.0; 2 = tenant_settings.layout_version, schedules.overlap and
-- schedules.paused, CHECK constraints on every state and kind column, the claim's index by
-- claim key (0.2.0).

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
