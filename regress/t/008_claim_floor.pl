# Claims start at the tenant's claim floor (extension/claim_floor.c): past the index entries of
# claimed tasks that vacuum has not removed yet, and never past a task that is ready.
# - With 30,000 claimed tasks at the front of the queue, 20 claims read the index from the floor
#   (a few pages) instead of from its first entry (120 pages each, read with the floors off).
# - A task made ready below the floor is claimed first all the same: a run of higher priority
#   (the execute lowers the floor), a resumed run whose task had been ready before the floor
#   rose past it (resume lowers it to the start), and a claim that rolled back while another
#   session raised the floor (a floor never rises past a task that is claimed but not committed).
# - A task the tenant's own UPDATE moves below the floor is found by the rescan from the start.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use CloacinaNode;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes ();

# no vacuum: the claimed tasks' entries stay at the front of the index
my $node = cloacina_node('claim_floor', conf => "autovacuum = off\n");
sub in_tenant { return $node->safe_psql('postgres', "SET search_path = cf;\n" . shift) }

$node->safe_psql('postgres', q{SELECT 1 FROM cloacina.create_tenant('cf')});
in_tenant(q{
SELECT cloacina.register_workflow('{"name": "one", "tasks": [{"id": "a"}]}');
SELECT count(*) FROM cloacina.execute_batch('one', array_fill('{}'::jsonb, ARRAY[40000]));
});
# claim and complete 30,000, 1,000 per transaction
in_tenant(join('', map { q{
WITH c AS (SELECT array_agg(task_id) AS ids, array_agg(fence) AS fences FROM cloacina.claim('w', NULL, 1000))
SELECT count(*) FROM c, cloacina.complete_batch(c.ids, c.fences, array_fill('{}'::jsonb, ARRAY[cardinality(c.ids)]));
} } 1 .. 30));

# The index pages 20 claims read, one transaction (its first claim raises the floor).
sub pages_read {
    my ($floors) = @_;
    my $sql = q{
SELECT pg_stat_force_next_flush();
SELECT 1;
SELECT pg_stat_force_next_flush();
SELECT idx_blks_hit + idx_blks_read FROM pg_statio_user_indexes WHERE indexrelname = 'tasks_claim_key';
SET cloacina.claim_floors = } . $floors . q{;
SELECT pg_stat_force_next_flush();
BEGIN;
SELECT count(*) FROM generate_series(1, 20) i, LATERAL cloacina.claim('w', NULL, 1 + 0 * i);
ROLLBACK;
SELECT 1;
SELECT pg_stat_force_next_flush();
SELECT idx_blks_hit + idx_blks_read FROM pg_statio_user_indexes WHERE indexrelname = 'tasks_claim_key';
};
    my @out = grep { /^\d+$/ && $_ ne '1' } split /\n/, in_tenant($sql);
    my ($before, $claimed, $after) = @out;
    is($claimed, 20, "20 claims with claim_floors $floors");
    return $after - $before;
}
my $off = pages_read('off');
my $on = pages_read('on');
diag("index pages read by 20 claims past 30,000 claimed tasks: $on from the floor, $off from the start");
cmp_ok($off, '>', 1500, 'from the start, every claim reads past the claimed tasks');
cmp_ok($on * 5, '<', $off, 'from the floor, claims read a fifth of that or less');

my ($state, $priority) = split /\|/, $node->safe_psql('postgres', q{SELECT state, priority FROM cloacina.claim_floor('cf')});
is("$state $priority", 'key 0', 'the floor is a key of the ready tasks');

# A run of higher priority lowers the floor and is claimed first.
my $urgent = in_tenant(q{SELECT cloacina.execute('one', '{}', '{"priority": 5}')});
is($node->safe_psql('postgres', q{SELECT priority FROM cloacina.claim_floor('cf')}), '5',
   'an execute of priority 5 lowers the floor to its task');
my ($urgent_task, $urgent_fence) = split /\|/, in_tenant(q{SELECT task_id, fence FROM cloacina.claim('w', NULL, 1)});
is(in_tenant("SELECT execution_id FROM tasks WHERE id = $urgent_task"), $urgent, 'the run of priority 5 is claimed first');
in_tenant(qq{SELECT count(*) FROM cloacina.complete($urgent_task, $urgent_fence, '{}')});

