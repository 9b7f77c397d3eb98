// worker_ledger.cpp — the tasks a worker holds (worker_ledger.hpp).
#include "worker_ledger.hpp"

#include "worker_handlers.hpp"

#include <algorithm>

namespace cloacina::detail {

TaskLedger::TaskLedger(const DefaultRunnerConfig& config, const HandlerTable& handlers, Hooks hooks)
    : handlers_(handlers),
      hooks_(std::move(hooks)),
      slots_(config.max_concurrent_tasks, config.prefetch, config.claim_batch) {}

// ---- claims --------------------------------------------------------------------------------------

SlotAccounting::ClaimPlan TaskLedger::plan_claim(bool has_names) {
    std::lock_guard lock(mutex_);
    return slots_.plan_claim(has_names);
}

std::size_t TaskLedger::reserve_for_completion(const std::vector<Completion>& batch, std::size_t wanted) {
    SlotAccounting::Reservation reservation;
    {
        std::lock_guard lock(mutex_);
        reservation = slots_.reserve(wanted, take_kept_slots(batch));
    }
    if (reservation.wake_claimer) hooks_.wake_claimer();
    return reservation.limit;
}

void TaskLedger::accept(std::vector<ClaimedTask>& tasks, std::size_t reserved) {
    // Timeouts run from the claim (a queued task's too).
    std::vector<std::optional<Clock::time_point>> deadlines;
    deadlines.reserve(tasks.size());
    for (const auto& t : tasks) {
        const auto timeout = handlers_.timeout(t.identity.name());
        deadlines.push_back(timeout ? std::optional(Clock::now() + *timeout) : std::nullopt);
    }
    bool deadline_added = false;
    bool wake_claimer;
    {
        std::lock_guard lock(mutex_);
        wake_claimer = slots_.accept(reserved, tasks.size());
        claimed_ += tasks.size();
        for (std::size_t i = 0; i < tasks.size(); ++i) {
            Held held;
            held.identity = tasks[i].identity;
            held.fence = tasks[i].fence;
            held.deadline = deadlines[i];
            deadline_added |= deadlines[i].has_value();  // the heartbeater may sleep past it
            held_.emplace(tasks[i].identity.task_id, std::move(held));
            queue_.push_back(std::move(tasks[i]));
        }
    }
    if (!tasks.empty()) queue_cv_.notify_all();
    if (deadline_added) hooks_.deadline_added();
    if (wake_claimer) hooks_.wake_claimer();
}

void TaskLedger::stop_claims() {
    std::lock_guard lock(mutex_);
    slots_.close();
}

// ---- the handlers --------------------------------------------------------------------------------

std::optional<TaskLedger::Assignment> TaskLedger::next_task() {
    std::unique_lock lock(mutex_);
    for (;;) {
        queue_cv_.wait(lock, [&] { return !queue_.empty() || queue_closed_; });
        if (queue_.empty()) return std::nullopt;
        ClaimedTask task = std::move(queue_.front());
        queue_.pop_front();
        auto it = held_.find(task.identity.task_id);
        if (it == held_.end()) continue;
        if (it->second.released) {  // given back by shutdown before it started
            slots_.drop_queued();
            held_.erase(it);
            continue;
        }
        slots_.start();
        return Assignment{std::move(task), it->second.cancellation.token()};
    }
}

void TaskLedger::finish(Completion result) {
    bool result_held;
    bool wake_claimer;
    {
        std::lock_guard lock(mutex_);
        auto it = held_.find(result.task_id);
        const bool released = it != held_.end() && it->second.released;
        if (it != held_.end()) {
            it->second.finished = true;
            if (released) held_.erase(it);  // shutdown gave the task back: the result is discarded
        }
        result_held = !released;
        const bool keeps_slot = result_held && it != held_.end() && result.success && result.has_dependents;
        if (keeps_slot) it->second.keeps_slot = true;
        wake_claimer = slots_.finish(result_held, keeps_slot);
        if (result_held) results_.push_back(std::move(result));
    }
    if (result_held) results_cv_.notify_all();
    drained_cv_.notify_all();
    if (wake_claimer) hooks_.wake_claimer();  // otherwise a free slot is no reason to claim
}

// ---- the completer -------------------------------------------------------------------------------

std::vector<Completion> TaskLedger::take_results(std::size_t max) {
    std::vector<Completion> batch;
    std::unique_lock lock(mutex_);
    results_cv_.wait(lock, [&] { return !results_.empty() || results_closed_; });
    const std::size_t n = std::min(results_.size(), max);
    for (std::size_t i = 0; i < n; ++i) {
        batch.push_back(std::move(results_.front()));
        results_.pop_front();
    }
    return batch;
}

std::size_t TaskLedger::take_kept_slots(const std::vector<Completion>& batch) {
    std::size_t kept = 0;
    for (const auto& c : batch) {
        auto it = held_.find(c.task_id);
        if (it != held_.end() && it->second.keeps_slot) {
            it->second.keeps_slot = false;
            ++kept;
        }
    }
    return kept;
}

void TaskLedger::forget(const std::vector<Completion>& batch) {
    bool wake_claimer;
    {
        std::lock_guard lock(mutex_);
        std::size_t submitted = 0, still_kept = 0;
        for (const auto& c : batch) {
            auto it = held_.find(c.task_id);
            if (it == held_.end()) continue;
            still_kept += it->second.keeps_slot;  // no reservation took its slot
            if (it->second.finished) {
                held_.erase(it);
                ++submitted;
            }
        }
        wake_claimer = slots_.release_kept(still_kept);
        wake_claimer = slots_.submitted(submitted) || wake_claimer;
    }
    if (wake_claimer) hooks_.wake_claimer();  // a backlog of results may have held its slots
}

void TaskLedger::close_results() {
    {
        std::lock_guard lock(mutex_);
        results_closed_ = true;
    }
    results_cv_.notify_all();
}

bool TaskLedger::results_closed() const {
    std::lock_guard lock(mutex_);
    return results_closed_;
}

// ---- the heartbeater -----------------------------------------------------------------------------

bool TaskLedger::holds_tasks() const {
    std::lock_guard lock(mutex_);
    return !held_.empty();
}

TaskLedger::Clock::time_point TaskLedger::next_deadline(Clock::time_point not_after) const {
    std::lock_guard lock(mutex_);
    for (const auto& [id, h] : held_)
        if (!h.finished && h.deadline && !h.cancellation.cancelled()) not_after = std::min(not_after, *h.deadline);
    return not_after;
}

std::vector<TaskIdentity> TaskLedger::cancel_overdue(Clock::time_point now) {
    std::vector<TaskIdentity> cancelled;
    std::lock_guard lock(mutex_);
    for (auto& [id, h] : held_)
        if (!h.finished && h.deadline && now >= *h.deadline && h.cancellation.cancel(CancelReason::Timeout))
            cancelled.push_back(h.identity);
    return cancelled;
}

void TaskLedger::renewals(std::vector<std::int64_t>& ids, std::vector<std::int64_t>& fences) const {
    std::lock_guard lock(mutex_);
    for (const auto& [id, h] : held_) {
        if (h.released) continue;
        ids.push_back(id);
        fences.push_back(h.fence);
    }
}

std::optional<TaskIdentity> TaskLedger::cancel(std::int64_t task_id, CancelReason reason) {
    std::lock_guard lock(mutex_);
    auto it = held_.find(task_id);
    if (it == held_.end() || !it->second.cancellation.cancel(reason)) return std::nullopt;
    return it->second.identity;
}

// ---- shutdown ------------------------------------------------------------------------------------

TaskLedger::Drain TaskLedger::drain(Clock::time_point deadline, const std::string& release_error) {
    Drain drain;
    {
        std::unique_lock lock(mutex_);
        drain.in_flight = slots_.unfinished();
        queue_closed_ = true;
        queue_cv_.notify_all();
        drain.drained = drained_cv_.wait_until(lock, deadline, [&] {
            return slots_.unfinished() == 0 || drain_cut_short_;
        }) && slots_.unfinished() == 0;
        drain.cut_short = drain_cut_short_;
        if (!drain.drained) {
            for (auto& [id, h] : held_) {
                if (h.finished) continue;  // its result is queued for the completer
                h.cancellation.cancel(CancelReason::Shutdown);
                h.released = true;
                results_.push_back(Completion{id, h.fence, false, {}, release_error, true, false});
                ++drain.released;
            }
        }
    }
    if (drain.released > 0) results_cv_.notify_all();
    return drain;
}

void TaskLedger::cut_drain_short() {
    {
        std::lock_guard lock(mutex_);
        drain_cut_short_ = true;
    }
    drained_cv_.notify_all();
}

void TaskLedger::add_to(RunnerStats& stats) const {
    std::lock_guard lock(mutex_);
    stats.running = slots_.running();
    stats.max_running = slots_.max_running();
    stats.claimed = claimed_;
}

}  // namespace cloacina::detail
