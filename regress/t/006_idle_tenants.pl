# Idle tenants cost nothing: with 1,000 tenants and no work, the cloacina background processes
# together use under 1% of one core over 20 s (CLOACINA_IDLE_SECONDS; measured from /proc: utime + stime).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use CloacinaNode;
use PostgreSQL::Test::Utils;
use Test::More;
use POSIX ();

my $node = cloacina_node('idle', conf => qq{
max_locks_per_transaction = 256
});
for my $batch (0 .. 19) {
    $node->safe_psql('postgres', qq{
        SELECT count(*) FROM generate_series($batch * 50 + 1, $batch * 50 + 50) i,
               LATERAL cloacina.create_tenant('idle_' || i)});
}
is($node->safe_psql('postgres', 'SELECT count(*) FROM cloacina.tenants'), '1000', '1,000 tenants');

# Restart, so that the scheduler's startup pass looks at every tenant once; then measure.
$node->restart;
$node->wait_for_log(qr/cloacina scheduler started/);
$node->poll_query_until('postgres', q{
    SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'cloacina scheduler' AND state = 'active'}, 't');
my @pids = split /\n/, $node->safe_psql('postgres', q{
    SELECT pid FROM pg_stat_activity WHERE backend_type LIKE 'cloacina%'});
ok(@pids >= 3, scalar(@pids) . ' cloacina background processes (scheduler and SQL workers)');

sub cpu_ticks {
    my $total = 0;
    for my $pid (@pids) {
        open(my $fh, '<', "/proc/$pid/stat") or die "no /proc/$pid/stat: $!";
        my @f = split ' ', (<$fh> =~ s/^.*\) //r);
        close $fh;
        $total += $f[11] + $f[12];    # utime, stime (fields 14 and 15)
    }
    return $total;
}
my $hz = POSIX::sysconf(POSIX::_SC_CLK_TCK());
# The startup pass ticks every tenant once, one transaction each (the scheduler can look idle
# between two): wait, at most 60 s, until a whole second passes without CPU time.
my ($settle_deadline, $quiet) = (time + 60, 0);
until ($quiet || time > $settle_deadline) {
    my $before = cpu_ticks();
    sleep 1;
    $quiet = cpu_ticks() == $before;
}
ok($quiet, 'the startup pass ended');
my $window = $ENV{CLOACINA_IDLE_SECONDS} || 20;
my ($t0, $c0) = (time, cpu_ticks());
sleep $window;    # the measurement window itself
my ($t1, $c1) = (time, cpu_ticks());
my $share = ($c1 - $c0) / $hz / ($t1 - $t0);
diag(sprintf('background CPU with 1,000 idle tenants: %.3f%% of one core (%d ticks in %d s)',
             100 * $share, $c1 - $c0, $t1 - $t0));
ok($share < 0.01, sprintf('under 1%% of one core (%.3f%%)', 100 * $share));

$node->stop;
done_testing();
