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
-- no statement text).
CREATE FUNCTION cloacina._citus_distribute_tenant(s text, u text, pw text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
SET client_min_messages = warning  -- no notices of the copy for each table
AS $$
BEGIN
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

REVOKE ALL ON FUNCTION cloacina._citus_distributes_schemas(),
    cloacina._citus_distribute_tenant(text, text, text), cloacina._citus_forget_role(text) FROM PUBLIC;
