# Operating it, with the background worker running: a schedule firing every second whose run
# takes 3 s never has two runs at once with overlap "skip"; the server log gets a line for each
# fire, skipped slot, abandoned attempt and failed SQL task; a run's DOT picture renders with
# Graphviz; every query of docs/monitoring/postgres_exporter.yaml runs, and postgres_exporter
# serves them as metrics when it is installed.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use CloacinaNode;
use PostgreSQL::Test::Utils;
use Test::More;
use File::Temp qw(tempfile);
use HTTP::Tiny;
use IPC::Run;

my $node = cloacina_node('operations', conf => qq{
cloacina.naptime = '200ms'
cloacina.event_log_level = 'log'
});
$node->safe_psql('postgres', q{
    SELECT cloacina.create_tenant('ops', 'ops_user');
    SET search_path = ops;
    SELECT cloacina.register_workflow('{"name": "slow", "tasks": [
        {"id": "sleep", "kind": "sql", "sql": "SELECT jsonb_build_object(''slept'', pg_sleep(3) IS NULL)"}]}');
    SELECT cloacina.schedule('every_second', 'slow', '* * * * * *', 'UTC', '{}', 'skip', 'skip');
});

# Overlap "skip": runs of the schedule follow each other, none starts before the last ended.
$node->poll_query_until('postgres', q{
    SELECT count(*) >= 3 FROM ops.executions WHERE status = 'completed'}, 't')
  or die 'the every-second schedule did not complete three runs';
$node->safe_psql('postgres', q{SET search_path = ops; SELECT cloacina.pause_schedule('every_second')});
my $overlaps = $node->safe_psql('postgres', q{
    SELECT count(*) FROM ops.executions a JOIN ops.executions b ON a.id < b.id
     WHERE tstzrange(a.created_at, coalesce(a.finished_at, 'infinity')) && tstzrange(b.created_at, coalesce(b.finished_at, 'infinity'))});
is($overlaps, '0', 'overlap skip: no two runs of the schedule at once');
my $skipped_seconds = $node->safe_psql('postgres', q{
    SELECT extract(epoch FROM max(slot) - min(slot))::int + 1 - count(*) FROM ops.schedule_fires});
cmp_ok($skipped_seconds, '>=', 4, "slots were skipped while a run was unfinished ($skipped_seconds)");
is($node->safe_psql('postgres', q{SET search_path = ops; SELECT paused AND next_run_at IS NULL AND last_status IS NOT NULL FROM cloacina.schedules}),
   't', 'the schedules view shows the pause and the last run\'s outcome');

# An abandoned attempt: a handler task claimed with a short lease and never finished.
$node->safe_psql('postgres', q{
    SET search_path = ops;
    SELECT cloacina.register_workflow('{"name": "lost", "tasks": [{"id": "t"}]}');
    SELECT cloacina.execute('lost');
    SELECT count(*) FROM cloacina.claim('vanished-worker', ARRAY['lost.t'], 1, '100 milliseconds');
    SELECT cloacina.register_workflow('{"name": "broken", "tasks": [{"id": "bad", "kind": "sql", "sql": "SELECT 1/0"}]}');
    SELECT cloacina.execute('broken');
});
$node->poll_query_until('postgres', q{
    SELECT (SELECT count(*) FROM ops.tasks WHERE workflow = 'lost' AND status = 'failed' AND attempt = 1)
         + (SELECT count(*) FROM ops.executions WHERE workflow = 'broken' AND status = 'failed') = 2}, 't')
  or die 'the abandoned attempt and the failed SQL task were not handled';
my $log = slurp_file($node->logfile);
like($log, qr/LOG:  cloacina: tenant "ops": schedule 'every_second' fired slot .*: run \d+ of workflow 'slow'/,
     'a fired slot is logged');
like($log, qr/LOG:  cloacina: tenant "ops": schedule 'every_second' skipped slot .*: its run \d+ is unfinished/,
     'a skipped slot is logged');
like($log, qr/LOG:  cloacina: tenant "ops": task 't' of run \d+: attempt 1 abandoned: the lease of worker 'vanished-worker' expired/,
     'an abandoned attempt is logged');
