-- sql/src/citus.sql: a tenant on a Citus cluster is a distributed schema (design §9,
-- docs/citus.md). Nothing here runs without Citus: its functions are called by name.

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
