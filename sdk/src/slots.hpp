// slots.hpp (private) — how many tasks a worker may claim: its handler slots and their accounting.
//
// The capacity is max_concurrent_tasks handlers plus `prefetch` places in the local queue. A
// task takes a slot from its claim (reserved while the claim is in flight) until its handler
// returns. Its result then waits for the completer, still held (and heartbeated); results waiting
// beyond one capacity's worth take slots too, so a worker whose completions are held up stops
// claiming and never holds more than twice its capacity.
//
// A successful result of a task with dependents keeps its slot until the completer takes it: its
// completion claims what it makes ready with the same statement (worker_completer.cpp), and a
// claimer that had reserved the slot for a claim waiting on the server meanwhile would leave that
// claim nothing, the work to a second claim, and the run a second commit and hand-off.
//
// A claimer that finds too few free slots for a claim to be worth its round trip says so
// (plan_claim) and sleeps; every transition that frees slots afterwards answers "wake the
// claimer" until it plans again, so a wake-up cannot be lost between its look and its sleep.
//
// Not synchronised: the TaskLedger (worker_ledger.hpp) calls it under the lock that guards the
// tasks it counts.
#pragma once

#include <cstddef>

namespace cloacina::detail {

class SlotAccounting {
public:
    SlotAccounting(std::size_t max_concurrent_tasks, std::size_t prefetch, std::size_t claim_batch) noexcept;

    /// What the claimer should do now.
    struct ClaimPlan {
        bool wait_for_slots = false;  ///< too few free slots: sleep until a transition wakes it
        std::size_t limit = 0;        ///< tasks to claim, reserved until accept()
    };
    /// The claimer's decision. While a handler is idle one free slot is worth a claim; while every
    /// handler has work the local queue is refilled in batches (half a claim_batch, at least 1).
    /// `has_names`: there are tasks to claim at all (nothing is reserved otherwise).
    [[nodiscard]] ClaimPlan plan_claim(bool has_names) noexcept;
    /// What a completion may claim with it.
    struct Reservation {
        std::size_t limit = 0;      ///< tasks to claim, reserved until accept()
        bool wake_claimer = false;  ///< kept slots were given up and not all reserved again
    };
    /// Reserves up to `wanted` free slots for a claim that rides on a completion, after giving up
    /// the slots that `kept` of its results kept for it (see finish()).
    [[nodiscard]] Reservation reserve(std::size_t wanted, std::size_t kept = 0) noexcept;
    /// A claim with `reserved` slots returned `claimed` tasks (claimed <= reserved), which take
    /// their slots; the rest are free again. True: wake the claimer.
    [[nodiscard]] bool accept(std::size_t reserved, std::size_t claimed) noexcept;
    /// A handler took a queued task.
    void start() noexcept;
    /// A queued task was given back before a handler took it (shutdown); it frees no slot a
    /// claimer could use.
    void drop_queued() noexcept;
    /// A handler returned. `result_held`: its result waits for the completer (false when shutdown
    /// gave the task back and the result is discarded). `keeps_slot`: the result's completion
    /// will claim with it, and the slot stays taken until reserve() gives it up. True: wake the
    /// claimer.
    [[nodiscard]] bool finish(bool result_held, bool keeps_slot = false) noexcept;
    /// Gives up `kept` slots kept by results that reached the server without reserve() (a
    /// completer that failed before it). True: wake the claimer.
    [[nodiscard]] bool release_kept(std::size_t kept) noexcept;
    /// The completer submitted `results` held results. True: wake the claimer.
    [[nodiscard]] bool submitted(std::size_t results) noexcept;
    /// No claims any more (shutdown): plan_claim() and reserve() reserve nothing from now on.
    void close() noexcept { closed_ = true; }

    [[nodiscard]] std::size_t capacity() const noexcept { return capacity_; }
    /// The slots neither taken by unfinished tasks, nor reserved by claims in flight, nor kept by
    /// results for their completion's claim, nor taken by results waiting beyond one capacity's
    /// worth.
    [[nodiscard]] std::size_t free_slots() const noexcept;
    [[nodiscard]] std::size_t unfinished() const noexcept { return unfinished_; }
    [[nodiscard]] std::size_t running() const noexcept { return running_; }
    [[nodiscard]] std::size_t max_running() const noexcept { return max_running_; }
    [[nodiscard]] std::size_t reserved() const noexcept { return reserved_; }
    [[nodiscard]] std::size_t results_held() const noexcept { return results_held_; }
    [[nodiscard]] std::size_t kept() const noexcept { return kept_; }
    [[nodiscard]] bool claimer_waits() const noexcept { return claimer_waits_; }

private:
    std::size_t max_concurrent_tasks_;
    std::size_t capacity_;
    std::size_t claim_batch_;
    std::size_t unfinished_ = 0;    ///< claimed tasks whose handler has not returned (queued or running)
    std::size_t running_ = 0;       ///< of those, the ones a handler runs
    std::size_t max_running_ = 0;   ///< most ever running at once
    std::size_t reserved_ = 0;      ///< slots held by claims in flight (the claimer's and the completer's)
    std::size_t results_held_ = 0;  ///< finished tasks whose results wait for the completer
    std::size_t kept_ = 0;          ///< of those, the ones that keep their slot (finish())
    bool claimer_waits_ = false;    ///< the claimer sleeps until a slot frees
    bool closed_ = false;
};

}  // namespace cloacina::detail
