-- Installing the extension: objects, privileges and the version in three places.
CREATE EXTENSION cloacina;

SELECT extversion ~ '^[0-9]+\.[0-9]+\.[0-9]+$' AS semver, cloacina.version() = extversion AS version_function FROM pg_extension WHERE extname = 'cloacina';

-- Every public function is documented.
SELECT p.proname
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'cloacina' AND p.proname NOT LIKE '\_%'
   AND obj_description(p.oid, 'pg_proc') IS NULL
 ORDER BY 1;

-- Only the admin functions (and _is_registered, which tells one boolean) are SECURITY DEFINER,
-- and every one pins its search_path.
SELECT p.proname, p.proconfig
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'cloacina' AND p.prosecdef
 ORDER BY 1;

-- Admin functions are not executable by PUBLIC, only by cloacina_admin.
SELECT p.proname,
       has_function_privilege('public', p.oid, 'EXECUTE') AS public_can,
       has_function_privilege('cloacina_admin', p.oid, 'EXECUTE') AS admin_can
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'cloacina'
   AND p.proname IN ('create_tenant', 'remove_tenant', 'suspend_tenant', 'resume_tenant',
                     'set_tenant_limits', '_create_tenant', '_generate_password', '_scram_verifier')
 ORDER BY 1;

-- The registry and the tenants view are closed to PUBLIC.
SELECT has_table_privilege('public', 'cloacina.tenant', 'SELECT') AS registry_public,
       has_table_privilege('public', 'cloacina.tenants', 'SELECT') AS view_public,
       has_table_privilege('cloacina_admin', 'cloacina.tenants', 'SELECT') AS view_admin;

-- The context merge the engine uses: objects merge recursively, later scalars win.
SELECT cloacina.context_merge('{"a": 1, "n": {"x": 1, "y": 2}, "l": [1]}',
                              '{"b": 2, "n": {"y": 3, "z": 4}, "l": [2]}');
SELECT cloacina.context_merge('{"n": {"x": 1}}', '{"n": 5}'),
       cloacina.context_merge('{"n": 5}', '{"n": {"x": 1}}');
