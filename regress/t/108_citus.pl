# Citus (design §9, issue 18): on a coordinator and a worker node, a tenant is a distributed
# schema whose tables are all distributed, citus_schema_move moves it both ways, and with its
# shard on the worker node every feature works: register_workflow, execute, claim, complete (of
# a task with a dependent), heartbeat, fail with a retry, schedule, pause, resume, cancel, retry,
# wait, a run timeout, a SQL task run by the background worker, an every-second schedule that
# fires, lease expiry and takeover, the tenant role's own connection (the coordinator reaches
# the worker as that role), the background workers without errors, and the seed tutorial's demo
# (when CLOACINA_CPP_BUILD has it). Skipped when Citus is not installed in the PostgreSQL under
# test (CI cannot install it); scripts/citus-cluster starts the same setup by hand.
#
# The tenants are made by create_tenant alone (it distributes the schema with its tables) and
# seeded before they move, so that each feature is tried with the shard on the worker node.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run ();
use Time::HiRes qw(time);

my $pkglibdir = `pg_config --pkglibdir`;
my $sharedir  = `pg_config --sharedir`;
chomp($pkglibdir, $sharedir);
plan skip_all => "Citus is not installed in the PostgreSQL under test ($pkglibdir)"
  unless -f "$pkglibdir/citus.so" && -f "$sharedir/extension/citus.control";

my $password = 'citus-internode-secret';

# A node: citus preloaded first (it refuses to load after a library that set its hooks, and
# cloacina sets the utility hook), cloacina serving database postgres, logical replication for
# citus_schema_move. The Unix socket is trusted; TCP takes passwords only, the nodes'
# connections to each other included: the superuser's password is in pg_dist_authinfo.
sub citus_node {
    my ($name) = @_;
    my $node = PostgreSQL::Test::Cluster->new($name);
    $node->init(allows_streaming => 'logical');
    $node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'citus, cloacina'
cloacina.database = 'postgres'
cloacina.naptime = '200ms'
listen_addresses = '127.0.0.1'
citus.local_hostname = '127.0.0.1'
citus.enable_schema_based_sharding = on
max_prepared_transactions = 100
max_connections = 100
log_line_prefix = '%m [%p] %b '
});
    open(my $hba, '>', $node->data_dir . '/pg_hba.conf') or die $!;
    print $hba "local all all trust\nlocal replication all trust\n"
      . "host all all 127.0.0.1/32 scram-sha-256\nhost replication all 127.0.0.1/32 scram-sha-256\n";
    close $hba;
    $node->start;
    $node->safe_psql('postgres', qq{
        CREATE EXTENSION citus;
        SET citus.enable_ddl_propagation = off;
        ALTER ROLE CURRENT_USER PASSWORD '$password';
        INSERT INTO pg_dist_authinfo (nodeid, rolename, authinfo)
             VALUES (0, current_user, 'password=$password');
    });
    return $node;
}

my $coord  = citus_node('coordinator');
my $worker = citus_node('worker');
my ($cport, $wport) = ($coord->port, $worker->port);
$coord->safe_psql('postgres', qq{
    SELECT citus_set_coordinator_host('127.0.0.1', $cport);
    SELECT citus_add_node('127.0.0.1', $wport);
    SELECT citus_set_node_property('127.0.0.1', $cport, 'shouldhaveshards', true);
    CREATE EXTENSION cloacina;
});
is($worker->safe_psql('postgres', q{SELECT count(*) FROM pg_extension WHERE extname = 'cloacina'}),
    '1', 'cloacina created on the coordinator after the worker was added exists on the worker too');

