-- The seed tutorial "06 - Multi-Tenancy" walked through with psql alone: the SQL API is what
-- any client (and the C++ SDK) uses. psql plays both the application and the worker here.
-- Run it with scripts/demo, or: psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -f examples/psql/tutorial_06.sql
\set ON_ERROR_STOP on
\set QUIET on
\pset footer off
CREATE EXTENSION IF NOT EXISTS cloacina;

-- Start clean, so that the demo can run again on the same database.
SELECT count(cloacina.remove_tenant(schema_name)) AS removed_from_earlier_runs
  FROM cloacina.tenant WHERE schema_name IN ('acme_corp', 'globex_inc', 'initech', 'tenant_demo') \gset

\echo '=== Basic Multi-Tenant Demo ==='
-- DefaultRunner::with_schema(url, tenant): a tenant schema used over the admin connection.
SELECT string_agg(schema_name, ', ') AS created
  FROM (SELECT (cloacina.create_tenant(t)).schema_name FROM unnest(ARRAY['acme_corp', 'globex_inc', 'initech']) t) x \gset
\echo 'Tenant schemas created with schema isolation:' :created

-- The customer_processing workflow, registered in each tenant, then one run per tenant.
CREATE TEMP TABLE runs (tenant text, execution_id bigint);
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['acme_corp', 'globex_inc', 'initech'] LOOP
        PERFORM set_config('search_path', t, true);
        PERFORM cloacina.register_workflow('{
            "name": "customer_processing",
            "description": "Process customer data in isolated tenant environment",
            "tasks": [{"id": "process_customer_data", "dependencies": []}]}');
        INSERT INTO runs VALUES (t, cloacina.execute('customer_processing',
            jsonb_build_object('tenant_id', t, 'customer_name', t || ' Customer')));
    END LOOP;
END $$;

-- The worker: claim process_customer_data in each tenant, do the tenant-specific processing,
-- and submit the output context.
DO $$
DECLARE
    t text;
    c record;
BEGIN
    FOREACH t IN ARRAY ARRAY['acme_corp', 'globex_inc', 'initech'] LOOP
        PERFORM set_config('search_path', t, true);
        FOR c IN SELECT * FROM cloacina.claim('psql-worker', ARRAY['customer_processing.process_customer_data'], 10) LOOP
            RAISE NOTICE 'Processing data for customer: % (tenant: %)', c.context ->> 'customer_name', c.context ->> 'tenant_id';
            PERFORM cloacina.complete(c.task_id, c.fence, c.context || jsonb_build_object(
                'processed_records', CASE c.context ->> 'tenant_id'
                                         WHEN 'acme_corp' THEN 1250 WHEN 'globex_inc' THEN 890
                                         WHEN 'initech' THEN 430 ELSE 100 END,
                'processing_completed', true));
        END LOOP;
    END LOOP;
END $$;

-- Each tenant reads its own result; the data never left its schema.
CREATE TEMP TABLE outcomes (tenant text, status text, records int);
DO $$
DECLARE
    r record;
    w record;
BEGIN
    FOR r IN SELECT * FROM runs ORDER BY tenant LOOP
        PERFORM set_config('search_path', r.tenant, true);
        SELECT * INTO w FROM cloacina.wait(r.execution_id, '30 seconds');
        INSERT INTO outcomes VALUES (r.tenant, w.status, (w.final_context ->> 'processed_records')::int);
    END LOOP;
END $$;
SELECT format('Tenant %s %s: %s records processed', tenant, status, records) AS "Basic multi-tenant demo"
  FROM outcomes ORDER BY tenant;
SELECT count(*) = 3 AND bool_and(status = 'completed') AS all_completed FROM outcomes \gset
\if :all_completed
\else
\echo 'a tenant run did not complete'
\quit 1
\endif

\echo
\echo '=== Advanced Multi-Tenant Demo with Admin API ==='
-- DatabaseAdmin::create_tenant(TenantConfig{"tenant_demo", "demo_user", ""}): an empty password
-- means a generated one.
SELECT schema_name AS demo_schema, username AS demo_user, length(password) AS password_length,
       connection_string AS demo_url
  FROM cloacina.create_tenant('tenant_demo', 'demo_user', '') \gset
