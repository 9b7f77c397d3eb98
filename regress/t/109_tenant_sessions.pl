# A tenant's sessions have limits that only the operator sets:
# - a transaction open past cloacina.tenant_transaction_timeout is ended by the scheduler: an
#   open transaction holds back vacuum in every tenant's tables, and the session settings that
#   would end it are the tenant's own to turn off. An operator's session is left alone.
# - create_tenant gives the tenant's role cloacina.tenant_connection_limit connections, so that
#   no tenant can take every connection of the server.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use CloacinaNode;
use PostgreSQL::Test::Utils;
use Test::More;

my $limit_s = 2;
my $connections = 3;
my $node = cloacina_node('tenant_sessions',
    conf => "cloacina.naptime = '1s'\ncloacina.tenant_transaction_timeout = '${limit_s}s'\n"
          . "cloacina.tenant_connection_limit = $connections\n");
$node->safe_psql('postgres', q{SELECT cloacina.create_tenant('a', 'a_user')});

# The tenant turns off what would end its transaction, and holds a snapshot.
my $tenant = $node->background_psql('postgres', extra_params => [ '-U', 'a_user' ]);
$tenant->query_safe(q{SET idle_in_transaction_session_timeout = 0});
$tenant->query_safe(q{SET statement_timeout = 0});
$tenant->query_safe(q{BEGIN ISOLATION LEVEL REPEATABLE READ});
my $tenant_pid = $tenant->query_safe(q{SELECT pg_backend_pid()});
# So does an operator's session, as long.
my $operator = $node->background_psql('postgres');
$operator->query_safe(q{BEGIN ISOLATION LEVEL REPEATABLE READ});
my $operator_pid = $operator->query_safe(q{SELECT pg_backend_pid()});
is($node->safe_psql('postgres', qq{SELECT count(*) FROM pg_stat_activity
                                    WHERE pid IN ($tenant_pid, $operator_pid) AND backend_xmin IS NOT NULL}),
   '2', 'both transactions hold back vacuum');

my $offset = -s $node->logfile;
$node->poll_query_until('postgres', qq{SELECT NOT EXISTS (SELECT FROM pg_stat_activity WHERE pid = $tenant_pid)})
  or die "the tenant's session $tenant_pid was not ended";
pass("the tenant's session was ended");
$node->wait_for_log(qr/cloacina: ended the session $tenant_pid of tenant a: its transaction was open for \d+ s/,
                    $offset);
my ($open_s) = slurp_file($node->logfile, $offset) =~ /session $tenant_pid of tenant a: its transaction was open for (\d+) s/;
cmp_ok($open_s, '>=', $limit_s, "not before its transaction was open for the limit ($open_s s)");
is($node->safe_psql('postgres', qq{SELECT state FROM pg_stat_activity WHERE pid = $operator_pid}),
   'idle in transaction', "the operator's transaction, as old, is still open");
$operator->query_safe(q{COMMIT});
$operator->quit;
eval { $tenant->quit };    # its server side is gone

# The limit is the operator's: a tenant cannot change it.
my ($ret, $stdout, $stderr) = $node->psql('postgres', q{SET cloacina.tenant_transaction_timeout = 0},
                                          extra_params => [ '-U', 'a_user' ]);
like($stderr, qr/parameter "cloacina.tenant_transaction_timeout" cannot be changed now/,
     'a tenant cannot lift the limit for its session');

# Connections: the role's limit, which the tenant cannot lift.
is($node->safe_psql('postgres', q{SELECT rolconnlimit FROM pg_roles WHERE rolname = 'a_user'}), $connections,
   "the tenant's role has the operator's connection limit");
my @sessions = map { $node->background_psql('postgres', on_error_stop => 0, extra_params => [ '-U', 'a_user' ]) }
  1 .. $connections;
($ret, $stdout, $stderr) = $node->psql('postgres', q{SELECT 1}, extra_params => [ '-U', 'a_user' ]);
like($stderr, qr/too many connections for role "a_user"/, "one connection more is refused ($connections open)");
$sessions[0]->query(q{ALTER ROLE a_user CONNECTION LIMIT -1});
like($sessions[0]->{stderr}, qr/permission denied/, 'a tenant cannot lift its connection limit');
is($node->safe_psql('postgres', q{SELECT count(*) FROM pg_stat_activity WHERE usename = 'a_user'}), $connections,
   "the operator still connects: the limit is the tenant role's alone");
$_->quit for @sessions;

$node->stop;
done_testing();
