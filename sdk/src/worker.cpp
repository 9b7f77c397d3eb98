// worker.cpp — the worker of a DefaultRunner: it claims tasks, runs their handlers and submits their results.
//
// Thread roles, each with its own connection (a PGconn is not thread-safe):
//   claimer     claims batches of the tasks it has handlers for, never more than the free handler
//               slots; idle waits back off from poll_interval_min to poll_interval and end early on
//               a 'ready' notification (WakeupListener: LISTEN on its own connection, on a direct
//               listen_url, or none behind a transaction pooler).
// No statement leaves state in the server session (no named prepared statement, no session SET),
// so every role works through PgBouncer in transaction mode.
//   handlers    max_concurrent_tasks threads running handlers, each with a cancellation token.
//   heartbeater renews the leases of claimed tasks in one round trip per beat, turns 'lost' and
//               'cancelled' answers and passed task timeouts into token cancellations.
//   completer   sends finished tasks' outputs and errors with complete_batch / fail_batch; the
//               completion of tasks with dependents also claims (while handler slots are free), so
//               that a DAG's next level starts without a notification and a claim round trip.
// Every role reconnects with exponential backoff after a dropped connection. Completions are safe
// to resend: the fence makes a second submission of the same attempt a no-op.
#include "runner_core.hpp"

#include "cloacina/error.hpp"
#include "listener.hpp"

#include <boost/json/serialize.hpp>

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>
#include <algorithm>
#include <cerrno>

