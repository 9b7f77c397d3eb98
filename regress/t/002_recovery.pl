# Nothing accepted is lost across failures:
#  - a task claimed by a worker that vanishes (1-second lease) is taken over as attempt 2 within
#    a few seconds, and the vanished worker's late completion is refused by the fence;
#  - kill -9 of a backend that holds a lease (the postmaster then resets every process,
#    the background workers included): the task is taken over and finishes;
#  - pg_ctl restart -m immediate while 100 workflows run: every run ends, each SQL task's work
#    was applied exactly once, and the handler tasks whose workers died are taken over.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use CloacinaNode;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $node = cloacina_node('recovery', conf => qq{
cloacina.sql_workers = 2
restart_after_crash = on
});
$node->safe_psql('postgres', q{
    SELECT cloacina.create_tenant('rec', 'rec_user');
    SET search_path = rec;
    CREATE TABLE rec.effects (run bigint, step text);
    GRANT INSERT, SELECT ON rec.effects TO rec_user;
    SELECT cloacina.register_workflow('{"name": "handled", "tasks": [{"id": "work", "retry": {"attempts": 3, "delay_ms": 0}}]}');
    -- An attempt that the restart interrupts counts (it is recorded before its SQL runs, so that
    -- a task that crashes its worker cannot retry for ever): hence two attempts each.
    SELECT cloacina.register_workflow($${"name": "sqlchain", "tasks": [
        {"id": "s1", "kind": "sql", "retry": {"attempts": 2, "delay_ms": 0}, "sql": "INSERT INTO effects SELECT $2, 's1' FROM pg_sleep(0.01)"},
        {"id": "s2", "kind": "sql", "retry": {"attempts": 2, "delay_ms": 0}, "dependencies": ["s1"], "sql": "INSERT INTO effects SELECT $2, 's2' FROM pg_sleep(0.01)"},
        {"id": "s3", "kind": "sql", "retry": {"attempts": 2, "delay_ms": 0}, "dependencies": ["s2"], "sql": "INSERT INTO effects SELECT $2, 's3' FROM pg_sleep(0.01)"}]}$$);
});

sub tenant_sql { my ($sql) = @_; return $node->safe_psql('postgres', "SET search_path = rec; $sql"); }
# A claim in tenant rec from a fresh session, for poll_query_until (which runs one statement).
$node->safe_psql('postgres', q{
    CREATE FUNCTION public.claim_in_rec(worker text) RETURNS SETOF int LANGUAGE sql SET search_path = rec
    AS $$ SELECT attempt FROM cloacina.claim(worker, NULL, 1, '30 seconds') $$});

# A worker that claims with a 1-second lease and vanishes.
my $run = tenant_sql(q{SELECT cloacina.execute('handled')});
my ($task, $fence) = split /\|/, tenant_sql(q{SELECT task_id, fence FROM cloacina.claim('vanishing', NULL, 1, '1 second')});
my $start = time;
$node->poll_query_until('postgres', qq{
    SELECT attempt = 2 FROM public.claim_in_rec('successor') AS attempt}, 't')
  or die 'the task was never taken over';
my $takeover = time - $start;
ok($takeover < 5, sprintf('a vanished worker\'s task is taken over as attempt 2 after %.1f s', $takeover));
is(tenant_sql("SELECT cloacina.complete($task, $fence, '{\"late\": true}')"), 'f',
    'the vanished worker\'s late completion is refused by the fence');
my ($task2, $fence2) = split /\|/, tenant_sql(q{SELECT id, fence FROM rec.tasks WHERE status = 'running'});
is(tenant_sql("SELECT cloacina.complete($task2, $fence2, '{\"by\": \"successor\"}')"), 't', 'the successor completes');
is(tenant_sql("SELECT status || ' ' || (final_context ->> 'by') FROM cloacina.wait($run, '10 seconds')"),
    'completed successor', 'the run completes with the successor\'s output');

