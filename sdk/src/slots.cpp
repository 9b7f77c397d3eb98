// slots.cpp — the worker's slot accounting (slots.hpp).
#include "slots.hpp"

#include <algorithm>

namespace cloacina::detail {

SlotAccounting::SlotAccounting(std::size_t max_concurrent_tasks, std::size_t prefetch, std::size_t claim_batch) noexcept
    : max_concurrent_tasks_(max_concurrent_tasks),
      capacity_(max_concurrent_tasks + prefetch),
      claim_batch_(claim_batch) {}

std::size_t SlotAccounting::free_slots() const noexcept {
    // Results waiting for the completer still hold their tasks (and are heartbeated). Beyond one
    // capacity's worth they take slots too: otherwise a claimer faster than the completer holds
    // ever more tasks, and ever larger heartbeat transactions block the completions.
    // A result that keeps its slot counts once, as kept.
    const std::size_t unkept = results_held_ - std::min(results_held_, kept_);
    const std::size_t backlog = unkept - std::min(unkept, capacity_);
    return capacity_ - std::min(capacity_, unfinished_ + reserved_ + kept_ + backlog);
}

SlotAccounting::ClaimPlan SlotAccounting::plan_claim(bool has_names) noexcept {
    const std::size_t free = free_slots();
    // The unfinished tasks are the running ones and the queued ones, each of which a handler
    // will take: below max_concurrent_tasks, a handler will be idle.
    const bool handler_idle = unfinished_ < max_concurrent_tasks_;
    const std::size_t refill_at = handler_idle ? 1 : std::max<std::size_t>(1, std::min(claim_batch_, capacity_) / 2);
    ClaimPlan plan;
    plan.wait_for_slots = free < refill_at;
    // Set with the look at the slots: a transition that frees one after this answers "wake".
    claimer_waits_ = plan.wait_for_slots;
    if (!plan.wait_for_slots && has_names && !closed_) {
        plan.limit = std::min(free, claim_batch_);
        reserved_ += plan.limit;
    }
    return plan;
}

SlotAccounting::Reservation SlotAccounting::reserve(std::size_t wanted, std::size_t kept) noexcept {
    kept = std::min(kept_, kept);
    kept_ -= kept;
    Reservation r;
    r.limit = closed_ ? 0 : std::min(free_slots(), wanted);
    reserved_ += r.limit;
    r.wake_claimer = kept > r.limit && claimer_waits_;
    return r;
}

bool SlotAccounting::release_kept(std::size_t kept) noexcept {
    kept = std::min(kept_, kept);
    kept_ -= kept;
    return kept > 0 && claimer_waits_;
}

bool SlotAccounting::accept(std::size_t reserved, std::size_t claimed) noexcept {
    reserved_ -= std::min(reserved_, reserved);
    unfinished_ += claimed;
    // Slots the claim reserved and did not fill are free again.
    return reserved > claimed && claimer_waits_;
}

void SlotAccounting::start() noexcept {
    ++running_;
    max_running_ = std::max(max_running_, running_);
}

void SlotAccounting::drop_queued() noexcept { unfinished_ -= std::min<std::size_t>(unfinished_, 1); }

bool SlotAccounting::finish(bool result_held, bool keeps_slot) noexcept {
    unfinished_ -= std::min<std::size_t>(unfinished_, 1);
    running_ -= std::min<std::size_t>(running_, 1);
    if (result_held) ++results_held_;
    if (result_held && keeps_slot) {
        ++kept_;
        return false;  // the slot stays taken
    }
    return claimer_waits_;
}

bool SlotAccounting::submitted(std::size_t results) noexcept {
    results_held_ -= std::min(results_held_, results);
    // A backlog of results may have held the claimer's slots.
    return claimer_waits_;
}

}  // namespace cloacina::detail
