// runner_core.hpp (private) — the parts of a DefaultRunner shared by its handles and its worker:
// connection settings, the client-call pool, and the SQL of the tenant API.
#pragma once

#include "cloacina/connection.hpp"
#include "cloacina/runner.hpp"
#include "slots.hpp"

#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>

namespace cloacina::detail {

class WakeupListener;

/// "<host>:<pid>:<n>", unique within the process.
std::string default_worker_name();

/// The interval literal PostgreSQL understands for a duration.
std::string interval(std::chrono::milliseconds duration);

class RunnerCore {
public:
    RunnerCore(ConnectionOptions options, DefaultRunnerConfig config);

    const ConnectionOptions options;
    const DefaultRunnerConfig config;
    ConnectionPool pool;

    [[nodiscard]] const std::string& schema() const noexcept { return schema_; }
    [[nodiscard]] const std::string& worker_name() const noexcept { return worker_name_; }
    void log(LogLevel level, std::string_view message) const;
    /// Sends `record`, with this runner's tenant and worker name filled in, to the runner's logger
    /// (or the process-wide hook).
    void log(LogRecord record) const;

    /// Options for a dedicated connection of one thread role (claimer, heartbeater, ...).
    [[nodiscard]] ConnectionOptions role_options(std::string_view role) const;

    std::string register_workflow(Connection& connection, const Workflow& workflow);
    std::int64_t execute(std::string_view workflow, const Context& context, const ExecuteOptions& options);
    std::vector<std::int64_t> execute_batch(std::string_view workflow, const std::vector<Context>& contexts,
                                            const ExecuteOptions& options);
    /// One server-side wait of at most `timeout`; the result when the run ended by then.
    std::optional<WorkflowResult> wait_once(std::int64_t id, std::chrono::milliseconds timeout);
    /// Waits up to `timeout` in server-side waits of bounded length.
    std::optional<WorkflowResult> wait_for(std::int64_t id, std::chrono::milliseconds timeout);
    WorkflowResult result(std::int64_t id);
    WorkflowStatus status(std::int64_t id);
    bool control(std::string_view function, std::int64_t id);

    /// Remembers which workflow a run belongs to (for WorkflowResult::workflow).
    void remember(std::int64_t id, std::string_view workflow);
    std::string workflow_of(std::int64_t id) const;

private:
    /// Throws IncompatibleServer unless the server's cloacina.version() is one this SDK works with.
    static void require_supported_server(Connection& connection);
    WorkflowResult assemble(std::int64_t id, const Result& rows);
    std::string schema_;
    std::string worker_name_;
    mutable std::mutex names_mutex_;
    std::unordered_map<std::int64_t, std::string> workflow_names_;
};

/// The worker (worker.cpp).
class Worker : public std::enable_shared_from_this<Worker> {
public:
    Worker(std::shared_ptr<RunnerCore> core);
    ~Worker();
    Worker(const Worker&) = delete;
    Worker& operator=(const Worker&) = delete;

    /// Adds the handler tasks of `workflow` to what this worker claims.
    void add_workflow(const Workflow& workflow);
    /// Opens the role connections (throws when the server is unreachable) and starts the threads.
    void start();
    ShutdownReport shutdown();
    /// Ends a shutdown's drain now, as if its deadline had passed (a second signal).
    void cut_drain_short();
    RunnerStats stats() const;

private:
    struct HandlerInfo {
        TaskHandler handler;
        std::optional<std::chrono::milliseconds> timeout;
        bool has_dependents = false;  ///< in its workflow: its completion may make tasks ready
    };
    struct ClaimedTask {
        std::int64_t task_id = 0;
        std::int64_t execution_id = 0;
        std::string workflow;
        std::string task;
        int attempt = 0;
        std::int64_t fence = 0;
        boost::json::value context;
    };
    /// What a log record about one attempt of a task says about it.
    struct TaskIdentity {
        std::string workflow;
        std::string task;
        std::int64_t execution_id = 0;
        std::int64_t task_id = 0;
        int attempt = 0;
    };
    struct InFlight {
        std::int64_t fence = 0;
        std::string name;
        TaskIdentity identity;
        CancellationSource cancellation;
        std::optional<std::chrono::steady_clock::time_point> deadline;
        bool started = false;
        bool finished = false;  ///< handler returned; result not yet submitted
        bool released = false;  ///< given back by shutdown; the handler's result is discarded
    };
    struct Completion {
        std::int64_t task_id = 0;
        std::int64_t fence = 0;
        bool success = true;
        boost::json::object output;
        std::string error;
        bool retryable = true;
        std::string name;
        bool has_dependents = false;
        TaskIdentity identity;
    };

