// test_slots.cpp — the worker's slot accounting (sdk/src/slots.hpp), server-free: how much a claim
// may take, the local queue's refill in batches, results waiting for the completer taking slots,
// and the wake-ups that a claimer waiting for a slot must not miss.
#define BOOST_TEST_MODULE slots
#include <boost/test/unit_test.hpp>

#include "slots.hpp"

#include <algorithm>
#include <random>

using cloacina::detail::SlotAccounting;

namespace {

/// Claims `n` tasks the way the claimer does (plan, then accept what the server returned).
void claim(SlotAccounting& slots, std::size_t n) {
    const auto plan = slots.plan_claim(true);
    BOOST_REQUIRE(!plan.wait_for_slots);
    BOOST_REQUIRE(plan.limit >= n);
    (void)slots.accept(plan.limit, n);
}

/// Runs `n` claimed tasks to the end of their handlers; their results wait for the completer.
void run_to_end(SlotAccounting& slots, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) slots.start();
    for (std::size_t i = 0; i < n; ++i) (void)slots.finish(true);
}

/// A handler returns, its result is submitted, and (`take_next`) it takes the next queued task.
void complete_one(SlotAccounting& slots, bool take_next) {
    (void)slots.finish(true);
    (void)slots.submitted(1);
    if (take_next) slots.start();
}

}  // namespace

BOOST_AUTO_TEST_CASE(capacity_is_the_handlers_plus_the_prefetch) {
    SlotAccounting slots(4, 3, 8);
    BOOST_TEST(slots.capacity() == 7u);
    BOOST_TEST(slots.free_slots() == 7u);
    BOOST_TEST(SlotAccounting(4, 0, 8).capacity() == 4u);
}

BOOST_AUTO_TEST_CASE(a_claim_takes_at_most_the_free_slots_and_a_batch) {
    SlotAccounting slots(4, 0, 3);
    auto plan = slots.plan_claim(true);
    BOOST_TEST(!plan.wait_for_slots);
    BOOST_TEST(plan.limit == 3u);  // the batch, below the 4 free slots
    BOOST_TEST(slots.reserved() == 3u);
    BOOST_TEST(slots.free_slots() == 1u);

    // The server returned 2 of the 3: the third slot is free again.
    (void)slots.accept(3, 2);
    BOOST_TEST(slots.reserved() == 0u);
    BOOST_TEST(slots.unfinished() == 2u);
    BOOST_TEST(slots.free_slots() == 2u);

    plan = slots.plan_claim(true);
    BOOST_TEST(plan.limit == 2u);  // the free slots, below the batch
    (void)slots.accept(2, 2);
    BOOST_TEST(slots.free_slots() == 0u);
    plan = slots.plan_claim(true);
    BOOST_TEST(plan.wait_for_slots);
    BOOST_TEST(plan.limit == 0u);
    BOOST_TEST(slots.claimer_waits());
}

BOOST_AUTO_TEST_CASE(nothing_to_claim_reserves_nothing) {
    SlotAccounting slots(2, 0, 8);
    const auto plan = slots.plan_claim(false);
    BOOST_TEST(!plan.wait_for_slots);
    BOOST_TEST(plan.limit == 0u);
    BOOST_TEST(slots.reserved() == 0u);
}

BOOST_AUTO_TEST_CASE(the_completer_reserves_what_the_claimer_left) {
    SlotAccounting slots(4, 0, 8);
    const auto plan = slots.plan_claim(true);
    BOOST_TEST(plan.limit == 4u);
    BOOST_TEST(slots.reserve(8).limit == 0u);  // the claimer's claim in flight holds every slot
    (void)slots.accept(4, 1);
    BOOST_TEST(slots.reserve(8).limit == 3u);
    BOOST_TEST(slots.reserve(8).limit == 0u);
    (void)slots.accept(3, 0);
    BOOST_TEST(slots.reserve(2).limit == 2u);
}

BOOST_AUTO_TEST_CASE(a_result_that_makes_work_keeps_its_slot_for_its_completion) {
    // One idle worker of 2 handlers runs task a of a chain; b is not ready yet.
    SlotAccounting slots(2, 0, 2);
    claim(slots, 1);
    slots.start();
    BOOST_TEST(!slots.finish(true, true));  // a's result will claim b: no slot for the claimer
    BOOST_TEST(slots.kept() == 1u);
    BOOST_TEST(slots.free_slots() == 1u);
    // The claimer's claim, waiting on the server for work, reserves what is free ...
    const auto waiting = slots.plan_claim(true);
    BOOST_TEST(waiting.limit == 1u);
    // ... and the completion of a still claims b in the slot a kept.
    const auto r = slots.reserve(2, 1);
    BOOST_TEST(r.limit == 1u);
    BOOST_TEST(!r.wake_claimer);
    BOOST_TEST(slots.kept() == 0u);
    (void)slots.accept(r.limit, 1);
    BOOST_TEST(slots.unfinished() == 1u);
    BOOST_TEST(slots.submitted(1) == slots.claimer_waits());
}

