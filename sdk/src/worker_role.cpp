// worker_role.cpp — what every role of a worker uses (worker_role.hpp).
#include "worker_role.hpp"

#include "runner_core.hpp"

#include <algorithm>
#include <thread>

namespace cloacina::detail {

using namespace std::chrono_literals;

void log_task(const RunnerCore& core, LogLevel level, const TaskIdentity& task, std::string message) {
    if (!log_enabled(level)) return;
    LogRecord record;
    record.level = level;
    record.message = std::move(message);
    record.workflow = task.workflow;
    record.task = task.task;
    record.execution_id = task.execution_id;
    record.task_id = task.task_id;
    record.attempt = task.attempt;
    core.log(std::move(record));
}

void StopSignal::request() {
    {
        // Under the sleepers' lock: one that just found no request cannot miss this one.
        std::lock_guard lock(mutex_);
        requested_.store(true);
    }
    requested_cv_.notify_all();
}

bool StopSignal::sleep_for(std::chrono::milliseconds duration) {
    std::unique_lock lock(mutex_);
    return requested_cv_.wait_for(lock, duration, [&] { return requested_.load(); });
}

bool reconnect(Connection& connection, std::string_view role, const RunnerCore& core, WorkerCounters& counters,
               StopSignal* stop, int max_attempts) {
    auto backoff = 100ms;
    for (int attempt = 1;; ++attempt) {
        if (stop != nullptr && stop->requested()) return false;
        try {
            connection.reconnect();
            ++counters.reconnects;
            core.log(LogLevel::Info, std::string(role) + " reconnected");
            return true;
        } catch (const Error& e) {
            core.log(LogLevel::Warn, std::string(role) + " cannot reconnect (retrying in " +
                                         std::to_string(backoff.count()) + " ms): " + e.what());
        }
        if (max_attempts > 0 && attempt >= max_attempts) return false;
        if (stop != nullptr)
            (void)stop->sleep_for(backoff);
        else
            std::this_thread::sleep_for(backoff);
        backoff = std::min<std::chrono::milliseconds>(backoff * 2, core.config.reconnect_backoff_max);
    }
}

}  // namespace cloacina::detail
