# Fair sharing of the SQL-task pool: tenant A floods it with 2,000 SQL tasks, then tenants B
# and C enqueue 20 each. B and C must not queue behind A's backlog: they finish long before A.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use CloacinaNode;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = cloacina_node('fair', conf => qq{
cloacina.sql_workers = 2
});
for my $t (qw(flood_a trickle_b trickle_c)) {
    $node->safe_psql('postgres', qq{
        SELECT cloacina.create_tenant('$t', '${t}_user');
        SET search_path = $t;
        SELECT cloacina.register_workflow('{"name": "job", "tasks": [{"id": "work", "kind": "sql", "sql": "SELECT pg_sleep(0.002)"}]}');
    });
}
$node->safe_psql('postgres', q{SET search_path = flood_a;
    SELECT count(*) FROM cloacina.execute_batch('job', array_fill('{}'::jsonb, ARRAY[2000]))});
for my $t (qw(trickle_b trickle_c)) {
    $node->safe_psql('postgres', qq{SET search_path = $t;
        SELECT count(*) FROM cloacina.execute_batch('job', array_fill('{}'::jsonb, ARRAY[20]))});
}
$node->poll_query_until('postgres', q{
    SELECT (SELECT count(*) FROM flood_a.executions WHERE status = 'completed') = 2000
       AND (SELECT count(*) FROM trickle_b.executions WHERE status = 'completed') = 20
       AND (SELECT count(*) FROM trickle_c.executions WHERE status = 'completed') = 20}, 't')
  or die 'the runs did not all complete';

# Wait of a run = finished_at - created_at, in seconds: percentiles per tenant.
my %stats;
for my $t (qw(flood_a trickle_b trickle_c)) {
    my ($p50, $p95, $max) = split /\|/, $node->safe_psql('postgres', qq{
        SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY w)::numeric, 3),
               round(percentile_cont(0.95) WITHIN GROUP (ORDER BY w)::numeric, 3),
               round(max(w)::numeric, 3)
          FROM (SELECT extract(epoch FROM finished_at - created_at) AS w FROM $t.executions) x});
    $stats{$t} = $max;
    diag("$t: wait p50 $p50 s, p95 $p95 s, max $max s");
}
ok($stats{trickle_b} < 0.25 * $stats{flood_a}, "B finished within a quarter of A's drain time ($stats{trickle_b} s vs $stats{flood_a} s)");
ok($stats{trickle_c} < 0.25 * $stats{flood_a}, "C finished within a quarter of A's drain time ($stats{trickle_c} s vs $stats{flood_a} s)");

# max_running caps a tenant: with max_running 1, A never has two SQL tasks at once.
$node->safe_psql('postgres', q{
    SELECT cloacina.set_tenant_limits('flood_a', 1);
    SET search_path = flood_a;
    SELECT cloacina.register_workflow('{"name": "overlap", "tasks": [{"id": "work", "kind": "sql",
        "sql": "INSERT INTO flood_a.spans SELECT clock_timestamp(), clock_timestamp() FROM pg_sleep(0.05)"}]}');
    CREATE TABLE flood_a.spans (started timestamptz, finished timestamptz);
    ALTER TABLE flood_a.spans OWNER TO flood_a_user;
});
$node->safe_psql('postgres', q{SET search_path = flood_a;
    SELECT count(*) FROM cloacina.execute_batch('overlap', array_fill('{}'::jsonb, ARRAY[10]))});
$node->poll_query_until('postgres', q{SELECT count(*) = 10 FROM flood_a.spans}, 't') or die 'overlap runs did not finish';
is($node->safe_psql('postgres', q{
    SELECT count(*) FROM flood_a.executions a JOIN flood_a.executions b
        ON a.id < b.id AND a.workflow = 'overlap' AND b.workflow = 'overlap'
     JOIN flood_a.tasks ta ON ta.execution_id = a.id JOIN flood_a.tasks tb ON tb.execution_id = b.id
     WHERE ta.started_at < tb.finished_at AND tb.started_at < ta.finished_at}), '0',
    'with max_running = 1 no two SQL tasks of the tenant ran at the same time');

$node->stop;
done_testing();
