// cloacina/runner.hpp — DefaultRunner: executes workflows in one tenant and runs the task handlers
// this process knows, and its configuration and result types.
//
// A runner connects either with a tenant's own credentials (the role's search_path selects the
// tenant) or, through with_schema(), with an admin URL plus the tenant's schema (created when
// missing). At start it registers the workflows of its registry in the tenant and starts its
// worker: batch claims of the `workflow.task` names it has handlers for, a pool of
// max_concurrent_tasks handler threads, heartbeats on a timer, LISTEN wake-ups with a polling
// backstop, reconnection with backoff, and a drain on shutdown() (or on a signal:
// run_until_signal()). Behind a transaction-pooling proxy (PgBouncer) set `pooled`, and give a
// direct `listen_url` for wake-ups, or let the claimer poll.
#pragma once

#include "cloacina/context.hpp"
#include "cloacina/log.hpp"
#include "cloacina/workflow.hpp"

#include <chrono>
#include <csignal>
#include <cstdint>
#include <iosfwd>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cloacina {

enum class WorkflowStatus { Running, Paused, Completed, Failed, Cancelled };
enum class TaskStatus { Waiting, Ready, Running, Completed, Failed, Skipped, Cancelled, Unknown };

[[nodiscard]] std::string_view to_string(WorkflowStatus status) noexcept;
[[nodiscard]] std::string_view to_string(TaskStatus status) noexcept;
[[nodiscard]] WorkflowStatus parse_workflow_status(std::string_view text);
[[nodiscard]] TaskStatus parse_task_status(std::string_view text) noexcept;
[[nodiscard]] bool is_terminal(WorkflowStatus status) noexcept;
std::ostream& operator<<(std::ostream& out, WorkflowStatus status);
std::ostream& operator<<(std::ostream& out, TaskStatus status);

/// One task of a run, as reported by cloacina.task_results().
struct TaskResult {
    std::string task;
    TaskStatus status = TaskStatus::Unknown;
    int attempt = 0;
    boost::json::value output;  ///< the task's output object (null when none)
    std::optional<std::string> error;
    std::optional<std::chrono::system_clock::time_point> started_at;
    std::optional<std::chrono::system_clock::time_point> finished_at;
};

/// The outcome of a run.
struct WorkflowResult {
    std::int64_t execution_id = 0;
    std::string workflow;
    WorkflowStatus status = WorkflowStatus::Running;
    Context final_context;
    std::vector<TaskResult> task_results;
    std::optional<std::string> error;

    [[nodiscard]] const TaskResult* task(std::string_view id) const noexcept;
};

/// Options of one execute() call (cloacina.execute's `options`).
struct ExecuteOptions {
    std::optional<int> priority;
    /// A second execute with the same key returns the first run. When empty, the SDK sends a fresh
    /// random key so that it can safely resend the call after a dropped connection.
    std::optional<std::string> idempotency_key;
    std::optional<std::chrono::system_clock::time_point> run_at;
};

namespace detail {
/// CLOACINA_POOLED (1, true, yes, on) and CLOACINA_LISTEN_URL: the defaults of
/// DefaultRunnerConfig::pooled and ::listen_url, so that a deployed worker can be put behind a
/// pooler without a rebuild.
[[nodiscard]] bool pooled_from_environment();
[[nodiscard]] std::string listen_url_from_environment();
}  // namespace detail

class DefaultRunnerConfig {
public:
    class Builder;
    static Builder builder();

    std::size_t db_pool_size = 5;          ///< connections for execute/wait/status calls
    std::size_t max_concurrent_tasks = 4;  ///< handler threads = most handlers running at once
    std::size_t claim_batch = 8;           ///< most tasks claimed per round trip
    std::size_t prefetch = 0;  ///< claimed tasks that may wait for a handler (leases and timeouts run from the claim)
    std::chrono::milliseconds lease{30000};               ///< claim lease, renewed by heartbeats
    std::chrono::milliseconds heartbeat_interval{0};      ///< 0 = lease / 3
    std::chrono::milliseconds poll_interval{1000};        ///< longest wait between claims when idle
    std::chrono::milliseconds poll_interval_min{20};      ///< first backoff step after an empty claim
    std::chrono::milliseconds shutdown_timeout{30000};    ///< drain deadline of shutdown()
    std::chrono::milliseconds execution_timeout{600000};  ///< how long execute() waits for the end
    std::chrono::milliseconds reconnect_backoff_max{5000};
    /// The URL goes through a transaction-pooling proxy (PgBouncer, pool_mode = transaction): the
    /// runner keeps no session state there and LISTENs only on `listen_url`. Default: true when the
    /// environment variable CLOACINA_POOLED is 1, true, yes or on.
    bool pooled = detail::pooled_from_environment();
    /// A direct (unpooled) URL that carries the LISTEN for wake-ups, on a connection of its own.
    /// Empty: LISTEN on the claimer's connection, or, when `pooled`, none at all (the claimer
    /// polls, backing off from poll_interval_min to poll_interval). Default: CLOACINA_LISTEN_URL.
    std::string listen_url = detail::listen_url_from_environment();
    bool enable_worker = true;           ///< false: submit and wait only, run no handlers
    std::string worker_name;             ///< default: <host>:<pid>:<n>
    std::vector<std::string> workflows;  ///< register/handle only these (default: all)
    std::shared_ptr<Registry> registry;  ///< default: Registry::global()
    LogHandler logger;                   ///< default: the process-wide log hook

