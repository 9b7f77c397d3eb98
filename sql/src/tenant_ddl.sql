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
-- cloacina.connection_host and cloacina.connection_port override the host and the port (for
-- example a connection pooler's).
CREATE FUNCTION cloacina._connection_string(username text, password text) RETURNS text
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
