# Hostile input corpus: tenant and user names, passwords, workflow definitions, contexts, options.
# Each case must be refused with a clear error — a proper SQLSTATE (never class XX or 58) and a
# message (or detail/hint) that names the offending item — or be handled correctly. Failed
# creations leave no schema, role or registry row behind; the server never restarts.
# Passwords with quotes, backslashes, %, @, :, / produce connection strings that log in over TCP
# with scram-sha-256. Prints "bad input: N cases, 0 unclear, 0 leftovers".
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use CloacinaNode;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use Encode qw(encode);

my $node = cloacina_node('bad_input', tcp_password => 1);
$node->safe_psql('postgres', q{
CREATE ROLE taken_role;
CREATE SCHEMA taken_schema;
-- runs a statement; returns 'ok' or SQLSTATE, message, detail and hint (the statement is kept
-- when it succeeds)
CREATE FUNCTION public.attempt(q text) RETURNS text LANGUAGE plpgsql AS $f$
DECLARE
    st text; msg text; det text; hin text;
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL, hin = PG_EXCEPTION_HINT;
    RETURN st || E'\x1f' || msg || E'\x1f' || coalesce(det, '') || E'\x1f' || coalesce(hin, '');
END $f$;
SELECT cloacina.create_tenant('corpus', 'corpus_user');
});
my $postmaster_start = $node->safe_psql('postgres', 'SELECT pg_postmaster_start_time()');
my $baseline = $node->safe_psql('postgres', q{
    SELECT (SELECT string_agg(nspname, ',' ORDER BY nspname) FROM pg_namespace) || ' / ' ||
           (SELECT string_agg(rolname, ',' ORDER BY rolname) FROM pg_roles) || ' / ' ||
           (SELECT string_agg(schema_name, ',' ORDER BY schema_name) FROM cloacina.tenant)});

my ($cases, $unclear) = (0, 0);
# One case: $sql runs (as the admin; with the tenant "corpus" as current schema when $in_tenant);
# $expect is 'ok', or [sqlstate-regex, regex the message/detail/hint must match].
sub case {
    my ($label, $sql, $expect, $in_tenant) = @_;
    $cases++;
    my $prefix = $in_tenant ? 'SET search_path = corpus; ' : '';
    (my $quoted = $sql) =~ s/\$Q\$/\$ Q\$/g;
    my ($ret, $out, $err) = $node->psql('postgres', encode('UTF-8', $prefix . "SELECT public.attempt(\$Q\$$sql\$Q\$)"));
    $out = Encode::decode('UTF-8', $out);
    if ($ret != 0) {
        $unclear++;
        diag("$label: the harness itself failed: $err");
        return;
    }
    if ($expect eq 'ok') {
        if ($out ne 'ok') { $unclear++; diag("$label: expected to be accepted, got: $out"); }
        return;
    }
    my ($state, $msg, $detail, $hint) = split /\x1f/, $out, 4;
    if ($out eq 'ok') {
        $unclear++;
        diag("$label: expected a refusal, but it was accepted");
    } elsif ($state =~ /^(XX|58)/ || $state !~ /^(?:$expect->[0])$/ || "$msg $detail $hint" !~ $expect->[1]) {
        $unclear++;
        diag("$label: unclear refusal: $state: $msg | $detail | $hint (expected $expect->[0] matching $expect->[1])");
    }
}