# try_sql($sql): (true, output) or (false, the first error line); never dies.
sub try_sql {
    my ($sql, $node) = @_;
    my ($out, $err) = ('', '');
    my $rc = ($node // $coord)->psql('postgres', $sql, stdout => \$out, stderr => \$err, on_error_stop => 1);
    return (1, $out) if $rc == 0;
    return (0, first_error($err));
}

# The first error of psql's or the server's messages, with the first line of its context: the
# statement of cloacina's that failed.
sub first_error {
    my ($text) = @_;
    my ($error) = $text =~ /((?:ERROR|FATAL):.*)/ or return $text;
    my ($context) = $text =~ /CONTEXT:\s+(.*)/s;
    if (defined $context) {
        $context =~ s/\s+/ /g;
        $error .= ' [CONTEXT: ' . substr($context, 0, 140) . ']';
    }
    return $error;
}

# check($ok, $expectation, $error): one ok() whose failure shows the error.
sub check {
    my ($ok, $name, $error) = @_;
    ok($ok, $name) or diag("  error: " . ($error // '(none)'));
    return $ok;
}

# wait_until($sql, $seconds): polls until $sql answers 't'; false at the deadline.
sub wait_until {
    my ($sql, $seconds) = @_;
    my $deadline = time + $seconds;
    while (time < $deadline) {
        my ($ok, $out) = try_sql($sql);
        return 1 if $ok && $out eq 't';
        select(undef, undef, undef, 0.2);
    }
    return 0;
}

sub node_of {
    my ($schema) = @_;
    my ($ok, $out) = try_sql(qq{
        SELECT string_agg(DISTINCT nodeport::text, ',') FROM citus_shards
         WHERE table_name::text LIKE '$schema.%'});
    return $ok ? $out : '';
}

# citus_schema_move to the worker node; one on the worker already goes to the coordinator first,
# so that both directions are moved. (true) or (false, error).
sub move_to_worker {
    my ($schema) = @_;
    if (node_of($schema) eq $wport) {
        my ($ok, $err) = try_sql("SELECT citus_schema_move('$schema', '127.0.0.1', $cport)");
        return (0, "to the coordinator: $err") unless $ok;
    }
    my ($ok, $err) = try_sql("SELECT citus_schema_move('$schema', '127.0.0.1', $wport)");
    return $ok ? (node_of($schema) eq $wport, "its shards are on " . node_of($schema)) : (0, $err);
}

$coord->safe_psql('postgres', q{SELECT cloacina.create_tenant('probe')});
my $tenant_tables = $coord->safe_psql('postgres', q{SELECT count(*) FROM pg_tables WHERE schemaname = 'probe'});
my $distributed_tables = sub {
    my ($schema) = @_;
    return $coord->safe_psql('postgres', qq{
        SELECT count(*) FROM citus_tables WHERE table_name::text LIKE '$schema.%' AND colocation_id =
               (SELECT colocation_id FROM citus_schemas WHERE schema_name = '$schema'::regnamespace)});
};

# ---- create_tenant on Citus
is($coord->safe_psql('postgres', q{SELECT count(*) FROM citus_schemas WHERE schema_name = 'probe'::regnamespace}),
    '1', 'create_tenant makes the tenant schema a distributed schema');
check($distributed_tables->('probe') == $tenant_tables,
    "create_tenant distributes all $tenant_tables tenant tables, co-located in the schema",
    'citus_tables has ' . $distributed_tables->('probe') . " of the tenant's $tenant_tables tables");
my ($probe_moved, $probe_error) = move_to_worker('probe');
check($probe_moved, 'citus_schema_move moves a new tenant to the worker node', $probe_error);

# make_tenant(name, user, seed): a tenant made by create_tenant, then seeded with $seed.
sub make_tenant {
    my ($name, $user, $seed) = @_;
    my $args = join(', ', map { "'$_'" } grep { defined } $name, $user);
    my $out = $coord->safe_psql('postgres', "SELECT connection_string FROM cloacina.create_tenant($args)");
    $out .= "\n" . $coord->safe_psql('postgres', $seed) if $seed;
    return $out;
}

my $log_offset = -s $coord->logfile;
my $seeded = make_tenant('dist', 'dist_user', q{
    SET search_path = dist;
    SELECT count(cloacina.register_workflow(d::jsonb)) FROM unnest(ARRAY[
        '{"name": "chain", "tasks": [{"id": "a"}, {"id": "b", "dependencies": ["a"]}]}',
        '{"name": "flaky", "tasks": [{"id": "f", "retry": {"attempts": 3, "delay_ms": 0}}]}',
        '{"name": "sqlwf", "tasks": [{"id": "q", "kind": "sql",
          "sql": "INSERT INTO sql_task_log VALUES ($2, 42); SELECT jsonb_build_object(''n'', n) FROM sql_task_log WHERE run = $2"}]}',
        '{"name": "lost", "tasks": [{"id": "t", "retry": {"attempts": 2, "delay_ms": 0}}]}',
        '{"name": "tick", "tasks": [{"id": "noop"}]}']) d;
    SELECT cloacina.execute('chain') FROM generate_series(1, 3);
    SELECT 'paused', cloacina.execute('tick');
    SELECT 'cancelled', cloacina.execute('tick');
    SELECT cloacina.execute('flaky');
    SELECT cloacina.execute('lost');
    SELECT 'chain', task_id, fence, execution_id FROM cloacina.claim('seed', ARRAY['chain.a'], 2, '1 hour');
    SELECT 'flaky', task_id, fence, execution_id FROM cloacina.claim('seed', ARRAY['flaky.f'], 1, '1 hour');
    -- a table of the tenant's own, which its SQL task writes (as the tenant role)
    CREATE TABLE sql_task_log (run bigint PRIMARY KEY, n int);
    GRANT SELECT, INSERT ON sql_task_log TO dist_user;
    SELECT cloacina.suspend_tenant('dist');  -- the SQL run and the schedule wait for the move
    SELECT 'sqlrun', cloacina.execute('sqlwf');
    SELECT cloacina.schedule('every_second', 'tick', '* * * * * *');
});
my @claimed = map { [ split /\|/ ] } grep { /^chain\|/ } split /\n/, $seeded;
my ($flaky) = map { [ split /\|/ ] } grep { /^flaky\|/ } split /\n/, $seeded;
my ($sql_run) = $seeded =~ /^sqlrun\|(\d+)$/m;
my ($to_pause) = $seeded =~ /^paused\|(\d+)$/m;
my ($to_cancel) = $seeded =~ /^cancelled\|(\d+)$/m;
die "seeding failed:\n$seeded" unless @claimed == 2 && $flaky && $sql_run && $to_pause && $to_cancel;