namespace cloacina::detail {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

constexpr std::string_view kClaimSql =
    "SELECT task_id, execution_id, workflow, task, attempt, fence, context "
    "FROM cloacina.claim($1::text, $2::text[], $3::int, $4::interval)";
// One statement for every held task; it locks them in id order, as completions do.
constexpr std::string_view kHeartbeatSql =
    "SELECT task_id, status FROM cloacina.heartbeat_batch($1::bigint[], $2::bigint[])";
constexpr std::string_view kCompleteBatchSql =
    "SELECT task_id, accepted FROM cloacina.complete_batch($1::bigint[], $2::bigint[], $3::jsonb[])";
constexpr std::string_view kFailBatchSql =
    "SELECT task_id, accepted FROM cloacina.fail_batch($1::bigint[], $2::bigint[], $3::text[], $4::boolean[])";

// A completion that also claims, in one statement and one transaction: the tasks its results
// made ready (and any others) come back with its answer, without a notification, a wake-up and a
// claim of their own. complete_batch runs first (the claim's argument waits for it). Rows with
// "accepted" (the last column) NULL are claimed tasks, in the columns of kClaimSql.
constexpr std::string_view kCompleteAndClaimSql =
    "WITH done AS MATERIALIZED ("
    "    SELECT task_id, accepted FROM cloacina.complete_batch($1::bigint[], $2::bigint[], $3::jsonb[])) "
    "SELECT task_id, NULL::bigint, NULL::text, NULL::text, NULL::int, NULL::bigint, NULL::jsonb, accepted FROM done "
    "UNION ALL "
    "SELECT task_id, execution_id, workflow, task, attempt, fence, context, NULL "
    "  FROM cloacina.claim($4::text, $5::text[], CASE WHEN (SELECT count(*) FROM done) >= 0 THEN $6::int END, "
    "                      $7::interval)";
constexpr int kAcceptedColumn = 7;

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

Worker::Worker(std::shared_ptr<RunnerCore> core)
    : core_(std::move(core)),
      slots_(core_->config.max_concurrent_tasks, core_->config.prefetch, core_->config.claim_batch) {
    if (pipe(wake_pipe_) != 0) throw Error("cannot create the worker's wake-up pipe");
    for (int fd : wake_pipe_) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

Worker::~Worker() {
    for (int fd : wake_pipe_)
        if (fd >= 0) close(fd);
}

void Worker::add_workflow(const Workflow& workflow) {
    {
        std::lock_guard lock(mutex_);
        for (const auto& task : workflow.tasks()) {
            if (!task.handler()) continue;  // SQL tasks run inside the database
            bool has_dependents = false;
            for (const auto& other : workflow.tasks())
                for (const auto& dependency : other.dependencies()) has_dependents |= dependency == task.id();
            handlers_[workflow.name() + "." + task.id()] = HandlerInfo{task.handler(), task.timeout(), has_dependents};
        }
    }
    wake_claimer();
}

std::vector<std::string> Worker::claim_names() const {
    std::lock_guard lock(mutex_);
    std::vector<std::string> names;
    for (const auto& [name, info] : handlers_) names.push_back(name);
    return names;
}

void Worker::start() {
    // Open every role's connection first, so that a bad URL fails the runner's constructor.
    Connection claimer(core_->role_options("claimer " + core_->worker_name()));
    Connection heartbeater(core_->role_options("heartbeat " + core_->worker_name()));
    Connection completer(core_->role_options("completer " + core_->worker_name()));
    auto listener = std::make_unique<WakeupListener>(*core_);
    listener->start(claimer);

    auto self = shared_from_this();
    for (std::size_t i = 0; i < core_->config.max_concurrent_tasks; ++i) {
        auto exited = std::make_shared<std::atomic<bool>>(false);
        handler_exited_.push_back(exited);
        handler_threads_.emplace_back([self, exited] { self->handler_loop(exited); });
    }
    claimer_ = std::thread(
        [self, c = std::move(claimer), l = std::move(listener)]() mutable { self->claimer_loop(std::move(c), *l); });
    heartbeater_ = std::thread([self, c = std::move(heartbeater)]() mutable { self->heartbeat_loop(std::move(c)); });
    completer_ = std::thread([self, c = std::move(completer)]() mutable { self->completer_loop(std::move(c)); });
    started_ = true;
}

// ---- wake-ups ------------------------------------------------------------------------------------

void Worker::wake_claimer() noexcept {
    const char byte = 1;
    [[maybe_unused]] auto written = write(wake_pipe_[1], &byte, 1);  // a full pipe already means "wake up"
}

void Worker::poke_heartbeater() {
    {
        std::lock_guard lock(mutex_);
        if (inflight_.empty()) return;
        heartbeat_now_ = true;
    }
    heartbeat_cv_.notify_all();
}

void Worker::handle_notifications(const std::vector<std::string>& payloads, bool& ready_hint) {
    for (const auto& payload : payloads) {
        if (payload == "finished" || payload.rfind("finished", 0) == 0)
            poke_heartbeater();
        else
            ready_hint = true;  // 'ready' or anything unknown: worth a claim
    }
}

void Worker::wait_for_wakeup(Connection& connection, WakeupListener& listener, std::chrono::milliseconds timeout,
                                   bool& ready_hint) {
    const int listening = listener.socket(connection);
    pollfd fds[2] = {{wake_pipe_[0], POLLIN, 0}, {listening, POLLIN, 0}};
    const int n = poll(fds, listening >= 0 ? 2 : 1, static_cast<int>(timeout.count()));
    if (n > 0 && (fds[0].revents & POLLIN)) {
        char buffer[64];
        while (read(wake_pipe_[0], buffer, sizeof buffer) > 0) {
        }
        ready_hint = true;
    }
    if (n > 0 && listening >= 0 && (fds[1].revents & (POLLIN | POLLERR | POLLHUP)))
        handle_notifications(listener.consume(connection), ready_hint);
}

bool Worker::reconnect(Connection& connection, std::string_view role, const std::atomic<bool>& stop,
                             int max_attempts) {
    auto backoff = 100ms;
    for (int attempt = 1;; ++attempt) {
        if (stop.load()) return false;
        try {
            connection.reconnect();
            {
                std::lock_guard lock(mutex_);
                ++stats_.reconnects;
            }
            core_->log(LogLevel::Info, std::string(role) + " reconnected");
            return true;
        } catch (const Error& e) {
            core_->log(LogLevel::Warn, std::string(role) + " cannot reconnect (retrying in " +
                                           std::to_string(backoff.count()) + " ms): " + e.what());
        }
        if (max_attempts > 0 && attempt >= max_attempts) return false;
        std::unique_lock lock(mutex_);
        sleep_cv_.wait_for(lock, backoff, [&] { return stop.load(); });
        backoff = std::min<std::chrono::milliseconds>(backoff * 2, core_->config.reconnect_backoff_max);
    }
}

// ---- claimer -------------------------------------------------------------------------------------

std::size_t Worker::reserve_slots(std::size_t wanted) {
    std::lock_guard lock(mutex_);
    return slots_.reserve(wanted);
}

Worker::TaskIdentity Worker::identity_of(const ClaimedTask& task) {
    return TaskIdentity{task.workflow, task.task, task.execution_id, task.task_id, task.attempt};
}

void Worker::log_task(LogLevel level, const TaskIdentity& task, std::string message) const {
    if (!log_enabled(level)) return;
    LogRecord record;
    record.level = level;
    record.message = std::move(message);
    record.workflow = task.workflow;
    record.task = task.task;
    record.execution_id = task.execution_id;
    record.task_id = task.task_id;
    record.attempt = task.attempt;
    core_->log(std::move(record));
}

Worker::ClaimedTask Worker::claimed_task(const Result& r, int row) {
    ClaimedTask t;
    t.task_id = r.int64(row, 0);
    t.execution_id = r.int64(row, 1);
    t.workflow = std::string(r.text(row, 2));
    t.task = std::string(r.text(row, 3));
    t.attempt = static_cast<int>(r.int64(row, 4));
    t.fence = r.int64(row, 5);
    t.context = r.json(row, 6);
    return t;
}

std::vector<Worker::ClaimedTask> Worker::claim(Connection& connection,
                                                           const std::vector<std::string>& names, std::size_t limit) {
    {
        std::lock_guard lock(mutex_);
        ++stats_.claim_round_trips;
    }
    Result r = connection.exec(kClaimSql, {Param(core_->worker_name()), Param(array_literal(names)),
                                           Param(static_cast<int>(limit)), Param(interval(core_->config.lease))});
    std::vector<ClaimedTask> tasks;
    for (int i = 0; i < r.rows(); ++i) tasks.push_back(claimed_task(r, i));
    return tasks;
}

void Worker::accept_claimed(std::vector<ClaimedTask>& tasks, std::size_t reserved) {
    bool wake_heartbeater = false;
    bool wake_claimer_now;
    {
        std::lock_guard lock(mutex_);
        wake_claimer_now = slots_.accept(reserved, tasks.size());
        for (auto& t : tasks) {
            InFlight f;
            f.fence = t.fence;
            f.name = t.workflow + "." + t.task;
            f.identity = identity_of(t);
            if (auto h = handlers_.find(f.name); h != handlers_.end() && h->second.timeout) {
                f.deadline = Clock::now() + *h->second.timeout;
                deadlines_changed_ = true;  // the heartbeater may sleep past it
                wake_heartbeater = true;
            }
            inflight_.emplace(t.task_id, std::move(f));
            stats_.claimed++;
            queue_.push_back(std::move(t));
        }
    }
    if (!tasks.empty()) queue_cv_.notify_all();
    if (wake_heartbeater) heartbeat_cv_.notify_all();
    if (wake_claimer_now) wake_claimer();
}

void Worker::claimer_loop(Connection connection, WakeupListener& listener) {
    const auto& cfg = core_->config;
    auto idle_wait = cfg.poll_interval_min;
    while (!stop_claiming_.load()) {
        try {
            const auto names = claim_names();
            SlotAccounting::ClaimPlan plan;
            {
                std::lock_guard lock(mutex_);
                plan = slots_.plan_claim(!names.empty());
            }
            const bool full_enough = plan.wait_for_slots;
            const std::size_t limit = plan.limit;
            bool ready_hint = false;
            if (full_enough) {
                // Sleep until a slot frees (the pipe) or a notification.
                wait_for_wakeup(connection, listener, cfg.poll_interval, ready_hint);
                continue;
            }
            std::vector<ClaimedTask> tasks;
            try {
                if (limit > 0) tasks = claim(connection, names, limit);
            } catch (...) {
                accept_claimed(tasks, limit);  // gives the reservation back
                throw;
            }
            accept_claimed(tasks, limit);
            handle_notifications(listener.consume(connection), ready_hint);
            const bool short_claim = tasks.size() < limit;
            if (!tasks.empty()) {
                idle_wait = cfg.poll_interval_min;
                // A full batch may have left more behind: claim again. A short one took every
                // ready task the claim could see; what becomes ready later sends a 'ready' hint,
                // so wait for one rather than spend a round trip (and the server's CPU, which the
                // completions of these very tasks need) on a claim that finds nothing.
                if (!short_claim || ready_hint) continue;
            } else if (ready_hint) {
                // A 'ready' hint came in with the claim's reply: its tasks may have been committed
                // after the claim looked. Claim again now; waiting would sleep through the hint.
                idle_wait = cfg.poll_interval_min;
                continue;
            }
            // Nothing to claim: wait for a hint, backing off towards poll_interval (the backstop).
            wait_for_wakeup(connection, listener, idle_wait, ready_hint);
            idle_wait = ready_hint ? cfg.poll_interval_min
                                   : std::min<std::chrono::milliseconds>(idle_wait * 2, cfg.poll_interval);
        } catch (const BrokenConnection& e) {
            core_->log(LogLevel::Warn, std::string("claimer lost its connection: ") + e.what());
            if (!reconnect(connection, "claimer", stop_claiming_)) break;
            try {
                listener.relisten(connection);
            } catch (const Error& le) {
                core_->log(LogLevel::Warn, std::string("claimer cannot LISTEN: ") + le.what());
            }
        } catch (const TransientError& e) {
            // A deadlock or serialization failure: the claim rolled back; claim again soon.
            core_->log(LogLevel::Warn, std::string("claim conflicted: ") + e.what());
            std::unique_lock lock(mutex_);
            sleep_cv_.wait_for(lock, cfg.poll_interval_min, [&] { return stop_claiming_.load(); });
        } catch (const std::exception& e) {
            core_->log(LogLevel::Error, std::string("claim failed: ") + e.what());
            std::unique_lock lock(mutex_);
            sleep_cv_.wait_for(lock, cfg.poll_interval, [&] { return stop_claiming_.load(); });
        }
    }
}

// ---- handlers ------------------------------------------------------------------------------------

void Worker::handler_loop(std::shared_ptr<std::atomic<bool>> exited) {
    for (;;) {
        ClaimedTask task;
        {
            std::unique_lock lock(mutex_);
            queue_cv_.wait(lock, [&] { return !queue_.empty() || stop_handlers_.load(); });
            if (queue_.empty()) break;
            task = std::move(queue_.front());
            queue_.pop_front();
            auto it = inflight_.find(task.task_id);
            if (it == inflight_.end()) continue;
            if (it->second.released) {  // given back by shutdown before it started
                slots_.drop_queued();
                inflight_.erase(it);
                continue;
            }
            it->second.started = true;
            slots_.start();
        }
        const bool claimer_waits = run_task(task);
        drained_cv_.notify_all();
        if (claimer_waits) wake_claimer();  // otherwise a free slot is no reason to claim
    }
    exited->store(true);
    drained_cv_.notify_all();
}

bool Worker::run_task(const ClaimedTask& task) {
    const std::string name = task.workflow + "." + task.task;
    TaskHandler handler;
    CancellationToken token;
    std::optional<std::chrono::milliseconds> timeout;
    bool has_dependents = false;
    {
        std::lock_guard lock(mutex_);
        if (auto h = handlers_.find(name); h != handlers_.end()) {
            handler = h->second.handler;
            timeout = h->second.timeout;
            has_dependents = h->second.has_dependents;
        }
        token = inflight_.at(task.task_id).cancellation.token();
    }

    Completion done;
    done.task_id = task.task_id;
    done.fence = task.fence;
    done.name = name;
    done.has_dependents = has_dependents;
    done.identity = identity_of(task);
    bool claimer_waits = false;
    const auto fail = [&](std::string error, bool retryable) {
        done.success = false;
        done.error = std::move(error);
        done.retryable = retryable;
    };
    try {
        if (!handler) throw TaskError("no handler for task " + name + " in worker " + core_->worker_name());
        Context context = Context::from_json(task.context);
        log_task(LogLevel::Debug, done.identity, "running " + name);
        handler(context, token);
        done.output = context.changes();
        if (token.reason() == CancelReason::Timeout)
            fail("task timed out after " + std::to_string(timeout ? timeout->count() : 0) + " ms", true);
    } catch (const TaskError& e) {
        fail(e.what(), e.retryable());
    } catch (const Cancelled& e) {
        const CancelReason why = token.reason();
        if (why == CancelReason::Timeout)
            fail("task timed out after " + std::to_string(timeout ? timeout->count() : 0) + " ms", true);
        else
            fail(e.what(), why != CancelReason::RunCancelled);
    } catch (const std::exception& e) {
        fail(e.what(), true);
    } catch (...) {
        fail("task handler threw a non-standard exception", true);
    }
    if (!done.success)
        log_task(LogLevel::Info, done.identity,
                 name + " attempt " + std::to_string(task.attempt) + " failed: " + done.error);
    {
        // The handler slot is free now; the entry stays (and keeps being heartbeated) until the
        // completer has submitted the result.
        std::lock_guard lock(mutex_);
        auto it = inflight_.find(task.task_id);
        if (it != inflight_.end()) {
            it->second.finished = true;
            if (it->second.released) {  // shutdown gave the task back: the result is discarded
                inflight_.erase(it);
                return slots_.finish(false);
            }
        }
        claimer_waits = slots_.finish(true);
        completions_.push_back(std::move(done));
    }
    completion_cv_.notify_all();
    return claimer_waits;
}

// ---- completer -----------------------------------------------------------------------------------

void Worker::submit(std::vector<Completion>& batch, Connection& connection) {
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
        // Tasks with dependents claim with their completion (while handler slots are free and
        // not while shutting down): what they make ready is claimed at once. The last tasks of
        // runs do not: their runs' waiters are woken when the completion commits.
        const bool makes_ready =
            std::any_of(batch.begin(), batch.end(), [](const Completion& c) { return c.success && c.has_dependents; });
        const auto names = !makes_ready || stop_claiming_.load() ? std::vector<std::string>{} : claim_names();
        const std::size_t limit = names.empty() ? 0 : reserve_slots(core_->config.claim_batch);
        std::vector<ClaimedTask> claimed;
        try {
            Result r =
                limit == 0
                    ? connection.exec(kCompleteBatchSql, {Param(array_literal(ok_ids)), Param(array_literal(ok_fences)),
                                                          Param(array_literal(outputs))})
                    : connection.exec(
                          kCompleteAndClaimSql,
                          {Param(array_literal(ok_ids)), Param(array_literal(ok_fences)), Param(array_literal(outputs)),
                           Param(core_->worker_name()), Param(array_literal(names)), Param(static_cast<int>(limit)),
                           Param(interval(core_->config.lease))});
            for (int i = 0; i < r.rows(); ++i) {
                const int accepted = limit == 0 ? 1 : kAcceptedColumn;
                if (r.is_null(i, accepted))
                    claimed.push_back(claimed_task(r, i));
                else if (r.boolean(i, accepted))
                    ++accepted_ok;
                else
                    core_->log(LogLevel::Debug, "completion of task " + std::string(r.text(i, 0)) +
                                                    " not accepted (stale fence, cancelled or already done)");
            }
        } catch (...) {
            accept_claimed(claimed, limit);  // nothing was claimed: the transaction rolled back
            throw;
        }
        accept_claimed(claimed, limit);
    }
    if (!bad_ids.empty()) {
        Result r = connection.exec(kFailBatchSql, {Param(array_literal(bad_ids)), Param(array_literal(bad_fences)),
                                                   Param(array_literal(errors)), Param(bool_array(retryable))});
        for (int i = 0; i < r.rows(); ++i)
            if (r.boolean(i, 1)) ++accepted_bad;
    }
    std::lock_guard lock(mutex_);
    stats_.completion_round_trips += (ok_ids.empty() ? 0 : 1) + (bad_ids.empty() ? 0 : 1);
    stats_.completed += accepted_ok;
    stats_.failed += accepted_bad;
}

void Worker::completer_loop(Connection connection) {
    for (;;) {
        std::vector<Completion> batch;
        {
            std::unique_lock lock(mutex_);
            completion_cv_.wait(lock, [&] { return !completions_.empty() || stop_completer_.load(); });
            if (completions_.empty()) break;
            // Bounded so that one result never waits behind a very long batch.
            const std::size_t n = std::min<std::size_t>(completions_.size(), kMaxCompletionBatch);
            for (std::size_t i = 0; i < n; ++i) {
                batch.push_back(std::move(completions_.front()));
                completions_.pop_front();
            }
        }
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
                    core_->log(LogLevel::Error, "dropping " + std::to_string(batch.size()) + " results after " +
                                                    std::to_string(kMaxConflictRetries) +
                                                    " conflicts (their leases will expire): " + e.what());
                    break;
                }
                core_->log(LogLevel::Warn, std::string("completion conflicted, resending: ") + e.what());
                std::unique_lock lock(mutex_);
                sleep_cv_.wait_for(lock, conflict_backoff, [&] { return stop_heartbeat_.load(); });
                conflict_backoff = std::min<std::chrono::milliseconds>(conflict_backoff * 2, kConflictBackoffMax);
            } catch (const BrokenConnection& e) {
                core_->log(LogLevel::Warn, std::string("completer lost its connection: ") + e.what());
                // Resending is safe: a fence accepts one submission per attempt. While shutting
                // down, give up after a few tries instead of blocking shutdown forever.
                const bool stopping = stop_completer_.load();
                if (attempt >= 3 || !reconnect(connection, "completer", stop_heartbeat_, stopping ? 3 : 0)) {
                    core_->log(LogLevel::Error, "dropping " + std::to_string(batch.size()) +
                                                    " results: the server is unreachable (their leases will expire)");
                    break;
                }
            } catch (const std::exception& e) {
                core_->log(LogLevel::Error, std::string("submitting results failed: ") + e.what());
                break;
            }
        }
        bool claimer_waits;
        {
            std::lock_guard lock(mutex_);
            std::size_t submitted = 0;
            for (const auto& c : batch) {
                auto it = inflight_.find(c.task_id);
                // A released task whose handler still runs keeps its entry until the handler returns.
                if (it != inflight_.end() && it->second.finished) {
                    inflight_.erase(it);
                    ++submitted;
                }
            }
            claimer_waits = slots_.submitted(submitted);
        }
        drained_cv_.notify_all();
        if (claimer_waits) wake_claimer();  // a backlog of results may have held its slots
    }
}