    /// Throws ConfigError when a value cannot work.
    void validate() const;
};

class DefaultRunnerConfig::Builder {
public:
    Builder& db_pool_size(std::size_t n) {
        config_.db_pool_size = n;
        return *this;
    }
    Builder& max_concurrent_tasks(std::size_t n) {
        config_.max_concurrent_tasks = n;
        return *this;
    }
    Builder& claim_batch(std::size_t n) {
        config_.claim_batch = n;
        return *this;
    }
    Builder& prefetch(std::size_t n) {
        config_.prefetch = n;
        return *this;
    }
    Builder& lease(std::chrono::milliseconds d) {
        config_.lease = d;
        return *this;
    }
    Builder& heartbeat_interval(std::chrono::milliseconds d) {
        config_.heartbeat_interval = d;
        return *this;
    }
    Builder& poll_interval(std::chrono::milliseconds d) {
        config_.poll_interval = d;
        return *this;
    }
    Builder& poll_interval_min(std::chrono::milliseconds d) {
        config_.poll_interval_min = d;
        return *this;
    }
    Builder& shutdown_timeout(std::chrono::milliseconds d) {
        config_.shutdown_timeout = d;
        return *this;
    }
    Builder& execution_timeout(std::chrono::milliseconds d) {
        config_.execution_timeout = d;
        return *this;
    }
    Builder& reconnect_backoff_max(std::chrono::milliseconds d) {
        config_.reconnect_backoff_max = d;
        return *this;
    }
    Builder& pooled(bool on) {
        config_.pooled = on;
        return *this;
    }
    Builder& listen_url(std::string url) {
        config_.listen_url = std::move(url);
        return *this;
    }
    Builder& enable_worker(bool on) {
        config_.enable_worker = on;
        return *this;
    }
    Builder& worker_name(std::string name) {
        config_.worker_name = std::move(name);
        return *this;
    }
    Builder& workflows(std::vector<std::string> names) {
        config_.workflows = std::move(names);
        return *this;
    }
    Builder& registry(std::shared_ptr<Registry> registry) {
        config_.registry = std::move(registry);
        return *this;
    }
    Builder& logger(LogHandler handler) {
        config_.logger = std::move(handler);
        return *this;
    }
    /// Validates (throws ConfigError) and returns the configuration.
    [[nodiscard]] DefaultRunnerConfig build() const;

private:
    DefaultRunnerConfig config_;
};

namespace detail {
class RunnerCore;
class Worker;
}  // namespace detail

/// A submitted run: wait for it, look at it, cancel it. Usable after the runner shut down.
class ExecutionHandle {
public:
    [[nodiscard]] std::int64_t id() const noexcept { return id_; }
    /// Blocks until the run ends (or the runner's execution_timeout passes: TimeoutError).
    WorkflowResult wait();
    /// Blocks up to `timeout`; nullopt when the run has not ended by then.
    std::optional<WorkflowResult> wait_for(std::chrono::milliseconds timeout);
    /// The current status, without waiting.
    [[nodiscard]] WorkflowStatus status();
    bool cancel();
    bool pause();
    bool resume();

private:
    friend class DefaultRunner;
    ExecutionHandle(std::shared_ptr<detail::RunnerCore> core, std::int64_t id) : core_(std::move(core)), id_(id) {}
    std::shared_ptr<detail::RunnerCore> core_;
    std::int64_t id_;
};

/// Options of a cron schedule (cloacina.schedule).
struct ScheduleOptions {
    std::string timezone = "UTC";  ///< an IANA time zone
    Context context;               ///< the input of every scheduled run
    std::string catchup = "skip";  ///< "skip" (next future slot only) or "run_all"
};

