// worker_heartbeater.cpp — the heartbeater (worker_heartbeater.hpp).
#include "worker_heartbeater.hpp"

#include "cloacina/error.hpp"
#include "runner_core.hpp"
#include "worker_ledger.hpp"

#include <utility>

namespace cloacina::detail {

namespace {

// One statement for every held task; it locks them in id order, as completions do.
constexpr std::string_view kHeartbeatSql =
    "SELECT task_id, status FROM cloacina.heartbeat_batch($1::bigint[], $2::bigint[])";

}  // namespace

Heartbeater::Heartbeater(const RunnerCore& core, TaskLedger& ledger, WorkerCounters& counters)
    : core_(core), ledger_(ledger), counters_(counters) {}

void Heartbeater::start(Connection connection, const std::shared_ptr<void>& owner) {
    thread_ = std::thread([this, owner, c = std::move(connection)]() mutable { loop(c); });
}

void Heartbeater::wake(bool& flag) {
    {
        std::lock_guard lock(mutex_);
        flag = true;
    }
    wake_cv_.notify_all();
}

void Heartbeater::beat_now() {
    if (ledger_.holds_tasks()) wake(beat_now_);
}

void Heartbeater::deadline_added() { wake(deadlines_changed_); }

void Heartbeater::stop() {
    stop_.request();
    {
        std::lock_guard lock(mutex_);  // the loop either saw the request or waits: notify it
    }
    wake_cv_.notify_all();
    if (thread_.joinable()) thread_.join();
}

void Heartbeater::loop(Connection& connection) {
    using Clock = TaskLedger::Clock;
    const auto& cfg = core_.config;
    const auto interval_length = cfg.heartbeat_interval.count() > 0 ? cfg.heartbeat_interval : cfg.lease / 3;
    auto next_beat = Clock::now() + interval_length;
    while (!stop_.requested()) {
        // Wake at the next beat, or sooner at a running handler's timeout deadline.
        const auto wake_at = ledger_.next_deadline(next_beat);
        bool beat_requested;
        {
            std::unique_lock lock(mutex_);
            wake_cv_.wait_until(lock, wake_at, [&] { return beat_now_ || deadlines_changed_ || stop_.requested(); });
            if (stop_.requested()) break;
            deadlines_changed_ = false;
            beat_requested = std::exchange(beat_now_, false);
        }
        const auto now = Clock::now();
        for (const auto& task : ledger_.cancel_overdue(now))
            log_task(core_, LogLevel::Info, task, task.name() + " passed its timeout; cancelling its handler");
        if (!beat_requested && now < next_beat) continue;
        next_beat = now + interval_length;
        std::vector<std::int64_t> ids, fences;
        ledger_.renewals(ids, fences);
        if (ids.empty()) continue;
        try {
            Result r = connection.exec(kHeartbeatSql, {Param(array_literal(ids)), Param(array_literal(fences))});
            for (int i = 0; i < r.rows(); ++i) {
                const std::string_view answer = r.text(i, 1);
                if (answer == "ok") continue;
                const CancelReason why = answer == "cancelled" ? CancelReason::RunCancelled : CancelReason::LeaseLost;
                if (auto task = ledger_.cancel(r.int64(i, 0), why))
                    log_task(
                        core_, LogLevel::Info, *task,
                        task->name() + ": heartbeat answered '" + std::string(answer) + "'; cancelling its handler");
            }
        } catch (const BrokenConnection& e) {
            core_.log(LogLevel::Warn, std::string("heartbeater lost its connection: ") + e.what());
            if (!reconnect(connection, "heartbeater", core_, counters_, &stop_)) break;
            wake(beat_now_);  // renew at once: the lease kept running while we were away
        } catch (const std::exception& e) {
            core_.log(LogLevel::Error, std::string("heartbeat failed: ") + e.what());
        }
    }
}

}  // namespace cloacina::detail
