// examples/cron_schedule.cpp — a cron schedule: the server's background worker starts
// `heartbeat_report` every 2 seconds (6-field cron); this process runs the handler for three
// scheduled runs, then removes the schedule.
#include <cloacina/cloacina.hpp>

#include <condition_variable>
#include <cstdlib>
#include <iostream>
#include <mutex>
#include <stdexcept>
#include <string>

using namespace cloacina;
using namespace std::chrono_literals;

static std::mutex g_mutex;
static std::condition_variable g_ran;
static int g_runs = 0;

// The admin URL of a database with the cloacina extension, from DATABASE_URL.
static std::string database_url() {
    const char* url = std::getenv("DATABASE_URL");
    if (url == nullptr || *url == '\0')
        throw std::runtime_error("set DATABASE_URL to an admin URL of a database with the cloacina extension");
    return url;
}

CLOACINA_WORKFLOW(heartbeat_report, "A report the scheduler starts on a cron expression");

CLOACINA_TASK(heartbeat_report, report) {
    std::lock_guard lock(g_mutex);
    ++g_runs;
    std::cout << "scheduled run " << g_runs << " (source: " << context.value_or("source", "?") << ")" << std::endl;
    context.insert("report_number", g_runs);
    g_ran.notify_all();
}

int main() try {
    DefaultRunner runner = DefaultRunner::with_schema(database_url(), "examples");
    ScheduleOptions options;
    options.context.insert("source", "cron");
    runner.schedule("every_two_seconds", "heartbeat_report", "*/2 * * * * *", options);

    std::unique_lock lock(g_mutex);
    const bool ok = g_ran.wait_for(lock, 30s, [] { return g_runs >= 3; });
    lock.unlock();
    runner.unschedule("every_two_seconds");
    runner.shutdown();
    std::cout << (ok ? "three scheduled runs completed" : "the scheduler did not start three runs in 30 s") << "\n";
    return ok ? 0 : 1;
} catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
}
