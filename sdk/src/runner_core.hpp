// runner_core.hpp (private) — the parts of a DefaultRunner shared by its handles and its worker:
// connection settings, the client-call pool, and the SQL of the tenant API.
#pragma once

#include "cloacina/connection.hpp"
#include "cloacina/runner.hpp"

#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace cloacina::detail {

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
    /// Whether the server's claim() can wait for work (extension 0.2 and later).
    [[nodiscard]] bool claims_wait() const noexcept { return claims_wait_; }
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
    /// Throws IncompatibleServer unless the server's cloacina.version() is one this SDK works with;
    /// returns that version.
    static std::string require_supported_server(Connection& connection);
    WorkflowResult assemble(std::int64_t id, const Result& rows);
    std::string schema_;
    std::string worker_name_;
    bool claims_wait_ = false;
    mutable std::mutex names_mutex_;
    std::unordered_map<std::int64_t, std::string> workflow_names_;
};
}  // namespace cloacina::detail
