# A tenant's connection string works as given: over TCP with scram-sha-256, the tenant role logs
# in with the generated password and lands in its own schema; a wrong password is refused. And the
# extension refuses to install without shared_preload_libraries.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use CloacinaNode;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = cloacina_node('login', tcp_password => 1);

my $uri = $node->safe_psql('postgres', q{
    SET cloacina.connection_host = '127.0.0.1';
    SELECT connection_string FROM cloacina.create_tenant('tenant_demo', 'demo_user', '')});
my $port = $node->port;
like($uri, qr{^postgresql://demo_user:[A-Za-z0-9_-]{32,}\@127\.0\.0\.1:$port/postgres$},
    'the connection string names the role, a long URL-safe password, this host, port and database');

my ($stdout, $stderr);
IPC::Run::run([ 'psql', '-X', '-Atc', 'SELECT current_user, current_schema()', $uri ],
    '>', \$stdout, '2>', \$stderr);
chomp $stdout;
is($stdout, 'demo_user|tenant_demo', 'psql logs in over TCP as the tenant role and lands in its schema');

(my $wrong = $uri) =~ s/:[^:\@]+\@/:not-the-password\@/;
my $rc = IPC::Run::run([ 'psql', '-X', '-Atc', 'SELECT 1', $wrong ], '>', \$stdout, '2>', \$stderr);
ok(!$rc, 'a wrong password is refused');
like($stderr, qr/password authentication failed/, 'by scram-sha-256 authentication');

# A given password with URI-special characters also works as returned.
my $uri2 = $node->safe_psql('postgres', q{
    SET cloacina.connection_host = '127.0.0.1';
    SELECT connection_string FROM cloacina.create_tenant('tenant_odd', 'odd_user', E'p@ss:w/rd%\'q\\\\ #?')});
IPC::Run::run([ 'psql', '-X', '-Atc', 'SELECT current_user', $uri2 ], '>', \$stdout, '2>', \$stderr);
chomp $stdout;
is($stdout, 'odd_user', 'a password with @ : / % quote backslash space # ? survives the URI');

$node->stop;

# Without shared_preload_libraries the extension refuses to install, saying what to do.
my $plain = PostgreSQL::Test::Cluster->new('no_preload');
$plain->init;
$plain->start;
my ($ext_rc, $out, $err) = $plain->psql('postgres', 'CREATE EXTENSION cloacina');
isnt($ext_rc, 0, 'CREATE EXTENSION fails without shared_preload_libraries');
like($err, qr/cloacina must be loaded via shared_preload_libraries.*HINT:  Add cloacina to shared_preload_libraries/s,
    'with a clear error and a hint');
$plain->stop;
done_testing();
