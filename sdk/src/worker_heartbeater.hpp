// worker_heartbeater.hpp (private) — the heartbeater: renews the leases of the tasks the worker
// holds in one round trip per beat (heartbeat_batch), turns 'lost' and 'cancelled' answers and
// passed task timeouts into cancellations of their handlers, and beats at once when a run ends
// (a 'finished' notification), so that cancellation reaches handlers quickly.
#pragma once

#include "cloacina/connection.hpp"
#include "worker_role.hpp"

#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>

namespace cloacina::detail {

class RunnerCore;
class TaskLedger;

class Heartbeater {
public:
    Heartbeater(const RunnerCore& core, TaskLedger& ledger, WorkerCounters& counters);

    /// Starts the thread on `connection`; it keeps `owner` alive.
    void start(Connection connection, const std::shared_ptr<void>& owner);
    /// Beats now rather than at the next interval (when the worker holds tasks).
    void beat_now();
    /// A task with a timeout was claimed: the heartbeater may sleep past its deadline.
    void deadline_added();
    void stop();

private:
    void loop(Connection& connection);
    void wake(bool& flag);

    const RunnerCore& core_;
    TaskLedger& ledger_;
    WorkerCounters& counters_;
    StopSignal stop_;
    std::mutex mutex_;
    std::condition_variable wake_cv_;
    bool beat_now_ = false;
    bool deadlines_changed_ = false;
    std::thread thread_;
};

}  // namespace cloacina::detail
