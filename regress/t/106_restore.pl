# A tenant backed up with pg_dump -n, removed, restored with pg_restore and taken back with
# adopt_tenant works again: its role logs in with the new password, the lease that expired while
# it was gone is taken over by the background worker, and its run completes. adopt_tenant
# refuses what is not a restorable tenant.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use CloacinaNode;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = cloacina_node('restore', conf => qq{
cloacina.naptime = '1s'
});
$node->safe_psql('postgres', q{SELECT cloacina.create_tenant('keep', 'keep_user')});
my $run = $node->safe_psql('postgres', q{
    SET search_path = keep;
    SELECT cloacina.register_workflow('{"name": "job", "tasks": [{"id": "work", "retry": {"attempts": 3}}]}');
    SELECT cloacina.execute('job', '{"kept": true}');});
$run = (split /\n/, $run)[-1];
# a worker claims the task with a lease it will never renew, then everything is backed up
$node->safe_psql('postgres', q{SET search_path = keep; SELECT * FROM cloacina.claim('gone', NULL, 1, '1 second')});
my $dump = "$PostgreSQL::Test::Utils::tmp_check/keep.dump";
command_ok([ 'pg_dump', '-Fc', '-n', 'keep', '-f', $dump, '-d', $node->connstr('postgres') ], 'pg_dump -n keep');

$node->safe_psql('postgres', q{SELECT cloacina.remove_tenant('keep', cancel_unfinished => true)});
is($node->safe_psql('postgres', q{SELECT count(*) FROM pg_namespace WHERE nspname = 'keep'}), '0', 'the tenant is gone');
command_ok([ 'pg_restore', '--no-owner', '--no-privileges', '-d', $node->connstr('postgres'), $dump ],
    'pg_restore of the dump');

# Not a tenant until adopted: the API refuses it, as any schema with such a table.
my ($ret, $out, $err) = $node->psql('postgres', q{SET search_path = keep; SELECT * FROM cloacina.claim('x')});
like($err, qr/not a cloacina tenant/, 'the restored schema is refused before adoption');

my $url = $node->safe_psql('postgres', q{SELECT connection_string FROM cloacina.adopt_tenant('keep', 'keep_user')});
like($url, qr{^postgresql://keep_user:}, 'adopt_tenant created the role again and returned its connection string');
is($node->safe_psql('postgres', q{SELECT state || ' ' || layout_version = 'active ' || cloacina._tenant_layout() FROM cloacina.tenant WHERE schema_name = 'keep'}),
    't', 'registered, active, at the current layout');

# The expired lease is taken over: attempt 2 becomes claimable without anyone asking.
my $claim = q{SELECT task_id || ' ' || fence FROM cloacina.claim('back', NULL, 1, '30 seconds') WHERE attempt = 2};
my ($task, $fence);
my $deadline = time + 30;
while (time < $deadline) {
    ($ret, $out) = $node->psql('postgres', $claim, extra_params => [ '-d', $url ]);
    ($task, $fence) = split / /, $out if $ret == 0 && $out ne '';
    last if defined $task;
    select(undef, undef, undef, 0.1);
}
ok(defined $task, 'the lease that expired while the tenant was gone was taken over (attempt 2 claimed by its own role)');
is($node->safe_psql('postgres', "SELECT cloacina.complete($task, $fence, '{\"back\": true}')", extra_params => [ '-d', $url ]),
    't', 'the restored task completes');
is($node->safe_psql('postgres', "SELECT status || ' ' || final_context::text FROM cloacina.wait($run, '10 seconds')",
        extra_params => [ '-d', $url ]),
    'completed {"back": true, "kept": true}', 'the restored run completes with its context');

# What adopt_tenant refuses.
for my $case ([ q{SELECT cloacina.adopt_tenant('keep')}, qr/already exists/, 'a registered tenant' ],
              [ q{SELECT cloacina.adopt_tenant('nowhere')}, qr/does not exist/, 'a schema that does not exist' ],
              [ q{CREATE SCHEMA half; CREATE TABLE half.tenant_settings (x int); SELECT cloacina.adopt_tenant('half')},
                qr/does not have the tables of a cloacina tenant: workflows is missing/, 'a schema without the tables' ],
              [ q{SELECT cloacina.adopt_tenant('keep2', 'postgres')}, qr/reserved|not a plain login role|does not exist/, 'a privileged role' ]) {
    my ($sql, $expected, $what) = @$case;
    ($ret, $out, $err) = $node->psql('postgres', $sql);
    like($err, $expected, "adopt_tenant refuses $what");
}
is($node->safe_psql('postgres', q{SELECT count(*) FROM cloacina.tenant}), '1', 'the refusals left nothing behind');

$node->stop;
done_testing();