    void claimer_loop(Connection connection, WakeupListener& listener);
    void heartbeat_loop(Connection connection);
    void completer_loop(Connection connection);
    void handler_loop(std::shared_ptr<std::atomic<bool>> exited);
    /// Runs the task's handler and hands its result to the completer; true: wake the claimer.
    bool run_task(const ClaimedTask& task);
    void submit(std::vector<Completion>& batch, Connection& connection);
    /// Reserves up to `wanted` free slots for a claim in flight (the completer's; the claimer
    /// reserves under the lock it decides with).
    std::size_t reserve_slots(std::size_t wanted);
    static ClaimedTask claimed_task(const Result& r, int row);
    static TaskIdentity identity_of(const ClaimedTask& task);
    void log_task(LogLevel level, const TaskIdentity& task, std::string message) const;
    std::vector<ClaimedTask> claim(Connection& connection, const std::vector<std::string>& names, std::size_t limit);
    /// Queues claimed tasks for the handlers and gives back the claim's reservation.
    void accept_claimed(std::vector<ClaimedTask>& tasks, std::size_t reserved);
    void wait_for_wakeup(Connection& connection, WakeupListener& listener, std::chrono::milliseconds timeout,
                         bool& ready_hint);
    void handle_notifications(const std::vector<std::string>& payloads, bool& ready_hint);
    /// Reconnects with exponential backoff until it works (true) or the role is told to stop (false).
    /// `max_attempts` 0 means no limit.
    bool reconnect(Connection& connection, std::string_view role, const std::atomic<bool>& stop, int max_attempts = 0);
    void wake_claimer() noexcept;
    void poke_heartbeater();
    std::vector<std::string> claim_names() const;

    std::shared_ptr<RunnerCore> core_;
    mutable std::mutex mutex_;
    std::map<std::string, HandlerInfo> handlers_;  // by "workflow.task"
    std::deque<ClaimedTask> queue_;
    std::condition_variable queue_cv_;
    std::map<std::int64_t, InFlight> inflight_;  // claimed and not yet finished
    std::condition_variable drained_cv_;
    std::deque<Completion> completions_;
    std::condition_variable completion_cv_;
    std::condition_variable heartbeat_cv_;
    bool heartbeat_now_ = false;
    bool deadlines_changed_ = false;
    std::condition_variable sleep_cv_;  // interruptible backoff sleeps

    bool drain_cut_short_ = false;          ///< cut_drain_short() was called
    SlotAccounting slots_;
    RunnerStats stats_;

    std::atomic<bool> stop_claiming_{false};
    std::atomic<bool> stop_handlers_{false};
    std::atomic<bool> stop_completer_{false};
    std::atomic<bool> stop_heartbeat_{false};
    bool started_ = false;
    std::optional<ShutdownReport> shutdown_report_;
    std::mutex shutdown_mutex_;

    int wake_pipe_[2] = {-1, -1};
    std::thread claimer_;
    std::thread heartbeater_;
    std::thread completer_;
    std::vector<std::thread> handler_threads_;
    std::vector<std::shared_ptr<std::atomic<bool>>> handler_exited_;
};

}  // namespace cloacina::detail