/// What shutdown() did.
struct ShutdownReport {
    std::size_t drained = 0;    ///< handlers that finished within the deadline
    std::size_t abandoned = 0;  ///< handlers still running at the deadline (tasks released for retry)
    int signal = 0;             ///< the signal that ended run_until_signal() (0: none)
};

/// Live counters of the runner's worker.
struct RunnerStats {
    std::size_t running = 0;      ///< handlers running now
    std::size_t max_running = 0;  ///< most handlers ever running at once
    std::uint64_t claimed = 0;
    std::uint64_t completed = 0;
    std::uint64_t failed = 0;
    std::uint64_t reconnects = 0;
    std::uint64_t claim_round_trips = 0;  ///< round trips made to claim (completions also claim, riding on their own)
    std::uint64_t completion_round_trips = 0;  ///< complete_batch / fail_batch calls
};

class DefaultRunner {
public:
    /// A runner on `url` (typically a tenant's connection_string).
    explicit DefaultRunner(std::string_view url, DefaultRunnerConfig config = {});
    /// The seed's DefaultRunner::new(url).
    static DefaultRunner new_runner(std::string_view url) { return DefaultRunner(url); }
    static DefaultRunner with_config(std::string_view url, DefaultRunnerConfig config) {
        return DefaultRunner(url, std::move(config));
    }
    /// A runner for tenant `schema` through an admin `url`: creates the tenant (schema only, no
    /// role) when it does not exist yet; concurrent starts for the same schema are safe.
    static DefaultRunner with_schema(std::string_view url, std::string_view schema, DefaultRunnerConfig config = {});

    DefaultRunner(DefaultRunner&&) noexcept;
    DefaultRunner& operator=(DefaultRunner&&) noexcept;
    DefaultRunner(const DefaultRunner&) = delete;
    DefaultRunner& operator=(const DefaultRunner&) = delete;
    /// Shuts down (draining) if shutdown() was not called.
    ~DefaultRunner();

    /// Starts a run and waits for its end.
    WorkflowResult execute(std::string_view workflow, Context context, const ExecuteOptions& options = {});
    /// Starts a run and returns at once.
    ExecutionHandle execute_async(std::string_view workflow, Context context, const ExecuteOptions& options = {});
    /// Starts one run per context in one round trip (cloacina.execute_batch). Not resent after a
    /// dropped connection; `options.idempotency_key` is refused by the server here.
    std::vector<ExecutionHandle> execute_batch(std::string_view workflow, const std::vector<Context>& contexts,
                                               const ExecuteOptions& options = {});
    /// A handle on an existing run of this tenant.
    [[nodiscard]] ExecutionHandle handle(std::int64_t execution_id);
    /// Status, final context and task results of a run, now.
    [[nodiscard]] WorkflowResult result(std::int64_t execution_id);

    /// Creates or replaces (by name) a cron schedule that starts `workflow`; 5- or 6-field `cron`.
    /// Returns the schedule's id.
    std::int64_t schedule(std::string_view name, std::string_view workflow, std::string_view cron,
                          const ScheduleOptions& options = {});
    /// Removes a schedule; false when there was none of that name.
    bool unschedule(std::string_view name);

    /// Registers (upserts) a workflow in the tenant and, if the worker runs, claims its tasks too.
    std::string register_workflow(const Workflow& workflow);

    /// Stops claiming, lets running handlers finish until shutdown_timeout, then cancels the rest and
    /// releases their tasks for retry. Idempotent.
    ShutdownReport shutdown();
    /// A worker process's main loop: runs until one of `signals` arrives, then shuts down as
    /// shutdown() does (the drain deadline is shutdown_timeout). A second signal during the drain
    /// cuts it short: the handlers still running are cancelled and their tasks released for retry.
    /// The signals' previous dispositions come back before it returns. One at a time per process
    /// (cloacina::SignalCatcher); for several runners, catch once and shut each down.
    ShutdownReport run_until_signal(std::vector<int> signals = {SIGINT, SIGTERM});

    [[nodiscard]] RunnerStats stats() const;
    [[nodiscard]] const std::string& worker_name() const noexcept;
    /// The tenant schema (current_schema() of the runner's connections).
    [[nodiscard]] const std::string& schema() const noexcept;

private:
    DefaultRunner(std::string_view url, std::optional<std::string> schema, DefaultRunnerConfig config);
    std::shared_ptr<detail::RunnerCore> core_;
    std::shared_ptr<detail::Worker> worker_;
};

}  // namespace cloacina
