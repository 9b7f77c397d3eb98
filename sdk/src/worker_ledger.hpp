// worker_ledger.hpp (private) — the tasks a worker holds, from their claim until their results are
// submitted, behind the one lock its roles share for them: the held tasks (fence, cancellation,
// timeout deadline), the queue the handlers take them from, the results waiting for the
// completer, and the slot accounting (slots.hpp) that counts them. Each role calls the operations
// of its part. The ledger wakes the claimer (a slot freed while it waits for one) and the
// heartbeater (a new timeout deadline) through the hooks the worker gives it, outside its lock.
#pragma once

#include "cloacina/cancellation.hpp"
#include "cloacina/runner.hpp"
#include "slots.hpp"
#include "worker_role.hpp"

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace cloacina::detail {

class HandlerTable;

/// A task the server handed this worker: one attempt, the fence that guards it, its input.
struct ClaimedTask {
    TaskIdentity identity;
    std::int64_t fence = 0;
    boost::json::value context;
};

/// A handler's result (or shutdown's release of a task), for the completer to submit.
struct Completion {
    std::int64_t task_id = 0;
    std::int64_t fence = 0;
    bool success = true;
    boost::json::object output;
    std::string error;
    bool retryable = true;
    bool has_dependents = false;  ///< its completion may make tasks ready: claim with it
};

class TaskLedger {
public:
    using Clock = std::chrono::steady_clock;
    struct Hooks {
        std::function<void()> wake_claimer;    ///< slots freed while the claimer waits for one
        std::function<void()> deadline_added;  ///< a task with a timeout was claimed
    };

    TaskLedger(const DefaultRunnerConfig& config, const HandlerTable& handlers, Hooks hooks);
    TaskLedger(const TaskLedger&) = delete;
    TaskLedger& operator=(const TaskLedger&) = delete;

    // ---- claims: the claimer and the completer --------------------------------------------------
    [[nodiscard]] SlotAccounting::ClaimPlan plan_claim(bool has_names);
    /// Reserves up to `wanted` slots for the claim that rides on the completion of `batch`,
    /// which may use the slots its results kept (SlotAccounting::finish).
    [[nodiscard]] std::size_t reserve_for_completion(const std::vector<Completion>& batch, std::size_t wanted);
    /// Holds the claimed tasks and queues them for the handlers (moving them out of `tasks`).
    /// `reserved` is the claim's reservation, given back whether or not tasks came: call it after
    /// a failed claim too.
    void accept(std::vector<ClaimedTask>& tasks, std::size_t reserved);
    /// No claims any more (shutdown): reserve() and plan_claim() reserve nothing.
    void stop_claims();

    // ---- the handlers ----------------------------------------------------------------------------
    struct Assignment {
        ClaimedTask task;
        CancellationToken cancellation;
    };
    /// Waits for a queued task; nullopt once shutdown closed the queue and it is empty.
    [[nodiscard]] std::optional<Assignment> next_task();
    /// A handler returned: its slot is free (kept for its completion's claim when the task has
    /// dependents and succeeded), and its result waits for the completer (the task stays held and
    /// heartbeated until then), unless shutdown gave the task back meanwhile.
    void finish(Completion result);

    // ---- the completer ---------------------------------------------------------------------------
    /// Waits for results and takes up to `max` of them; none once closed and empty.
    [[nodiscard]] std::vector<Completion> take_results(std::size_t max);
    /// The results of `batch` went to the server (or were dropped): their tasks are not held any
    /// more. A released task whose handler still runs stays until the handler returns.
    void forget(const std::vector<Completion>& batch);
    /// No results come any more (shutdown): take_results() returns what is left, then none.
    void close_results();
    [[nodiscard]] bool results_closed() const;

    // ---- the heartbeater -------------------------------------------------------------------------
    [[nodiscard]] bool holds_tasks() const;
    /// The earliest timeout deadline of a handler still running and not cancelled, or `not_after`.
    [[nodiscard]] Clock::time_point next_deadline(Clock::time_point not_after) const;
    /// Cancels the running handlers whose timeout passed by `now`; which ones, for the log.
    [[nodiscard]] std::vector<TaskIdentity> cancel_overdue(Clock::time_point now);
    /// The ids and fences of the held tasks to renew (not those shutdown gave back).
    void renewals(std::vector<std::int64_t>& ids, std::vector<std::int64_t>& fences) const;
    /// Cancels a held task's handler; the task when this call cancelled it (first reason sticks).
    [[nodiscard]] std::optional<TaskIdentity> cancel(std::int64_t task_id, CancelReason reason);

    // ---- shutdown --------------------------------------------------------------------------------
    struct Drain {
        std::size_t in_flight = 0;  ///< unfinished tasks when the drain began
        std::size_t released = 0;   ///< of those, given back at the deadline
        bool drained = false;       ///< every handler returned in time
        bool cut_short = false;     ///< cut_drain_short() ended the wait
    };
    /// Closes the handlers' queue (they finish it, then exit) and waits until every claimed task's
    /// handler returned, `deadline` passed or cut_drain_short() was called. Then cancels the
    /// handlers still running (CancelReason::Shutdown) and gives their tasks back: each becomes a
    /// retryable failure with `release_error`, and a result its handler returns later is dropped.
    [[nodiscard]] Drain drain(Clock::time_point deadline, const std::string& release_error);
    void cut_drain_short();

    /// Fills in the figures of RunnerStats the ledger knows: running, max_running, claimed.
    void add_to(RunnerStats& stats) const;

private:
    struct Held {
        TaskIdentity identity;
        std::int64_t fence = 0;
        CancellationSource cancellation;
        std::optional<Clock::time_point> deadline;
        bool finished = false;    ///< handler returned; result not yet submitted
        bool released = false;    ///< given back by shutdown; the handler's result is discarded
        bool keeps_slot = false;  ///< finished, and its slot is kept for its completion's claim
    };

    /// Under the lock: how many of `batch`'s results kept their slot, which they give up now.
    std::size_t take_kept_slots(const std::vector<Completion>& batch);

    const HandlerTable& handlers_;
    const Hooks hooks_;
    mutable std::mutex mutex_;
    SlotAccounting slots_;
    std::map<std::int64_t, Held> held_;  // by task id: claimed and not yet submitted
    std::deque<ClaimedTask> queue_;      // claimed, waiting for a handler
    std::condition_variable queue_cv_;
    bool queue_closed_ = false;
    std::deque<Completion> results_;  // waiting for the completer
    std::condition_variable results_cv_;
    bool results_closed_ = false;
    std::condition_variable drained_cv_;  // a handler returned, or the drain was cut short
    bool drain_cut_short_ = false;
    std::uint64_t claimed_ = 0;
};

}  // namespace cloacina::detail
