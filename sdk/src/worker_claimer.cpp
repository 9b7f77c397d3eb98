// worker_claimer.cpp — the claimer (worker_claimer.hpp).
#include "worker_claimer.hpp"

#include "cloacina/error.hpp"
#include "listener.hpp"
#include "runner_core.hpp"
#include "worker_handlers.hpp"
#include "worker_heartbeater.hpp"
#include "worker_ledger.hpp"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>
#include <algorithm>

namespace cloacina::detail {

namespace {

constexpr std::string_view kClaimSql =
    "SELECT task_id, execution_id, workflow, task, attempt, fence, context "
    "FROM cloacina.claim($1::text, $2::text[], $3::int, $4::interval)";
constexpr std::string_view kWaitingClaimSql =
    "SELECT task_id, execution_id, workflow, task, attempt, fence, context "
    "FROM cloacina.claim($1::text, $2::text[], $3::int, $4::interval, $5::interval)";
constexpr std::string_view kQueryCanceled = "57014";

}  // namespace

ClaimedTask claimed_task(const Result& rows, int row) {
    ClaimedTask t;
    t.identity.task_id = rows.int64(row, 0);
    t.identity.execution_id = rows.int64(row, 1);
    t.identity.workflow = std::string(rows.text(row, 2));
    t.identity.task = std::string(rows.text(row, 3));
    t.identity.attempt = static_cast<int>(rows.int64(row, 4));
    t.fence = rows.int64(row, 5);
    t.context = rows.json(row, 6);
    return t;
}

Claimer::Claimer(const RunnerCore& core, TaskLedger& ledger, const HandlerTable& handlers, Heartbeater& heartbeater,
                 WorkerCounters& counters)
    : core_(core), ledger_(ledger), handlers_(handlers), heartbeater_(heartbeater), counters_(counters) {
    if (pipe(wake_pipe_) != 0) throw Error("cannot create the worker's wake-up pipe");
    for (int fd : wake_pipe_) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

Claimer::~Claimer() {
    for (int fd : wake_pipe_)
        if (fd >= 0) close(fd);
}

void Claimer::start(Connection connection, std::unique_ptr<WakeupListener> listener,
                    const std::shared_ptr<void>& owner) {
    thread_ = std::thread([this, owner, c = std::move(connection), l = std::move(listener)]() mutable { loop(c, *l); });
}

void Claimer::wake() noexcept {
    const char byte = 1;
    [[maybe_unused]] auto written = write(wake_pipe_[1], &byte, 1);  // a full pipe already means "wake up"
}

void Claimer::stop() {
    stop_.request();
    {
        std::lock_guard lock(waiting_claim_mutex_);
        if (waiting_claim_) waiting_claim_->cancel();
    }
    wake();
    if (thread_.joinable()) thread_.join();
}

void Claimer::handle_notifications(const std::vector<std::string>& payloads, bool& ready_hint) {
    for (const auto& payload : payloads) {
        if (payload == "finished" || payload.rfind("finished", 0) == 0)
            heartbeater_.beat_now();  // a run ended: cancellations reach its handlers sooner
        else
            ready_hint = true;  // 'ready' or anything unknown: worth a claim
    }
}

void Claimer::wait_for_wakeup(Connection& connection, WakeupListener& listener, std::chrono::milliseconds timeout,
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

std::vector<ClaimedTask> Claimer::claim(Connection& connection, const std::vector<std::string>& names,
                                        std::size_t limit, std::chrono::milliseconds wait) {
    ++counters_.claim_round_trips;
    std::vector<Param> params{Param(core_.worker_name()), Param(array_literal(names)), Param(static_cast<int>(limit)),
                              Param(interval(core_.config.lease))};
    std::optional<Result> r;
    if (wait.count() <= 0) {
        r = connection.exec(kClaimSql, params);
    } else {
        {
            std::lock_guard lock(waiting_claim_mutex_);
            if (stop_.requested()) return {};
            waiting_claim_ = connection.canceller();
        }
        struct Forget {  // whatever the claim's outcome, stop() has nothing left to cancel
            Claimer& claimer;
            ~Forget() {
                std::lock_guard lock(claimer.waiting_claim_mutex_);
                claimer.waiting_claim_.reset();
            }
        } forget{*this};
        params.emplace_back(interval(wait));
        try {
            r = connection.exec(kWaitingClaimSql, params);
        } catch (const SqlError& e) {
            // stop() cancelled the wait: the claim rolled back, nothing was taken
            if (stop_.requested() && e.sqlstate() == kQueryCanceled) return {};
            throw;
        }
    }
    std::vector<ClaimedTask> tasks;
    for (int i = 0; i < r->rows(); ++i) tasks.push_back(claimed_task(*r, i));
    return tasks;
}

void Claimer::loop(Connection& connection, WakeupListener& listener) {
    const auto& cfg = core_.config;
    auto idle_wait = cfg.poll_interval_min;
    bool wait_in_claim = false;  // the last claim left nothing ready: the next one waits for work
    while (!stop_.requested()) {
        try {
            const auto names = handlers_.names();
            const auto plan = ledger_.plan_claim(!names.empty());
            bool ready_hint = false;
            if (plan.wait_for_slots) {
                // Sleep until a slot frees (the pipe) or a notification.
                wait_for_wakeup(connection, listener, cfg.poll_interval, ready_hint);
                continue;
            }
            std::vector<ClaimedTask> tasks;
            try {
                if (plan.limit > 0)
                    tasks = claim(connection, names, plan.limit,
                                  wait_in_claim ? cfg.poll_interval : std::chrono::milliseconds(0));
            } catch (...) {
                ledger_.accept(tasks, plan.limit);  // gives the reservation back
                throw;
            }
            ledger_.accept(tasks, plan.limit);
            handle_notifications(listener.consume(connection), ready_hint);
            const bool claim_waited = wait_in_claim;
            wait_in_claim = false;
            const bool short_claim = tasks.size() < plan.limit;
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
            // Nothing to claim: the next claim waits on the server, where a transaction that makes
            // tasks ready wakes it, so the wake-up and the claim are one round trip. Not through a
            // pooler, which the wait would keep from sharing the server connection.
            const bool server_waits = core_.claims_wait() && !cfg.pooled && plan.limit > 0;
            if (server_waits && !claim_waited) {
                wait_in_claim = true;
                continue;
            }
            // Wait here for a hint, backing off towards poll_interval (the backstop); also after a
            // waiting claim that came back empty, so that a server that cuts waits short
            // (cloacina.max_claim_wait = 0) is not asked again and again.
            wait_for_wakeup(connection, listener, idle_wait, ready_hint);
            idle_wait = ready_hint ? cfg.poll_interval_min
                                   : std::min<std::chrono::milliseconds>(idle_wait * 2, cfg.poll_interval);
            wait_in_claim = server_waits && !ready_hint;
        } catch (const BrokenConnection& e) {
            core_.log(LogLevel::Warn, std::string("claimer lost its connection: ") + e.what());
            if (!reconnect(connection, "claimer", core_, counters_, &stop_)) break;
            try {
                listener.relisten(connection);
            } catch (const Error& le) {
                core_.log(LogLevel::Warn, std::string("claimer cannot LISTEN: ") + le.what());
            }
        } catch (const TransientError& e) {
            // A deadlock or serialization failure: the claim rolled back; claim again soon.
            core_.log(LogLevel::Warn, std::string("claim conflicted: ") + e.what());
            (void)stop_.sleep_for(cfg.poll_interval_min);
        } catch (const std::exception& e) {
            core_.log(LogLevel::Error, std::string("claim failed: ") + e.what());
            (void)stop_.sleep_for(cfg.poll_interval);
        }
    }
}

}  // namespace cloacina::detail
