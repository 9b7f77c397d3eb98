// worker_handlers.hpp (private) — the handler pool: max_concurrent_tasks threads that take claimed
// tasks from the ledger's queue, run their handlers with a cancellation token, and hand the
// results to the completer; and the table of handlers, by the `workflow.task` names the worker
// claims.
#pragma once

#include "cloacina/workflow.hpp"

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace cloacina::detail {

class RunnerCore;
class TaskLedger;
struct ClaimedTask;
struct Completion;

/// The handler tasks of the workflows a worker runs. Thread-safe; workflows can be added while
/// the worker runs.
class HandlerTable {
public:
    struct Entry {
        TaskHandler handler;
        std::optional<std::chrono::milliseconds> timeout;
        bool has_dependents = false;  ///< in its workflow: its completion may make tasks ready
    };

    /// Adds (or replaces) the handler tasks of `workflow`; its SQL tasks run inside the database.
    void add(const Workflow& workflow);
    /// The names to claim: "workflow.task" of every handler task.
    [[nodiscard]] std::vector<std::string> names() const;
    [[nodiscard]] std::optional<Entry> find(const std::string& name) const;
    /// The timeout of a handler task (none when it has none, or is unknown).
    [[nodiscard]] std::optional<std::chrono::milliseconds> timeout(const std::string& name) const;

private:
    mutable std::mutex mutex_;
    std::map<std::string, Entry> entries_;
};

class HandlerPool {
public:
    HandlerPool(const RunnerCore& core, TaskLedger& ledger, const HandlerTable& handlers);

    /// Starts the threads; each keeps `owner` (the worker) alive while it runs.
    void start(const std::shared_ptr<void>& owner);
    /// Joins the threads (they exit once shutdown closed the queue and it is empty). With
    /// `wait_for_all` false, threads whose handler still runs are detached instead: their tasks
    /// were given back, and a handler that ignores its token must not hold up the caller.
    void join(bool wait_for_all);

private:
    void loop();
    Completion run(const ClaimedTask& task, const CancellationToken& cancellation) const;

    const RunnerCore& core_;
    TaskLedger& ledger_;
    const HandlerTable& handlers_;
    std::vector<std::thread> threads_;
    std::vector<std::shared_ptr<std::atomic<bool>>> exited_;
};

}  // namespace cloacina::detail
