// worker_claimer.hpp (private) — the claimer: claims batches of the tasks the worker has handlers
// for, never more than its free slots (slots.hpp). With free slots and nothing ready it waits
// inside the claim, on the server, until work comes or its poll interval passes (not through a
// pooler, nor on a server of 0.1: there it sleeps until a 'ready' notification arrives,
// WakeupListener in listener.hpp); with no free slot it sleeps until one frees.
#pragma once

#include "cloacina/connection.hpp"
#include "worker_role.hpp"

#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace cloacina::detail {

class RunnerCore;
class TaskLedger;
class HandlerTable;
class Heartbeater;
class WakeupListener;
struct ClaimedTask;

/// The claimed task in row `row` of a result with cloacina.claim()'s columns (task_id,
/// execution_id, workflow, task, attempt, fence, context).
[[nodiscard]] ClaimedTask claimed_task(const Result& rows, int row);

class Claimer {
public:
    /// Throws Error when its wake-up pipe cannot be made.
    Claimer(const RunnerCore& core, TaskLedger& ledger, const HandlerTable& handlers, Heartbeater& heartbeater,
            WorkerCounters& counters);
    ~Claimer();
    Claimer(const Claimer&) = delete;
    Claimer& operator=(const Claimer&) = delete;

    /// Starts the thread on `connection` (listening through `listener`); it keeps `owner` alive.
    void start(Connection connection, std::unique_ptr<WakeupListener> listener, const std::shared_ptr<void>& owner);
    /// Ends the claimer's current wait: slots freed, or there are new names to claim.
    void wake() noexcept;
    /// Stops claiming and joins the thread.
    void stop();

private:
    void loop(Connection& connection, WakeupListener& listener);
    /// Claims up to `limit` tasks; when none is ready, waits on the server up to `wait` for one.
    std::vector<ClaimedTask> claim(Connection& connection, const std::vector<std::string>& names, std::size_t limit,
                                   std::chrono::milliseconds wait);
    /// Waits up to `timeout` for wake() or a notification; `ready_hint`: worth a claim now.
    void wait_for_wakeup(Connection& connection, WakeupListener& listener, std::chrono::milliseconds timeout,
                         bool& ready_hint);
    void handle_notifications(const std::vector<std::string>& payloads, bool& ready_hint);

    const RunnerCore& core_;
    TaskLedger& ledger_;
    const HandlerTable& handlers_;
    Heartbeater& heartbeater_;
    WorkerCounters& counters_;
    StopSignal stop_;
    std::mutex waiting_claim_mutex_;
    std::optional<Canceller> waiting_claim_;  ///< set while a claim waits on the server: stop() cancels it
    int wake_pipe_[2] = {-1, -1};
    std::thread thread_;
};

}  // namespace cloacina::detail
