// worker.cpp — the worker of a DefaultRunner (worker.hpp): starts its roles, and stops them in
// order at shutdown. No statement of any role leaves state in the server session (no named
// prepared statement, no session SET), so every role works through PgBouncer in transaction mode.
// Every role reconnects with exponential backoff after a dropped connection.
#include "worker.hpp"

#include "listener.hpp"
#include "runner_core.hpp"

#include <algorithm>

namespace cloacina::detail {

Worker::Worker(std::shared_ptr<RunnerCore> core)
    : core_(std::move(core)),
      ledger_(core_->config, handlers_,
              TaskLedger::Hooks{[this] { claimer_.wake(); }, [this] { heartbeater_.deadline_added(); }}),
      heartbeater_(*core_, ledger_, counters_),
      claimer_(*core_, ledger_, handlers_, heartbeater_, counters_),
      completer_(*core_, ledger_, handlers_, counters_),
      handler_pool_(*core_, ledger_, handlers_) {}

void Worker::add_workflow(const Workflow& workflow) {
    handlers_.add(workflow);
    claimer_.wake();
}

void Worker::start() {
    // Open every role's connection first, so that a bad URL fails the runner's constructor.
    Connection claimer(core_->role_options("claimer " + core_->worker_name()));
    Connection heartbeater(core_->role_options("heartbeat " + core_->worker_name()));
    Connection completer(core_->role_options("completer " + core_->worker_name()));
    auto listener = std::make_unique<WakeupListener>(*core_);
    listener->start(claimer);

    // Every thread keeps the worker alive: a handler that outlives shutdown() needs it.
    const std::shared_ptr<void> self = shared_from_this();
    handler_pool_.start(self);
    claimer_.start(std::move(claimer), std::move(listener), self);
    heartbeater_.start(std::move(heartbeater), self);
    completer_.start(std::move(completer), self);
    started_ = true;
}

ShutdownReport Worker::shutdown() {
    std::lock_guard shutdown_lock(shutdown_mutex_);
    if (shutdown_report_) return *shutdown_report_;
    ShutdownReport report;
    if (!started_) {
        shutdown_report_ = report;
        return report;
    }
    const auto& name = core_->worker_name();
    const auto deadline = TaskLedger::Clock::now() + core_->config.shutdown_timeout;

    // 1. No new claims: none by the claimer, none with completions.
    ledger_.stop_claims();
    claimer_.stop();
    core_->log(LogLevel::Info, "runner " + name + " stopped claiming; draining for at most " +
                                   std::to_string(core_->config.shutdown_timeout.count()) + " ms");

    // 2. Drain: handlers finish what was claimed, until the deadline. 3. Past it, cancel what
    //    still runs and give its task back for a retry.
    const auto drain = ledger_.drain(deadline, "worker " + name + " shut down before the handler finished");
    report.abandoned = drain.released;
    report.drained = drain.in_flight - std::min(drain.in_flight, drain.released);
    if (!drain.drained)
        core_->log(LogLevel::Warn,
                   std::string(drain.cut_short ? "shutdown drain cut short" : "shutdown deadline passed") + " with " +
                       std::to_string(drain.released) +
                       " handler(s) still running; their tasks are released for retry");

    // 4. Submit the results, then stop the heartbeater.
    completer_.stop();
    heartbeater_.stop();

    // 5. Join the handler threads that returned; a handler ignoring its token keeps its thread
    //    (which holds the worker alive) but no longer holds up the caller.
    handler_pool_.join(report.abandoned == 0);
    core_->log(LogLevel::Info, "runner " + name + " shut down (" + std::to_string(report.drained) + " drained, " +
                                   std::to_string(report.abandoned) + " released)");
    shutdown_report_ = report;
    return report;
}

void Worker::cut_drain_short() { ledger_.cut_drain_short(); }

RunnerStats Worker::stats() const {
    RunnerStats stats;
    ledger_.add_to(stats);
    stats.completed = counters_.completed.load();
    stats.failed = counters_.failed.load();
    stats.reconnects = counters_.reconnects.load();
    stats.claim_round_trips = counters_.claim_round_trips.load();
    stats.completion_round_trips = counters_.completion_round_trips.load();
    return stats;
}

}  // namespace cloacina::detail
