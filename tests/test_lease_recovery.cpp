// test_lease_recovery.cpp — a worker process killed mid-task: after its lease expires, the server
// returns the task to ready and another runner finishes it (the attempt counts).
#define BOOST_TEST_MODULE lease_recovery
#include "support.hpp"

#include <spawn.h>
#include <sys/wait.h>
#include <csignal>

extern char** environ;

using namespace cloacina;
using namespace test_support;

BOOST_AUTO_TEST_CASE(killed_worker_task_is_finished_by_another_runner) {
    const std::string url = database_url();
    TenantGuard tenant{unique_name("lease"), ""};
    auto registry = std::make_shared<Registry>();
    auto attempts_here = std::make_shared<std::atomic<int>>(0);
    registry->add(
        Workflow::builder("lease_victim")
            .task(Task("work").retry(RetryPolicy::fixed(3, std::chrono::milliseconds(10))).handler([=](Context& c) {
                ++*attempts_here;
                c.insert("finished_by", "survivor");
            }))
            .build());
    // Register the workflow (no worker yet) and start a run.
    DefaultRunner client =
        DefaultRunner::with_schema(url, tenant.schema, fast_config(registry).enable_worker(false).build());
    ExecutionHandle handle = client.execute_async("lease_victim", Context());
    CancelOnExit cancel_on_failure{handle};

    // The helper process claims the task and hangs in its handler.
    pid_t child = 0;
    std::string program = CLOACINA_TEST_WORKER;
    std::string url_arg = url;
    std::string schema_arg = tenant.schema;
    char* args[] = {program.data(), url_arg.data(), schema_arg.data(), nullptr};
    BOOST_REQUIRE(posix_spawn(&child, program.c_str(), nullptr, nullptr, args, environ) == 0);
    const bool running = wait_until(
        [&] {
            const WorkflowResult r = client.result(handle.id());
            const TaskResult* t = r.task("work");
            return t != nullptr && t->status == TaskStatus::Running;
        },
        std::chrono::seconds(30));
    BOOST_REQUIRE_MESSAGE(running, "the helper worker never started the task");

    kill(child, SIGKILL);
    int status = 0;
    waitpid(child, &status, 0);

    // A survivor takes over once the lease (2 s) expires and the background worker requeues it.
    DefaultRunner survivor = DefaultRunner::with_schema(url, tenant.schema, fast_config(registry).build());
    const std::optional<WorkflowResult> result = handle.wait_for(std::chrono::seconds(60));
    BOOST_REQUIRE_MESSAGE(result.has_value(), "the abandoned task was not recovered within 60 s");
    BOOST_TEST(result->status == WorkflowStatus::Completed);
    BOOST_TEST(result->final_context.at<std::string>("finished_by") == "survivor");
    BOOST_TEST(result->task("work")->attempt >= 2);
    BOOST_TEST(attempts_here->load() == 1);
}
