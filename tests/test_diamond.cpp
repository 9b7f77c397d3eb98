// test_diamond.cpp — a diamond of dependencies: fan-out, fan-in, and the deterministic merge of the
// dependencies' outputs (in declaration order; objects merge recursively, later scalars win).
#define BOOST_TEST_MODULE diamond
#include "support.hpp"

using namespace cloacina;
using namespace test_support;

namespace {

std::shared_ptr<Registry> make_registry() {
    auto registry = std::make_shared<Registry>();
    // start -> {left, right} -> join
    registry->add(Workflow::builder("diamond")
                      .task(Task("start").handler([](Context& c) {
                          c.insert("origin", "start");
                          c.insert("shared", "start");
                          c.insert("nested", boost::json::object{{"start", 1}});
                      }))
                      .task(Task("left").depends_on("start").handler([](Context& c) {
                          c.insert("left_saw", c.at<std::string>("origin"));
                          c.update("shared", "left");
                          c.update("nested", boost::json::object{{"start", 1}, {"left", 2}});
                      }))
                      .task(Task("right").depends_on("start").handler([](Context& c) {
                          c.insert("right_saw", c.at<std::string>("origin"));
                          c.update("shared", "right");
                          c.update("nested", boost::json::object{{"start", 1}, {"right", 3}});
                      }))
                      .task(Task("join").dependencies({"left", "right"}).handler([](Context& c) {
                          c.insert("join_saw_shared", c.at<std::string>("shared"));
                          c.insert("join_saw_both", c.contains("left_saw") && c.contains("right_saw"));
                          c.insert("join_saw_nested", c.at<boost::json::object>("nested"));
                      }))
                      .build());
    // The same diamond with the join's dependencies declared the other way round.
    registry->add(Workflow::builder("diamond_reversed")
                      .task(Task("start").handler([](Context& c) { c.insert("shared", "start"); }))
                      .task(Task("left").depends_on("start").handler([](Context& c) { c.update("shared", "left"); }))
                      .task(Task("right").depends_on("start").handler([](Context& c) { c.update("shared", "right"); }))
                      .task(Task("join").dependencies({"right", "left"}).handler([](Context& c) {
                          c.insert("join_saw_shared", c.at<std::string>("shared"));
                      }))
                      .build());
    return registry;
}

}  // namespace

BOOST_AUTO_TEST_CASE(diamond_merges_in_declaration_order) {
    const std::string url = database_url();
    TenantGuard tenant{unique_name("diamond"), ""};
    DefaultRunner runner =
        DefaultRunner::with_schema(url, tenant.schema, fast_config(make_registry()).max_concurrent_tasks(4).build());

    const WorkflowResult result = runner.execute("diamond", Context());
    BOOST_REQUIRE_MESSAGE(result.status == WorkflowStatus::Completed,
                          "status " << result.status << " error " << result.error.value_or(""));
    const Context& c = result.final_context;
    BOOST_TEST(c.at<std::string>("left_saw") == "start");
    BOOST_TEST(c.at<std::string>("right_saw") == "start");
    BOOST_TEST(c.at<bool>("join_saw_both"));
    // join depends on {left, right}: right's scalar comes later and wins.
    BOOST_TEST(c.at<std::string>("join_saw_shared") == "right");
    // Objects merge recursively: both branches' keys survive.
    const auto nested = c.at<boost::json::object>("join_saw_nested");
    BOOST_TEST(nested.contains("start"));
    BOOST_TEST(nested.contains("left"));
    BOOST_TEST(nested.contains("right"));
    // final_context: input + every completed task's output in topological order (ties: declaration).
    BOOST_TEST(c.at<std::string>("shared") == "right");
    BOOST_TEST(result.task_results.size() == 4u);
    for (const auto& t : result.task_results) BOOST_TEST(t.status == TaskStatus::Completed);

    const WorkflowResult reversed = runner.execute("diamond_reversed", Context());
    BOOST_REQUIRE(reversed.status == WorkflowStatus::Completed);
    BOOST_TEST(reversed.final_context.at<std::string>("join_saw_shared") == "left");
}

BOOST_AUTO_TEST_CASE(branches_run_in_parallel) {
    // left and right each wait until the other has started: only possible when both run at once.
    const std::string url = database_url();
    TenantGuard tenant{unique_name("diamondpar"), ""};
    auto started = std::make_shared<std::atomic<int>>(0);
    auto branch = [started](Context& c, const CancellationToken& token) {
        started->fetch_add(1);
        const bool both = wait_until([&] { return started->load() >= 2 || token.cancelled(); }, 20s);
        c.insert(std::string("parallel_") + std::to_string(started->load()), both);
    };
    auto registry = std::make_shared<Registry>();
    registry->add(Workflow::builder("parallel_diamond")
                      .task(Task("start").handler([](Context&) {}))
                      .task(Task("left").depends_on("start").handler(branch))
                      .task(Task("right").depends_on("start").handler(branch))
                      .task(Task("join").dependencies({"left", "right"}).handler([](Context&) {}))
                      .build());
    DefaultRunner runner =
        DefaultRunner::with_schema(url, tenant.schema, fast_config(registry).max_concurrent_tasks(2).build());
    const WorkflowResult result = runner.execute("parallel_diamond", Context());
    BOOST_REQUIRE(result.status == WorkflowStatus::Completed);
    BOOST_TEST(result.final_context.at<bool>("parallel_2"));
}

BOOST_AUTO_TEST_CASE(an_idle_worker_claims_the_next_step_with_the_completion) {
    // An idle runner's claimer waits on the server with its free slots reserved. The completion
    // of a task with dependents must still claim what it makes ready, in the same transaction
    // (the slot its result kept): the next step then starts at the moment the previous one
    // completed (the same transaction's timestamp), not after a second claim.
    const std::string url = database_url();
    TenantGuard tenant{unique_name("chainstep"), ""};
    auto registry = std::make_shared<Registry>();
    registry->add(Workflow::builder("chain")
                      .task(Task("a").handler([](Context&) {}))
                      .task(Task("b").depends_on("a").handler([](Context&) {}))
                      .task(Task("c").depends_on("b").handler([](Context&) {}))
                      .build());
    DefaultRunner runner = DefaultRunner::with_schema(
        url, tenant.schema, fast_config(registry).max_concurrent_tasks(4).claim_batch(4).build());
    constexpr int kRuns = 20;
    for (int i = 0; i < kRuns; ++i)
        BOOST_REQUIRE(runner.execute("chain", Context()).status == WorkflowStatus::Completed);

    // The schema for each statement, not the session: behind PgBouncer a session's setting
    // would stay with the server connection and reach other clients.
    Connection in_tenant(ConnectionOptions{url, "", tenant.schema, "test_diamond"});
    const Result steps = in_tenant.exec(
        "SELECT count(*) FILTER (WHERE b.started_at = a.finished_at), "
        "       count(*) FILTER (WHERE c.started_at = b.finished_at), count(*) "
        "  FROM tasks a JOIN tasks b ON b.execution_id = a.execution_id AND b.task = 'b' "
        "               JOIN tasks c ON c.execution_id = a.execution_id AND c.task = 'c' "
        " WHERE a.task = 'a'");
    BOOST_TEST(steps.int64(0, 2) == kRuns);
    BOOST_TEST(steps.int64(0, 0) == kRuns, "b claimed with a's completion in " << steps.int64(0, 0) << " runs");
    BOOST_TEST(steps.int64(0, 1) == kRuns, "c claimed with b's completion in " << steps.int64(0, 1) << " runs");
}
