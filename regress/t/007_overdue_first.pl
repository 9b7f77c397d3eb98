# Every tenant has its turn when the scheduler cannot keep up: 1,000 tenants with a schedule
# every second (CLOACINA_DUE_TENANTS) are more than it ticks per second, and it takes due
# tenants in batches of 256. It takes the most overdue first. In the due table's order it took
# the same tenants every time and the others never fired: here 585 of 1,000 had not fired 90 s
# on (and with 3,000 tenants on a schedule every minute, some never fired in ten minutes).
# Passes when every tenant's schedule fires at least once in the 90 s from 10 s after the last
# was made (with the order fixed: all within 23 s).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use CloacinaNode;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes ();

my $tenants = $ENV{CLOACINA_DUE_TENANTS} || 1000;
my $node = cloacina_node('overdue', conf => qq{
max_locks_per_transaction = 256
});
for my $batch (0 .. $tenants / 50 - 1) {
    # run_all: a tenant ticked late fires its missed slots, so one row tells it was ticked
    $node->safe_psql('postgres', qq{
        SELECT count(*) FROM generate_series($batch * 50 + 1, $batch * 50 + 50) i,
               LATERAL cloacina.create_tenant('due_' || i);
        DO \$\$
        BEGIN
            FOR i IN $batch * 50 + 1 .. $batch * 50 + 50 LOOP
                PERFORM set_config('search_path', 'due_' || i, true);
                PERFORM cloacina.register_workflow('{"name": "noop", "tasks": [{"id": "a"}]}');
                PERFORM cloacina.schedule('tick', 'noop', '* * * * * *', catchup => 'run_all');
            END LOOP;
        END \$\$});
}
# Measure from 10 s on, when the schedules created first have long been due again: a fire in
# the window is a tick in the scheduler's steady state, not one right after the tenant was made.
my $window_start = $node->safe_psql('postgres', q{SELECT now() + interval '10 seconds'});
my $started = Time::HiRes::time();

# The tenants not ticked in the window yet (their fires since its start, one count per tenant).
my $unfired_sql = 'SELECT count(*) FILTER (WHERE n = 0) FROM ('
  . join(' UNION ALL ',
         map { "SELECT count(*) AS n FROM due_$_.schedule_fires WHERE fired_at >= '$window_start'" } 1 .. $tenants)
  . ') x';
my $unfired = $tenants;
while ($unfired > 0 && Time::HiRes::time() - $started < 100) {
    $unfired = $node->safe_psql('postgres', $unfired_sql);
    Time::HiRes::sleep(0.5) if $unfired > 0;    # poll interval, not a correctness wait
}
diag(sprintf('%d of %d tenants fired within %.0f s of the window\'s start', $tenants - $unfired, $tenants,
             Time::HiRes::time() - $started - 10));
is($unfired, 0, "every one of $tenants tenants fired within 90 s");

# cloacina.scheduler_status() shows the backlog: every tenant tracked, many due, the most
# overdue waiting for more than a second (each is due again every second).
my ($tracked, $due, $oldest) = split /\|/, $node->safe_psql('postgres',
    'SELECT tracked_tenants, due_tenants, oldest_due_seconds FROM cloacina.scheduler_status()');
diag("scheduler_status: $tracked tracked, $due due, the most overdue for $oldest s");
cmp_ok($tracked, '>=', $tenants, 'scheduler_status tracks every tenant');
ok($due > 0 && $oldest > 1, 'scheduler_status shows the backlog');

$node->stop;
done_testing();
