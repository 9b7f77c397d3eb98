// test_shutdown.cpp — shutdown() drains: it returns only after in-flight handlers finish (their
// results are submitted), or after the drain deadline, when the unfinished tasks are released for
// another worker to retry.
#define BOOST_TEST_MODULE shutdown
#include "support.hpp"

#include <future>

using namespace cloacina;
using namespace test_support;
using std::chrono::milliseconds;

BOOST_AUTO_TEST_CASE(shutdown_waits_for_in_flight_handlers) {
    const std::string url = database_url();
    TenantGuard tenant{unique_name("drain"), ""};
    auto started = std::make_shared<Gate>();
    auto release = std::make_shared<Gate>();
    auto registry = std::make_shared<Registry>();
    registry->add(Workflow::builder("drain_me")
                      .task(Task("work").handler([=](Context& c) {
                          started->open();
                          release->wait();
                          c.insert("finished_during_drain", true);
                      }))
                      .build());
    DefaultRunner worker = DefaultRunner::with_schema(url, tenant.schema, fast_config(registry).build());
    DefaultRunner client = DefaultRunner::with_schema(
        url, tenant.schema, fast_config(std::make_shared<Registry>()).enable_worker(false).build());
    ExecutionHandle handle = client.execute_async("drain_me", Context());
    CancelOnExit cancel_on_failure{handle};
    BOOST_REQUIRE(started->wait());

    auto shutting_down = std::async(std::launch::async, [&] { return worker.shutdown(); });
    // The handler is still running, so shutdown must not have returned.
    BOOST_TEST((shutting_down.wait_for(milliseconds(300)) == std::future_status::timeout));
    release->open();
    const ShutdownReport report = shutting_down.get();
    BOOST_TEST(report.drained == 1u);
    BOOST_TEST(report.abandoned == 0u);

    // Its result was submitted before shutdown returned: the run is already complete.
    const WorkflowResult result = handle.wait_for(milliseconds(5000)).value();
    BOOST_TEST(result.status == WorkflowStatus::Completed);
    BOOST_TEST(result.final_context.at<bool>("finished_during_drain"));
    // A second shutdown is a no-op.
    BOOST_TEST(worker.shutdown().drained == 1u);
}

BOOST_AUTO_TEST_CASE(drain_deadline_releases_unfinished_tasks) {
    const std::string url = database_url();
    TenantGuard tenant{unique_name("deadline"), ""};
    auto stubborn_started = std::make_shared<Gate>();
    auto stop_stubborn = std::make_shared<Gate>();
    auto attempts = std::make_shared<std::atomic<int>>(0);
    auto registry = std::make_shared<Registry>();
    registry->add(Workflow::builder("stubborn")
                      .task(Task("work")
                                .retry(RetryPolicy::fixed(3, milliseconds(10)))
                                .handler([=](Context& c, const CancellationToken&) {
                                    const int attempt = ++*attempts;
                                    if (attempt == 1) {
                                        stubborn_started->open();
                                        stop_stubborn->wait();  // ignores its token on purpose
                                    }
                                    c.insert("done_by_attempt", attempt);
                                }))
                      .build());
    auto first = std::make_unique<DefaultRunner>(DefaultRunner::with_schema(
        url, tenant.schema, fast_config(registry).shutdown_timeout(milliseconds(300)).build()));
    ExecutionHandle handle = first->execute_async("stubborn", Context());
    CancelOnExit cancel_on_failure{handle};
    BOOST_REQUIRE(stubborn_started->wait());

    const auto begin = std::chrono::steady_clock::now();
    const ShutdownReport report = first->shutdown();
    BOOST_TEST((std::chrono::steady_clock::now() - begin < std::chrono::seconds(5)));
    BOOST_TEST(report.abandoned == 1u);

    // The released task is not lost: another runner picks it up.
    DefaultRunner second = DefaultRunner::with_schema(url, tenant.schema, fast_config(registry).build());
    const WorkflowResult result = handle.wait();
    BOOST_TEST(result.status == WorkflowStatus::Completed);
    BOOST_TEST(result.final_context.at<int>("done_by_attempt") >= 2);
    stop_stubborn->open();  // let the detached handler thread end
    first.reset();
}
