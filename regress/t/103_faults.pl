# Faults under load: 2,000 runs in flight (1,000 one-task runs and 1,000 four-task DAGs, all
# handler tasks) worked by three C++ worker processes (tests/reliability_fault_worker.cpp, the SDK's
# DefaultRunner on the tenant's own connection string, 2-second leases), while:
#   - a worker is killed with SIGKILL every few seconds and restarted;
#   - pg_terminate_backend() hits a random SDK connection every few seconds;
#   - the server is restarted once in immediate mode in the middle;
#   - a worker is stopped with SIGSTOP past its lease and resumed (its completions must be refused);
#   - some runs are cancelled during the load.
# Afterwards: every accepted run is terminal (none lost, none failed), no (task, attempt) completed
# twice and no task completed twice at all, nothing was claimed or completed after its run was
# cancelled, every accepted output comes from a handler execution that really happened, and the
# stopped worker's expired attempts never completed.
# Prints "faults: N runs, 0 lost, 0 duplicated".
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use CloacinaNode;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $cpp = cpp_build_dir();
my $worker_program = "$cpp/tests/reliability_fault_worker";
-x $worker_program or BAIL_OUT("$worker_program is missing: build the SDK first");

my $runs_per_kind = 1000;
my ($work_ms_min, $work_ms_max) = (100, 300);    # keeps the load going for about a minute
my $drain_deadline = 240;                          # seconds for the whole load to drain

my $node = cloacina_node('faults', conf => qq{
cloacina.naptime = '1s'
restart_after_crash = on
max_connections = 60
log_min_messages = warning
});
my $url = $node->safe_psql('postgres', q{SELECT connection_string FROM cloacina.create_tenant('chaos', 'chaos_user')});

# Monitoring queries tolerate the restart window: undef when the server does not answer.
sub query {
    my ($sql) = @_;
    # (psql can exit before it has read its input, refused while the server restarts: IPC::Run
    # then dies of the broken pipe, which is one more "does not answer")
    my ($ret, $out) = eval { $node->psql('postgres', $sql) };
    return defined $ret && $ret == 0 ? $out : undef;
}
sub as_tenant {
    my ($sql) = @_;
    my ($ret, $out, $err) = eval { $node->psql('postgres', $sql, extra_params => [ '-U', 'chaos_user' ]) };
    return defined $ret && $ret == 0 ? $out : undef;
}

my $records = "$PostgreSQL::Test::Utils::tmp_check/faults_handled.log";
my $logs = "$PostgreSQL::Test::Utils::tmp_check/faults_worker";
unlink $records;
my (%workers, $generation);
sub start_worker {
    my ($slot) = @_;
    my $name = sprintf('w%d-g%d', $slot, ++$generation);
    my $h = IPC::Run::start([ $worker_program, $url, $name, $records, $work_ms_min, $work_ms_max ],
        '>>', "$logs.out", '2>>', "$logs.err");
    $workers{$slot} = { h => $h, pid => $h->{KIDS}[0]{PID}, name => $name };
}
sub kill_worker {
    my ($slot) = @_;
    kill 'KILL', $workers{$slot}{pid};
    $workers{$slot}{h}->finish;
}

start_worker($_) for 1 .. 3;
$node->poll_query_until('postgres', q{SELECT count(*) = 2 FROM chaos.workflows WHERE name IN ('single', 'dag')}, 't')
  or die 'the workers did not register their workflows';

# 2,000 runs accepted at once.
as_tenant(qq{
    SELECT count(*) FROM cloacina.execute_batch('single', (SELECT array_agg(jsonb_build_object('run', g)) FROM generate_series(1, $runs_per_kind) g));
    SELECT count(*) FROM cloacina.execute_batch('dag', (SELECT array_agg(jsonb_build_object('run', g)) FROM generate_series($runs_per_kind + 1, 2 * $runs_per_kind) g));
}) // die 'the runs were not accepted';
my $accepted = query('SELECT count(*) FROM chaos.executions');
is($accepted, 2 * $runs_per_kind, "$accepted runs accepted");