like($log, qr/LOG:  cloacina: tenant "ops": SQL task \d+ of run \d+ failed: .*division by zero/,
     'a failed SQL task is logged');
unlike($log, qr/cloacina: tenant "ops".*\n.*CONTEXT:/, 'the log lines come without context lines');

# The picture of a run renders.
my $dot = $node->safe_psql('postgres', q{
    SET search_path = ops; SELECT cloacina.run_dot(max(id)) FROM ops.executions WHERE workflow = 'broken'});
like($dot, qr/"bad" \[label="bad\\nfailed", fillcolor=salmon, shape=cylinder\]/, 'the run picture colours the failed task');
SKIP: {
    skip 'Graphviz (dot) is not installed', 1 unless -x '/usr/bin/dot';
    my ($svg, $err);
    IPC::Run::run([ '/usr/bin/dot', '-Tsvg' ], \$dot, \$svg, \$err);
    like($svg, qr/<svg.*salmon/s, 'dot -Tsvg renders the run picture');
}

# The exporter's queries, as a member of cloacina_admin.
$node->safe_psql('postgres', q{CREATE ROLE exporter LOGIN IN ROLE cloacina_admin});
my $queries_file = $ENV{CLOACINA_EXPORTER_QUERIES}
  or BAIL_OUT('CLOACINA_EXPORTER_QUERIES is not set: it must name docs/monitoring/postgres_exporter.yaml (scripts/test exports it)');
my $queries = slurp_file($queries_file);
my %query = $queries =~ /^(\w+):\n  query: \|\n((?:    .*\n)+)/mg;
is(scalar(keys %query), 3, 'the exporter file has its three queries');
for my $name (grep { $_ ne 'cloacina_scheduler' } sort keys %query) {
    my $rows = $node->safe_psql('postgres', "SET ROLE exporter; SELECT count(*) FROM ($query{$name}) q WHERE schema_name = 'ops'");
    cmp_ok($rows, '>=', 1, "exporter query $name runs and shows the tenant");
}
is($node->safe_psql('postgres', "SET ROLE exporter; SELECT tracked_tenants >= 1 AND due_tenants >= 0 AND oldest_due_seconds >= 0 FROM ($query{cloacina_scheduler}) q"),
   't', 'exporter query cloacina_scheduler runs and counts the tenant');
SKIP: {
    my $exporter = '/usr/bin/prometheus-postgres-exporter';
    skip 'postgres_exporter is not installed', 3 unless -x $exporter;
    my $port = PostgreSQL::Test::Cluster::get_free_port();
    my $dsn = sprintf('host=%s port=%d user=exporter dbname=postgres sslmode=disable', $node->host, $node->port);
    my $h = IPC::Run::start([ $exporter, '--disable-default-metrics', '--disable-settings-metrics',
                              "--extend.query-path=$queries_file",
                              "--web.listen-address=127.0.0.1:$port" ],
                            '>', \my $out, '2>', \my $err, init => sub { $ENV{DATA_SOURCE_NAME} = $dsn });
    my $body = '';
    my $deadline = time + 30;
    while (time < $deadline) {
        my $res = HTTP::Tiny->new(timeout => 5)->get("http://127.0.0.1:$port/metrics");
        $body = $res->{content} // '';
        last if $res->{success} && $body =~ /cloacina_workflow_active_runs/;
        select(undef, undef, undef, 0.2);
    }
    $h->kill_kill;
    like($body, qr/^cloacina_tenant_ready_tasks\{.*schema_name="ops".*\} \d+/m, 'postgres_exporter serves the tenant figures');
    like($body, qr/^cloacina_workflow_completed_runs\{.*schema_name="ops".*workflow="slow".*\} [1-9]/m,
         'postgres_exporter serves the workflow figures')
      or diag("exporter stderr: $err");
    like($body, qr/^cloacina_scheduler_tracked_tenants(\{.*\})? [1-9]/m, 'postgres_exporter serves the scheduler figures');
}

$node->stop;
done_testing();