BOOST_AUTO_TEST_CASE(kept_slots_given_up_without_a_claim_wake_the_claimer) {
    SlotAccounting slots(1, 0, 4);
    claim(slots, 1);
    slots.start();
    BOOST_TEST(!slots.finish(true, true));
    BOOST_TEST(slots.plan_claim(true).wait_for_slots);  // the one slot is kept
    // Shutting down: the completion claims nothing, and the kept slot is free again.
    slots.close();
    const auto r = slots.reserve(4, 1);
    BOOST_TEST(r.limit == 0u);
    BOOST_TEST(r.wake_claimer);
    BOOST_TEST(slots.free_slots() == 1u);
    // A result that reached the server without a reservation gives its slot up once.
    SlotAccounting other(1, 0, 4);
    claim(other, 1);
    other.start();
    (void)other.finish(true, true);
    BOOST_TEST(other.plan_claim(true).wait_for_slots);
    BOOST_TEST(other.release_kept(1));
    BOOST_TEST(!other.release_kept(1));
    BOOST_TEST(other.free_slots() == 1u);
}

BOOST_AUTO_TEST_CASE(busy_handlers_refill_the_queue_in_batches) {
    // 2 handlers, 6 places in the local queue, batches of 8: capacity 8.
    SlotAccounting slots(2, 6, 8);
    claim(slots, 8);
    slots.start();
    slots.start();
    BOOST_TEST(slots.free_slots() == 0u);

    // While both handlers have work, a claim waits for half a batch (4) of free slots.
    for (int i = 0; i < 3; ++i) {
        complete_one(slots, true);
        BOOST_TEST(slots.plan_claim(true).wait_for_slots, "free " << slots.free_slots());
    }
    complete_one(slots, true);
    BOOST_TEST(slots.free_slots() == 4u);
    const auto plan = slots.plan_claim(true);
    BOOST_TEST(!plan.wait_for_slots);
    BOOST_TEST(plan.limit == 4u);
}

BOOST_AUTO_TEST_CASE(an_idle_handler_makes_one_free_slot_worth_a_claim) {
    SlotAccounting slots(2, 6, 8);
    claim(slots, 7);
    slots.start();
    slots.start();
    // Both handlers busy and 5 tasks queued: 1 free slot is not worth a round trip.
    BOOST_TEST(slots.plan_claim(true).wait_for_slots);
    // The queue drains: with 1 unfinished task a handler is idle, and the 7 free slots are
    // claimed at once.
    for (int i = 0; i < 6; ++i) complete_one(slots, i < 5);
    BOOST_TEST(slots.unfinished() == 1u);
    const auto plan = slots.plan_claim(true);
    BOOST_TEST(!plan.wait_for_slots);
    BOOST_TEST(plan.limit == 7u);
}

BOOST_AUTO_TEST_CASE(results_waiting_beyond_one_capacity_take_slots) {
    // The completer is stuck: no result is ever submitted.
    SlotAccounting slots(2, 0, 8);
    std::size_t held = 0;
    for (int round = 0; round < 20; ++round) {
        const auto plan = slots.plan_claim(true);
        if (plan.wait_for_slots) break;
        (void)slots.accept(plan.limit, plan.limit);
        held += plan.limit;
        run_to_end(slots, plan.limit);
        BOOST_TEST(held <= 2 * slots.capacity());
    }
    BOOST_TEST(held == 2 * slots.capacity(), "held " << held);
    BOOST_TEST(slots.results_held() == 4u);
    BOOST_TEST(slots.free_slots() == 0u);
    BOOST_TEST(slots.plan_claim(true).wait_for_slots);

    // Submitting one result frees one slot, and wakes the waiting claimer.
    BOOST_TEST(slots.submitted(1));
    BOOST_TEST(slots.free_slots() == 1u);
}

BOOST_AUTO_TEST_CASE(a_waiting_claimer_is_woken_by_every_transition_that_frees_a_slot) {
    SlotAccounting slots(1, 0, 4);
    claim(slots, 1);
    slots.start();
    BOOST_TEST(slots.plan_claim(true).wait_for_slots);
    BOOST_TEST(slots.finish(true));            // the handler returned
    BOOST_TEST(slots.submitted(1));            // its result went out
    BOOST_TEST(slots.reserve(1).limit == 1u);  // the completer claims with a completion ...
    BOOST_TEST(slots.accept(1, 0));            // ... and finds nothing: its slot is free again

    // Once the claimer plans again and finds slots, nothing wakes it.
    BOOST_TEST(!slots.plan_claim(false).wait_for_slots);
    BOOST_TEST(!slots.claimer_waits());
    claim(slots, 1);
    slots.start();
    BOOST_TEST(!slots.finish(true));
    BOOST_TEST(!slots.submitted(1));
    BOOST_TEST(!slots.accept(0, 0));
}

BOOST_AUTO_TEST_CASE(a_claim_that_fills_its_reservation_wakes_nobody) {
    SlotAccounting slots(2, 0, 1);
    (void)slots.plan_claim(true);  // reserves 1 of 2
    BOOST_TEST(slots.reserve(1).limit == 1u);
    BOOST_TEST(slots.plan_claim(true).wait_for_slots);
    BOOST_TEST(!slots.accept(1, 1));  // every reserved slot is taken now
    BOOST_TEST(slots.accept(1, 0));   // this one frees its slot
}

