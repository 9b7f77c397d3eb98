# A SQL task that kills the worker running it (out of memory in real life; SIGKILL here) uses up
# an attempt each time: its attempt is recorded before its SQL runs, and the reaper ends an
# attempt whose worker is gone at once, also across the server's crash restart. With 2 attempts,
# two kills fail the task as abandoned and end its run, instead of retrying it for ever.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use CloacinaNode;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = cloacina_node('sql_crash', conf => qq{
cloacina.naptime = '1s'
restart_after_crash = on
log_min_messages = warning
});
$node->safe_psql('postgres', q{
    SELECT cloacina.create_tenant('crashy', 'crashy_user');
    SET search_path = crashy;
    SELECT cloacina.register_workflow('{"name": "doomed", "tasks": [{"id": "hog", "kind": "sql",
        "retry": {"attempts": 2, "delay_ms": 0}, "sql": "SELECT pg_sleep(600)"}]}');
});
my $run = $node->safe_psql('postgres', q{SET search_path = crashy; SELECT cloacina.execute('doomed')});

# Queries tolerate the crash-restart window: undef while the server does not answer.
sub query {
    my ($sql) = @_;
    # (psql can exit before it has read its input, refused while the server restarts: IPC::Run
    # then dies of the broken pipe, which is one more "does not answer")
    my ($ret, $out) = eval { $node->psql('postgres', $sql) };
    return defined $ret && $ret == 0 ? $out : undef;
}

sub wait_for {
    my ($sql, $what) = @_;
    my $deadline = time + 60;
    while (time < $deadline) {
        my $out = query($sql);
        return $out if defined $out && $out ne '';
        select(undef, undef, undef, 0.1);
    }
    die "timed out waiting for $what";
}

for my $attempt (1, 2) {
    # the attempt is running: its worker is in the task's SQL
    my $pid = wait_for(qq{
        SELECT a.pid FROM pg_stat_activity a, crashy.tasks t
         WHERE a.backend_type = 'cloacina sql worker' AND a.query LIKE 'cloacina: SQL task ' || t.id || ' %'
           AND t.execution_id = $run AND t.status = 'running' AND t.attempt = $attempt}, "attempt $attempt to run");
    is(query("SELECT attempt FROM crashy.tasks WHERE execution_id = $run"), $attempt,
        "attempt $attempt is recorded while its SQL runs");
    kill 'KILL', $pid;
}

my $status = wait_for(qq{SELECT status FROM crashy.executions WHERE id = $run AND status <> 'running'},
    'the run to end');
is($status, 'failed', 'the run ends failed after the second kill');
my ($task_status, $attempts, $error) = split /\|/, query(
    "SELECT status, attempt, error FROM crashy.tasks WHERE execution_id = $run");
is($task_status, 'failed', 'the task failed');
is($attempts, 2, 'after its 2 attempts, each ended by a kill');
like($error, qr/abandoned.*no attempts left/, "the error says it was abandoned ($error)");

$node->stop;
done_testing();
