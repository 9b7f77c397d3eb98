-- cloacina: the install script, concatenated by the Makefile from sql/src/*.sql in the order of
-- SQL_SOURCES (registry, helpers, tenant_ddl, admin, migrations, workflows, engine, api, cron,
-- background, monitoring);
-- docs/architecture.md maps each concern to its SQL file, C file and tests.
--
-- Security model in one paragraph: admin functions are SECURITY DEFINER with a pinned search_path,
-- revoked from PUBLIC and granted to cloacina_admin. Tenant functions are SECURITY INVOKER, so the
-- caller's own privileges decide what it can touch. The public tenant functions are thin SQL
-- wrappers (no search_path pinning, so they can read the caller's current_schema()); the engine
-- functions they call pin search_path to pg_catalog so that objects a tenant creates in its own
-- schema can never change how the engine's statements resolve operators or functions. The task
-- path (execute, claim, heartbeat, complete, fail and their batches, wait, status and results)
-- is C instead: those functions read the caller's current schema themselves and pin the search
-- path for their statements the same way (extension/tenant_path.c).

\echo Use "CREATE EXTENSION cloacina" to load this file. \quit
