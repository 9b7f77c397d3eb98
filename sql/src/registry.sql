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
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    -- the layout of the tenant's tables (sql/src/migrations.sql), mirrored from its own settings
    layout_version int NOT NULL
);
CREATE INDEX tenant_layout_version ON cloacina.tenant (layout_version);  -- tenants left to migrate
SELECT pg_catalog.pg_extension_config_dump('cloacina.tenant', '');
REVOKE ALL ON cloacina.tenant FROM PUBLIC;
GRANT SELECT ON cloacina.tenant TO cloacina_admin;
