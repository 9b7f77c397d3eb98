// worker_role.hpp (private) — what every role of a worker (claimer, handlers, completer,
// heartbeater) uses: which attempt of which task it works on, a stop request that ends its
// sleeps, the counters behind RunnerStats, reconnection with backoff, and log records about a task.
#pragma once

#include "cloacina/connection.hpp"
#include "cloacina/log.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>

namespace cloacina::detail {

class RunnerCore;

/// One attempt of one task, as log records name it.
struct TaskIdentity {
    std::string workflow;
    std::string task;
    std::int64_t execution_id = 0;
    std::int64_t task_id = 0;
    int attempt = 0;

    /// "workflow.task": the name the worker claims it by and looks its handler up with.
    [[nodiscard]] std::string name() const { return workflow + "." + task; }
};

/// Sends a record about `task` to the runner's logger.
void log_task(const RunnerCore& core, LogLevel level, const TaskIdentity& task, std::string message);

/// A role's stop request: its backoff sleeps end as soon as it is made.
class StopSignal {
public:
    void request();
    [[nodiscard]] bool requested() const noexcept { return requested_.load(); }
    /// Sleeps for `duration` unless the stop is requested first; true when it was.
    bool sleep_for(std::chrono::milliseconds duration);

private:
    std::atomic<bool> requested_{false};
    std::mutex mutex_;
    std::condition_variable requested_cv_;
};

/// The counters behind RunnerStats that the roles add to (the ledger counts the tasks it holds).
struct WorkerCounters {
    std::atomic<std::uint64_t> completed{0};
    std::atomic<std::uint64_t> failed{0};
    std::atomic<std::uint64_t> reconnects{0};
    std::atomic<std::uint64_t> claim_round_trips{0};
    std::atomic<std::uint64_t> completion_round_trips{0};
};

/// Reopens a role's connection with exponential backoff (100 ms doubling up to the config's
/// reconnect_backoff_max) until it works (true), `stop` is requested or `max_attempts` (0: no
/// limit) ran out (false). Without `stop`, only the attempts bound it.
bool reconnect(Connection& connection, std::string_view role, const RunnerCore& core, WorkerCounters& counters,
               StopSignal* stop, int max_attempts = 0);

}  // namespace cloacina::detail
