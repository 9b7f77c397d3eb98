# SIGHUP: the scheduler reloads its settings and acts on them. Lowering cloacina.retention makes
# it prune finished runs at once; the reload shows in the server log.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use CloacinaNode;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = cloacina_node('reload');
$node->safe_psql('postgres', q{
    SELECT cloacina.create_tenant('kept');
    SET search_path = kept;
    SELECT cloacina.register_workflow('{"name": "one", "tasks": [{"id": "t"}]}');
    SELECT cloacina.execute('one');
});
$node->safe_psql('postgres', q{
    SET search_path = kept;
    SELECT cloacina.complete(task_id, fence, '{}') FROM cloacina.claim('w', NULL, 10);
});
is($node->safe_psql('postgres', q{SELECT count(*) FROM kept.executions WHERE status = 'completed'}), '1',
    'a finished run is kept under the default retention');

my $offset = -s $node->logfile;
$node->safe_psql('postgres', q{ALTER SYSTEM SET cloacina.retention = '1s'; SELECT pg_reload_conf();});
$node->wait_for_log(qr/cloacina scheduler reloaded its settings: naptime \d+ ms, retention 1 s/, $offset);
pass('the scheduler reloaded its settings on SIGHUP');
$node->poll_query_until('postgres', q{SELECT count(*) = 0 FROM kept.executions}, 't')
  or die 'the finished run was never pruned';
is($node->safe_psql('postgres', q{SELECT count(*) FROM kept.tasks}) . ' ' .
   $node->safe_psql('postgres', q{SELECT count(*) FROM kept.execution_events}), '0 0',
    'the pruned run\'s tasks and events went with it');

$node->stop;
done_testing();