BOOST_AUTO_TEST_CASE(running_counts_and_their_peak) {
    SlotAccounting slots(3, 0, 8);
    claim(slots, 3);
    slots.start();
    slots.start();
    BOOST_TEST(slots.running() == 2u);
    (void)slots.finish(true);
    slots.start();
    BOOST_TEST(slots.running() == 2u);
    BOOST_TEST(slots.max_running() == 2u);
    (void)slots.finish(true);
    (void)slots.finish(true);
    BOOST_TEST(slots.running() == 0u);
    BOOST_TEST(slots.unfinished() == 0u);
    BOOST_TEST(slots.max_running() == 2u);
}

BOOST_AUTO_TEST_CASE(shutdown_closes_the_claims_and_gives_tasks_back) {
    SlotAccounting slots(1, 2, 8);
    claim(slots, 3);
    slots.start();
    slots.close();
    BOOST_TEST(slots.reserve(8).limit == 0u);
    BOOST_TEST(slots.plan_claim(true).limit == 0u);
    // The two queued tasks are given back unstarted; the running one's result is discarded.
    slots.drop_queued();
    slots.drop_queued();
    (void)slots.finish(false);
    BOOST_TEST(slots.unfinished() == 0u);
    BOOST_TEST(slots.running() == 0u);
    BOOST_TEST(slots.results_held() == 0u);
    BOOST_TEST(slots.free_slots() == slots.capacity());
}

BOOST_AUTO_TEST_CASE(random_schedules_never_overcommit) {
    // Claimer, completer, handlers and shutdown in a random order (fixed seed: reproducible),
    // against a model of the tasks: the slots in use never exceed the capacity, and every count
    // matches the model.
    struct Shape {
        std::size_t handlers, prefetch, batch;
    };
    for (const auto [handlers, prefetch, batch] : {Shape{1, 0, 1}, Shape{4, 0, 8}, Shape{2, 6, 8}, Shape{3, 5, 2}}) {
        SlotAccounting slots(handlers, prefetch, batch);
        std::mt19937 random(static_cast<unsigned>(handlers * 100 + prefetch * 10 + batch));
        std::size_t queued = 0, running = 0, held_results = 0, kept = 0, reserved = 0;
        std::size_t claim_in_flight = 0;  // at most one claim of each kind in flight, as in the worker
        std::size_t completer_claim = 0;
        for (int step = 0; step < 20000; ++step) {
            switch (random() % 7) {
                case 0:
                    if (claim_in_flight == 0) {
                        claim_in_flight = slots.plan_claim(true).limit;
                        reserved += claim_in_flight;
                    }
                    break;
                case 1:
                    if (claim_in_flight > 0 || random() % 2) {
                        const std::size_t got = claim_in_flight == 0 ? 0 : random() % (claim_in_flight + 1);
                        (void)slots.accept(claim_in_flight, got);
                        reserved -= claim_in_flight;
                        queued += got;
                        claim_in_flight = 0;
                    }
                    break;
                case 2:
                    if (queued > 0 && running < handlers) {
                        slots.start();
                        --queued;
                        ++running;
                    }
                    break;
                case 3:
                    if (running > 0) {
                        const bool keeps = random() % 2;
                        (void)slots.finish(true, keeps);
                        --running;
                        ++held_results;
                        kept += keeps;
                    }
                    break;
                case 4:
                    if (held_results > kept) {  // results that kept no slot, or gave it up
                        const std::size_t n = 1 + random() % (held_results - kept);
                        (void)slots.submitted(n);
                        held_results -= n;
                    }
                    break;
                case 5:
                    if (completer_claim == 0) {
                        const std::size_t giving_up = kept == 0 ? 0 : random() % (kept + 1);
                        const auto r = slots.reserve(batch, giving_up);
                        // What they kept, they get, unless results wait beyond a capacity's worth.
                        if (held_results - kept + giving_up <= slots.capacity())
                            BOOST_REQUIRE(r.limit >= std::min(giving_up, batch));
                        completer_claim = r.limit;
                        reserved += completer_claim;
                        kept -= giving_up;
                    }
                    break;
                case 6:
                    if (completer_claim > 0) {
                        const std::size_t got = random() % (completer_claim + 1);
                        (void)slots.accept(completer_claim, got);
                        reserved -= completer_claim;
                        queued += got;
                        completer_claim = 0;
                    }
                    break;
            }
            const std::size_t unkept = held_results - kept;
            const std::size_t backlog = unkept - std::min(unkept, slots.capacity());
            BOOST_REQUIRE(queued + running + reserved + kept + backlog <= slots.capacity());
            BOOST_REQUIRE(slots.kept() == kept);
            BOOST_REQUIRE(slots.unfinished() == queued + running);
            BOOST_REQUIRE(slots.running() == running);
            BOOST_REQUIRE(slots.reserved() == reserved);
            BOOST_REQUIRE(slots.results_held() == held_results);
            BOOST_REQUIRE(slots.max_running() <= handlers);
        }
    }
}
