# Isolation matrix: three tenants, each with its own login role, each acting on every other one
# over a real login (a superuser session that merely did SET ROLE could switch back):
#   - every tenant table: SELECT/INSERT/UPDATE/DELETE/TRUNCATE/LOCK, schema-qualified and after
#     SET search_path; the sequences;
#   - every function of the cloacina schema (a completeness check below fails when a new function
#     is neither probed nor listed as harmless): the public API after SET search_path = victim,
#     the engine functions with the victim's schema name, the SECURITY DEFINER admin functions;
#   - becoming another role, gaining privileges, taking the victim's schema;
#   - catalog views: pg_stat_activity query text, pg_stat_statements, pg_roles/pg_authid
#     passwords, pg_db_role_setting, pg_stats, information_schema;
#   - SQL tasks (run by the background worker as the tenant's role), including state leaking from
#     one tenant's SQL task to the next tenant's in the same worker;
#   - the C++ SDK on the attacker's connection string (tests/reliability_isolation_probe.cpp);
#   - LISTEN on guessed channel names while the victim's tasks become ready.
# A probe "crosses" when it read or changed another tenant's data. Every refusal must come with an
# expected SQLSTATE (42501, 3F000, ...); an unexpected error fails the test too, so that a broken
# probe cannot pass for a refusal. Prints "isolation: N probes, 0 crossed".
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use CloacinaNode;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $cpp = cpp_build_dir();
my $probe_program = "$cpp/tests/reliability_isolation_probe";
-x $probe_program or BAIL_OUT("$probe_program is missing: build the SDK first");

my $node = cloacina_node('isolation', preload => ['pg_stat_statements'], conf => qq{
cloacina.sql_workers = 1
pg_stat_statements.track = all
});

my @tenants = qw(iso_a iso_b iso_c);
my %user = map { $_ => "${_}_user" } @tenants;
my %url;
for my $t (@tenants) {
    $url{$t} = $node->safe_psql('postgres', "SELECT connection_string FROM cloacina.create_tenant('$t', '$user{$t}')");
}

# Runs SQL over a real login as a role; dies on error.
sub as_role {
    my ($role, $sql) = @_;
    my ($ret, $out, $err) = $node->psql('postgres', $sql, extra_params => [ '-U', $role, '-v', 'ON_ERROR_STOP=1' ]);
    die "as $role: $err\n$sql" if $ret != 0;
    return $out;
}

# Each tenant, as itself: a two-task handler workflow with a run whose first task is claimed
# (its lease runs for an hour) and a second run that is ready; a SQL workflow that ran; a
# schedule; a table of its own with a secret.
my (%channel, %victim);
for my $t (@tenants) {
    as_role($user{$t}, qq{
        SELECT cloacina.register_workflow('{"name": "secret_work", "tasks": [{"id": "s1"}, {"id": "s2", "dependencies": ["s1"]}]}');
        SELECT cloacina.register_workflow(\$\${"name": "secret_sql", "tasks": [{"id": "q", "kind": "sql",
            "sql": "SELECT jsonb_build_object('leak', current_setting('probe.leak', true)) AS secret_marker_${t}_sqltask"}]}\$\$);
        SELECT cloacina.schedule('nightly', 'secret_work', '0 3 * * *', 'UTC', '{"secret": "secret_marker_${t}_schedule"}');
        CREATE TABLE own_secrets (v text);
        INSERT INTO own_secrets VALUES ('secret_marker_${t}_table');
    });
    $channel{$t} = as_role($user{$t}, 'SELECT cloacina.notify_channel()');
    my $claimed_run = as_role($user{$t}, qq{SELECT cloacina.execute('secret_work', '{"secret": "secret_marker_$t"}')});
    my ($task, $fence) = split /\|/, as_role($user{$t}, q{SELECT task_id, fence FROM cloacina.claim('victim-worker', NULL, 1, '1 hour')});
    my $ready_run = as_role($user{$t}, qq{SELECT cloacina.execute('secret_work', '{"secret": "secret_marker_$t"}')});
    my $sql_run = as_role($user{$t}, q{SELECT cloacina.execute('secret_sql')});
    is(as_role($user{$t}, "SELECT status FROM cloacina.wait($sql_run, '30 seconds')"), 'completed', "$t: its SQL task ran");
    $victim{$t} = { run => $claimed_run, task => $task, fence => $fence, ready_run => $ready_run };
}
$node->safe_psql('postgres', join '', map { "ANALYZE $_.tasks; ANALYZE $_.executions; " } @tenants);

# A session of every tenant that LISTENs on its channel and then sits in a query that names a marker.
my %sessions;
for my $t (@tenants) {
    my ($in, $out, $err) = ("LISTEN \"$channel{$t}\";\nSELECT 'x' AS secret_marker_${t}_activity FROM pg_sleep(3600);\n", '', '');
    $sessions{$t} = IPC::Run::start([ 'psql', '-X', '-At', '-d', $node->connstr('postgres'), '-U', $user{$t} ],
        '<', \$in, '>', \$out, '2>', \$err);
    $sessions{$t}->pump while length $in;    # IPC::Run feeds stdin only while pumped
}
$node->poll_query_until('postgres', q{SELECT count(*) = 3 FROM pg_stat_activity WHERE query LIKE '%secret_marker_%_activity%' AND state = 'active' AND pid <> pg_backend_pid()}, 't')
  or die 'the victims\' sessions did not start';