is($distributed_tables->('dist'), $tenant_tables + 1,
    'the tenant used below has all its tables distributed, sql_task_log with them');
my ($moved, $move_error) = move_to_worker('dist');
check($moved, 'citus_schema_move moves the seeded tenant to the coordinator and back to the worker node', $move_error);

# ---- With the shard on the worker node
my ($ok, $out);
($ok, $out) = try_sql(q{SELECT cloacina.resume_tenant('dist')});
check($ok, 'resume_tenant works', $out);
{
    ($ok, $out) = try_sql(q{SET search_path = dist;
        SELECT cloacina.register_workflow('{"name": "later", "tasks": [{"id": "x"}]}')});
    check($ok, 'register_workflow works with the shard on the worker', $out);

    ($ok, $out) = try_sql(q{SET search_path = dist; SELECT cloacina.execute('chain')});
    check($ok && $out =~ /^\d+$/, 'execute starts a run', $out);

    ($ok, $out) = try_sql(q{SET search_path = dist;
        SELECT count(*) FROM cloacina.claim('w1', ARRAY['chain.a'], 1, '1 hour')});
    check($ok && $out eq '1', 'claim takes a ready task', $ok ? "claimed $out" : $out);

    my ($task, $fence, $run) = @{ $claimed[0] }[ 1 .. 3 ];
    ($ok, $out) = try_sql(qq{SET search_path = dist; SELECT cloacina.complete($task, $fence, '{"a": 1}')});
    check($ok && $out eq 't', 'complete of a task with a dependent is accepted', $out);
    ($ok, $out) = try_sql(qq{SELECT status FROM dist.tasks WHERE execution_id = $run AND task = 'b'});
    check($ok && $out eq 'ready', 'the completion makes its dependent ready', $ok ? "its dependent is $out" : $out);

    ($task, $fence) = @{ $claimed[1] }[ 1 .. 2 ];
    ($ok, $out) = try_sql(qq{SET search_path = dist; SELECT cloacina.heartbeat($task, $fence)});
    check($ok && $out eq 'ok', 'heartbeat extends a lease', $out);

    ($task, $fence) = @{$flaky}[ 1 .. 2 ];
    ($ok, $out) = try_sql(qq{SET search_path = dist; SELECT cloacina.fail($task, $fence, 'boom', true)});
    check($ok && $out eq 't', 'fail with attempts left is accepted', $out);
    ($ok, $out) = try_sql(qq{SELECT status || ' ' || attempt FROM dist.tasks WHERE id = $task});
    check($ok && $out eq 'ready 1', 'the failed attempt goes back to ready for a retry', $ok ? "the task is $out" : $out);

    ($ok, $out) = try_sql(q{SET search_path = dist; SELECT cloacina.schedule('another', 'tick', '0 * * * *')});
    check($ok, 'schedule creates a schedule', $out);

    ($ok, $out) = try_sql(qq{SET search_path = dist; SELECT cloacina.pause($to_pause)});
    check($ok && $out eq 't', 'pause holds a run', $out);
    ($ok, $out) = try_sql(qq{SET search_path = dist; SELECT cloacina.resume($to_pause)});
    check($ok && $out eq 't', 'resume releases it', $out);
    ($ok, $out) = try_sql(qq{SET search_path = dist; SELECT cloacina.cancel($to_cancel)});
    check($ok && $out eq 't', 'cancel ends a run', $out);
    ($ok, $out) = try_sql(qq{SET search_path = dist; SELECT cloacina.retry($to_cancel)});
    check($ok && $out eq '1', 'retry starts the cancelled run again', $out);
    # (two statements: a cloacina function in a query over tenant tables is pushed to the worker)
    ($ok, $out) = try_sql(qq{SET search_path = dist; SELECT status FROM cloacina.wait($to_pause, '100 milliseconds')});
    my $status = (try_sql(qq{SELECT status FROM dist.executions WHERE id = $to_pause}))[1];
    check($ok && $out eq $status, "wait answers with the run's status", "wait: $out, the run: $status");
    ($ok, $out) = try_sql(q{SET search_path = dist;
        SELECT cloacina.execute('tick', '{}', '{"timeout_ms": 1000}')});
    my $timed = $ok && $out =~ /^\d+$/ ? $out : undef;
    check($timed && wait_until(qq{SELECT status = 'failed' AND error LIKE 'run timed out%' FROM dist.executions WHERE id = $timed}, 20),
        'a run timeout ends the run',
        $timed ? 'the run is ' . (try_sql("SELECT status FROM dist.executions WHERE id = $timed"))[1] : "not reached: execute failed: $out");

    check(wait_until(qq{SELECT status = 'completed' FROM dist.executions WHERE id = $sql_run}, 30),
        'the background worker runs a SQL task (as the tenant role) to completion',
        (try_sql(qq{SELECT status || ' after ' || attempt || ' attempts: ' || coalesce(error, '')
                      FROM dist.tasks WHERE execution_id = $sql_run}))[1]);
    ($ok, $out) = try_sql(qq{SELECT (SELECT count(*) FROM dist.sql_task_log WHERE run = $sql_run)
                                 || ' row, output ' || (SELECT output::text FROM dist.tasks WHERE execution_id = $sql_run)});
    check($ok && $out eq '1 row, output {"n": 42}', "the SQL task's write and its completion commit together", $out);

    check(wait_until(q{SELECT count(*) >= 2 FROM dist.schedule_fires}, 20),
        'an every-second schedule fires', 'schedule_fires: ' . (try_sql(q{SELECT count(*) FROM dist.schedule_fires}))[1]);

    ($ok, $out) = try_sql(q{SET search_path = dist;
        SELECT task_id FROM cloacina.claim('vanished', ARRAY['lost.t'], 1, '1 second')});
    my $lost = $ok && $out =~ /^\d+$/ ? $out : undef;
    check($lost && wait_until(qq{SELECT status = 'ready' AND attempt = 1 FROM dist.tasks WHERE id = $lost}, 20),
        'an expired lease is taken back by the background worker',
        $lost ? 'the task is ' . (try_sql("SELECT status || ' ' || attempt FROM dist.tasks WHERE id = $lost"))[1]
              : "not reached: the claim failed: $out");
    ($ok, $out) = $lost
      ? try_sql(q{SET search_path = dist; SELECT attempt FROM cloacina.claim('w2', ARRAY['lost.t'], 1)})
      : (0, 'not reached');
    check($ok && $out eq '2', 'another worker takes the task over (its second attempt)', $ok ? "claimed attempt '$out'" : $out);

    # The tenant's own login: it reaches its tables on the worker node through the coordinator
    # (which connects to the worker as the tenant's role).
    my $conn = make_tenant('own', 'own_user');
    my ($own_moved, $own_error) = move_to_worker('own');
    ($ok, $out) = $own_moved
      ? do {
            my ($o, $e) = ('', '');
            my $rc = IPC::Run::run([ 'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-d', $conn, '-c',
                    q{SELECT count(*) FROM workflows} ], '>', \$o, '2>', \$e);
            $rc ? (1, $o) : (0, first_error($e));
        }
      : (0, "not reached: the move failed: $own_error");
    check($ok, "a tenant role's own connection reads its tables on the worker node", $out);

    # Served from the node that holds it: the tenant's login connects to the worker node, where
    # its statements run without a round trip through the coordinator (the registry is on every
    # node). What it leaves to the background worker (a lease that expires, a SQL task) still
    # reaches the coordinator's, which serves every tenant: the worker node relays it.
    ($ok, $out) = try_sql(q{SELECT cloacina._is_registered('own')}, $worker);
    check($ok && $out eq 't', 'the worker node knows the tenants (the registry is a reference table)', $out);
    my $on_node = $conn =~ s/port=\d+/port=$wport/r =~ s/:$cport\b/:$wport/r;
    # The operator's step for a tenant served by a worker node (docs/operations.md, "Citus"): its
    # role's password in that node's pg_dist_authinfo too (create_tenant writes the coordinator's).
    my ($own_password) = $conn =~ m{^postgres(?:ql)?://[^:/]+:([^@]+)@} or die "no password in $conn";
    $own_password =~ s/%([0-9A-Fa-f]{2})/chr(hex($1))/ge;
    die "unexpected characters in the generated password" if $own_password =~ /['\\]/;
    $worker->safe_psql('postgres', qq{INSERT INTO pg_dist_authinfo (nodeid, rolename, authinfo)
                                      VALUES (0, 'own_user', 'password=$own_password')});
    my $as_tenant_on_node = sub {
        my ($o, $e) = ('', '');
        my $rc = IPC::Run::run([ 'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-d', $on_node, '-c', $_[0] ],
            '>', \$o, '2>', \$e);
        chomp $o;
        return $rc ? (1, $o) : (0, first_error($e));
    };
    ($ok, $out) = $as_tenant_on_node->(q{
        SELECT count(cloacina.register_workflow(d::jsonb)) FROM unnest(ARRAY[
            '{"name": "here", "tasks": [{"id": "t", "retry": {"attempts": 2, "delay_ms": 0}}]}',
            '{"name": "heresql", "tasks": [{"id": "q", "kind": "sql", "sql": "SELECT jsonb_build_object(''n'', 7)"}]}']) d;
        SELECT cloacina.execute('here');
        SELECT task_id FROM cloacina.claim('gone', ARRAY['here.t'], 1, '1 second');
        SELECT cloacina.execute('heresql');
    });
    my (undef, $here_run, $here_task, $heresql_run) = $ok ? split(/\n/, $out) : ();
    check($ok && $here_task, "a tenant role's connection to the worker node registers, executes and claims",
        $out);
    check($here_task && wait_until(qq{SELECT status = 'ready' AND attempt = 1 FROM own.tasks WHERE id = $here_task}, 20),
        "a lease taken on the worker node expires: the coordinator's background worker takes the task back",
        $here_task ? 'the task is ' . (try_sql("SELECT status || ' ' || attempt FROM own.tasks WHERE id = $here_task"))[1]
                   : 'not reached');
    ($ok, $out) = $here_task
      ? $as_tenant_on_node->(q{
            SELECT cloacina.complete(task_id, fence, '{"done": true}') FROM cloacina.claim('back', ARRAY['here.t'], 1)})
      : (0, 'not reached');
    check($ok && $out eq 't' && wait_until(qq{SELECT status = 'completed' FROM own.executions WHERE id = $here_run}, 5),
        'another claim on the worker node takes the task over and completes the run',
        "complete: $out; the run: " . (try_sql("SELECT status FROM own.executions WHERE id = $here_run"))[1]);
    check($heresql_run && wait_until(qq{SELECT status = 'completed' FROM own.executions WHERE id = $heresql_run}, 30),
        'a SQL task of a run started on the worker node is run by the background worker',
        $heresql_run ? 'the run is ' . (try_sql("SELECT status FROM own.executions WHERE id = $heresql_run"))[1]
                     : 'not reached');
    check(slurp_file($worker->logfile) =~ /cloacina scheduler relays to the Citus coordinator/,
        "the worker node's background worker relays to the coordinator's", 'no such line in its log');

    # Errors of the background workers since the tenant was distributed, one of each message.
    my @log = (split(/\n/, substr(slurp_file($coord->logfile), $log_offset)),
               split(/\n/, slurp_file($worker->logfile)));
    my (%seen, @background);
    for my $i (0 .. $#log) {
        next unless $log[$i] =~ /\[(\d+)\] (cloacina (?:scheduler|sql worker)) (?:ERROR|WARNING):\s+(.*)/;
        my ($pid, $who, $message) = ($1, $2, $3);
        next if $seen{$message}++;
        my ($context) = map { /CONTEXT:\s+(.*)/ } grep { /\[$pid\] .*CONTEXT:/ } @log[ $i + 1 .. ($i + 6 < $#log ? $i + 6 : $#log) ];
        push @background, "$who: $message" . (defined $context ? " [CONTEXT: " . substr($context, 0, 140) . ']' : '');
    }
    check(!@background, 'the background workers serve the distributed tenant without errors',
        join("\n  ", scalar(@background) . ' distinct errors in the nodes\' logs:', @background));
}

# ---- citus_schema_move under a claim load, both ways: 4 clients claim and complete one task per
# statement (a statement whose claim comes back empty fails: division by zero) while the tenant
# moves to the coordinator and back; two are connected to the coordinator and two to the worker
# node (served by the node that holds the tenant, then a hop away from it, then by it again).
# No claim may fail or come back empty while work is ready, no task may complete twice, none may
# be lost.
SKIP: {
    make_tenant('mover');
    my $runs = 30000;  # more than the clients complete meanwhile: work stays ready
    $coord->safe_psql('postgres', qq{SET search_path = mover;
        SELECT cloacina.register_workflow('{"name": "one", "tasks": [{"id": "t"}]}');
        SELECT count(*) FROM cloacina.execute_batch('one', array_fill('{}'::jsonb, ARRAY[$runs]))});
    my ($to_worker, $error) = move_to_worker('mover');
    skip "the tenant could not be placed on the worker node: $error", 4 unless $to_worker;
    # claim_complete_<who>.sql: the clients of the coordinator claim as 'mover', the worker
    # node's as 'mover_on_node'
    my %script;
    for my $who ('mover', 'mover_on_node') {
        $script{$who} = $coord->basedir . "/claim_complete_$who.sql";
        open(my $fh, '>', $script{$who}) or die $!;
        print $fh "SELECT 1 / count(*) FILTER (WHERE cloacina.complete(c.task_id, c.fence, '{}'))::int\n"
          . "  FROM cloacina.claim('$who', NULL, 1, '1 hour') c;\n";
        close $fh;
    }
    my ($load_out, $load_err, $node_load_err) = ('', '', '');
    my @loads = map {
        my ($port, $who, $err) = @$_;
        IPC::Run::start(
            [ 'env', 'PGOPTIONS=-c search_path=mover', 'pgbench', '-n', '-c', '2', '-T', '300', '-f', $script{$who},
              '-h', $coord->host, '-p', $port, 'postgres' ],
            '>', \$load_out, '2>', $err);
    } ([ $cport, 'mover', \$load_err ], [ $wport, 'mover_on_node', \$node_load_err ]);
    my $completed = sub { (try_sql(q{SELECT count(*) FROM mover.tasks WHERE status = 'completed'}))[1] };
    my @moves;
    for my $to ([ 'coordinator', $cport ], [ 'worker', $wport ]) {
        my $before = $completed->();
        wait_until(qq{SELECT count(*) >= $before + 200 FROM mover.tasks WHERE status = 'completed'}, 60);
        my $t0 = time;
        my ($ok, $err) = try_sql("SELECT citus_schema_move('mover', '127.0.0.1', $to->[1])");
        push @moves, $ok && node_of('mover') eq $to->[1]
          ? sprintf('to the %s in %d s', $to->[0], time - $t0) : "to the $to->[0] failed: $err";
    }
    my $after = $completed->();
    my $still_loaded = wait_until(qq{SELECT count(*) >= $after + 200 FROM mover.tasks WHERE status = 'completed'}, 60);
    $_->kill_kill for @loads;  # pgbench -T ends on its own only after 300 s
    note('moves: ' . join('; ', @moves));
    check(!grep({ /failed/ } @moves) && $still_loaded, 'citus_schema_move moves a tenant both ways under a 4-client claim load',
        join('; ', @moves, $still_loaded ? () : 'the clients stopped completing tasks'));
    my @errors = ((map { "coordinator: $_" } grep { /ERROR|error|aborted/ } split /\n/, $load_err),
                  (map { "worker node: $_" } grep { /ERROR|error|aborted/ } split /\n/, $node_load_err));
    my $by_node = (try_sql(q{SELECT count(*) FROM mover.tasks WHERE worker = 'mover_on_node' AND status = 'completed'}))[1];
    push @errors, "the worker node's clients completed no task" unless $by_node;
    note("tasks completed during the moves by the worker node's clients: $by_node, in all: "
      . $completed->());
    check(!@errors, 'no claim fails or comes back empty while the tenant moves',
        scalar(@errors) . ' errors: ' . join(' / ', @errors[ 0 .. ($#errors < 2 ? $#errors : 2) ]));
    my $twice = (try_sql(q{SELECT count(*) FROM (SELECT 1 FROM mover.execution_events
                             WHERE to_status = 'completed' AND task IS NOT NULL
                             GROUP BY execution_id, task HAVING count(*) > 1) x}))[1];
    check($twice eq '0', 'no task completed twice', "$twice tasks completed more than once");
    my $accounted = (try_sql(q{SELECT count(*) FILTER (WHERE status = 'running') || ' running, '
                                  || count(*) FILTER (WHERE status NOT IN ('ready', 'completed')) || ' else, '
                                  || count(*) || ' tasks' FROM mover.tasks}))[1];
    check($accounted eq "0 running, 0 else, $runs tasks", 'no task lost: every task is ready or completed', $accounted);
}

# ---- The seed tutorial's demo, with its three schema tenants' shards on the worker node (and
# the tenant it creates itself placed there: the coordinator takes no new shards meanwhile).
SKIP: {
    my $demo = ($ENV{CLOACINA_CPP_BUILD} // '') . '/examples/tutorial_06';
    skip 'the demo is not built (CLOACINA_CPP_BUILD/examples/tutorial_06)', 1 unless -x $demo;
    my @moves;
    for my $t (qw(acme_corp globex_inc initech)) {
        make_tenant($t);
        my ($m, $e) = move_to_worker($t);
        push @moves, "$t: $e" unless $m;
    }
    $coord->safe_psql('postgres', "SELECT citus_set_node_property('127.0.0.1', $cport, 'shouldhaveshards', false)");
    my $url = sprintf('postgresql://%s@/postgres?host=%s&port=%d',
        $coord->safe_psql('postgres', 'SELECT current_user'), $coord->host, $cport);
    my $log = '';
    local $ENV{DATABASE_URL} = $url;
    my $done = eval { IPC::Run::run([$demo], '>&', \$log, IPC::Run::timeout(180)) };
    my @lines = grep { /error|fail|warn/i } split /\n/, $log;
    diag('demo: ' . join(' / ', grep { /records|completed successfully/i } split /\n/, $log));
    check(!@moves && $done, 'the seed demo runs to the end with its tenants on the worker node',
        join("\n  ", @moves, ($@ ? "demo: $@" : ()), @lines[ 0 .. ($#lines < 5 ? $#lines : 5) ]));
}

$worker->stop;
$coord->stop;
done_testing();