# ---- tenant and user names ----
my @bad_names = (
    [ q{x; DROP SCHEMA public CASCADE; --}, '22023', qr/invalid/ ],
    [ q{a"b}, '22023', qr/a"b/ ], [ q{a'b}, '22023', qr/a''?b/ ], [ q{robert'); DROP TABLE x;--}, '22023', qr/robert/ ],
    [ "tenant\x{e9}", '22023', qr/tenant/ ], [ "\x{79df}\x{6237}", '22023', qr/invalid/ ],
    [ 'a' x 64, '42622', qr/too long/ ], [ 'b' x 1000, '42622', qr/too long/ ],
    [ 'public', '42939', qr/public.*reserved/ ], [ 'pg_evil', '42939', qr/pg_evil.*reserved/ ],
    [ 'cloacina', '42939', qr/reserved/ ], [ 'cloacina_x', '42939', qr/reserved/ ],
    [ 'information_schema', '42939', qr/reserved/ ], [ 'postgres', '42939', qr/reserved/ ],
    [ 'current_user', '42939', qr/reserved/ ], [ 'none', '42939', qr/reserved/ ],
    [ 'MixedCase', '22023', qr/MixedCase.*upper-case|mixedcase/ ], [ '', '22004', qr/empty/ ],
    [ ' lead', '22023', qr/invalid/ ], [ '1abc', '22023', qr/1abc/ ], [ 'a-b', '22023', qr/a-b/ ],
    [ 'a b', '22023', qr/a b/ ], [ "a\nb", '22023', qr/invalid/ ], [ 'a$b', '22023', qr/invalid/ ]);
for my $n (@bad_names) {
    my ($name, $state, $re) = @$n;
    (my $lit = $name) =~ s/'/''/g;
    case("tenant name '$name'", "SELECT * FROM cloacina.create_tenant('$lit', 'okuser_x')", [ $state, $re ]);
    case("user name '$name'", "SELECT * FROM cloacina.create_tenant('oktenant_x', '$lit')", [ $state, $re ]);
}
case('tenant name NULL', 'SELECT * FROM cloacina.create_tenant(NULL)', [ '22004', qr/empty/ ]);
case('existing schema', q{SELECT * FROM cloacina.create_tenant('taken_schema', 'fresh_user')}, [ '42P06', qr/taken_schema/ ]);
case('existing tenant', q{SELECT * FROM cloacina.create_tenant('corpus')}, [ '42P06', qr/corpus/ ]);
case('existing role', q{SELECT * FROM cloacina.create_tenant('fresh_tenant', 'taken_role')}, [ '42710', qr/taken_role/ ]);
case('password without user', q{SELECT * FROM cloacina.create_tenant('fresh_tenant', NULL, 'secret')}, [ '22023', qr/password.*user name|user name/ ]);
case('remove unknown tenant', q{SELECT cloacina.remove_tenant('no_such_tenant')}, [ '3F000', qr/no_such_tenant/ ]);
case('remove with wrong role', q{SELECT cloacina.remove_tenant('corpus', 'taken_role')}, [ '22023', qr/taken_role/ ]);
case('remove NULL', q{SELECT cloacina.remove_tenant(NULL)}, [ '22004', qr/empty/ ]);
case('suspend unknown', q{SELECT cloacina.suspend_tenant('no_such_tenant')}, [ '3F000', qr/no_such_tenant/ ]);
case('limits: max_running 0', q{SELECT cloacina.set_tenant_limits('corpus', 0)}, [ '22023', qr/max_running/ ]);
case('limits: weight 100000', q{SELECT cloacina.set_tenant_limits('corpus', NULL, 100000)}, [ '22023', qr/weight/ ]);

