// test_logging.cpp — structured log records: a failed attempt's record names its tenant, worker,
// workflow, run, task and attempt; the default handler (stderr) honours set_log_level; the seed's
// info()/warn() helpers go through the hook.
#define BOOST_TEST_MODULE logging
#include "support.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <mutex>
#include <vector>

using namespace cloacina;
using namespace test_support;

namespace {

/// Collects the records a handler receives.
struct Collected {
    std::mutex mutex;
    std::vector<LogRecord> records;
    LogHandler handler() {
        return [this](const LogRecord& record) {
            std::lock_guard lock(mutex);
            records.push_back(record);
        };
    }
    std::optional<LogRecord> find(const std::string& text) {
        std::lock_guard lock(mutex);
        for (const auto& r : records)
            if (r.message.find(text) != std::string::npos) return r;
        return std::nullopt;
    }
};

/// What the process writes to stderr while `work` runs.
template <class Work>
std::string stderr_of(Work&& work) {
    int fds[2];
    BOOST_REQUIRE(pipe(fds) == 0);
    fcntl(fds[0], F_SETFL, fcntl(fds[0], F_GETFL) | O_NONBLOCK);
    const int saved = dup(STDERR_FILENO);
    dup2(fds[1], STDERR_FILENO);
    work();
    dup2(saved, STDERR_FILENO);
    close(saved);
    close(fds[1]);
    std::string out;
    char chunk[4096];
    for (ssize_t n; (n = read(fds[0], chunk, sizeof chunk)) > 0;) out.append(chunk, static_cast<std::size_t>(n));
    close(fds[0]);
    return out;
}

}  // namespace

BOOST_AUTO_TEST_CASE(a_failed_attempt_is_logged_with_its_run_task_and_attempt) {
    const std::string url = database_url();
    TenantGuard tenant{unique_name("logging"), ""};
    auto registry = std::make_shared<Registry>();
    registry->add(Workflow::builder("flaky")
                      .task(Task("fetch").handler([](Context&) { throw TaskError("upstream said no", false); }))
                      .build());
    Collected collected;
    DefaultRunner runner = DefaultRunner::with_schema(
        url, tenant.schema,
        fast_config(registry).worker_name(unique_name("logger")).logger(collected.handler()).build());
    const WorkflowResult result = runner.execute("flaky", Context());
    BOOST_TEST(result.status == WorkflowStatus::Failed);
    runner.shutdown();

    const auto failed = collected.find("upstream said no");
    BOOST_REQUIRE_MESSAGE(failed.has_value(), "no record of the failed attempt");
    BOOST_TEST(failed->level == LogLevel::Info);
    BOOST_TEST(failed->tenant == tenant.schema);
    BOOST_TEST(failed->worker == runner.worker_name());
    BOOST_TEST(failed->workflow == "flaky");
    BOOST_TEST(failed->task == "fetch");
    BOOST_TEST(failed->execution_id == result.execution_id);
    BOOST_TEST(failed->task_id > 0);
    BOOST_TEST(failed->attempt == 1);
    const std::string line = to_string(*failed);
    BOOST_TEST(line.find("execution=" + std::to_string(result.execution_id)) != std::string::npos, line);
    BOOST_TEST(line.find("attempt=1") != std::string::npos, line);

    // A runner-wide record carries the tenant and worker, and no task fields.
    const auto started = collected.find("started in schema");
    BOOST_REQUIRE(started.has_value());
    BOOST_TEST(started->tenant == tenant.schema);
    BOOST_TEST(started->execution_id == 0);
    BOOST_TEST(started->task.empty());
}

BOOST_AUTO_TEST_CASE(default_handler_honours_the_level) {
    set_log_handler({});
    const LogLevel before = log_level();
    set_log_level(LogLevel::Debug);
    const std::string debug_on = stderr_of([] { debug("a debug line ", 1); });
    set_log_level(LogLevel::Warn);
    const std::string warn_only = stderr_of([] {
        info("an info line");
        warn("a warning ", 2, " of ", 3);
    });
    set_log_level(before);
    BOOST_TEST(debug_on == "cloacina DEBUG: a debug line 1\n");
    BOOST_TEST(warn_only == "cloacina WARN: a warning 2 of 3\n");
}

BOOST_AUTO_TEST_CASE(process_hook_receives_records_at_or_above_the_level) {
    Collected collected;
    set_log_handler(collected.handler());
    const LogLevel before = log_level();
    set_log_level(LogLevel::Info);
    debug("dropped");
    error("kept: ", 42);
    set_log_level(before);
    set_log_handler({});
    BOOST_TEST(!collected.find("dropped").has_value());
    const auto kept = collected.find("kept: 42");
    BOOST_REQUIRE(kept.has_value());
    BOOST_TEST(kept->level == LogLevel::Error);
}