my $start = time;
my ($kills, $terminations, $restarted, $cancelled, $stopped) = (0, 0, 0, 0, 0);
my ($next_kill, $next_terminate, $next_cancel) = ($start + 3, $start + 2, $start + 6);
my @stop_snapshot;    # [task id, attempt] of the tasks the stopped worker held
my $kill_slot = 0;
my $unfinished = $accepted;
while (time - $start < $drain_deadline) {
    my $now = time;
    my $u = query(q{SELECT count(*) FROM chaos.executions WHERE status NOT IN ('completed', 'failed', 'cancelled')});
    $unfinished = $u if defined $u;
    last if defined $u && $u == 0;
    my $under_load = defined $u && $u > $accepted / 5;
    if ($under_load && $now >= $next_kill) {
        $kill_slot = $kill_slot % 3 + 1;
        kill_worker($kill_slot);
        start_worker($kill_slot);
        $kills++;
        $next_kill = $now + 3;
    }
    if ($under_load && $now >= $next_terminate) {
        $terminations += query(q{SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM
            (SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'cloacina-sdk%' ORDER BY random() LIMIT 1) s}) // 0;
        $next_terminate = $now + 2.5;
    }
    if ($under_load && $now >= $next_cancel && $cancelled < 60) {
        $cancelled += as_tenant(q{SELECT count(*) FILTER (WHERE cloacina.cancel(id)) FROM
            (SELECT id FROM chaos.executions WHERE status = 'running' ORDER BY random() LIMIT 20) s}) // 0;
        $next_cancel = $now + 7;
    }
    if (!$restarted && $u && $u < $accepted * 0.75) {
        $node->restart(mode => 'immediate');
        $restarted = 1;
        diag(sprintf('immediate restart at %.1f s with %d runs unfinished', time - $start, $u));
    }
    if ($restarted && !$stopped && $u && $u < $accepted * 0.6 && $now - $start > 0) {
        # SIGSTOP worker 1 (it is killed and restarted only after it was resumed), keep the tasks
        # it holds, and resume it once every one of them was taken away by the lease reaper.
        my $w = $workers{1};
        kill 'STOP', $w->{pid};
        my $held = query(qq{SELECT string_agg(id || ':' || attempt, ' ') FROM chaos.tasks WHERE status = 'running' AND worker = '$w->{name}'});
        if ($held) {
            @stop_snapshot = map { [ split /:/ ] } split / /, $held;
            my $ids = join(',', map { $_->[0] } @stop_snapshot);
            my $stop_deadline = time + 30;
            my $taken;
            # a condition, not a sleep: every held attempt expired (or, if its completion was
            # already on the wire when the worker stopped, completed)
            until (($taken = query(qq{SELECT count(*) FROM chaos.tasks WHERE id IN ($ids) AND status = 'running' AND worker = '$w->{name}'})) eq '0'
                   || time > $stop_deadline) {
                select(undef, undef, undef, 0.1);
            }
            kill 'CONT', $w->{pid};
            $stopped = 1;
            diag(sprintf('worker %s stopped with %d tasks, resumed after %.1f s', $w->{name}, scalar @stop_snapshot, time - $now));
        } else {
            kill 'CONT', $w->{pid};    # it held nothing: try again on the next turn
        }
    }
    select(undef, undef, undef, 0.25);    # pacing of the chaos loop; the deadline decides
}
my $elapsed = time - $start;
diag(sprintf('drained in %.1f s: %d kills, %d backend terminations, %d restart, %d runs cancelled', $elapsed, $kills, $terminations, $restarted, $cancelled));
for my $slot (sort keys %workers) { kill 'TERM', $workers{$slot}{pid}; }
for my $slot (sort keys %workers) { $workers{$slot}{h}->finish; }

ok($kills >= 5, "workers were killed with SIGKILL and restarted ($kills)");
ok($terminations >= 3, "worker connections were terminated ($terminations)");
ok($restarted, 'the server was restarted in immediate mode under load');
ok($cancelled >= 1, "runs were cancelled under load ($cancelled)");
ok(@stop_snapshot > 0, 'a worker was stopped past its lease while it held tasks');

# ---- the verdict ----
my $lost = 0;
my $duplicated = 0;
my $q = sub { my $v = $node->safe_psql('postgres', $_[0]); return $v; };
my $total = $q->('SELECT count(*) FROM chaos.executions');
my $not_terminal = $q->(q{SELECT count(*) FROM chaos.executions WHERE status NOT IN ('completed', 'failed', 'cancelled')});
my $failed = $q->(q{SELECT count(*) FROM chaos.executions WHERE status = 'failed'});
is($total, $accepted, 'no accepted run vanished');
is($not_terminal, 0, 'every accepted run is terminal');
is($failed, 0, 'no run failed (25 attempts cover the chaos)')
  or diag($q->(q{SELECT string_agg(DISTINCT error, '; ') FROM chaos.executions WHERE status = 'failed'}));