# Claims until the floor is past task $id (each claim of a name nobody has raises it when due).
sub raise_floor_past {
    my ($id) = @_;
    my $deadline = Time::HiRes::time() + 30;
    while (Time::HiRes::time() < $deadline) {
        in_tenant(q{SELECT count(*) FROM cloacina.claim('w', ARRAY['nobody'], 1)});
        return 1 if $node->safe_psql('postgres',
            "SELECT state = 'key' AND task_id > $id FROM cloacina.claim_floor('cf')") eq 't';
    }
    return 0;
}

# A paused run's ready task is held back; the floor rises past it; resume makes it ready again
# with its old ready time, first in claim order.
my ($first_run, $first_task) = split /\|/, in_tenant(q{
SELECT execution_id, id FROM tasks WHERE status = 'ready' ORDER BY -priority, ready_at, id LIMIT 1});
in_tenant(qq{SELECT cloacina.pause($first_run)});
ok(raise_floor_past($first_task), 'the floor rises past the paused run\'s task');
in_tenant(qq{SELECT cloacina.resume($first_run)});
is($node->safe_psql('postgres', q{SELECT state FROM cloacina.claim_floor('cf')}), 'start',
   'resume lowers the floor to the start');
is(in_tenant(q{SELECT task_id FROM cloacina.claim('w', NULL, 1)}), $first_task, 'the resumed task is claimed first');

# A claim that rolls back: while it holds the first ready task, another session's claims raise
# the floor; the floor stays at that task, and the next claim after the rollback takes it.
my ($held_task) = in_tenant(q{SELECT id FROM tasks WHERE status = 'ready' ORDER BY -priority, ready_at, id LIMIT 1});
my $holder = $node->background_psql('postgres');
$holder->query_safe(q{SET search_path = cf});
$holder->query_safe(q{BEGIN});
is($holder->query_safe(q{SELECT task_id FROM cloacina.claim('w', NULL, 1)}), $held_task, 'the holder claims the first task');
my $refreshes = 0;
my $deadline = Time::HiRes::time() + 5;
my $before = $node->safe_psql('postgres', q{SELECT refreshed_seconds_ago FROM cloacina.claim_floor('cf')});
while ($refreshes < 3 && Time::HiRes::time() < $deadline) {
    in_tenant(q{SELECT count(*) FROM cloacina.claim('w', ARRAY['nobody'], 1)});
    my $ago = $node->safe_psql('postgres', q{SELECT refreshed_seconds_ago FROM cloacina.claim_floor('cf')});
    $refreshes++ if $ago < $before;
    $before = $ago;
}
cmp_ok($refreshes, '>=', 3, 'other claims raised the floor while the task was held');
is($node->safe_psql('postgres', q{SELECT task_id FROM cloacina.claim_floor('cf')}), $held_task,
   'the floor stays at the held task');
$holder->query_safe(q{ROLLBACK});
$holder->quit;
is(in_tenant(q{SELECT task_id FROM cloacina.claim('w', NULL, 1)}), $held_task, 'after the rollback it is claimed first');

# A task made ready outside the engine (here the tenant's own UPDATE moves a ready task to the
# front of the order, below the floor) is found by the floor's rescan from the start, which comes
# every second (up to ten while a rescan reads a long run of dead entries).
my ($moved) = in_tenant(q{SELECT id FROM tasks WHERE status = 'ready' ORDER BY -priority, ready_at, id DESC LIMIT 1});
in_tenant(qq{UPDATE tasks SET ready_at = ready_at - interval '1 hour' WHERE id = $moved});
my $started = Time::HiRes::time();
my $claimed_moved = 0;
while (!$claimed_moved && Time::HiRes::time() - $started < 30) {
    my ($id, $fence) = split /\|/, in_tenant(q{SELECT task_id, fence FROM cloacina.claim('w', NULL, 1)});
    $claimed_moved = defined $id && $id == $moved;
    in_tenant(qq{SELECT count(*) FROM cloacina.complete($id, $fence, '{}')}) if defined $id;
}
my $took = Time::HiRes::time() - $started;
diag(sprintf('the task moved below the floor was claimed after %.2f s', $took));
ok($claimed_moved && $took < 15, 'a task moved below the floor by an UPDATE is claimed after the next rescan');

# Nothing was lost: every task is accounted for (40,001 runs: the 30,000 completed, the urgent
# run, and the rest ready or claimed above).
is(in_tenant(q{SELECT count(*) FROM tasks}), '40001', 'every task is there');
done_testing();
