// test_claim_wait.cpp — a claim that waits for work on the server (cloacina.claim's `wait`): the
// commit that makes a task ready wakes it, long before its wait runs out, and a runner whose
// claimer is waiting stops without waiting the claim out. The waits here are a minute long
// (cloacina.max_claim_wait raised for the session), so that a claim that was not woken, or not
// cancelled, fails the test instead of returning on time by its own deadline.
#define BOOST_TEST_MODULE claim_wait
#include "support.hpp"

#include <future>

using namespace cloacina;
using namespace test_support;

namespace {

constexpr auto kLongWait = "60 seconds";

/// `url` with cloacina.max_claim_wait set for its sessions (a superuser's: the setting is).
std::string with_long_claim_wait(const std::string& url) {
    if (url.find("://") != std::string::npos)
        return url + (url.find('?') == std::string::npos ? "?" : "&") + "options=-c%20cloacina.max_claim_wait%3D60s";
    return url + " options='-c cloacina.max_claim_wait=60s'";
}

/// Whether backend `pid` is sleeping in a claim's wait (the condition variable's wait event).
bool waiting_in_claim(Connection& observer, int pid) {
    return observer
        .exec(
            "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE pid = $1 AND state = 'active' "
            "AND wait_event_type = 'Extension')",
            {Param(pid)})
        .boolean(0, 0);
}

struct Fixture {
    std::string schema = unique_name("claimwait");
    TenantGuard guard{schema, ""};

    Fixture() {
        Connection admin(database_url());
        admin.exec("SELECT 1 FROM cloacina.create_tenant($1)", {Param(schema)});
        tenant().exec("SELECT cloacina.register_workflow('{\"name\": \"one\", \"tasks\": [{\"id\": \"step\"}]}')");
    }

    Connection tenant(const std::string& url = database_url()) const {
        return Connection(ConnectionOptions{url, "", schema, "test_claim_wait"});
    }
};

}  // namespace

BOOST_FIXTURE_TEST_CASE(a_commit_that_makes_a_task_ready_wakes_the_waiting_claim, Fixture) {
    Connection claimer = tenant(with_long_claim_wait(database_url()));
    Connection observer = tenant();
    const int pid = claimer.backend_pid();

    auto claimed = std::async(std::launch::async, [&] {
        return claimer.exec("SELECT task, fence FROM cloacina.claim('w', NULL, 1, '30 seconds', $1::interval)",
                            {Param(kLongWait)});
    });
    BOOST_REQUIRE(wait_until([&] { return waiting_in_claim(observer, pid); }));
    const std::int64_t run = observer.exec("SELECT cloacina.execute('one')").int64(0, 0);

    // Woken by the commit: well before the minute of its wait is over.
    BOOST_REQUIRE(claimed.wait_for(30s) == std::future_status::ready);
    const Result rows = claimed.get();
    BOOST_REQUIRE(rows.rows() == 1);
    BOOST_TEST(rows.text(0, 0) == "step");
    BOOST_TEST(rows.int64(0, 1) == 1);
    BOOST_TEST(observer.exec("SELECT status FROM cloacina.execution_status($1)", {Param(run)}).text(0, 0) == "running");
    BOOST_TEST(observer
                   .exec("SELECT count(*) FROM " + schema + ".tasks WHERE execution_id = $1 AND status = 'running'",
                         {Param(run)})
                   .int64(0, 0) == 1);
    observer.exec("SELECT cloacina.cancel($1)", {Param(run)});
}

BOOST_FIXTURE_TEST_CASE(a_claim_waiting_for_another_tenant_is_not_taken_from, Fixture) {
    // A task made ready in another tenant wakes this claim at most (tenants share wake-up slots
    // by hash), and it claims nothing there.
    const std::string other = unique_name("claimwait_other");
    TenantGuard other_guard{other, ""};
    Connection admin(database_url());
    admin.exec("SELECT 1 FROM cloacina.create_tenant($1)", {Param(other)});
    Connection other_tenant(ConnectionOptions{database_url(), "", other, "test_claim_wait"});
    other_tenant.exec("SELECT cloacina.register_workflow('{\"name\": \"one\", \"tasks\": [{\"id\": \"step\"}]}')");

    Connection claimer = tenant(database_url());
    claimer.exec("SET cloacina.max_claim_wait = '2s'");
    const int pid = claimer.backend_pid();
    auto claimed = std::async(std::launch::async, [&] {
        return claimer.exec("SELECT count(*) FROM cloacina.claim('w', NULL, 1, '30 seconds', '1 hour')").int64(0, 0);
    });
    BOOST_REQUIRE(wait_until([&] { return waiting_in_claim(admin, pid); }));
    const std::int64_t run = other_tenant.exec("SELECT cloacina.execute('one')").int64(0, 0);
    BOOST_REQUIRE(claimed.wait_for(30s) == std::future_status::ready);
    BOOST_TEST(claimed.get() == 0);
    BOOST_TEST(
        other_tenant
            .exec("SELECT count(*) FROM " + other + ".tasks WHERE execution_id = $1 AND status = 'ready'", {Param(run)})
            .int64(0, 0) == 1);
    other_tenant.exec("SELECT cloacina.cancel($1)", {Param(run)});
}

BOOST_FIXTURE_TEST_CASE(a_runner_stops_without_waiting_out_its_claim, Fixture) {
    auto registry = std::make_shared<Registry>();
    registry->add(Workflow::builder("one").task(Task("step").handler([](Context&) {})).build());
    // Its claims wait a minute for work (poll_interval, cut to the session's max_claim_wait).
    DefaultRunner worker = DefaultRunner::with_schema(with_long_claim_wait(database_url()), schema,
                                                      fast_config(registry).poll_interval(60s).build());
    Connection observer = tenant();
    int claimer_pid = 0;
    BOOST_REQUIRE(wait_until([&] {
        const Result r = observer.exec(
            "SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'cloacina-sdk claimer%' "
            "AND state = 'active' AND wait_event_type = 'Extension' AND query LIKE '%cloacina.claim(%'");
        if (r.rows() == 1) claimer_pid = static_cast<int>(r.int64(0, 0));
        return r.rows() == 1;
    }));

    auto stopped = std::async(std::launch::async, [&] { return worker.shutdown(); });
    BOOST_TEST((stopped.wait_for(20s) == std::future_status::ready));
    stopped.get();
    // The claim was cancelled, not left to wait out its minute on the server.
    BOOST_TEST(wait_until([&] { return !waiting_in_claim(observer, claimer_pid); }));
}
