// test_retries.cpp — retry policies: a task that fails twice and succeeds on attempt 3, attempts
// exhausted, non-retryable errors, and a failed attempt's output being discarded.
#define BOOST_TEST_MODULE retries
#include "support.hpp"

using namespace cloacina;
using namespace test_support;
using std::chrono::milliseconds;

namespace {

struct Counters {
    std::atomic<int> flaky{0};
    std::atomic<int> doomed{0};
    std::atomic<int> fatal{0};
};

std::shared_ptr<Registry> make_registry(std::shared_ptr<Counters> n) {
    auto registry = std::make_shared<Registry>();
    registry->add(Workflow::builder("flaky")
                      .task(Task("call_api")
                                .retry(RetryPolicy::exponential(3, milliseconds(50), milliseconds(400)))
                                .handler([n](Context& c) {
                                    const int attempt = ++n->flaky;
                                    c.insert("partial_from_attempt_" + std::to_string(attempt), true);
                                    if (attempt < 3)
                                        throw TaskError("upstream unavailable (attempt " + std::to_string(attempt) +
                                                        ")");
                                    c.insert("succeeded_on_attempt", attempt);
                                }))
                      .build());
    registry->add(Workflow::builder("doomed")
                      .task(Task("always_fails").retry(RetryPolicy::fixed(2, milliseconds(20))).handler([n](Context&) {
                          ++n->doomed;
                          throw std::runtime_error("broken for good");
                      }))
                      .task(Task("after").depends_on("always_fails").handler([](Context&) {}))
                      .build());
    registry->add(Workflow::builder("fatal")
                      .task(Task("refuses").retry(RetryPolicy::fixed(5, milliseconds(20))).handler([n](Context&) {
                          ++n->fatal;
                          throw TaskError("invalid input, retrying cannot help", false);
                      }))
                      .build());
    return registry;
}

}  // namespace

BOOST_AUTO_TEST_CASE(retries_until_success) {
    const std::string url = database_url();
    TenantGuard tenant{unique_name("retry"), ""};
    auto n = std::make_shared<Counters>();
    DefaultRunner runner = DefaultRunner::with_schema(url, tenant.schema, fast_config(make_registry(n)).build());

    const WorkflowResult flaky = runner.execute("flaky", Context());
    BOOST_REQUIRE_MESSAGE(flaky.status == WorkflowStatus::Completed, "status " << flaky.status);
    BOOST_TEST(n->flaky.load() == 3);
    BOOST_TEST(flaky.final_context.at<int>("succeeded_on_attempt") == 3);
    // Failed attempts' outputs are discarded.
    BOOST_TEST(!flaky.final_context.contains("partial_from_attempt_1"));
    BOOST_TEST(!flaky.final_context.contains("partial_from_attempt_2"));
    BOOST_TEST(flaky.final_context.contains("partial_from_attempt_3"));
    BOOST_REQUIRE(flaky.task("call_api") != nullptr);
    BOOST_TEST(flaky.task("call_api")->attempt == 3);
    BOOST_TEST(flaky.task("call_api")->status == TaskStatus::Completed);
}

BOOST_AUTO_TEST_CASE(attempts_run_out) {
    const std::string url = database_url();
    TenantGuard tenant{unique_name("retry"), ""};
    auto n = std::make_shared<Counters>();
    DefaultRunner runner = DefaultRunner::with_schema(url, tenant.schema, fast_config(make_registry(n)).build());

    const WorkflowResult doomed = runner.execute("doomed", Context());
    BOOST_TEST(doomed.status == WorkflowStatus::Failed);
    BOOST_TEST(n->doomed.load() == 2);
    const TaskResult* failed = doomed.task("always_fails");
    BOOST_REQUIRE(failed != nullptr);
    BOOST_TEST(failed->status == TaskStatus::Failed);
    BOOST_TEST(failed->attempt == 2);
    BOOST_TEST(failed->error.value_or("").find("broken for good") != std::string::npos);
    const TaskResult* after = doomed.task("after");
    BOOST_REQUIRE(after != nullptr);
    BOOST_TEST((after->status == TaskStatus::Skipped || after->status == TaskStatus::Cancelled));
}

BOOST_AUTO_TEST_CASE(non_retryable_error_fails_at_once) {
    const std::string url = database_url();
    TenantGuard tenant{unique_name("retry"), ""};
    auto n = std::make_shared<Counters>();
    DefaultRunner runner = DefaultRunner::with_schema(url, tenant.schema, fast_config(make_registry(n)).build());

    const WorkflowResult fatal = runner.execute("fatal", Context());
    BOOST_TEST(fatal.status == WorkflowStatus::Failed);
    BOOST_TEST(n->fatal.load() == 1);
    BOOST_TEST(fatal.task("refuses")->error.value_or("").find("retrying cannot help") != std::string::npos);
}