// ---- heartbeater ---------------------------------------------------------------------------------

void Worker::heartbeat_loop(Connection connection) {
    const auto& cfg = core_->config;
    const auto interval_length = cfg.heartbeat_interval.count() > 0 ? cfg.heartbeat_interval : cfg.lease / 3;
    auto next_beat = Clock::now() + interval_length;
    while (!stop_heartbeat_.load()) {
        std::vector<std::int64_t> ids, fences;
        {
            std::unique_lock lock(mutex_);
            auto wake_at = next_beat;
            for (const auto& [id, f] : inflight_)
                if (!f.finished && f.deadline && !f.cancellation.cancelled()) wake_at = std::min(wake_at, *f.deadline);
            heartbeat_cv_.wait_until(lock, wake_at,
                                     [&] { return heartbeat_now_ || deadlines_changed_ || stop_heartbeat_.load(); });
            if (stop_heartbeat_.load()) break;
            deadlines_changed_ = false;
            const auto now = Clock::now();
            for (auto& [id, f] : inflight_)
                if (!f.finished && f.deadline && now >= *f.deadline && f.cancellation.cancel(CancelReason::Timeout))
                    log_task(LogLevel::Info, f.identity, f.name + " passed its timeout; cancelling its handler");
            if (!heartbeat_now_ && now < next_beat) continue;
            heartbeat_now_ = false;
            next_beat = now + interval_length;
            for (const auto& [id, f] : inflight_) {
                if (f.released) continue;
                ids.push_back(id);
                fences.push_back(f.fence);
            }
        }
        if (ids.empty()) continue;
        try {
            Result r = connection.exec(kHeartbeatSql, {Param(array_literal(ids)), Param(array_literal(fences))});
            std::lock_guard lock(mutex_);
            for (int i = 0; i < r.rows(); ++i) {
                const std::int64_t id = r.int64(i, 0);
                const std::string_view answer = r.text(i, 1);
                auto it = inflight_.find(id);
                if (it == inflight_.end() || answer == "ok") continue;
                const CancelReason why = answer == "cancelled" ? CancelReason::RunCancelled : CancelReason::LeaseLost;
                if (it->second.cancellation.cancel(why))
                    log_task(
                        LogLevel::Info, it->second.identity,
                        it->second.name + ": heartbeat answered '" + std::string(answer) + "'; cancelling its handler");
            }
        } catch (const BrokenConnection& e) {
            core_->log(LogLevel::Warn, std::string("heartbeater lost its connection: ") + e.what());
            if (!reconnect(connection, "heartbeater", stop_heartbeat_)) break;
            std::lock_guard lock(mutex_);
            heartbeat_now_ = true;  // renew at once: the lease kept running while we were away
        } catch (const std::exception& e) {
            core_->log(LogLevel::Error, std::string("heartbeat failed: ") + e.what());
        }
    }
}

