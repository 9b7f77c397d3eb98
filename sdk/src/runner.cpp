// runner.cpp — DefaultRunner (start, registration, execute, schedules, shutdown, running until a
// signal) and ExecutionHandle. The calls they make go through RunnerCore (runner_core.cpp); the
// worker is worker.cpp.
#include "runner_core.hpp"
#include "worker.hpp"

#include "cloacina/error.hpp"
#include "cloacina/signal.hpp"

#include <algorithm>
#include <atomic>
#include <thread>

namespace cloacina {

// ---- ExecutionHandle -----------------------------------------------------------------------------

WorkflowResult ExecutionHandle::wait() {
    auto result = core_->wait_for(id_, core_->config.execution_timeout);
    if (!result)
        throw TimeoutError("execution " + std::to_string(id_) + " did not finish within " +
                               std::to_string(core_->config.execution_timeout.count()) + " ms",
                           id_);
    return std::move(*result);
}

std::optional<WorkflowResult> ExecutionHandle::wait_for(std::chrono::milliseconds timeout) {
    return core_->wait_for(id_, timeout);
}

WorkflowStatus ExecutionHandle::status() { return core_->status(id_); }
bool ExecutionHandle::cancel() { return core_->control("cancel", id_); }
bool ExecutionHandle::pause() { return core_->control("pause", id_); }
bool ExecutionHandle::resume() { return core_->control("resume", id_); }

// ---- DefaultRunner -------------------------------------------------------------------------------

DefaultRunner::DefaultRunner(std::string_view url, DefaultRunnerConfig config)
    : DefaultRunner(url, std::nullopt, std::move(config)) {}

DefaultRunner::DefaultRunner(std::string_view url, std::optional<std::string> schema, DefaultRunnerConfig config) {
    config.validate();
    if (config.worker_name.empty()) config.worker_name = detail::default_worker_name();
    // Every connection's application_name ends with the worker name, so that pg_stat_activity (and
    // the tests) can tell this runner's sessions apart.
    ConnectionOptions options{std::string(url), {}, std::move(schema), "cloacina-sdk client " + config.worker_name};
    core_ = std::make_shared<detail::RunnerCore>(std::move(options), std::move(config));
    const auto& cfg = core_->config;

    std::vector<Workflow> workflows = (cfg.registry ? *cfg.registry : Registry::global()).workflows();
    if (!cfg.workflows.empty()) {
        std::vector<Workflow> chosen;
        for (const auto& name : cfg.workflows) {
            auto it =
                std::find_if(workflows.begin(), workflows.end(), [&](const Workflow& w) { return w.name() == name; });
            if (it == workflows.end()) throw ConfigError("workflow \"" + name + "\" is not in the runner's registry");
            chosen.push_back(*it);
        }
        workflows = std::move(chosen);
    }
    {
        auto lease = core_->pool.acquire();
        for (const auto& w : workflows) {
            const std::string version = core_->register_workflow(*lease, w);
            core_->log(LogLevel::Debug, "registered workflow " + w.name() + " (" + version + ") in " + core_->schema());
        }
    }
    if (cfg.enable_worker) {
        worker_ = std::make_shared<detail::Worker>(core_);
        for (const auto& w : workflows) worker_->add_workflow(w);
        worker_->start();
    }
    core_->log(LogLevel::Info, "runner " + core_->worker_name() + " started in schema " + core_->schema());
}

DefaultRunner DefaultRunner::with_schema(std::string_view url, std::string_view schema, DefaultRunnerConfig config) {
    {
        Connection admin(ConnectionOptions{std::string(url), {}, std::nullopt, "cloacina-sdk admin"});
        try {
            // Ask first: create_tenant's refusal of an existing tenant would put an ERROR in the
            // server log at every start. The registry is the authority (SECURITY DEFINER, one
            // boolean); a concurrent start may still create it in between, hence the catch below.
            if (!admin.exec("SELECT cloacina._is_registered($1::text)", {Param(schema)}).boolean(0, 0))
                (void)admin.exec("SELECT schema_name FROM cloacina.create_tenant($1::text)", {Param(schema)});
        } catch (const AlreadyExistsError& e) {
            // 42P06: the tenant exists (or a concurrent start just created it) — what we want.
            if (e.sqlstate() != "42P06" && e.sqlstate() != "23505") throw;
        } catch (const PermissionDenied&) {
            // Not an admin: the tenant may still exist and be usable by this role. The runner's own
            // start checks that the schema is a tenant this role can use (else 3F000 / 42501).
        }
    }
    return DefaultRunner(url, std::optional<std::string>(schema), std::move(config));
}

DefaultRunner::DefaultRunner(DefaultRunner&&) noexcept = default;

DefaultRunner& DefaultRunner::operator=(DefaultRunner&& other) noexcept {
    if (this != &other) {
        try {
            shutdown();
        } catch (...) {
        }
        core_ = std::move(other.core_);
        worker_ = std::move(other.worker_);
    }
    return *this;
}

DefaultRunner::~DefaultRunner() {
    try {
        shutdown();
    } catch (const std::exception& e) {
        if (core_) core_->log(LogLevel::Error, std::string("shutdown failed: ") + e.what());
    } catch (...) {
    }
}

WorkflowResult DefaultRunner::execute(std::string_view workflow, Context context, const ExecuteOptions& options) {
    return execute_async(workflow, std::move(context), options).wait();
}

ExecutionHandle DefaultRunner::execute_async(std::string_view workflow, Context context,
                                             const ExecuteOptions& options) {
    return ExecutionHandle(core_, core_->execute(workflow, context, options));
}

std::vector<ExecutionHandle> DefaultRunner::execute_batch(std::string_view workflow,
                                                          const std::vector<Context>& contexts,
                                                          const ExecuteOptions& options) {
    std::vector<ExecutionHandle> handles;
    for (auto id : core_->execute_batch(workflow, contexts, options)) handles.push_back(ExecutionHandle(core_, id));
    return handles;
}

ExecutionHandle DefaultRunner::handle(std::int64_t execution_id) { return ExecutionHandle(core_, execution_id); }

WorkflowResult DefaultRunner::result(std::int64_t execution_id) { return core_->result(execution_id); }

std::string DefaultRunner::register_workflow(const Workflow& workflow) {
    auto lease = core_->pool.acquire();
    std::string version = core_->register_workflow(*lease, workflow);
    if (worker_) worker_->add_workflow(workflow);
    return version;
}

std::int64_t DefaultRunner::schedule(std::string_view name, std::string_view workflow, std::string_view cron,
                                     const ScheduleOptions& options) {
    // An upsert by name: safe to resend after a dropped connection.
    return with_retry(core_->pool, [&](Connection& c) {
        Result r = c.exec("SELECT cloacina.schedule($1::text, $2::text, $3::text, $4::text, $5::jsonb, $6::text)",
                          {Param(name), Param(workflow), Param(cron), Param(options.timezone),
                           Param(boost::json::value(options.context.data())), Param(options.catchup)});
        return r.int64(0, 0);
    });
}

bool DefaultRunner::unschedule(std::string_view name) {
    return with_retry(core_->pool, [&](Connection& c) {
        Result r = c.exec("SELECT cloacina.unschedule($1::text)", {Param(name)});
        return !r.is_null(0, 0) && r.boolean(0, 0);
    });
}

ShutdownReport DefaultRunner::shutdown() {
    if (!core_) return {};
    ShutdownReport report;
    if (worker_) report = worker_->shutdown();
    return report;
}

ShutdownReport DefaultRunner::run_until_signal(std::vector<int> signals) {
    if (!core_) return {};
    SignalCatcher catcher(std::move(signals));
    core_->log(LogLevel::Info, "runner " + core_->worker_name() + " runs until a signal asks it to stop");
    int first = 0;
    while (first == 0) first = catcher.wait();
    core_->log(LogLevel::Info, "signal " + std::to_string(first) +
                                   " received: shutting down (a second signal "
                                   "cuts the drain short)");
    // The drain blocks this thread: another one watches for the second signal.
    std::atomic<bool> drained{false};
    std::thread watcher([&] {
        while (!drained.load()) {
            const int again = catcher.wait();
            if (again == 0 || drained.load()) continue;
            core_->log(LogLevel::Warn, "signal " + std::to_string(again) + " received again: cutting the drain short");
            if (worker_) worker_->cut_drain_short();
        }
    });
    ShutdownReport report;
    try {
        report = shutdown();
    } catch (...) {
        drained.store(true);
        catcher.interrupt();
        watcher.join();
        throw;
    }
    drained.store(true);
    catcher.interrupt();
    watcher.join();
    report.signal = first;
    return report;
}

RunnerStats DefaultRunner::stats() const { return worker_ ? worker_->stats() : RunnerStats{}; }

const std::string& DefaultRunner::worker_name() const noexcept { return core_->worker_name(); }

const std::string& DefaultRunner::schema() const noexcept { return core_->schema(); }

}  // namespace cloacina
