// worker.hpp (private) — the worker of a DefaultRunner: it claims tasks, runs their handlers and
// submits their results. Each role is a thread with its own connection (a PGconn is not
// thread-safe) and a file of its own:
//   claimer      worker_claimer.cpp     claims what the worker has handlers for, into free slots
//   handlers     worker_handlers.cpp    max_concurrent_tasks threads running handlers
//   completer    worker_completer.cpp   submits results, claiming with them
//   heartbeater  worker_heartbeater.cpp renews leases, cancels handlers (run cancelled, lease
//                                       lost, timeout)
// What they share is the TaskLedger (worker_ledger.cpp): the held tasks, the handlers' queue, the
// results waiting for the completer, and the slot accounting (slots.cpp). This file starts the
// roles and stops them in order at shutdown.
#pragma once

#include "cloacina/runner.hpp"
#include "worker_claimer.hpp"
#include "worker_completer.hpp"
#include "worker_handlers.hpp"
#include "worker_heartbeater.hpp"
#include "worker_ledger.hpp"
#include "worker_role.hpp"

#include <memory>
#include <mutex>
#include <optional>

namespace cloacina::detail {

class RunnerCore;

class Worker : public std::enable_shared_from_this<Worker> {
public:
    explicit Worker(std::shared_ptr<RunnerCore> core);
    Worker(const Worker&) = delete;
    Worker& operator=(const Worker&) = delete;

    /// Adds the handler tasks of `workflow` to what this worker claims.
    void add_workflow(const Workflow& workflow);
    /// Opens the role connections (throws when the server is unreachable) and starts the threads.
    void start();
    /// Stops claiming, drains until shutdown_timeout, releases what still runs, submits the
    /// results and stops. Idempotent.
    ShutdownReport shutdown();
    /// Ends a shutdown's drain now, as if its deadline had passed (a second signal).
    void cut_drain_short();
    [[nodiscard]] RunnerStats stats() const;

private:
    std::shared_ptr<RunnerCore> core_;
    WorkerCounters counters_;
    HandlerTable handlers_;
    TaskLedger ledger_;
    Heartbeater heartbeater_;
    Claimer claimer_;
    Completer completer_;
    HandlerPool handler_pool_;

    bool started_ = false;
    std::optional<ShutdownReport> shutdown_report_;
    std::mutex shutdown_mutex_;
};

}  // namespace cloacina::detail
