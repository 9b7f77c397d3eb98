// test_cancellation.cpp — the cooperative cancellation token: a cancelled run reaches the running
// handler, a task's timeout cancels its handler, and pause/resume hold claims.
#define BOOST_TEST_MODULE cancellation
#include "support.hpp"

using namespace cloacina;
using namespace test_support;
using std::chrono::milliseconds;

BOOST_AUTO_TEST_CASE(token_basics) {
    CancellationSource source;
    CancellationToken token = source.token();
    BOOST_TEST(!token.cancelled());
    BOOST_TEST(!token.wait_for(milliseconds(1)));
    BOOST_TEST(source.cancel(CancelReason::RunCancelled));
    BOOST_TEST(!source.cancel(CancelReason::Timeout));  // the first reason sticks
    BOOST_TEST(token.cancelled());
    BOOST_TEST((token.reason() == CancelReason::RunCancelled));
    BOOST_TEST(token.wait_for(std::chrono::hours(1)));  // returns at once
    BOOST_CHECK_THROW(token.throw_if_cancelled(), Cancelled);
}

BOOST_AUTO_TEST_CASE(cancelling_a_run_cancels_its_handler) {
    const std::string url = database_url();
    TenantGuard tenant{unique_name("cancel"), ""};
    auto started = std::make_shared<Gate>();
    auto seen = std::make_shared<std::atomic<int>>(static_cast<int>(CancelReason::None));
    auto after_ran = std::make_shared<std::atomic<bool>>(false);
    auto registry = std::make_shared<Registry>();
    registry->add(Workflow::builder("long_job")
                      .task(Task("crunch").handler([=](Context&, const CancellationToken& token) {
                          started->open();
                          token.wait_for(std::chrono::seconds(30));  // a cancellable "sleep"
                          seen->store(static_cast<int>(token.reason()));
                          token.throw_if_cancelled();
                      }))
                      .task(Task("after").depends_on("crunch").handler([=](Context&) { after_ran->store(true); }))
                      .build());
    DefaultRunner runner = DefaultRunner::with_schema(
        url, tenant.schema,
        fast_config(registry).lease(milliseconds(3000)).heartbeat_interval(milliseconds(200)).build());

    ExecutionHandle handle = runner.execute_async("long_job", Context());
    CancelOnExit cancel_on_failure{handle};
    BOOST_REQUIRE(started->wait());
    BOOST_TEST(handle.cancel());
    const WorkflowResult result = handle.wait();
    BOOST_TEST(result.status == WorkflowStatus::Cancelled);
    BOOST_TEST(
        wait_until([&] { return seen->load() != static_cast<int>(CancelReason::None); }, std::chrono::seconds(10)));
    BOOST_TEST(seen->load() == static_cast<int>(CancelReason::RunCancelled));
    BOOST_TEST(!after_ran->load());
    // A cancelled run never flips back.
    BOOST_TEST(wait_until([&] { return runner.stats().running == 0; }, std::chrono::seconds(10)));
    BOOST_TEST(handle.status() == WorkflowStatus::Cancelled);
    BOOST_TEST(!handle.resume());
}

BOOST_AUTO_TEST_CASE(timeout_cancels_the_handler_and_fails_the_attempt) {
    const std::string url = database_url();
    TenantGuard tenant{unique_name("timeout"), ""};
    auto seen = std::make_shared<std::atomic<int>>(static_cast<int>(CancelReason::None));
    auto handler_saw = std::make_shared<Gate>();
    auto registry = std::make_shared<Registry>();
    registry->add(
        Workflow::builder("slow")
            .task(Task("too_slow").timeout(milliseconds(300)).handler([=](Context&, const CancellationToken& token) {
                token.wait_for(std::chrono::seconds(30));
                seen->store(static_cast<int>(token.reason()));
                handler_saw->open();
            }))
            .build());
    DefaultRunner runner = DefaultRunner::with_schema(url, tenant.schema, fast_config(registry).build());
    const auto begin = std::chrono::steady_clock::now();
    const WorkflowResult result = runner.execute("slow", Context());
    BOOST_TEST(result.status == WorkflowStatus::Failed);
    // The attempt fails when the timeout passes; the handler's thread wakes from its token on its
    // own schedule, so the run's result may come back first.
    BOOST_REQUIRE(handler_saw->wait(std::chrono::seconds(10)));
    BOOST_TEST(seen->load() == static_cast<int>(CancelReason::Timeout));
    BOOST_TEST((std::chrono::steady_clock::now() - begin < std::chrono::seconds(15)));
    BOOST_REQUIRE(result.task("too_slow") != nullptr);
    BOOST_TEST(result.task("too_slow")->error.value_or("").find("time") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(pause_holds_claims_until_resume) {
    const std::string url = database_url();
    TenantGuard tenant{unique_name("pause"), ""};
    auto first_started = std::make_shared<Gate>();
    auto release_first = std::make_shared<Gate>();
    auto second_ran = std::make_shared<std::atomic<bool>>(false);
    auto registry = std::make_shared<Registry>();
    registry->add(Workflow::builder("two_steps")
                      .task(Task("one").handler([=](Context&) {
                          first_started->open();
                          release_first->wait();
                      }))
                      .task(Task("two").depends_on("one").handler([=](Context&) { second_ran->store(true); }))
                      .build());
    DefaultRunner runner = DefaultRunner::with_schema(url, tenant.schema, fast_config(registry).build());
    ExecutionHandle handle = runner.execute_async("two_steps", Context());
    CancelOnExit cancel_on_failure{handle};
    BOOST_REQUIRE(first_started->wait());
    BOOST_TEST(handle.pause());
    release_first->open();
    // While paused, "two" is not claimed: the run stays paused (wait returns the non-terminal status).
    BOOST_TEST(!handle.wait_for(milliseconds(800)).has_value());
    BOOST_TEST(!second_ran->load());
    BOOST_TEST(handle.status() == WorkflowStatus::Paused);
    BOOST_TEST(handle.resume());
    BOOST_TEST(handle.wait().status == WorkflowStatus::Completed);
    BOOST_TEST(second_ran->load());
}