// ---- shutdown ------------------------------------------------------------------------------------

ShutdownReport Worker::shutdown() {
    std::lock_guard shutdown_lock(shutdown_mutex_);
    if (shutdown_report_) return *shutdown_report_;
    ShutdownReport report;
    if (!started_) {
        shutdown_report_ = report;
        return report;
    }
    const auto deadline = Clock::now() + core_->config.shutdown_timeout;

    // 1. No new claims.
    stop_claiming_.store(true);
    wake_claimer();
    sleep_cv_.notify_all();
    if (claimer_.joinable()) claimer_.join();
    core_->log(LogLevel::Info, "runner " + core_->worker_name() + " stopped claiming; draining for at most " +
                                   std::to_string(core_->config.shutdown_timeout.count()) + " ms");

    // 2. Drain: handlers finish what was claimed, until the deadline.
    std::vector<Completion> releases;
    {
        std::unique_lock lock(mutex_);
        const std::size_t in_flight_at_start = slots_.unfinished();
        stop_handlers_.store(true);
        queue_cv_.notify_all();
        const bool drained = drained_cv_.wait_until(lock, deadline, [&] {
            return slots_.unfinished() == 0 || drain_cut_short_;
        }) && slots_.unfinished() == 0;
        if (!drained) {
            // 3. Past the deadline: cancel what still runs and give its task back for a retry.
            for (auto& [id, f] : inflight_) {
                if (f.finished) continue;  // its result is queued for the completer
                f.cancellation.cancel(CancelReason::Shutdown);
                f.released = true;
                releases.push_back(
                    Completion{id,
                               f.fence,
                               false,
                               {},
                               "worker " + core_->worker_name() + " shut down before the handler finished",
                               true,
                               f.name,
                               false,
                               f.identity});
            }
            report.abandoned = releases.size();
            for (auto& r : releases) completions_.push_back(r);
            core_->log(LogLevel::Warn,
                       std::string(drain_cut_short_ ? "shutdown drain cut short" : "shutdown deadline passed") +
                           " with " + std::to_string(releases.size()) +
                           " handler(s) still running; their tasks are released for retry");
        }
        report.drained = in_flight_at_start - std::min(in_flight_at_start, report.abandoned);
    }
    completion_cv_.notify_all();

    // 4. Flush completions, then stop the heartbeater.
    stop_completer_.store(true);
    completion_cv_.notify_all();
    sleep_cv_.notify_all();
    if (completer_.joinable()) completer_.join();
    stop_heartbeat_.store(true);
    heartbeat_cv_.notify_all();
    sleep_cv_.notify_all();
    if (heartbeater_.joinable()) heartbeater_.join();

    // 5. Join handler threads that returned; a handler ignoring its token keeps its thread (which
    //    holds the worker alive) but no longer holds up the caller.
    for (std::size_t i = 0; i < handler_threads_.size(); ++i) {
        if (!handler_threads_[i].joinable()) continue;
        if (report.abandoned == 0 || handler_exited_[i]->load())
            handler_threads_[i].join();
        else
            handler_threads_[i].detach();
    }
    core_->log(LogLevel::Info, "runner " + core_->worker_name() + " shut down (" + std::to_string(report.drained) +
                                   " drained, " + std::to_string(report.abandoned) + " released)");
    shutdown_report_ = report;
    return report;
}

void Worker::cut_drain_short() {
    {
        std::lock_guard lock(mutex_);
        drain_cut_short_ = true;
    }
    drained_cv_.notify_all();
}

RunnerStats Worker::stats() const {
    std::lock_guard lock(mutex_);
    RunnerStats stats = stats_;
    stats.running = slots_.running();
    stats.max_running = slots_.max_running();
    return stats;
}

}  // namespace cloacina::detail
