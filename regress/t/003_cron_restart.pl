# Cron across a restart: a 6-field schedule firing every second fires once per slot; after the
# server has been down for 30 s, "skip" fires only the next future slot and "run_all" fires each
# missed slot exactly once. (The downtime is the scenario, not a wait for a result.)
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use CloacinaNode;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = cloacina_node('cron');
$node->safe_psql('postgres', q{
    SELECT cloacina.create_tenant('crontab');
    SET search_path = crontab;
    SELECT cloacina.register_workflow('{"name": "tick", "tasks": [{"id": "noop"}]}');
    SELECT cloacina.schedule('every_second_skip', 'tick', '* * * * * *', 'UTC', '{}', 'skip');
    SELECT cloacina.schedule('every_second_all', 'tick', '* * * * * *', 'UTC', '{}', 'run_all');
});

sub fires {
    my ($schedule, $cond) = @_;
    return $node->safe_psql('postgres', qq{
        SELECT count(*) FROM crontab.schedule_fires f JOIN crontab.schedules s ON s.id = f.schedule_id
         WHERE s.name = '$schedule' AND $cond});
}
# Slots of a schedule form an unbroken run of seconds, each fired once, with its own run.
sub contiguous {
    my ($schedule, $cond) = @_;
    return $node->safe_psql('postgres', qq{
        SELECT count(*) = extract(epoch FROM max(slot) - min(slot)) + 1
               AND count(*) = count(DISTINCT execution_id)
               AND bool_and(e.input_context ->> 'scheduled_at' IS NOT NULL)
          FROM crontab.schedule_fires f JOIN crontab.schedules s ON s.id = f.schedule_id
          JOIN crontab.executions e ON e.id = f.execution_id
         WHERE s.name = '$schedule' AND $cond});
}

$node->poll_query_until('postgres', q{SELECT count(*) >= 6 FROM crontab.schedule_fires}, 't')
  or die 'the schedules never fired';
ok(fires('every_second_skip', 'true') >= 3, 'the every-second schedule fires while the server runs');
is(contiguous('every_second_skip', 'true'), 't', 'skip: one fire per second, no slot missed or doubled');
is(contiguous('every_second_all', 'true'), 't', 'run_all: one fire per second, no slot missed or doubled');

my $stopped_at = $node->safe_psql('postgres', 'SELECT now()');
$node->stop('fast');
sleep 30;
$node->start;
my $started_at = $node->safe_psql('postgres', 'SELECT now()');
$node->poll_query_until('postgres', qq{
    SELECT count(*) FILTER (WHERE s.name = 'every_second_skip') >= 2
       AND count(*) FILTER (WHERE s.name = 'every_second_all') >= 2
      FROM crontab.schedule_fires f JOIN crontab.schedules s ON s.id = f.schedule_id
     WHERE f.fired_at > '$started_at'}, 't') or die 'the schedules did not resume after the restart';

is(fires('every_second_skip', "slot > '$stopped_at'::timestamptz + interval '1 second' AND slot < '$started_at'::timestamptz - interval '1 second'"),
    '0', 'skip: no slot of the 30 s downtime fired');
my $missed = fires('every_second_all', "slot > '$stopped_at'::timestamptz + interval '1 second' AND slot < '$started_at'::timestamptz - interval '1 second'");
ok($missed >= 25, "run_all: the $missed missed slots of the downtime fired");
is(contiguous('every_second_all', 'true'), 't', 'run_all: every slot before, during and after the downtime fired exactly once');
is($node->safe_psql('postgres', qq{
    SELECT min(slot) >= '$started_at'::timestamptz - interval '1 second'
      FROM crontab.schedule_fires f JOIN crontab.schedules s ON s.id = f.schedule_id
     WHERE s.name = 'every_second_skip' AND slot > '$stopped_at'::timestamptz + interval '1 second'}),
    't', 'skip: the first fire after the restart is the next future slot');

$node->stop;
done_testing();
