// worker_handlers.cpp — the handler pool and its handler table (worker_handlers.hpp).
#include "worker_handlers.hpp"

#include "cloacina/error.hpp"
#include "runner_core.hpp"
#include "worker_ledger.hpp"

namespace cloacina::detail {

// ---- the handler table ---------------------------------------------------------------------------

void HandlerTable::add(const Workflow& workflow) {
    std::lock_guard lock(mutex_);
    for (const auto& task : workflow.tasks()) {
        if (!task.handler()) continue;  // SQL tasks run inside the database
        bool has_dependents = false;
        for (const auto& other : workflow.tasks())
            for (const auto& dependency : other.dependencies()) has_dependents |= dependency == task.id();
        entries_[workflow.name() + "." + task.id()] = Entry{task.handler(), task.timeout(), has_dependents};
    }
}

std::vector<std::string> HandlerTable::names() const {
    std::lock_guard lock(mutex_);
    std::vector<std::string> names;
    for (const auto& [name, entry] : entries_) names.push_back(name);
    return names;
}

std::optional<HandlerTable::Entry> HandlerTable::find(const std::string& name) const {
    std::lock_guard lock(mutex_);
    auto it = entries_.find(name);
    if (it == entries_.end()) return std::nullopt;
    return it->second;
}

std::optional<std::chrono::milliseconds> HandlerTable::timeout(const std::string& name) const {
    std::lock_guard lock(mutex_);
    auto it = entries_.find(name);
    return it == entries_.end() ? std::nullopt : it->second.timeout;
}

// ---- the handler pool ----------------------------------------------------------------------------

HandlerPool::HandlerPool(const RunnerCore& core, TaskLedger& ledger, const HandlerTable& handlers)
    : core_(core), ledger_(ledger), handlers_(handlers) {}

void HandlerPool::start(const std::shared_ptr<void>& owner) {
    for (std::size_t i = 0; i < core_.config.max_concurrent_tasks; ++i) {
        auto exited = std::make_shared<std::atomic<bool>>(false);
        exited_.push_back(exited);
        threads_.emplace_back([this, owner, exited] {
            loop();
            exited->store(true);
        });
    }
}

void HandlerPool::join(bool wait_for_all) {
    for (std::size_t i = 0; i < threads_.size(); ++i) {
        if (!threads_[i].joinable()) continue;
        if (wait_for_all || exited_[i]->load())
            threads_[i].join();
        else
            threads_[i].detach();
    }
}

void HandlerPool::loop() {
    while (auto assignment = ledger_.next_task()) ledger_.finish(run(assignment->task, assignment->cancellation));
}

Completion HandlerPool::run(const ClaimedTask& task, const CancellationToken& cancellation) const {
    const TaskIdentity& identity = task.identity;
    const std::string name = identity.name();
    const auto handler = handlers_.find(name);
    const auto timeout_ms = handler && handler->timeout ? handler->timeout->count() : 0;

    Completion done;
    done.task_id = identity.task_id;
    done.fence = task.fence;
    done.has_dependents = handler && handler->has_dependents;
    const auto fail = [&](std::string error, bool retryable) {
        done.success = false;
        done.error = std::move(error);
        done.retryable = retryable;
    };
    try {
        if (!handler || !handler->handler)
            throw TaskError("no handler for task " + name + " in worker " + core_.worker_name());
        Context context = Context::from_json(task.context);
        log_task(core_, LogLevel::Debug, identity, "running " + name);
        handler->handler(context, cancellation);
        done.output = context.changes();
        if (cancellation.reason() == CancelReason::Timeout)
            fail("task timed out after " + std::to_string(timeout_ms) + " ms", true);
    } catch (const TaskError& e) {
        fail(e.what(), e.retryable());
    } catch (const Cancelled& e) {
        const CancelReason why = cancellation.reason();
        if (why == CancelReason::Timeout)
            fail("task timed out after " + std::to_string(timeout_ms) + " ms", true);
        else
            fail(e.what(), why != CancelReason::RunCancelled);
    } catch (const std::exception& e) {
        fail(e.what(), true);
    } catch (...) {
        fail("task handler threw a non-standard exception", true);
    }
    if (!done.success)
        log_task(core_, LogLevel::Info, identity,
                 name + " attempt " + std::to_string(identity.attempt) + " failed: " + done.error);
    return done;
}

}  // namespace cloacina::detail
