// test_reconnect.cpp — reconnection after pg_terminate_backend: the runner's connections (client
// pool, claimer, heartbeater, completer) come back with backoff and no run is lost; a completion
// rolled back by a deadlock is resent.
#define BOOST_TEST_MODULE reconnect
#include "support.hpp"

using namespace cloacina;
using namespace test_support;
using std::chrono::milliseconds;

namespace {

/// Terminates every backend whose application_name ends with `worker`; returns how many.
std::int64_t terminate_runner_backends(const std::string& url, const std::string& worker) {
    Connection admin(url);
    return admin
        .exec(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name LIKE '%' || $1 AND pid <> pg_backend_pid()",
            {Param(worker)})
        .int64(0, 0);
}

std::int64_t runner_backends(const std::string& url, const std::string& worker) {
    Connection admin(url);
    return admin.exec("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE '%' || $1", {Param(worker)})
        .int64(0, 0);
}

/// A tenant whose workflow "held" has one task that opens `started`, waits for `release`, and
/// sets "survived"; `worker` names the test's runner.
struct HeldWorkflow {
    const std::string url = database_url();
    TenantGuard tenant{unique_name("reconn"), ""};
    const std::string worker = unique_name("w");
    const std::shared_ptr<Gate> started = std::make_shared<Gate>();
    const std::shared_ptr<Gate> release = std::make_shared<Gate>();
    const std::shared_ptr<Registry> registry = std::make_shared<Registry>();

    HeldWorkflow() {
        registry->add(Workflow::builder("held")
                          .task(Task("held").handler([started = started, release = release](Context& c) {
                              started->open();
                              release->wait();
                              c.insert("survived", true);
                          }))
                          .build());
    }
};

}  // namespace

BOOST_AUTO_TEST_CASE(runner_survives_terminated_backends) {
    const std::string url = database_url();
    TenantGuard tenant{unique_name("reconn"), ""};
    const std::string worker = unique_name("w");
    auto registry = std::make_shared<Registry>();
    registry->add(
        Workflow::builder("echo").task(Task("echo").handler([](Context& c) { c.insert("echoed", true); })).build());
    DefaultRunner runner = DefaultRunner::with_schema(
        url, tenant.schema, fast_config(registry).worker_name(worker).reconnect_backoff_max(milliseconds(500)).build());

    BOOST_TEST(runner.execute("echo", Context()).status == WorkflowStatus::Completed);
    BOOST_TEST(terminate_runner_backends(url, worker) >= 3);  // client, claimer, heartbeater, completer

    // The client call reconnects and the worker's roles come back: the next run completes.
    const WorkflowResult after = runner.execute("echo", Context());
    BOOST_TEST(after.status == WorkflowStatus::Completed);
    BOOST_TEST(after.final_context.at<bool>("echoed"));
    BOOST_TEST(wait_until([&] { return runner.stats().reconnects >= 1; }));
    BOOST_TEST(wait_until([&] { return runner_backends(url, worker) >= 3; }));
}

BOOST_FIXTURE_TEST_CASE(result_of_a_running_handler_survives_a_terminated_backend, HeldWorkflow) {
    DefaultRunner runner = DefaultRunner::with_schema(url, tenant.schema,
                                                      fast_config(registry)
                                                          .worker_name(worker)
                                                          .lease(milliseconds(5000))
                                                          .heartbeat_interval(milliseconds(200))
                                                          .reconnect_backoff_max(milliseconds(500))
                                                          .build());
    ExecutionHandle handle = runner.execute_async("held", Context());
    CancelOnExit cancel_on_failure{handle};
    BOOST_REQUIRE(started->wait());
    BOOST_TEST(terminate_runner_backends(url, worker) >= 3);
    // The heartbeater notices first and reconnects while the handler still runs.
    BOOST_TEST(wait_until([&] { return runner.stats().reconnects >= 1; }));
    release->open();
    const WorkflowResult result = handle.wait();
    BOOST_TEST(result.status == WorkflowStatus::Completed);
    BOOST_TEST(result.final_context.at<bool>("survived"));
    BOOST_TEST(result.task("held")->attempt == 1);  // the same attempt: the lease was never lost
}

BOOST_FIXTURE_TEST_CASE(result_survives_a_deadlock_of_its_completion, HeldWorkflow) {
    // The runner's backends look for deadlocks after 2 s, the other session's after a minute: the
    // completion is the transaction PostgreSQL rolls back. (A backend looks once, deadlock_timeout
    // after it began to wait: the other session must close the cycle before that, so 20 ms was a
    // race the other session lost on a loaded machine, and then it was the one rolled back.)
    const std::string runner_url =
        url + (url.find('?') == std::string::npos ? "?" : "&") + "options=-c%20deadlock_timeout%3D2s";
    DefaultRunner runner = DefaultRunner::with_schema(runner_url, tenant.schema,
                                                      fast_config(registry).worker_name(worker).lease(30s).build());
    ExecutionHandle handle = runner.execute_async("held", Context());
    CancelOnExit cancel_on_failure{handle};
    BOOST_REQUIRE(started->wait());

    // Another session holds the task's row: the completion locks the run, then waits for the task ...
    Connection other(url);
    other.exec("SET deadlock_timeout = '60s'");
    other.exec("BEGIN");
    other.exec("SELECT 1 FROM " + tenant.schema + ".tasks WHERE execution_id = $1 FOR UPDATE",
               {Param(static_cast<long long>(handle.id()))});
    release->open();
    BOOST_REQUIRE(wait_until([&] {
        return Connection(url)
                   .exec(
                       "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'cloacina-sdk completer ' || $1 "
                       "AND wait_event_type = 'Lock'",
                       {Param(worker)})
                   .int64(0, 0) == 1;
    }));
    // ... and the other session asks for the run's row: a deadlock. This returns once the
    // completion has been rolled back.
    other.exec("SELECT 1 FROM " + tenant.schema + ".executions WHERE id = $1 FOR UPDATE",
               {Param(static_cast<long long>(handle.id()))});
    other.exec("COMMIT");

    // Resent, not dropped: the run completes in the first attempt, long before the lease expires.
    const auto result = handle.wait_for(15s);
    BOOST_REQUIRE(result.has_value());
    BOOST_TEST(result->status == WorkflowStatus::Completed);
    BOOST_TEST(result->final_context.at<bool>("survived"));
    BOOST_TEST(result->task("held")->attempt == 1);
    // (counted once the completer has the server's answer, which may come after the run's waiter)
    BOOST_TEST(wait_until([&] { return runner.stats().completed == 1u; }));
}

BOOST_AUTO_TEST_CASE(unreachable_server_fails_the_constructor) {
    BOOST_CHECK_THROW(DefaultRunner("postgresql://nobody@127.0.0.1:1/none?connect_timeout=2"), BrokenConnection);
}