# The checks below are only meaningful if a privileged observer does see these things.
is($node->safe_psql('postgres', qq{SELECT count(*) FROM public.pg_stat_statements WHERE query LIKE '%$channel{iso_b}%'}) > 0 ? 'seen' : 'unseen',
   'seen', 'control: a superuser sees a tenant\'s LISTEN channel in pg_stat_statements');

# The probe harness: try() runs a statement and always rolls it back (even a success), so probes
# never change anything; it returns 'ok', or the SQLSTATE and message. check() runs a query whose
# boolean says whether another tenant's data showed.
$node->safe_psql('postgres', q{
CREATE SCHEMA probe;
GRANT USAGE ON SCHEMA probe TO PUBLIC;
CREATE FUNCTION probe.try(path text, q text) RETURNS text LANGUAGE plpgsql AS $f$
BEGIN
    BEGIN
        PERFORM set_config('search_path', path, true);
        EXECUTE q;
        RAISE EXCEPTION 'probe succeeded' USING ERRCODE = 'PZ001';
    EXCEPTION WHEN OTHERS THEN
        IF SQLSTATE = 'PZ001' THEN RETURN 'ok'; END IF;
        RETURN SQLSTATE || ': ' || SQLERRM;
    END;
END $f$;
CREATE FUNCTION probe.check(path text, q text) RETURNS text LANGUAGE plpgsql AS $f$
DECLARE
    crossed boolean;
BEGIN
    BEGIN
        PERFORM set_config('search_path', path, true);
        EXECUTE q INTO crossed;
        RAISE EXCEPTION 'probe done' USING ERRCODE = 'PZ001';
    EXCEPTION WHEN OTHERS THEN
        IF SQLSTATE = 'PZ001' THEN RETURN CASE WHEN crossed THEN 'crossed' ELSE 'clean' END; END IF;
        RETURN SQLSTATE || ': ' || SQLERRM;
    END;
END $f$;
CREATE TABLE probe.probes (id serial PRIMARY KEY, attacker text, victim text, kind text, label text,
                           path text, q text, refusals text);
GRANT SELECT ON probe.probes TO PUBLIC;
});