\echo 'Tenant provisioned successfully!'
\echo '  Schema:' :demo_schema
\echo '  Username:' :demo_user
\echo '  Generated password length:' :password_length
-- DefaultRunner::new(&credentials.connection_string): from here on psql is the tenant itself.
\connect :demo_url
SELECT current_user AS connected_as, current_schema() AS landed_in \gset
\echo 'Connected with the tenant credentials as' :connected_as 'in schema' :landed_in

SELECT cloacina.register_workflow('{"name": "tenant_onboarding", "description": "Complete tenant onboarding process",
    "tasks": [{"id": "tenant_onboarding", "dependencies": []}]}') IS NOT NULL AS registered \gset
SELECT cloacina.register_workflow('{"name": "tenant_data_processing", "description": "Process tenant-specific data with isolation",
    "tasks": [{"id": "process_tenant_data", "dependencies": []}]}') IS NOT NULL AS registered \gset
SELECT cloacina.execute('tenant_onboarding', '{"tenant_id": "demo", "tenant_name": "Demo Tenant", "tenant_type": "professional"}') AS onboarding \gset
SELECT cloacina.execute('tenant_data_processing', '{"tenant_id": "demo", "data_volume": "medium"}') AS processing \gset

DO $$
DECLARE
    c record;
    setup_tasks text[];
BEGIN
    FOR c IN SELECT * FROM cloacina.claim('psql-worker', NULL, 10) LOOP
        IF c.task = 'tenant_onboarding' THEN
            setup_tasks := CASE c.context ->> 'tenant_type'
                WHEN 'enterprise' THEN ARRAY['provision_resources', 'setup_integrations', 'configure_billing', 'setup_support']
                WHEN 'professional' THEN ARRAY['provision_resources', 'setup_integrations', 'configure_billing']
                WHEN 'starter' THEN ARRAY['provision_resources', 'configure_billing']
                ELSE ARRAY['provision_resources'] END;
            RAISE NOTICE 'Onboarding new tenant: % (type: %), setup tasks: %', c.context ->> 'tenant_name',
                c.context ->> 'tenant_type', array_to_string(setup_tasks, ', ');
            PERFORM cloacina.complete(c.task_id, c.fence, c.context || jsonb_build_object(
                'onboarding_completed', true, 'setup_tasks_count', cardinality(setup_tasks), 'tenant_status', 'active'));
        ELSE
            PERFORM cloacina.complete(c.task_id, c.fence, c.context || jsonb_build_object(
                'records_processed', CASE c.context ->> 'data_volume' WHEN 'large' THEN 50000
                                         WHEN 'medium' THEN 15000 WHEN 'small' THEN 2000 ELSE 100 END,
                'processing_time_ms', CASE c.context ->> 'data_volume' WHEN 'large' THEN 5000
                                          WHEN 'medium' THEN 2000 WHEN 'small' THEN 500 ELSE 100 END,
                'processing_status', 'completed'));
        END IF;
    END LOOP;
END $$;

SELECT status AS onboarding_status, final_context ->> 'setup_tasks_count' AS setup_tasks
  FROM cloacina.wait(:onboarding, '30 seconds') \gset
\echo 'Tenant onboarding' :onboarding_status 'with' :setup_tasks 'setup tasks'
SELECT status AS processing_status, final_context ->> 'records_processed' AS records
  FROM cloacina.wait(:processing, '30 seconds') \gset
\echo 'Tenant data processing' :processing_status 'with' :records 'records processed'

-- The tenant cannot see anyone else.
SELECT count(*) AS visible_tenant_schemas FROM pg_namespace n
 WHERE has_schema_privilege(n.oid, 'USAGE') AND nspname IN ('acme_corp', 'globex_inc', 'initech') \gset
\echo 'Other tenants visible to demo_user:' :visible_tenant_schemas

SELECT :'onboarding_status' = 'completed' AND :'setup_tasks' = '3' AND :'processing_status' = 'completed'
       AND :visible_tenant_schemas = 0 AS advanced_ok \gset
\if :advanced_ok
\echo
\echo 'Tutorial 06 completed successfully!'
\else
\echo 'the advanced demo did not complete as expected'
\quit 1
\endif
