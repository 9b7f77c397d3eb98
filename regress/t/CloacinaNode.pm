# regress/t/CloacinaNode.pm: the cluster every TAP test starts, set up one way: cloacina
# preloaded and serving database postgres, the extension created, each test's own settings
# added, and (tcp_password) a TCP listener that takes passwords only, for the tenants' logins.
package CloacinaNode;
use strict;
use warnings;
use Exporter 'import';
use PostgreSQL::Test::Cluster;
use Test::More;

our @EXPORT = qw(cloacina_node cpp_build_dir);

# cloacina_node($name, conf => "postgresql.conf lines", preload => [more libraries, whose
# extensions are created too], tcp_password => 1)
sub cloacina_node {
    my ($name, %opt) = @_;
    my @more = @{ $opt{preload} // [] };
    my $node = PostgreSQL::Test::Cluster->new($name);
    $node->init;
    $node->append_conf('postgresql.conf',
        "shared_preload_libraries = '" . join(', ', 'cloacina', @more) . "'\n"
          . "cloacina.database = 'postgres'\n"
          . ($opt{tcp_password} ? "listen_addresses = '127.0.0.1'\n" : '')
          . ($opt{conf} // ''));
    if ($opt{tcp_password}) {
        # initdb -A trust trusts TCP too: only the socket stays trusted
        open(my $hba, '>', $node->data_dir . '/pg_hba.conf') or die $!;
        print $hba "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n";
        close $hba;
    }
    $node->start;
    $node->safe_psql('postgres', join('; ', map { "CREATE EXTENSION $_" } 'cloacina', @more));
    return $node;
}

# The CMake build directory of the SDK, where the suites' C++ programs are (scripts/test sets it).
sub cpp_build_dir {
    return $ENV{CLOACINA_CPP_BUILD}
      // BAIL_OUT('CLOACINA_CPP_BUILD is not set: it must name the CMake build directory of the SDK (scripts/test exports it)');
}

1;