$lost += ($accepted - $total) + $not_terminal + $failed;
is($q->(q{SELECT count(*) FROM chaos.executions WHERE status = 'cancelled'}), $cancelled, 'the cancelled runs stayed cancelled');
is($q->(q{SELECT count(*) FROM chaos.executions e WHERE status = 'completed' AND EXISTS
           (SELECT FROM chaos.tasks t WHERE t.execution_id = e.id AND t.status <> 'completed')}), 0,
   'every task of a completed run completed');

# Every accepted output was produced by a handler execution that really happened.
my %executed;
my $executions = 0;
open(my $fh, '<', $records) or die "no record file: $!";
while (<$fh>) { my (undef, undef, $nonce) = split; $executed{$nonce} = 1; $executions++; }
close $fh;
my @outputs = split /\n/, $q->(q{SELECT output ->> (task || '_nonce') FROM chaos.tasks WHERE status = 'completed'});
my $unbacked = grep { !defined $_ || $_ eq '' || !$executed{$_} } @outputs;
is($unbacked, 0, 'every completed task\'s output comes from a recorded handler execution');
$lost += $unbacked;
diag(sprintf('%d tasks completed, %d handler executions recorded (%.1f%% re-executed after faults)',
    scalar @outputs, $executions, @outputs ? 100 * ($executions - @outputs) / @outputs : 0));

# No (task, attempt) completed twice; no task completed in two attempts.
my $dup_attempts = $q->(q{SELECT count(*) FROM (SELECT execution_id, task, attempt FROM chaos.execution_events
    WHERE to_status = 'completed' AND task IS NOT NULL GROUP BY 1, 2, 3 HAVING count(*) > 1) d});
my $dup_tasks = $q->(q{SELECT count(*) FROM (SELECT execution_id, task FROM chaos.execution_events
    WHERE to_status = 'completed' AND task IS NOT NULL GROUP BY 1, 2 HAVING count(*) > 1) d});
is($dup_attempts, 0, 'no (task, attempt) completed twice');
is($dup_tasks, 0, 'no task completed in two attempts');
$duplicated += $dup_attempts + $dup_tasks;
is($q->(q{SELECT count(*) FROM chaos.tasks t WHERE status = 'completed' AND
           (SELECT count(*) FROM chaos.execution_events e WHERE e.execution_id = t.execution_id AND e.task = t.task AND e.to_status = 'completed') <> 1}),
   0, 'every completed task has exactly one completion event');

# Nothing was claimed or completed after its run was cancelled.
is($q->(q{SELECT count(*) FROM chaos.execution_events c JOIN chaos.execution_events e
           ON e.execution_id = c.execution_id AND e.task IS NOT NULL AND e.id > c.id
          WHERE c.task IS NULL AND c.to_status = 'cancelled' AND e.to_status IN ('running', 'completed', 'ready')}),
   0, 'no task was claimed, completed or made ready after its run was cancelled');

# The stopped worker: each attempt it held either expired (and then never completed) or had
# its completion already on the wire when it stopped (and then never expired).
my ($expired, $stale_completions) = (0, 0);
for my $s (@stop_snapshot) {
    my ($id, $attempt) = @$s;
    my ($exp, $comp) = split /\|/, $q->(qq{SELECT count(*) FILTER (WHERE e.from_status = 'running' AND e.to_status IN ('ready', 'failed')),
            count(*) FILTER (WHERE e.to_status = 'completed')
        FROM chaos.tasks t JOIN chaos.execution_events e ON e.execution_id = t.execution_id AND e.task = t.task
        WHERE t.id = $id AND e.attempt = $attempt});
    $expired++ if $exp > 0;
    $stale_completions++ if $exp > 0 && $comp > 0;
}
ok($expired > 0, "the stopped worker's leases expired ($expired of " . scalar(@stop_snapshot) . ' attempts)');
is($stale_completions, 0, 'no attempt of the stopped worker completed after its lease expired (the fence refused it)');
$duplicated += $stale_completions;

is($lost, 0, 'no accepted work was lost');
is($duplicated, 0, 'no work was completed twice');
diag("faults: $accepted runs, $lost lost, $duplicated duplicated");
$node->stop;
done_testing();
