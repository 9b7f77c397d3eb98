-- Tenant administration: create, the registry and view, limits, suspend/resume, remove, and
-- refusal of every bad name without leaving anything behind.
CREATE FUNCTION pg_temp.try(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;

-- A tenant without a role, and one with a role and a generated password.
SELECT schema_name, username, password, connection_string FROM cloacina.create_tenant('tenant_plain');
SELECT schema_name, username, length(password) >= 32 AS long_password,
       password ~ '^[A-Za-z0-9_-]+$' AS url_safe,
       (regexp_match(connection_string, '^postgresql://tenant_user:([^@]*)@[^/]+:[0-9]+/cloacina$'))[1]
           = password AS uri_ok
  FROM cloacina.create_tenant('tenant_roled', 'tenant_user', '');

-- The role: login, no special powers, search_path on its schema, password stored as SCRAM.
SELECT r.rolname, r.rolcanlogin, r.rolsuper, r.rolcreaterole, r.rolcreatedb, r.rolbypassrls,
       a.rolpassword LIKE 'SCRAM-SHA-256$%' AS scram, r.rolconfig
  FROM pg_roles r JOIN pg_authid a USING (oid) WHERE r.rolname = 'tenant_user';
SELECT has_schema_privilege('tenant_user', 'tenant_roled', 'USAGE') AS usage,
       has_schema_privilege('tenant_user', 'tenant_roled', 'CREATE') AS create_own,
       has_schema_privilege('tenant_user', 'tenant_plain', 'USAGE') AS usage_other;

-- Two generated passwords differ.
SELECT a.password <> b.password AS differ
  FROM cloacina.create_tenant('tenant_pw_a', 'pw_user_a') a, cloacina.create_tenant('tenant_pw_b', 'pw_user_b') b;

-- A given password with characters that need escaping in a URI.
SELECT connection_string LIKE 'postgresql://quote_user:p%40s%3As%2F%25%27%5C%20x@%' AS escaped
  FROM cloacina.create_tenant('tenant_quote', 'quote_user', E'p@s:s/%''\\ x');
-- a pooler's address instead of the server's
SET cloacina.connection_host = 'pooler.internal';
SET cloacina.connection_port = 6432;
SELECT regexp_replace(connection_string, ':[^:@]*@', ':***@') AS through_pooler
  FROM cloacina.create_tenant('tenant_pooled', 'pooled_user');
RESET cloacina.connection_host;
RESET cloacina.connection_port;
SELECT cloacina.remove_tenant('tenant_pooled', 'pooled_user');

SELECT schema_name, username, state, max_running, weight, active_runs, ready_tasks, running_tasks
  FROM cloacina.tenants ORDER BY schema_name;

-- Duplicates: a second create of the same tenant, or a role that exists, is refused.
SELECT pg_temp.try($$SELECT cloacina.create_tenant('tenant_plain')$$);
SELECT pg_temp.try($$SELECT cloacina.create_tenant('tenant_other', 'tenant_user')$$);
SELECT pg_temp.try($$SELECT cloacina.create_tenant('tenant_other', 'postgres')$$);
SELECT pg_temp.try($$SELECT cloacina.create_tenant('pg_toast')$$);
CREATE SCHEMA not_a_tenant;
SELECT pg_temp.try($$SELECT cloacina.create_tenant('not_a_tenant')$$);
DROP SCHEMA not_a_tenant;

-- Limits and lifecycle.
SELECT cloacina.set_tenant_limits('tenant_roled', 4, 3);
SELECT pg_temp.try($$SELECT cloacina.set_tenant_limits('tenant_roled', 0)$$);
SELECT pg_temp.try($$SELECT cloacina.set_tenant_limits('tenant_roled', NULL, 0)$$);
SELECT pg_temp.try($$SELECT cloacina.set_tenant_limits('tenant_nobody', 1)$$);
SELECT cloacina.suspend_tenant('tenant_roled');
SELECT state, max_running, weight FROM tenant_roled.tenant_settings;
SELECT cloacina.resume_tenant('tenant_roled');
SELECT schema_name, state, max_running, weight FROM cloacina.tenants WHERE schema_name = 'tenant_roled';
SELECT pg_temp.try($$SELECT cloacina.suspend_tenant('tenant_nobody')$$);

-- The bad-name corpus: every case is refused with a clear error and leaves nothing behind.
CREATE TEMP TABLE before AS
    SELECT (SELECT count(*) FROM pg_namespace) AS schemas, (SELECT count(*) FROM pg_roles) AS roles,
           (SELECT count(*) FROM cloacina.tenant) AS tenants;
CREATE TEMP TABLE bad_names (schema_name text, username text, password text);
INSERT INTO bad_names VALUES
    (NULL, NULL, ''), ('', NULL, ''), ('Acme', NULL, ''), ('ACME_CORP', NULL, ''),
    ('acme-corp', NULL, ''), ('acme corp', NULL, ''), ('1acme', NULL, ''), ('_acme', NULL, ''),
    ('acme;drop schema public', NULL, ''), ('acme"; DROP ROLE postgres; --', NULL, ''),
    ($n$acme' OR '1'='1$n$, NULL, ''), ('acmé', NULL, ''), ('tenant_✓', NULL, ''),
    (repeat('a', 64), NULL, ''), ('public', NULL, ''), ('pg_catalog', NULL, ''),
    ('pg_anything', NULL, ''), ('information_schema', NULL, ''), ('cloacina', NULL, ''),
    ('cloacina_admin', NULL, ''), ('cloacina_x', NULL, ''), (E'acme\n', NULL, ''),
    (E'acme\\', NULL, ''), ('acme.corp', NULL, ''), ('acme$', NULL, ''),
    ('good_schema', '', ''), ('good_schema', 'Bad_User', ''), ('good_schema', 'bad user', ''),
    ('good_schema', 'pg_user_x', ''), ('good_schema', 'public', ''), ('good_schema', 'current_user', ''),
    ('good_schema', 'session_user', ''), ('good_schema', 'none', ''), ('good_schema', 'cloacina_admin', ''),
    ('good_schema', repeat('u', 64), ''), ('good_schema', $n$u'; ALTER ROLE u SUPERUSER; --$n$, ''),
    ('good_schema', 'postgres', ''), ('good_schema', NULL, 'secret-without-user');
SELECT b.schema_name, b.username,
       pg_temp.try(format('SELECT cloacina.create_tenant(%L, %L, %L)', b.schema_name, b.username, b.password)) AS result
  FROM bad_names b;
SELECT count(*) AS cases,
       count(*) FILTER (WHERE pg_temp.try(format('SELECT cloacina.create_tenant(%L, %L, %L)',
                                                 b.schema_name, b.username, b.password)) = 'ok') AS accepted
  FROM bad_names b;
SELECT (SELECT count(*) FROM pg_namespace) - schemas AS new_schemas,
       (SELECT count(*) FROM pg_roles) - roles AS new_roles,
       (SELECT count(*) FROM cloacina.tenant) - tenants AS new_tenants
  FROM before;

-- Removal: refused with unfinished runs, complete otherwise.
SET search_path = tenant_roled;
SELECT cloacina.register_workflow('{"name": "one", "tasks": [{"id": "only"}]}');
SELECT cloacina.execute('one') AS run \gset
RESET search_path;
SELECT pg_temp.try($$SELECT cloacina.remove_tenant('tenant_roled')$$);
SELECT pg_temp.try($$SELECT cloacina.remove_tenant('tenant_roled', 'quote_user')$$);
SET search_path = tenant_roled;
SELECT cloacina.cancel(:run);
RESET search_path;
-- DROP EXTENSION while tenants exist: refused, with the way out; nothing changes.
SELECT regexp_replace(pg_temp.try('DROP EXTENSION cloacina'), '\d+ tenants', 'N tenants') AS refused;
SELECT regexp_replace(pg_temp.try('DROP EXTENSION cloacina CASCADE'), '\d+ tenants', 'N tenants') AS refused;
SELECT count(*) AS extension_kept FROM pg_extension WHERE extname = 'cloacina';
SELECT cloacina.remove_tenant('tenant_roled', 'tenant_user');
SELECT pg_temp.try($$SELECT cloacina.remove_tenant('tenant_roled')$$);
SELECT cloacina.remove_tenant(t) FROM unnest(ARRAY['tenant_plain', 'tenant_pw_a', 'tenant_pw_b', 'tenant_quote']) t;
SELECT count(*) AS schemas_left FROM pg_namespace WHERE nspname LIKE 'tenant\_%';
SELECT count(*) AS roles_left FROM pg_roles
 WHERE rolname IN ('tenant_user', 'pw_user_a', 'pw_user_b', 'quote_user');
SELECT count(*) AS tenants_left FROM cloacina.tenant;

-- Bulk cancel: all unfinished runs of one workflow, then the paused ones, in one call each; bad
-- states are refused. A tenant with unfinished runs is removed in one call when asked to.
SELECT schema_name FROM cloacina.create_tenant('tenant_busy');
SET search_path = tenant_busy;
SELECT cloacina.register_workflow('{"name": "a", "tasks": [{"id": "x"}, {"id": "y", "dependencies": ["x"]}]}') IS NOT NULL AS registered;
SELECT cloacina.register_workflow('{"name": "b", "tasks": [{"id": "x"}]}') IS NOT NULL AS registered;
SELECT count(*) FROM cloacina.execute_batch('a', array_fill('{}'::jsonb, ARRAY[5]));
SELECT count(*) FROM cloacina.execute_batch('b', array_fill('{}'::jsonb, ARRAY[3]));
SELECT cloacina.pause(min(id)) FROM tenant_busy.executions WHERE workflow = 'b';
SELECT count(*) AS claimed FROM cloacina.claim('w', ARRAY['x'], 2);
SELECT cloacina.cancel_runs('a') AS cancelled_a;
SELECT cloacina.cancel_runs(statuses => ARRAY['paused']) AS cancelled_paused;
SELECT pg_temp.try($$SELECT cloacina.cancel_runs(statuses => ARRAY['completed'])$$);
SELECT workflow, status, count(*) FROM tenant_busy.executions GROUP BY 1, 2 ORDER BY 1, 2;
SELECT count(*) AS unfinished_tasks_of_a FROM tenant_busy.tasks
 WHERE workflow = 'a' AND status NOT IN ('cancelled', 'completed', 'failed', 'skipped');
RESET search_path;
SELECT pg_temp.try($$SELECT cloacina.remove_tenant('tenant_busy')$$);
SELECT cloacina.remove_tenant('tenant_busy', cancel_unfinished => true);
SELECT count(*) AS busy_left FROM pg_namespace WHERE nspname = 'tenant_busy';

-- A removal that fails leaves the tenant intact: the role owns a database, which DROP OWNED
-- does not drop, so DROP ROLE fails and everything must roll back.
SELECT schema_name FROM cloacina.create_tenant('tenant_sticky', 'sticky_user');
CREATE DATABASE regress_sticky_db OWNER sticky_user;
SELECT pg_temp.try($$SELECT cloacina.remove_tenant('tenant_sticky')$$);
SELECT (SELECT count(*) FROM pg_namespace WHERE nspname = 'tenant_sticky') AS schema_kept,
       (SELECT count(*) FROM pg_roles WHERE rolname = 'sticky_user') AS role_kept,
       (SELECT count(*) FROM cloacina.tenant WHERE schema_name = 'tenant_sticky') AS registry_kept,
       (SELECT count(*) FROM tenant_sticky.tenant_settings) AS tables_kept;
DROP DATABASE regress_sticky_db;
SELECT cloacina.remove_tenant('tenant_sticky');
SELECT count(*) AS tenants_left FROM cloacina.tenant;