# ---- the probes of one attacker against one victim ----
my @probes;
sub deny { my ($a, $v, $label, $path, $q, $ok) = @_; push @probes, [ $a, $v, 'deny', $label, $path, $q, $ok // '42501|3F000' ]; }
sub check { my ($a, $v, $label, $path, $q, $ok) = @_; push @probes, [ $a, $v, 'check', $label, $path, $q, $ok // '42501' ]; }

my @tables = (
    [ tenant_settings => 'singleton' ], [ workflows => 'name' ], [ executions => 'id' ], [ tasks => 'id' ],
    [ execution_events => 'id' ], [ schedules => 'id' ], [ schedule_fires => 'slot' ], [ own_secrets => 'v' ]);
my @engine_functions;    # names probed, for the completeness check
for my $x (@tenants) {
    for my $y (grep { $_ ne $x } @tenants) {
        my %v = %{ $victim{$y} };
        my ($run, $task, $fence) = @v{qw(run task fence)};
        for my $tc (@tables) {
            my ($tbl, $col) = @$tc;
            for my $how ([ 'qualified', $x, "$y." ], [ 'search_path', $y, '' ]) {
                my ($h, $path, $q) = @$how;
                my $ok = $h eq 'search_path' ? '42P01' : '42501';
                deny($x, $y, "select $tbl ($h)", $path, "SELECT * FROM $q$tbl", $ok);
                deny($x, $y, "insert $tbl ($h)", $path, "INSERT INTO $q$tbl DEFAULT VALUES", $ok);
                deny($x, $y, "update $tbl ($h)", $path, "UPDATE $q$tbl SET $col = $col", $ok);
                deny($x, $y, "delete $tbl ($h)", $path, "DELETE FROM $q$tbl", $ok);
                deny($x, $y, "truncate $tbl ($h)", $path, "TRUNCATE $q$tbl", $ok);
                deny($x, $y, "lock $tbl ($h)", $path, "LOCK TABLE $q$tbl", $ok);
            }
        }
        for my $seq (qw(executions_id_seq tasks_id_seq execution_events_id_seq schedules_id_seq)) {
            deny($x, $y, "nextval $seq", $x, "SELECT nextval('$y.$seq')");
            deny($x, $y, "setval $seq", $x, "SELECT setval('$y.$seq', 1)");
        }
        # The public tenant API with the victim as the current schema.
        my %api = (
            register_workflow => q{SELECT cloacina.register_workflow('{"name": "evil", "tasks": [{"id": "x"}]}')},
            workflows         => 'SELECT * FROM cloacina.workflows',
            execute           => q{SELECT cloacina.execute('secret_work')},
            execute_batch     => q{SELECT * FROM cloacina.execute_batch('secret_work', ARRAY['{}']::jsonb[])},
            execution_status  => "SELECT * FROM cloacina.execution_status($run)",
            wait              => "SELECT * FROM cloacina.wait($run, '10 milliseconds')",
            task_results      => "SELECT * FROM cloacina.task_results($run)",
            claim             => q{SELECT * FROM cloacina.claim('thief', NULL, 10)},
            heartbeat         => "SELECT cloacina.heartbeat($task, $fence)",
            heartbeat_batch   => "SELECT * FROM cloacina.heartbeat_batch(ARRAY[$task], ARRAY[$fence])",
            complete          => qq{SELECT cloacina.complete($task, $fence, '{"stolen": true}')},
            fail              => "SELECT cloacina.fail($task, $fence, 'sabotage', false)",
            complete_batch    => "SELECT * FROM cloacina.complete_batch(ARRAY[$task], ARRAY[$fence], ARRAY['{}']::jsonb[])",
            fail_batch        => "SELECT * FROM cloacina.fail_batch(ARRAY[$task], ARRAY[$fence], ARRAY['x'], ARRAY[false])",
            cancel            => "SELECT cloacina.cancel($run)",
            cancel_runs       => 'SELECT cloacina.cancel_runs()',
            pause             => "SELECT cloacina.pause($run)",
            resume            => "SELECT cloacina.resume($run)",
            notify_channel    => 'SELECT cloacina.notify_channel()',
            schedule          => q{SELECT cloacina.schedule('nightly', 'secret_work', '* * * * *')},
            unschedule        => q{SELECT cloacina.unschedule('nightly')},
            pause_schedule    => q{SELECT cloacina.pause_schedule('nightly')},
            resume_schedule   => q{SELECT cloacina.resume_schedule('nightly')},
            schedules         => 'SELECT * FROM cloacina.schedules',
            retry             => "SELECT cloacina.retry($run)",
            unregister_workflow => q{SELECT cloacina.unregister_workflow('secret_work')},
            workflow_dot      => q{SELECT cloacina.workflow_dot('secret_work')},
            run_dot           => "SELECT cloacina.run_dot($run)");
        for my $f (sort keys %api) {
            deny($x, $y, "$f (search_path = victim)", $y, $api{$f});
        }
        # Engine functions, called directly with the victim's schema name.
        my %engine = (
            _register_workflow    => qq{SELECT cloacina._register_workflow('$y', '{"name": "evil", "tasks": [{"id": "x"}]}')},
            _list_workflows       => "SELECT * FROM cloacina._list_workflows('$y')",
            _execute              => "SELECT cloacina._execute('$y', 'secret_work', '{}', '{}')",
            _cancel               => "SELECT cloacina._cancel('$y', $run)",
            _pause                => "SELECT cloacina._pause('$y', $run)",
            _resume               => "SELECT cloacina._resume('$y', $run)",
            _propagate            => "SELECT cloacina._propagate('$y', $run, ARRAY['s1'])",
            _finalize             => "SELECT cloacina._finalize('$y', ARRAY[$run]::bigint[], 'completed')",
            _lock_run             => "SELECT cloacina._lock_run('$y', $run)",
            _event                => "SELECT cloacina._event('$y', $run, 's1', 1, 'running', 'completed')",
            _hint                 => "SELECT cloacina._hint('$y', 'ready')",
            _notify_channel       => "SELECT cloacina._notify_channel('$y')",
            _reap                 => "SELECT cloacina._reap('$y')",
            _expire_runs          => "SELECT cloacina._expire_runs('$y')",
            _prune                => "SELECT cloacina._prune('$y', '0 seconds')",
            _tenant_tick          => "SELECT * FROM cloacina._tenant_tick('$y', false, '0 seconds')",
            _ready_queue_times    => "SELECT * FROM cloacina._ready_queue_times('$y', now())",
            _earliest_lease       => "SELECT cloacina._earliest_lease('$y')",
            _fire_schedules       => "SELECT cloacina._fire_schedules('$y', true)",
            _schedule             => "SELECT cloacina._schedule('$y', 'nightly', 'secret_work', '* * * * *', 'UTC', '{}', 'skip', 'allow')",
            _set_schedule_paused  => "SELECT cloacina._set_schedule_paused('$y', 'nightly', true)",
            _list_schedules       => "SELECT * FROM cloacina._list_schedules('$y')",
            _retry                => "SELECT cloacina._retry('$y', $run)",
            _unregister_workflow  => "SELECT cloacina._unregister_workflow('$y', 'secret_work')",
            _stats                => "SELECT * FROM cloacina._stats('$y', '1 hour')",
            _workflow_dot         => "SELECT cloacina._workflow_dot('$y', 'secret_work')",
            _run_dot              => "SELECT cloacina._run_dot('$y', $run)",
            _log_event            => "SELECT cloacina._log_event('$y', 'forged')",
            _unschedule           => "SELECT cloacina._unschedule('$y', 'nightly')",
            _tenant_counts        => "SELECT * FROM cloacina._tenant_counts('$y')",
            _sync_tenant_settings => "SELECT cloacina._sync_tenant_settings('$y')",
            _set_tenant_state     => "SELECT cloacina._set_tenant_state('$y', 'suspended')",
            _create_tenant_tables => "SELECT cloacina._create_tenant_tables('$y', 'x')",
            _grant_tenant_role    => "SELECT cloacina._grant_tenant_role('$y', '$user{$x}')",
            _create_tenant        => "SELECT * FROM cloacina._create_tenant('evil_$x', 'evil_${x}_user', '')",
            _create_tenant_role   => "SELECT cloacina._create_tenant_role('$y', 'evil_${x}_role', '')",
            _citus_distribute_tenant => "SELECT cloacina._citus_distribute_tenant('$y', '$user{$x}', 'x')",
            _citus_distributes_schemas => 'SELECT cloacina._citus_distributes_schemas()',
            _citus_forget_role    => "SELECT cloacina._citus_forget_role('$user{$y}')",
            _citus_relay_node     => 'SELECT cloacina._citus_relay_node()',
            _citus_relay_due      => "SELECT cloacina._citus_relay_due(ARRAY['$y'], ARRAY[now()], ARRAY[true])",
            _due_relayed          => "SELECT cloacina._due_relayed(ARRAY['$y'], ARRAY[0]::numeric[], ARRAY[true])",
            _citus_drop_registry_shards => 'SELECT cloacina._citus_drop_registry_shards()',
            _adopt_tenant         => "SELECT * FROM cloacina._adopt_tenant('$y', NULL)",
            adopt_tenant          => "SELECT * FROM cloacina.adopt_tenant('$y')",
            _connection_string    => "SELECT cloacina._connection_string('$user{$y}', 'x')",
            _generate_password    => 'SELECT cloacina._generate_password()',
            _scram_verifier       => q{SELECT cloacina._scram_verifier('x')},
            _random_token         => 'SELECT cloacina._random_token(8)',
            _tenant_schemas       => 'SELECT * FROM cloacina._tenant_schemas()',
            _require_tenant       => "SELECT cloacina._require_tenant('$y')",
            _sql_task_alive       => "SELECT cloacina._sql_task_alive('$y', $task)",
            _cancel_sql_tasks     => "SELECT cloacina._cancel_sql_tasks('$y', $run)",
            _migrate_tenant       => "SELECT cloacina._migrate_tenant('$y')",
            _cancel_run_ids       => "SELECT cloacina._cancel_run_ids('$y', ARRAY[$run]::bigint[])",
            _cancel_matching      => "SELECT cloacina._cancel_matching('$y', NULL, ARRAY['running'])",
            remove_all_tenants    => 'CALL cloacina.remove_all_tenants()',
            scheduler_status      => 'SELECT * FROM cloacina.scheduler_status()',
            claim_floor           => "SELECT * FROM cloacina.claim_floor('$y')",
            _tenants_to_migrate   => 'SELECT * FROM cloacina._tenants_to_migrate(10)',
            migrate_tenants       => 'CALL cloacina.migrate_tenants()',
            create_tenant         => "SELECT * FROM cloacina.create_tenant('evil_$x')",
            remove_tenant         => "SELECT cloacina.remove_tenant('$y')",
            suspend_tenant        => "SELECT cloacina.suspend_tenant('$y')",
            resume_tenant         => "SELECT cloacina.resume_tenant('$y')",
            set_tenant_limits     => "SELECT cloacina.set_tenant_limits('$y', 1, 1)");
        for my $f (sort keys %engine) {
            # _require_tenant only tells whether the victim is a tenant, which the catalogs tell anyway;
            # it must not pass (it would if the attacker could see the victim's settings table).
            deny($x, $y, "$f(victim)", $x, $engine{$f});
            push @engine_functions, $f;
        }
        # _due only wakes the scheduler: it carries no data. A call with the victim's name must
        # not change the victim's data (checked at the end).
        check($x, $y, '_due(victim)', $x, "SELECT cloacina._due('$y', now()) IS NULL AND false");
        push @engine_functions, qw(_due);
        # The figures cover the tenants the caller may see: never the victim.
        check($x, $y, 'tenant_stats', $x, "SELECT count(*) > 0 FROM cloacina.tenant_stats() WHERE schema_name = '$y'");
        check($x, $y, 'workflow_stats', $x, "SELECT count(*) > 0 FROM cloacina.workflow_stats() WHERE schema_name = '$y'");
        check($x, $y, '_visible_tenants', $x, "SELECT count(*) > 0 FROM cloacina._visible_tenants() v WHERE v = '$y'");
        push @engine_functions, qw(tenant_stats workflow_stats _visible_tenants);
        # The registry and the admin view.
        deny($x, $y, 'registry select', $x, 'SELECT * FROM cloacina.tenant');
        deny($x, $y, 'registry update', $x, qq{UPDATE cloacina.tenant SET state = 'suspended' WHERE schema_name = '$y'});
        deny($x, $y, 'registry delete', $x, qq{DELETE FROM cloacina.tenant WHERE schema_name = '$y'});
        deny($x, $y, 'tenants view', $x, 'SELECT * FROM cloacina.tenants');
        # Roles, privileges, the victim's schema.
        my $yu = $user{$y};
        my $xu = $user{$x};
        deny($x, $y, 'set role victim', $x, "SET ROLE $yu");
        deny($x, $y, 'set role admin', $x, 'SET ROLE cloacina_admin');
        deny($x, $y, 'set role postgres', $x, 'SET ROLE postgres');
        deny($x, $y, 'set session authorization', $x, "SET SESSION AUTHORIZATION $yu");
        deny($x, $y, 'set_config role', $x, "SELECT set_config('role', '$yu', false)");
        deny($x, $y, 'grant victim role to self', $x, "GRANT $yu TO $xu");
        deny($x, $y, 'grant admin role to self', $x, "GRANT cloacina_admin TO $xu");
        deny($x, $y, 'grant pg_read_all_data to self', $x, "GRANT pg_read_all_data TO $xu");
        deny($x, $y, 'grant pg_signal_backend to self', $x, "GRANT pg_signal_backend TO $xu");
        deny($x, $y, 'alter self superuser', $x, "ALTER ROLE $xu SUPERUSER");
        deny($x, $y, 'alter self createrole', $x, "ALTER ROLE $xu CREATEROLE");
        deny($x, $y, 'alter self bypassrls', $x, "ALTER ROLE $xu BYPASSRLS");
        deny($x, $y, 'victim password', $x, "ALTER ROLE $yu PASSWORD 'owned'");
        deny($x, $y, 'victim search_path', $x, "ALTER ROLE $yu SET search_path = $x");
        deny($x, $y, 'rename victim role', $x, "ALTER ROLE $yu RENAME TO stolen");
        deny($x, $y, 'drop victim role', $x, "DROP ROLE $yu");
        deny($x, $y, 'create role', $x, "CREATE ROLE evil_role_$x");
        deny($x, $y, 'reassign victim objects', $x, "REASSIGN OWNED BY $yu TO $xu");
        deny($x, $y, 'drop owned by victim', $x, "DROP OWNED BY $yu");
        deny($x, $y, 'grant usage on victim schema', $x, "GRANT USAGE ON SCHEMA $y TO $xu");
        deny($x, $y, 'grant select on victim table', $x, "GRANT SELECT ON $y.tasks TO $xu");
        deny($x, $y, 'victim schema owner', $x, "ALTER SCHEMA $y OWNER TO $xu");
        deny($x, $y, 'rename victim schema', $x, "ALTER SCHEMA $y RENAME TO stolen");
        deny($x, $y, 'drop victim schema', $x, "DROP SCHEMA $y CASCADE");
        deny($x, $y, 'create in victim schema', $x, "CREATE TABLE $y.planted (x int)");
        deny($x, $y, 'create function in victim schema', $x, "CREATE FUNCTION $y.now() RETURNS int LANGUAGE sql AS 'SELECT 1'");
        deny($x, $y, 'default privileges in victim schema', $x, "ALTER DEFAULT PRIVILEGES FOR ROLE $yu IN SCHEMA $y GRANT SELECT ON TABLES TO $xu");
        deny($x, $y, 'comment on victim schema', $x, "COMMENT ON SCHEMA $y IS 'owned'");
        deny($x, $y, 'alter victim table', $x, "ALTER TABLE $y.tasks ADD COLUMN planted int");
        deny($x, $y, 'create trigger on victim table', $x, "CREATE TRIGGER t BEFORE INSERT ON $y.tasks FOR EACH ROW EXECUTE FUNCTION pg_catalog.suppress_redundant_updates_trigger()");
        deny($x, $y, 'create policy on victim table', $x, "CREATE POLICY p ON $y.tasks USING (true)");
        deny($x, $y, 'create index on victim table', $x, "CREATE INDEX ON $y.tasks (id)");
        deny($x, $y, 'create in cloacina schema', $x, 'CREATE TABLE cloacina.planted (x int)');
        deny($x, $y, 'shadow an API function', $x, 'CREATE FUNCTION cloacina.claim(text) RETURNS int LANGUAGE sql AS $f$ SELECT 1 $f$');
        deny($x, $y, 'replace an API function', $x, 'CREATE OR REPLACE FUNCTION cloacina.notify_channel() RETURNS text LANGUAGE sql AS $f$ SELECT 1::text $f$');
        deny($x, $y, 'create in public schema', $x, 'CREATE TABLE public.planted (x int)');
        deny($x, $y, 'alter extension', $x, 'ALTER EXTENSION cloacina UPDATE');
        deny($x, $y, 'drop extension', $x, 'DROP EXTENSION cloacina CASCADE');
        deny($x, $y, 'read server file', $x, q{SELECT pg_read_file('postgresql.conf')});
        deny($x, $y, 'copy victim table to file', $x, "COPY $y.tasks TO '/tmp/stolen'");
        deny($x, $y, 'terminate victim backend', $x,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '$yu'", '42501');
        deny($x, $y, 'cancel victim backend', $x,
            "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE usename = '$yu'", '42501');
        deny($x, $y, 'pg_authid', $x, 'SELECT rolpassword FROM pg_authid');
        deny($x, $y, 'pg_shadow', $x, 'SELECT passwd FROM pg_shadow');
        deny($x, $y, 'pg_statistic', $x, 'SELECT * FROM pg_statistic');
        deny($x, $y, 'pg_user_mapping', $x, 'SELECT * FROM pg_user_mapping');
        # Catalog views that are readable: they must not show the victim's data.
        check($x, $y, 'pg_stat_activity query text', $x,
            "SELECT count(*) > 0 FROM pg_stat_activity WHERE query LIKE '%secret_marker_$y%' OR query LIKE '%$channel{$y}%'");
        check($x, $y, 'pg_stat_activity victim state', $x,
            "SELECT count(*) > 0 FROM pg_stat_activity WHERE usename = '$yu' AND (state IS NOT NULL OR query_start IS NOT NULL OR client_addr IS NOT NULL)");
        check($x, $y, 'pg_stat_statements text', $x,
            "SELECT count(*) > 0 FROM public.pg_stat_statements WHERE (query LIKE '%secret_marker_$y%' OR query LIKE '%$channel{$y}%' OR query LIKE '%own_secrets%') AND userid <> (SELECT oid FROM pg_roles WHERE rolname = current_user)");
        check($x, $y, 'pg_roles password', $x, "SELECT rolpassword IS DISTINCT FROM '********' FROM pg_roles WHERE rolname = '$yu'");
        check($x, $y, 'pg_user password', $x, "SELECT passwd IS DISTINCT FROM '********' FROM pg_user WHERE usename = '$yu'");
        check($x, $y, 'pg_roles rolconfig secrets', $x,
            "SELECT count(*) > 0 FROM pg_roles, unnest(rolconfig) c WHERE rolname = '$yu' AND (c ILIKE '%password%' OR c LIKE '%$channel{$y}%')");
        check($x, $y, 'pg_db_role_setting secrets', $x,
            "SELECT count(*) > 0 FROM pg_db_role_setting, unnest(setconfig) c WHERE c ILIKE '%password%' OR c LIKE '%cloacina\\_%'");
        check($x, $y, 'pg_stats of victim tables', $x, "SELECT count(*) > 0 FROM pg_stats WHERE schemaname = '$y'");
        check($x, $y, 'information_schema.tables', $x, "SELECT count(*) > 0 FROM information_schema.tables WHERE table_schema = '$y'");
        check($x, $y, 'information_schema.columns', $x, "SELECT count(*) > 0 FROM information_schema.columns WHERE table_schema = '$y'");
        check($x, $y, 'information_schema.role_table_grants', $x,
            "SELECT count(*) > 0 FROM information_schema.table_privileges WHERE table_schema = '$y'");
        check($x, $y, 'has_table_privilege on victim', $x,
            "SELECT has_table_privilege('$y.tasks', 'SELECT') OR has_schema_privilege('$y', 'USAGE')");
        check($x, $y, 'victim channel in pg_listening_channels', $x,
            "SELECT count(*) > 0 FROM pg_listening_channels() c WHERE c = '$channel{$y}'");
        check($x, $y, 'victim schedule context in pg_stat_statements', $x,
            "SELECT count(*) > 0 FROM public.pg_stat_statements WHERE query LIKE '%secret_marker_${y}_schedule%' AND userid <> (SELECT oid FROM pg_roles WHERE rolname = current_user)");
    }
}

# Completeness: every function of the cloacina schema is probed, or is a pure helper.
my @harmless = qw(context_merge context_merge_agg _check_name _json_int _json_keys_allowed _json_choice
    _normalize_workflow _condition_holds _retry_delay _url_escape _cron_field _cron_parse _cron_next _preloaded
    _check_context _workflow_graph version _tenant_layout _refuse_drop_with_tenants
    _is_registered _cron_macro _dot_graph _require_layout);
my %api_names = map { $_ => 1 } qw(register_workflow execute execute_batch execution_status wait task_results
    claim heartbeat heartbeat_batch complete fail complete_batch fail_batch cancel cancel_runs pause resume notify_channel schedule unschedule
    pause_schedule resume_schedule retry unregister_workflow workflow_dot run_dot);
my %covered = map { $_ => 1 } (@harmless, @engine_functions, keys %api_names);
my @unprobed = grep { !$covered{$_} } split /\n/, $node->safe_psql('postgres',
    q{SELECT DISTINCT proname FROM pg_proc WHERE pronamespace = 'cloacina'::regnamespace ORDER BY 1});
is(join(', ', @unprobed), '', 'every function of the cloacina schema is probed or is a pure helper');

# Load the probes and run each attacker's share over its own login.
my $insert = "INSERT INTO probe.probes (attacker, victim, kind, label, path, q, refusals) VALUES\n"
  . join(",\n", map { '(' . join(', ', map { "\$PRB\$$_\$PRB\$" } @$_) . ')' } @probes) . ';';
$node->safe_psql('postgres', $insert);
my ($crossed, $total, $unexpected) = (0, 0, 0);
for my $x (@tenants) {
    my $out = as_role($user{$x}, qq{
        SELECT id, label, victim, replace(refusals, '|', ','), CASE kind WHEN 'deny' THEN probe.try(path, q) ELSE probe.check(path, q) END
          FROM probe.probes WHERE attacker = '$x' ORDER BY id});
    for my $line (split /\n/, $out) {
        my ($id, $label, $y, $refusals, $result) = split /\|/, $line, 5;
        $refusals =~ s/,/|/g;
        $total++;
        if ($result eq 'ok' || $result eq 'crossed') {
            $crossed++;
            diag("CROSSED: $x -> $y: $label");
        } elsif ($result ne 'clean' && $result !~ /^(?:$refusals): /) {
            $unexpected++;
            diag("unexpected outcome: $x -> $y: $label: $result (expected $refusals)");
        }
    }
}

# ---- SQL tasks: the attacker's SQL, run by the background worker as the attacker's role ----
for my $x (@tenants) {
    for my $y (grep { $_ ne $x } @tenants) {
        my %v = %{ $victim{$y} };
        my $yu = $user{$y};
        my %attacks = (
            select_victim     => "SELECT jsonb_build_object('n', count(*)) FROM $y.tasks",
            update_victim     => "UPDATE $y.executions SET status = 'failed'",
            engine_cancel     => "SELECT cloacina._cancel('$y', $v{run})",
            engine_reap       => "SELECT jsonb_build_object('r', cloacina._reap('$y'))",
            api_claim         => "SELECT set_config('search_path', '$y', true); SELECT jsonb_build_object('c', count(*)) FROM cloacina.claim('thief', NULL, 10)",
            set_role          => "SET ROLE $yu; SELECT jsonb_build_object('n', count(*)) FROM $y.tasks",
            reset_role        => "RESET ROLE; SELECT jsonb_build_object('n', count(*)) FROM $y.tasks",
            set_config_role   => "SELECT set_config('role', '$yu', false); SELECT jsonb_build_object('n', count(*)) FROM $y.tasks",
            session_auth      => "SET SESSION AUTHORIZATION $yu",
            pg_authid         => "SELECT jsonb_build_object('p', rolpassword) FROM pg_authid WHERE rolname = '$yu'",
            registry          => "SELECT jsonb_build_object('t', count(*)) FROM cloacina.tenant",
            read_file         => "SELECT jsonb_build_object('f', pg_read_file('postgresql.conf'))",
            copy_to_file      => "COPY $y.tasks TO '/tmp/stolen_by_sql_task'",
            create_tenant     => "SELECT * FROM cloacina.create_tenant('evil_sql_$x')",
            remove_tenant     => "SELECT cloacina.remove_tenant('$y')",
            do_block          => "DO \$d\$BEGIN EXECUTE 'DELETE FROM $y.workflows'; END\$d\$",
            alter_superuser   => "ALTER ROLE $user{$x} SUPERUSER",
            create_in_victim  => "CREATE TABLE $y.planted (x int)",
            grant_victim_role => "GRANT $yu TO $user{$x}",
            temp_trojan       => "CREATE TEMP TABLE tasks (id int)",
            terminate_victim  => "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '$yu'");
        my @names = sort keys %attacks;
        my $def = '{"name": "attack_' . $y . '", "tasks": ['
          . join(', ', map { my $s = $attacks{$_}; $s =~ s/\\/\\\\/g; $s =~ s/"/\\"/g; qq({"id": "$_", "kind": "sql", "sql": "$s"}) } @names)
          . ', {"id": "control", "kind": "sql", "sql": "SELECT jsonb_build_object(\'own_tasks\', count(*)) FROM tasks"}]}';
        my $run = as_role($user{$x}, "SELECT cloacina.register_workflow(\$D\$$def\$D\$); SELECT cloacina.execute('attack_$y');");
        $run = (split /\n/, $run)[-1];
        as_role($user{$x}, "SELECT status FROM cloacina.wait($run, '60 seconds')");
        my (%status, %error);
        for (split /\n/, as_role($user{$x}, "SELECT task, status, replace(coalesce(error, ''), E'\\n', ' ') FROM cloacina.task_results($run)")) {
            my ($t, $st, $e) = split /\|/, $_, 3;
            ($status{$t}, $error{$t}) = ($st, $e);
        }
        is($status{control}, 'completed', "SQL tasks of $x run (control task)");
        for my $name (@names) {
            $total++;
            if (($status{$name} // '') ne 'failed') {
                $crossed++;
                diag("CROSSED: $x -> $y: SQL task $name ended " . ($status{$name} // 'missing'));
            } elsif ($error{$name} !~ /permission denied|not a cloacina tenant|security-restricted operation|must be (?:superuser|owner|a member|able)|only superusers|must have admin option|within security-definer function/) {
                $unexpected++;
                diag("unexpected refusal of SQL task $x -> $y $name: $error{$name}");
            }
        }
    }
}

# ---- the SDK on the attacker's own connection string ----
for my $x (@tenants) {
    for my $y (grep { $_ ne $x } @tenants) {
        my ($out, $err) = ('', '');
        IPC::Run::run([ $probe_program, $url{$x}, $y, $victim{$y}{run}, "secret_marker_$y" ], '>', \$out, '2>', \$err)
          or diag("probe program $x -> $y exited non-zero: $err");
        my @lines = grep { /^probe / } split /\n/, $out;
        ok(@lines >= 12, "SDK probes $x -> $y ran (" . scalar(@lines) . ')');
        for (@lines) {
            my (undef, $label, $verdict, $detail) = split / /, $_, 4;
            $total++;
            if ($verdict ne 'clean') {
                $crossed++;
                diag("CROSSED: $x -> $y: $label: $detail");
            }
        }
    }
}

# ---- LISTEN on guessed channel names while the victims' tasks become ready ----
for my $x (@tenants) {
    my @others = grep { $_ ne $x } @tenants;
    my %guesses;
    for my $y (@others) {
        $guesses{$_} = $y for ($y, $user{$y}, "cloacina_$y", "cloacina_$user{$y}", "${y}_ready", "${y}_notify", "${y}.ready");
    }
    $guesses{$_} = '*' for qw(cloacina ready finished cloacina_ready cloacina_finished cloacina_notify notify);
    my ($in, $out, $err) = ('', '', '');
    my $listener = IPC::Run::start([ 'psql', '-X', '-At', '-d', $node->connstr('postgres'), '-U', $user{$x} ],
        '<', \$in, '>', \$out, '2>', \$err);
    $in .= join('', map { "LISTEN \"$_\";\n" } sort keys %guesses) . "LISTEN \"$channel{$x}\";\nSELECT 'listening';\n";
    $listener->pump until $out =~ /listening/;
    # The victims' tasks become ready and runs finish; then the attacker's own task becomes ready.
    # Notifications arrive in commit order, so once the attacker has its own, it would have the others.
    for my $y (@others) {
        as_role($user{$y}, q{SELECT cloacina.execute('secret_work')});
        my $r = as_role($user{$y}, q{SELECT cloacina.execute('secret_sql')});
        as_role($user{$y}, "SELECT status FROM cloacina.wait($r, '30 seconds')");
    }
    as_role($user{$x}, q{SELECT cloacina.execute('secret_work')});
    my $deadline = time + 30;
    while ($out !~ /Asynchronous notification "\Q$channel{$x}\E"/ && time < $deadline) {
        $in .= "SELECT 'poll';\n";
        $listener->pump_nb;
        select(undef, undef, undef, 0.05);    # pacing of the poll loop; the deadline decides
        $listener->pump_nb;
    }
    like($out, qr/Asynchronous notification "\Q$channel{$x}\E"/, "control: $x receives its own wake-ups");
    for my $g (sort keys %guesses) {
        $total++;
        if ($out =~ /Asynchronous notification "\Q$g\E"/) {
            $crossed++;
            diag("CROSSED: $x -> $guesses{$g}: a LISTEN on the guessed channel '$g' received a notification");
        }
    }
    for my $y (@others) {    # the victims' real channels never appeared to the attacker
        $total++;
        if ($out =~ /\Q$channel{$y}\E/) { $crossed++; diag("CROSSED: $x -> $y: the victim's channel showed up"); }
    }
    $in .= "\\q\n";
    $listener->finish;
}

# ---- SQL tasks share a pool of background workers: one tenant's SQL task must not leave
# settings behind that reach the next tenant's SQL task in the same worker (cloacina.sql_workers = 1
# here, so the next task surely runs in the same process). Last, because a leak can break the pool:
# the server is restarted after a crossing so that the next pair starts clean.
for my $x (@tenants) {
    for my $y (grep { $_ ne $x } @tenants) {
        for my $leak ([ 'a custom setting', "set_config('probe.leak', 'from_$x', false)" ],
                      [ 'default_transaction_read_only', "set_config('default_transaction_read_only', 'on', false)" ]) {
            my ($what, $call) = @$leak;
            as_role($user{$x}, qq{SELECT cloacina.register_workflow(\$D\${"name": "leaker", "tasks": [{"id": "l", "kind": "sql",
                "sql": "SELECT $call"}]}\$D\$)});
            my $lrun = as_role($user{$x}, q{SELECT cloacina.execute('leaker')});
            as_role($user{$x}, "SELECT status FROM cloacina.wait($lrun, '15 seconds')");
            my $vrun = as_role($user{$y}, q{SELECT cloacina.execute('secret_sql')});
            my $vstatus = as_role($user{$y}, "SELECT status || ' ' || coalesce(final_context ->> 'leak', '') FROM cloacina.wait($vrun, '5 seconds')");
            $total++;
            if ($vstatus ne 'completed ') {
                $crossed++;
                diag("CROSSED: $x -> $y: $what set by ${x}'s SQL task reached ${y}'s SQL task in the same worker (victim run: '$vstatus')");
                $node->restart;
                $node->poll_query_until('postgres', q{SELECT count(*) > 0 FROM pg_stat_activity WHERE backend_type LIKE 'cloacina sql worker%'}, 't');
            }
        }
    }
}

# ---- afterwards: nothing of any victim changed ----
for my $y (@tenants) {
    my %v = %{ $victim{$y} };
    $total++;
    my $state = $node->safe_psql('postgres', qq{
        SELECT (SELECT status || ' ' || attempt || ' ' || fence FROM $y.tasks WHERE id = $v{task})
            || ' / ' || (SELECT status FROM $y.executions WHERE id = $v{run})
            || ' / ' || (SELECT count(*) FROM $y.workflows WHERE name IN ('secret_work', 'secret_sql'))
            || ' / ' || (SELECT count(*) FROM $y.workflows WHERE name = 'evil')
            || ' / ' || (SELECT count(*) FROM $y.schedules WHERE name = 'nightly' AND cron = '0 3 * * *')
            || ' / ' || (SELECT state FROM cloacina.tenant WHERE schema_name = '$y')
            || ' / ' || (SELECT count(*) FROM pg_class WHERE relnamespace = '$y'::regnamespace AND relname = 'planted')});
    if ($state ne "running 1 $v{fence} / running / 2 / 0 / 1 / active / 0") {
        $crossed++;
        diag("CROSSED: $y changed: $state");
    }
}
is($node->safe_psql('postgres', q{SELECT count(*) FROM pg_roles WHERE rolname LIKE 'evil%' OR rolsuper AND rolname LIKE 'iso%'})
   . ' ' . $node->safe_psql('postgres', q{SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'evil%'}),
   '0 0', 'no role or schema was created or promoted by an attacker');

$_->kill_kill for values %sessions;
is($unexpected, 0, 'every refused probe was refused with an expected SQLSTATE or message');
ok($total > 1000, "at least 1000 probes ($total)");
is($crossed, 0, 'no probe crossed from one tenant to another');
diag("isolation: $total probes, $crossed crossed");
$node->stop;
done_testing();
