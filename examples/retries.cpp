// examples/retries.cpp — retries with exponential backoff: a task that fails twice and succeeds on
// attempt 3 (delays 200 ms, then 400 ms, capped at 5 s).
#include <cloacina/cloacina.hpp>

#include <atomic>
#include <cstdlib>
#include <iostream>
#include <stdexcept>
#include <string>

using namespace cloacina;
using namespace std::chrono_literals;

static std::atomic<int> g_calls{0};

// The admin URL of a database with the cloacina extension, from DATABASE_URL.
static std::string database_url() {
    const char* url = std::getenv("DATABASE_URL");
    if (url == nullptr || *url == '\0')
        throw std::runtime_error("set DATABASE_URL to an admin URL of a database with the cloacina extension");
    return url;
}

CLOACINA_WORKFLOW(flaky_api, "Call an unreliable service");

CLOACINA_TASK(flaky_api, call_service, .retry(RetryPolicy::exponential(3, 200ms, 5s))) {
    const int attempt = ++g_calls;
    std::cout << "attempt " << attempt << std::endl;
    if (attempt < 3) throw TaskError("service unavailable (attempt " + std::to_string(attempt) + ")");
    context.insert("response", "ok on attempt " + std::to_string(attempt));
}

int main() try {
    DefaultRunner runner = DefaultRunner::with_schema(database_url(), "examples");
    const WorkflowResult result = runner.execute("flaky_api", Context());
    const TaskResult* task = result.task("call_service");
    std::cout << "status: " << result.status << ", attempts: " << (task ? task->attempt : 0)
              << ", response: " << result.final_context.value_or("response", "-") << "\n";
    return result.status == WorkflowStatus::Completed && task && task->attempt == 3 ? 0 : 1;
} catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
}