# kill -9 of a backend that holds a lease.
$run = tenant_sql(q{SELECT cloacina.execute('handled')});
my ($in, $out, $err) = ('', '', '');
my $holder = IPC::Run::start(
    [ 'psql', '-X', '-At', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres') ],
    '<', \$in, '>', \$out, '2>', \$err);
$in .= "SET search_path = rec;\nSELECT task_id FROM cloacina.claim('doomed', NULL, 1, '2 seconds');\nSELECT pg_backend_pid();\n";
$holder->pump until $out =~ /^\d+\n\d+\n/m;
my ($claimed, $pid) = $out =~ /^(\d+)\n(\d+)\n/m;
$in .= "SELECT pg_sleep(600);\n";
$holder->pump_nb;
kill 'KILL', $pid;
$holder->finish;
$node->poll_query_until('postgres', q{SELECT count(*) > 0 FROM pg_stat_activity WHERE backend_type = 'cloacina scheduler'}, 't')
  or die 'the scheduler did not come back after the crash';
$node->poll_query_until('postgres', qq{
    SELECT count(*) = 1 FROM public.claim_in_rec('after-crash') AS attempt WHERE attempt = 2}, 't')
  or die 'the task of the killed backend was never taken over';
($task2, $fence2) = split /\|/, tenant_sql(q{SELECT id, fence FROM rec.tasks WHERE status = 'running'});
tenant_sql("SELECT cloacina.complete($task2, $fence2, '{}')");
is(tenant_sql("SELECT status FROM cloacina.wait($run, '10 seconds')"), 'completed',
    'after kill -9 of the lease holder the task is taken over and the run completes');

# 100 workflows in flight through an immediate restart: 80 SQL chains (run by the background
# worker) and 20 handler runs, half of them claimed by a worker that dies with the server.
tenant_sql(q{SELECT count(*) FROM cloacina.execute_batch('sqlchain', array_fill('{}'::jsonb, ARRAY[80]))});
tenant_sql(q{SELECT count(*) FROM cloacina.execute_batch('handled', array_fill('{}'::jsonb, ARRAY[20]))});
tenant_sql(q{SELECT count(*) FROM cloacina.claim('dies-with-server', NULL, 10, '2 seconds')});
$node->poll_query_until('postgres', q{SELECT count(*) > 0 FROM rec.effects}, 't');
$node->restart(mode => 'immediate');
my $in_flight = tenant_sql(q{SELECT count(*) FROM rec.executions WHERE status = 'running'});
ok($in_flight > 0, "the restart hit $in_flight unfinished runs");

# A worker after the restart: claims whatever is claimable and completes it, until all ended.
my $deadline = time + 120;
while (time < $deadline) {
    tenant_sql(q{SELECT count(cloacina.complete(task_id, fence, '{}')) FROM cloacina.claim('after-restart', NULL, 50)});
    last if tenant_sql(q{SELECT count(*) FROM rec.executions WHERE status NOT IN ('completed', 'failed', 'cancelled')}) == 0;
    select(undef, undef, undef, 0.2);
}
is(tenant_sql(q{SELECT count(*) FROM rec.executions WHERE status NOT IN ('completed', 'failed', 'cancelled')}), '0',
    'every run reached a terminal state');
is(tenant_sql(q{SELECT count(*) FROM rec.executions WHERE workflow = 'sqlchain' AND status = 'completed'}), '80',
    'all 80 SQL chains completed');
is(tenant_sql(q{SELECT count(*) FROM rec.executions WHERE workflow = 'handled' AND status = 'completed'}), '22',
    'all handler runs completed');
is(tenant_sql(q{SELECT count(*) || ' ' || count(DISTINCT (run, step)) FROM rec.effects}), '240 240',
    'each SQL task\'s work was applied exactly once (240 effects, no duplicates)');
is(tenant_sql(q{SELECT count(*) FROM (SELECT execution_id, task, attempt FROM rec.execution_events
                 WHERE to_status = 'completed' AND task IS NOT NULL GROUP BY 1, 2, 3 HAVING count(*) > 1) d}), '0',
    'no (task, attempt) completed twice');

$node->stop;
done_testing();
