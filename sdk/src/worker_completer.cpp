// worker_completer.cpp — the completer (worker_completer.hpp).
#include "worker_completer.hpp"

#include "cloacina/error.hpp"
#include "runner_core.hpp"
#include "worker_claimer.hpp"
#include "worker_handlers.hpp"
#include "worker_ledger.hpp"

#include <boost/json/serialize.hpp>

#include <algorithm>

namespace cloacina::detail {

namespace {

constexpr std::string_view kCompleteBatchSql =
    "SELECT task_id, accepted FROM cloacina.complete_batch($1::bigint[], $2::bigint[], $3::jsonb[])";
constexpr std::string_view kFailBatchSql =
    "SELECT task_id, accepted FROM cloacina.fail_batch($1::bigint[], $2::bigint[], $3::text[], $4::boolean[])";

// A completion that also claims, in one statement and one transaction: the tasks its results
// made ready (and any others) come back with its answer, without a notification, a wake-up and a
// claim of their own. complete_batch runs first (the claim's argument waits for it). Rows with
// "accepted" (the last column) NULL are claimed tasks, in the columns of the claimer's claim.
constexpr std::string_view kCompleteAndClaimSql =
    "WITH done AS MATERIALIZED ("
    "    SELECT task_id, accepted FROM cloacina.complete_batch($1::bigint[], $2::bigint[], $3::jsonb[])) "
    "SELECT task_id, NULL::bigint, NULL::text, NULL::text, NULL::int, NULL::bigint, NULL::jsonb, accepted FROM done "
    "UNION ALL "
    "SELECT task_id, execution_id, workflow, task, attempt, fence, context, NULL "
    "  FROM cloacina.claim($4::text, $5::text[], CASE WHEN (SELECT count(*) FROM done) >= 0 THEN $6::int END, "
    "                      $7::interval)";
constexpr int kAcceptedColumn = 7;

// Bounded so that one result never waits behind a very long batch.
constexpr std::size_t kMaxCompletionBatch = 64;

// Completions rolled back by a deadlock or serialization failure are resent after these pauses
// (10 ms doubling to 1 s: about 10 s in all, well inside a lease).
constexpr int kMaxConflictRetries = 15;
constexpr std::chrono::milliseconds kConflictBackoffMin{10};
constexpr std::chrono::milliseconds kConflictBackoffMax{1000};

std::string bool_array(const std::vector<bool>& values) {
    std::string out = "{";
    for (std::size_t i = 0; i < values.size(); ++i) {
        if (i) out += ',';
        out += values[i] ? 't' : 'f';
    }
    out += '}';
    return out;
}

}  // namespace

Completer::Completer(const RunnerCore& core, TaskLedger& ledger, const HandlerTable& handlers, WorkerCounters& counters)
    : core_(core), ledger_(ledger), handlers_(handlers), counters_(counters) {}

void Completer::start(Connection connection, const std::shared_ptr<void>& owner) {
    thread_ = std::thread([this, owner, c = std::move(connection)]() mutable { loop(c); });
}

void Completer::stop() {
    ledger_.close_results();
    if (thread_.joinable()) thread_.join();
}

void Completer::submit(const std::vector<Completion>& batch, Connection& connection) {
    std::vector<std::int64_t> ok_ids, ok_fences, bad_ids, bad_fences;
    std::vector<std::string> outputs, errors;
    std::vector<bool> retryable;
    for (const auto& c : batch) {
        if (c.success) {
            ok_ids.push_back(c.task_id);
            ok_fences.push_back(c.fence);
            outputs.push_back(boost::json::serialize(c.output));
        } else {
            bad_ids.push_back(c.task_id);
            bad_fences.push_back(c.fence);
            errors.push_back(c.error);
            retryable.push_back(c.retryable);
        }
    }
    std::size_t accepted_ok = 0, accepted_bad = 0;
    if (!ok_ids.empty()) {
        // Tasks with dependents claim with their completion, in the slots their results kept
        // and any others free (none while shutting down): what they make ready is claimed at
        // once. The last tasks of runs do not: their runs' waiters are woken when the completion
        // commits.
        const bool makes_ready =
            std::any_of(batch.begin(), batch.end(), [](const Completion& c) { return c.success && c.has_dependents; });
        const auto names = makes_ready ? handlers_.names() : std::vector<std::string>{};
        const std::size_t limit = ledger_.reserve_for_completion(batch, names.empty() ? 0 : core_.config.claim_batch);
        std::vector<ClaimedTask> claimed;
        try {
            Result r =
                limit == 0
                    ? connection.exec(kCompleteBatchSql, {Param(array_literal(ok_ids)), Param(array_literal(ok_fences)),
                                                          Param(array_literal(outputs))})
                    : connection.exec(
                          kCompleteAndClaimSql,
                          {Param(array_literal(ok_ids)), Param(array_literal(ok_fences)), Param(array_literal(outputs)),
                           Param(core_.worker_name()), Param(array_literal(names)), Param(static_cast<int>(limit)),
                           Param(interval(core_.config.lease))});
            for (int i = 0; i < r.rows(); ++i) {
                const int accepted = limit == 0 ? 1 : kAcceptedColumn;
                if (r.is_null(i, accepted))
                    claimed.push_back(claimed_task(r, i));
                else if (r.boolean(i, accepted))
                    ++accepted_ok;
                else
                    core_.log(LogLevel::Debug, "completion of task " + std::string(r.text(i, 0)) +
                                                   " not accepted (stale fence, cancelled or already done)");
            }
        } catch (...) {
            ledger_.accept(claimed, limit);  // nothing was claimed: the transaction rolled back
            throw;
        }
        ledger_.accept(claimed, limit);
    }
    if (!bad_ids.empty()) {
        Result r = connection.exec(kFailBatchSql, {Param(array_literal(bad_ids)), Param(array_literal(bad_fences)),
                                                   Param(array_literal(errors)), Param(bool_array(retryable))});
        for (int i = 0; i < r.rows(); ++i)
            if (r.boolean(i, 1)) ++accepted_bad;
    }
    counters_.completion_round_trips += (ok_ids.empty() ? 0 : 1) + (bad_ids.empty() ? 0 : 1);
    counters_.completed += accepted_ok;
    counters_.failed += accepted_bad;
}

void Completer::loop(Connection& connection) {
    for (;;) {
        const std::vector<Completion> batch = ledger_.take_results(kMaxCompletionBatch);
        if (batch.empty()) break;  // closed, and nothing left
        auto conflict_backoff = kConflictBackoffMin;
        for (int attempt = 0, conflicts = 0;; ++attempt) {
            try {
                submit(batch, connection);
                break;
            } catch (const TransientError& e) {
                // A deadlock (say, with a client locking the run's rows in its own order) or a
                // serialization failure rolled the completion back: none of it happened, and
                // the fence makes resending safe. Dropping it would rerun the tasks.
                if (++conflicts > kMaxConflictRetries) {
                    core_.log(LogLevel::Error, "dropping " + std::to_string(batch.size()) + " results after " +
                                                   std::to_string(kMaxConflictRetries) +
                                                   " conflicts (their leases will expire): " + e.what());
                    break;
                }
                core_.log(LogLevel::Warn, std::string("completion conflicted, resending: ") + e.what());
                // Not cut short by shutdown, which waits for these results: the retries bound it.
                std::this_thread::sleep_for(conflict_backoff);
                conflict_backoff = std::min<std::chrono::milliseconds>(conflict_backoff * 2, kConflictBackoffMax);
            } catch (const BrokenConnection& e) {
                core_.log(LogLevel::Warn, std::string("completer lost its connection: ") + e.what());
                // Resending is safe: a fence accepts one submission per attempt. While shutting
                // down, give up after a few tries instead of blocking shutdown forever.
                const bool stopping = ledger_.results_closed();
                if (attempt >= 3 || !reconnect(connection, "completer", core_, counters_, nullptr, stopping ? 3 : 0)) {
                    core_.log(LogLevel::Error, "dropping " + std::to_string(batch.size()) +
                                                   " results: the server is unreachable (their leases will expire)");
                    break;
                }
            } catch (const std::exception& e) {
                core_.log(LogLevel::Error, std::string("submitting results failed: ") + e.what());
                break;
            }
        }
        ledger_.forget(batch);
    }
}

}  // namespace cloacina::detail
