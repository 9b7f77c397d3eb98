-- Generated passwords never reach the server log or pg_stat_statements, even with every
-- statement logged and tracked, and even when the creation fails after generating one.
-- (Needs a cluster with logging_collector on and pg_stat_statements preloaded, as
-- scripts/pgcluster starts it.)
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
SELECT pg_current_logfile() IS NOT NULL AS log_collected;
SET log_statement = 'all';
SET pg_stat_statements.track = 'all';
SELECT pg_stat_statements_reset() IS NOT NULL AS reset;

CREATE TEMP TABLE generated (label text, password text);
INSERT INTO generated SELECT 'created', password FROM cloacina.create_tenant('secret_a', 'secret_a_user');
INSERT INTO generated SELECT 'created', password FROM cloacina.create_tenant('secret_b', 'secret_b_user', '');
INSERT INTO generated SELECT 'created', password FROM cloacina.create_tenant('secret_c', 'secret_c_user', NULL);
-- A creation that fails after its password was generated rolls back; the password is caught
-- here only to search for it.
DO $$
DECLARE
    pw text;
BEGIN
    BEGIN
        SELECT password INTO pw FROM cloacina.create_tenant('secret_d', 'secret_d_user');
        RAISE EXCEPTION 'forced failure after provisioning';
    EXCEPTION WHEN raise_exception THEN
        NULL;
    END;
    INSERT INTO generated VALUES ('rolled back', pw);
END $$;
SELECT count(*) AS rolled_back_tenants FROM cloacina.tenant WHERE schema_name = 'secret_d';
-- A creation that fails inside create_tenant (the role exists).
SELECT 1 FROM cloacina.create_tenant('secret_e', 'secret_a_user');
SELECT label, count(*), bool_and(length(password) >= 32) AS long FROM generated GROUP BY label ORDER BY label;

-- The log shows the statements (so logging works) but none of the passwords. The logging
-- collector writes asynchronously: wait, with a deadline, for a marker to arrive first.
SELECT 'secrets-marker-7f3a' AS marker;
DO $$
DECLARE
    deadline timestamptz := clock_timestamp() + interval '20 seconds';
BEGIN
    WHILE strpos(pg_read_file(pg_current_logfile()), 'secrets-marker-7f3a') = 0 LOOP
        IF clock_timestamp() > deadline THEN
            RAISE EXCEPTION 'the marker never reached the server log';
        END IF;
        PERFORM pg_sleep(0.05);
    END LOOP;
END $$;
SELECT strpos(pg_read_file(pg_current_logfile()), 'create_tenant(''secret_a''') > 0 AS statement_logged,
       (SELECT count(*) FROM generated g
         WHERE strpos(pg_read_file(pg_current_logfile()), g.password) > 0) AS passwords_in_log;

-- pg_stat_statements saw the nested CREATE ROLE (only with its SCRAM verifier) but no password.
SELECT count(*) > 0 AS create_role_tracked,
       bool_and(query ~ 'PASSWORD ''SCRAM-SHA-256\$') AS only_verifiers
  FROM pg_stat_statements WHERE query LIKE 'CREATE ROLE %secret\_%';
SELECT count(*) AS passwords_in_statements
  FROM pg_stat_statements s, generated g WHERE strpos(s.query, g.password) > 0;

RESET log_statement;
RESET pg_stat_statements.track;
SELECT cloacina.remove_tenant(t) FROM unnest(ARRAY['secret_a', 'secret_b', 'secret_c']) t;
SELECT count(*) AS roles_left FROM pg_roles WHERE rolname LIKE 'secret\_%';
