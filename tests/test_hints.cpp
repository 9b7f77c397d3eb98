// test_hints.cpp — the 'ready' hints a tenant's workers LISTEN for: a completion that claims the
// tasks it made ready sends none (it would wake other workers to claim nothing), and one that
// leaves ready tasks behind, or does not claim, still does. A listener tells "no hint" from "not
// yet" with a sentinel: notifications of one session arrive in commit order, so a hint sent by
// the transaction arrives before the sentinel sent after it.
#define BOOST_TEST_MODULE hints
#include "support.hpp"

#include <poll.h>

#include <tuple>

using namespace cloacina;
using namespace test_support;

namespace {

struct Fixture {
    std::string schema = unique_name("hints");
    TenantGuard guard{schema, ""};
    std::string channel;

    ~Fixture() {
        try {  // a tenant with unfinished runs cannot be removed
            Connection(database_url())
                .exec("SELECT cloacina._cancel($1, id) FROM " + schema +
                          ".executions WHERE status IN ('running', 'paused')",
                      {Param(schema)});
        } catch (const std::exception& e) {
            BOOST_TEST_MESSAGE("cancelling the runs of " << schema << " failed: " << e.what());
        }
    }

    Fixture() {
        Connection admin(database_url());
        admin.exec("SELECT 1 FROM cloacina.create_tenant($1)", {Param(schema)});
        Connection c = tenant();
        // a -> b, plus "other", a root handled by some other worker.
        c.exec(
            "SELECT cloacina.register_workflow('{\"name\": \"chain\", \"tasks\": [{\"id\": \"a\"}, "
            "{\"id\": \"b\", \"dependencies\": [\"a\"]}]}')");
        c.exec("SELECT cloacina.register_workflow('{\"name\": \"other\", \"tasks\": [{\"id\": \"o\"}]}')");
        channel = std::string(c.exec("SELECT cloacina.notify_channel()").text(0, 0));
    }

    Connection tenant() const { return Connection(ConnectionOptions{database_url(), "", schema, "test_hints"}); }

    /// Claims chain.a of a new run: (task id, fence).
    std::pair<long long, long long> claimed_root(Connection& c) const {
        c.exec("SELECT cloacina.execute('chain')");
        Result r = c.exec("SELECT task_id, fence FROM cloacina.claim('w', '{chain.a}', 1)");
        BOOST_REQUIRE(r.rows() == 1);
        return {r.int64(0, 0), r.int64(0, 1)};
    }
};

/// The payloads the listener receives up to the sentinel, which `sender` sends now.
std::vector<std::string> hints_before_sentinel(Connection& listener, Connection& sender, const std::string& channel) {
    sender.exec("SELECT pg_notify($1, 'sentinel')", {Param(channel)});
    std::vector<std::string> received;
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (std::chrono::steady_clock::now() < deadline) {
        for (auto& payload : listener.consume_notifications()) {
            if (payload == "sentinel") return received;
            received.push_back(payload);
        }
        pollfd fd{listener.socket(), POLLIN, 0};
        (void)poll(&fd, 1, 100);
    }
    BOOST_FAIL("the sentinel notification did not arrive within 10 s");
    return received;
}

/// A listener on the tenant's channel and a worker holding chain.a of a new run; the hints so far
/// are consumed.
struct Session {
    Connection listener;
    Connection worker;
    std::string channel;
    long long task = 0;
    long long fence = 0;

    explicit Session(const Fixture& f) : listener(f.tenant()), worker(f.tenant()), channel(f.channel) {
        listener.exec("LISTEN " + listener.quote_identifier(channel));
        std::tie(task, fence) = f.claimed_root(worker);
        (void)hints();  // the execute's own
    }

    std::vector<std::string> hints() { return hints_before_sentinel(listener, worker, channel); }

    /// Completes chain.a and claims (chain.b only) in one transaction; the claimed tasks.
    Result complete_then_claim() {
        worker.exec("BEGIN");
        worker.exec(
            "SELECT * FROM cloacina.complete_batch(ARRAY[$1]::bigint[], ARRAY[$2]::bigint[], "
            "ARRAY['{}']::jsonb[])",
            {Param(task), Param(fence)});
        Result claimed = worker.exec("SELECT task FROM cloacina.claim('w', '{chain.b}', 4)");
        worker.exec("COMMIT");
        return claimed;
    }

    bool complete() {
        return worker.exec("SELECT cloacina.complete($1, $2, '{}')", {Param(task), Param(fence)}).boolean(0, 0);
    }
};

}  // namespace

BOOST_FIXTURE_TEST_CASE(a_completion_that_claims_what_it_made_ready_sends_no_hint, Fixture) {
    Session s(*this);
    Result claimed = s.complete_then_claim();
    BOOST_REQUIRE(claimed.rows() == 1);
    BOOST_TEST(claimed.text(0, 0) == "b");
    BOOST_TEST(s.hints().empty());
}

BOOST_FIXTURE_TEST_CASE(a_completion_without_a_claim_sends_the_hint, Fixture) {
    Session s(*this);
    BOOST_TEST(s.complete());
    BOOST_TEST(s.hints() == std::vector<std::string>{"ready"});
}

BOOST_FIXTURE_TEST_CASE(a_claim_that_leaves_ready_tasks_keeps_the_hint, Fixture) {
    Session s(*this);
    s.worker.exec("SELECT cloacina.execute('other')");  // ready, for a worker that handles "other"
    (void)s.hints();
    BOOST_REQUIRE(s.complete_then_claim().rows() == 1);
    BOOST_TEST(s.hints() == std::vector<std::string>{"ready"});
}

BOOST_FIXTURE_TEST_CASE(a_rolled_back_completion_sends_no_hint, Fixture) {
    Session s(*this);
    s.worker.exec("BEGIN");
    BOOST_TEST(s.complete());
    s.worker.exec("ROLLBACK");
    BOOST_TEST(s.hints().empty());
    // and the next transaction's hint is its own
    BOOST_TEST(s.complete());
    BOOST_TEST(s.hints() == std::vector<std::string>{"ready"});
}