# ---- passwords: the connection string logs in over TCP with scram-sha-256 ----
my @passwords = (q{it's}, q{"double"}, q{back\slash\\}, q{100%}, q{%41%zz}, q{us@er}, q{co:lon}, q{sl/ash},
    q{all '"\%@:/?#&= of them}, "unicode-\x{e9}\x{79df}", 'x' x 200, q{ leading and trailing });
my $i = 0;
for my $pw (@passwords) {
    $i++;
    $cases++;
    (my $lit = $pw) =~ s/'/''/g;
    my $uri = $node->safe_psql('postgres', encode('UTF-8', "SET cloacina.connection_host = '127.0.0.1';
        SELECT connection_string FROM cloacina.create_tenant('pw_$i', 'pw_user_$i', E'" . ($lit =~ s/\\/\\\\/gr) . "')"));
    my ($out, $err) = ('', '');
    IPC::Run::run([ 'psql', '-X', '-Atc', 'SELECT current_user, current_schema()', $uri ], '>', \$out, '2>', \$err);
    chomp $out;
    if ($out ne "pw_user_$i|pw_$i") { $unclear++; diag("password case $i: the connection string did not log in: $err"); }
    $node->safe_psql('postgres', "SELECT cloacina.remove_tenant('pw_$i')");
}

# ---- workflow definitions (in the tenant) ----
my %defs = (
    'cycle'                => [ q{{"name": "w", "tasks": [{"id": "a", "dependencies": ["b"]}, {"id": "b", "dependencies": ["a"]}]}}, '22023', qr/cycle.*\ba\b|cycle.*\bb\b/ ],
    'long cycle'           => [ q{{"name": "w", "tasks": [{"id": "a", "dependencies": ["c"]}, {"id": "b", "dependencies": ["a"]}, {"id": "c", "dependencies": ["b"]}]}}, '22023', qr/cycle/ ],
    'self dependency'      => [ q{{"name": "w", "tasks": [{"id": "a", "dependencies": ["a"]}]}}, '22023', qr/\ba\b/ ],
    'unknown dependency'   => [ q{{"name": "w", "tasks": [{"id": "a", "dependencies": ["ghost"]}]}}, '22023', qr/ghost/ ],
    'repeated dependency'  => [ q{{"name": "w", "tasks": [{"id": "a"}, {"id": "b", "dependencies": ["a", "a"]}]}}, '22023', qr/\ba\b/ ],
    'duplicate task id'    => [ q{{"name": "w", "tasks": [{"id": "a"}, {"id": "a"}]}}, '22023', qr/\ba\b/ ],
    'unknown top key'      => [ q{{"name": "w", "nmae": "x", "tasks": [{"id": "a"}]}}, '22023', qr/nmae/ ],
    'unknown task key'     => [ q{{"name": "w", "tasks": [{"id": "a", "dependecies": []}]}}, '22023', qr/dependecies/ ],
    'misspelt backoff'     => [ q{{"name": "w", "tasks": [{"id": "a", "retry": {"attempts": 2, "backoff": "exponentail"}}]}}, '22023', qr/exponentail|backoff/ ],
    'attempts as string'   => [ q{{"name": "w", "tasks": [{"id": "a", "retry": {"attempts": "3"}}]}}, '22023', qr/attempts/ ],
    'attempts 0'           => [ q{{"name": "w", "tasks": [{"id": "a", "retry": {"attempts": 0}}]}}, '22023', qr/attempts/ ],
    'attempts 101'         => [ q{{"name": "w", "tasks": [{"id": "a", "retry": {"attempts": 101}}]}}, '22023', qr/attempts/ ],
    'attempts 1e100'       => [ q{{"name": "w", "tasks": [{"id": "a", "retry": {"attempts": 1e100}}]}}, '22023', qr/attempts/ ],
    'attempts 2.5'         => [ q{{"name": "w", "tasks": [{"id": "a", "retry": {"attempts": 2.5}}]}}, '22023', qr/attempts/ ],
    'negative timeout'     => [ q{{"name": "w", "tasks": [{"id": "a", "timeout_ms": -1}]}}, '22023', qr/timeout_ms/ ],
    'bad trigger rule'     => [ q{{"name": "w", "tasks": [{"id": "a", "trigger_rule": "sometimes"}]}}, '22023', qr/sometimes|trigger_rule/ ],
    'bad when op'          => [ q{{"name": "w", "tasks": [{"id": "a", "when": {"key": "k", "op": "like", "value": 1}}]}}, '22023', qr/like|op/ ],
    'priority 5000'        => [ q{{"name": "w", "tasks": [{"id": "a", "priority": 5000}]}}, '22023', qr/priority/ ],
    'bad kind'             => [ q{{"name": "w", "tasks": [{"id": "a", "kind": "shell"}]}}, '22023', qr/shell|kind/ ],
    'sql task without sql' => [ q{{"name": "w", "tasks": [{"id": "a", "kind": "sql"}]}}, '22023', qr/sql/ ],
    'name is a number'     => [ q{{"name": 42, "tasks": [{"id": "a"}]}}, '22023', qr/name/ ],
    'tasks is a string'    => [ q{{"name": "w", "tasks": "a"}}, '22023', qr/tasks/ ],
    'task is a number'     => [ q{{"name": "w", "tasks": [1]}}, '22023', qr/task/ ],
    'dependencies string'  => [ q{{"name": "w", "tasks": [{"id": "a"}, {"id": "b", "dependencies": "a"}]}}, '22023', qr/dependencies/ ],
    'no tasks'             => [ q{{"name": "w", "tasks": []}}, '22023', qr/task/ ],
    'no name'              => [ q{{"tasks": [{"id": "a"}]}}, '22023|22004', qr/name/ ],
    'definition is array'  => [ q{[{"name": "w"}]}, '22023', qr/object|definition/ ],
    'definition is string' => [ q{"w"}, '22023', qr/object|definition/ ],
    'definition is null'   => [ q{null}, '22023|22004', qr/object|definition|null|empty/ ],
    'injection in id'      => [ q{{"name": "w", "tasks": [{"id": "a'; DROP SCHEMA corpus CASCADE; --"}]}}, '22023', qr/DROP SCHEMA|invalid|id/ ],
    'injection in name'    => [ q{{"name": "w\"; DROP", "tasks": [{"id": "a"}]}}, '22023', qr/DROP|invalid|name/ ],
    'unicode id'           => [ qq{{"name": "w", "tasks": [{"id": "t\x{e9}che"}]}}, '22023', qr/t.che|id/ ],
    'id too long'          => [ '{"name": "w", "tasks": [{"id": "' . ('a' x 64) . '"}]}', '22023', qr/aaaa|id/ ],
);
for my $label (sort keys %defs) {
    my ($def, $state, $re) = @{ $defs{$label} };
    case("workflow: $label", "SELECT cloacina.register_workflow('" . ($def =~ s/'/''/gr) . "')", [ $state, $re ], 1);
}
case('workflow: NULL', 'SELECT cloacina.register_workflow(NULL)', [ '22004|22023', qr/definition|null|empty/ ], 1);
# deep nesting inside a condition value: accepted or refused clearly, never a crash
case('workflow: deep nesting (1000 levels in a when value)',
    q{SELECT cloacina.register_workflow(jsonb_build_object('name', 'deep', 'tasks', jsonb_build_array(jsonb_build_object('id', 'a', 'when',
      jsonb_build_object('key', 'k', 'op', 'equals', 'value', (SELECT repeat('[', 1000) || repeat(']', 1000))::jsonb)))))}, 'ok', 1);
case('workflow: nesting beyond the parser limit',
    q{SELECT (SELECT repeat('[', 100000) || repeat(']', 100000))::jsonb}, [ '54001', qr/stack depth/ ], 1);
# 1001 and 10,000 tasks: refused with 54000, quickly
for my $n (1001, 10000) {
    my $t0 = time;
    case("workflow: $n tasks", "SELECT cloacina.register_workflow(jsonb_build_object('name', 'huge', 'tasks',
        (SELECT jsonb_agg(jsonb_build_object('id', 't' || g)) FROM generate_series(1, $n) g)))", [ '54000', qr/1000|tasks/ ], 1);
    my $took = time - $t0;
    ok($took < 10, sprintf("$n tasks refused in %.2f s", $took));
}
case('workflow: 1000 tasks in a chain are accepted', q{SELECT cloacina.register_workflow(jsonb_build_object('name', 'chain1000', 'tasks',
    (SELECT jsonb_agg(CASE WHEN g = 1 THEN jsonb_build_object('id', 't1') ELSE jsonb_build_object('id', 't' || g, 'dependencies', jsonb_build_array('t' || (g - 1))) END) FROM generate_series(1, 1000) g)))}, 'ok', 1);

# ---- contexts and options ----
$node->safe_psql('postgres', q{SET search_path = corpus; SELECT cloacina.register_workflow('{"name": "ctx", "tasks": [{"id": "a"}]}')});
my %contexts = (
    'array'       => [ q{'[]'}, '22023', qr/context|object/ ], 'string' => [ q{'"s"'}, '22023', qr/context|object/ ],
    'number'      => [ q{'42'}, '22023', qr/context|object/ ], 'json null' => [ q{'null'}, '22023', qr/context|object/ ],
    'NUL escape'  => [ q{'{"k": "a\u0000b"}'}, '22P05', qr/0000|Unicode/ ],
    'bad surrogate' => [ q{'{"k": "\ud800"}'}, '22P02|22P05', qr/surrogate|Unicode|\\\\?u/ ]);
for my $label (sort keys %contexts) {
    my ($ctx, $state, $re) = @{ $contexts{$label} };
    case("context: $label", "SELECT cloacina.execute('ctx', $ctx)", [ $state, $re ], 1);
}
case('context: SQL NULL means an empty context', q{SELECT 1/(input_context = '{}')::int FROM corpus.executions WHERE id = cloacina.execute('ctx', NULL)}, 'ok', 1);
case('context: odd Unicode is kept', q{SELECT cloacina.execute('ctx', '{"emoji": "\ud83d\ude00", "rtl": "\u202eabc", "ls": "\u2028", "zw": "\u200b", "\u00e9": "key"}')}, 'ok', 1);
case('context: 10 MB document', q{SELECT cloacina.execute('ctx', jsonb_build_object('big', repeat('x', 10 * 1024 * 1024), 'list', (SELECT jsonb_agg(g) FROM generate_series(1, 10000) g)))}, 'ok', 1);
is($node->safe_psql('postgres', q{SET search_path = corpus;
    SELECT length(context ->> 'big') || ' ' || (context -> 'emoji' IS NULL) FROM cloacina.claim('w', NULL, 10) ORDER BY execution_id DESC LIMIT 1}),
   10 * 1024 * 1024 . ' true', 'the 10 MB context reaches the worker whole');
my %options = (
    'priority as string'  => [ q{'{"priority": "high"}'}, '22023', qr/priority/ ],
    'priority 1e9'        => [ q{'{"priority": 1000000000}'}, '22023', qr/priority/ ],
    'run_at not a date'   => [ q{'{"run_at": "yesterday-ish"}'}, '22007|22023|22008', qr/run_at|yesterday/ ],
    'unknown option'      => [ q{'{"prioity": 1}'}, '22023', qr/prioity/ ],
    'options array'       => [ q{'[]'}, '22023', qr/option/ ],
    'timeout_ms negative' => [ q{'{"timeout_ms": -5}'}, '22023', qr/timeout_ms/ ]);
for my $label (sort keys %options) {
    my ($opt, $state, $re) = @{ $options{$label} };
    case("options: $label", "SELECT cloacina.execute('ctx', '{}', $opt)", [ $state, $re ], 1);
}
case('execute unknown workflow', q{SELECT cloacina.execute('no_such_workflow')}, [ '42704', qr/no_such_workflow/ ], 1);
case('execute_batch with idempotency key', q{SELECT * FROM cloacina.execute_batch('ctx', ARRAY['{}']::jsonb[], '{"idempotency_key": "k"}')}, [ '22023', qr/idempotency_key/ ], 1);
case('execute_batch with a non-object', q{SELECT * FROM cloacina.execute_batch('ctx', ARRAY['{}', '[]']::jsonb[])}, [ '22023', qr/context|object/ ], 1);
case('status of unknown run', q{SELECT * FROM cloacina.execution_status(987654321)}, [ '42704', qr/987654321/ ], 1);
case('claim max_tasks 0', q{SELECT * FROM cloacina.claim('w', NULL, 0)}, [ '22023', qr/max_tasks/ ], 1);
case('claim max_tasks 100000', q{SELECT * FROM cloacina.claim('w', NULL, 100000)}, [ '22023', qr/max_tasks/ ], 1);
case('claim negative lease', q{SELECT * FROM cloacina.claim('w', NULL, 1, '-1 second')}, [ '22023', qr/lease/ ], 1);
case('complete with a non-object', q{SELECT cloacina.complete(1, 1, '[1]')}, [ '22023', qr/context|output|object/ ], 1);
case('complete_batch with unequal arrays', q{SELECT * FROM cloacina.complete_batch(ARRAY[1, 2], ARRAY[1], ARRAY['{}']::jsonb[])}, [ '2202E', qr/length|array/ ], 1);
case('heartbeat_batch with unequal arrays', q{SELECT * FROM cloacina.heartbeat_batch(ARRAY[1, 2], ARRAY[1])}, [ '2202E', qr/length|array/ ], 1);
case('wait with a negative timeout', q{SELECT * FROM cloacina.wait(1, '-1 second')}, [ '22023', qr/timeout/ ], 1);
case('schedule: bad cron', q{SELECT cloacina.schedule('s', 'ctx', '61 * * * *')}, [ '22023', qr/61|minute/ ], 1);
case('schedule: bad time zone', q{SELECT cloacina.schedule('s', 'ctx', '* * * * *', 'Mars/Base')}, [ '22023', qr{Mars/Base} ], 1);
case('schedule: bad catchup', q{SELECT cloacina.schedule('s', 'ctx', '* * * * *', 'UTC', '{}', 'sometimes')}, [ '22023', qr/sometimes|catchup/ ], 1);
case('schedule: unknown workflow', q{SELECT cloacina.schedule('s', 'ghost_wf', '* * * * *')}, [ '42704|22023', qr/ghost_wf/ ], 1);
case('tenant function outside a tenant', q{SELECT cloacina.execute('ctx')}, [ '3F000', qr/tenant/ ]);

# ---- nothing left behind; the server never went down ----
$node->safe_psql('postgres', q{SET search_path = corpus; SELECT count(cloacina.cancel(id)) FROM corpus.executions WHERE status IN ('running', 'paused')});
$node->safe_psql('postgres', q{SELECT cloacina.remove_tenant('corpus')});
$node->safe_psql('postgres', q{SELECT cloacina.create_tenant('corpus', 'corpus_user')});    # back to the baseline set of names
my $after = $node->safe_psql('postgres', q{
    SELECT (SELECT string_agg(nspname, ',' ORDER BY nspname) FROM pg_namespace) || ' / ' ||
           (SELECT string_agg(rolname, ',' ORDER BY rolname) FROM pg_roles) || ' / ' ||
           (SELECT string_agg(schema_name, ',' ORDER BY schema_name) FROM cloacina.tenant)});
my %before = map { $_ => 1 } split /[,\/ ]+/, $baseline;
my %now = map { $_ => 1 } split /[,\/ ]+/, $after;
my @leftovers = ((grep { !$before{$_} } sort keys %now), (grep { !$now{$_} } sort keys %before));
is(join(', ', @leftovers), '', 'no schema, role or registry row was left behind or lost');
is($node->safe_psql('postgres', 'SELECT pg_postmaster_start_time()'), $postmaster_start, 'the server never restarted');
my $crashes = () = slurp_file($node->logfile) =~ /terminated by signal|server process .* was terminated/g;
is($crashes, 0, 'no backend crashed');
my $leftovers = scalar(@leftovers);
is($unclear, 0, 'every case was refused clearly or handled correctly');
diag("bad input: $cases cases, $unclear unclear, $leftovers leftovers");
$node->stop;
done_testing();
