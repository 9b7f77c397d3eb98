// runner_core.cpp — RunnerCore: the client side of the tenant API that a DefaultRunner and its
// ExecutionHandles share (register, execute, wait, results, cancel/pause/resume), and the
// checks a runner makes when it connects.
#include "runner_core.hpp"

#include "cloacina/error.hpp"
#include "cloacina/version.hpp"

#include <boost/json/serialize.hpp>

#include <unistd.h>
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <ctime>
#include <iomanip>
#include <random>
#include <sstream>

namespace cloacina::detail {

std::string interval(std::chrono::milliseconds duration) { return std::to_string(duration.count()) + " milliseconds"; }

std::string default_worker_name() {
    static std::atomic<unsigned> counter{0};
    char host[256] = {0};
    if (gethostname(host, sizeof host - 1) != 0) std::snprintf(host, sizeof host, "localhost");
    return std::string(host) + ":" + std::to_string(getpid()) + ":" + std::to_string(++counter);
}

namespace {

std::string random_key() {
    static thread_local std::mt19937_64 generator{std::random_device{}()};
    std::ostringstream out;
    out << "sdk-" << std::hex << std::setfill('0') << std::setw(16) << generator() << std::setw(16) << generator();
    return out.str();
}

std::string options_json(const ExecuteOptions& options, bool with_key) {
    boost::json::object o;
    if (options.priority) o["priority"] = *options.priority;
    if (options.idempotency_key)
        o["idempotency_key"] = *options.idempotency_key;
    else if (with_key)
        o["idempotency_key"] = random_key();
    if (options.run_at) {
        const auto ms =
            std::chrono::duration_cast<std::chrono::milliseconds>(options.run_at->time_since_epoch()).count();
        // An ISO-8601 UTC timestamp, which timestamptz parses whatever the session's TimeZone.
        const std::time_t seconds = static_cast<std::time_t>(ms / 1000);
        std::tm utc{};
        gmtime_r(&seconds, &utc);
        char buffer[64];
        std::snprintf(buffer, sizeof buffer, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", utc.tm_year + 1900, utc.tm_mon + 1,
                      utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec, static_cast<int>(ms % 1000));
        o["run_at"] = buffer;
    }
    return boost::json::serialize(o);
}

std::optional<std::chrono::system_clock::time_point> epoch_time(const Result& r, int row, int column) {
    if (r.is_null(row, column)) return std::nullopt;
    const double seconds = r.float8(row, column);
    return std::chrono::system_clock::time_point(
        std::chrono::duration_cast<std::chrono::system_clock::duration>(std::chrono::duration<double>(seconds)));
}

// The longest single cloacina.wait() call. A waiting statement keeps its snapshot, and with it
// the database's xmin horizon: vacuum cannot remove rows that died after it began. Short slices
// bound that lag (and how long a pooled connection is held) at one round trip per slice.
constexpr std::chrono::milliseconds kMaxServerWait{2000};

constexpr std::string_view kStatusSql =
    "SELECT status, final_context, error FROM cloacina.execution_status($1::bigint)";
// A run and its tasks in one round trip: one row per task, in topological order (the task
// columns are NULL on the one row of a run without tasks, or, for wait, of a run not ended).
constexpr std::string_view kResultSql =
    "SELECT s.status, s.final_context, s.error, t.task, t.status, t.attempt, t.output, t.error, "
    "extract(epoch FROM t.started_at)::float8, extract(epoch FROM t.finished_at)::float8 "
    "FROM cloacina.execution_status($1::bigint) s "
    "LEFT JOIN LATERAL cloacina.task_results($1::bigint) WITH ORDINALITY AS t ON true ORDER BY t.ordinality";
constexpr std::string_view kWaitSql =
    "SELECT s.status, s.final_context, s.error, t.task, t.status, t.attempt, t.output, t.error, "
    "extract(epoch FROM t.started_at)::float8, extract(epoch FROM t.finished_at)::float8 "
    "FROM cloacina.wait($1::bigint, $2::interval) s "
    "LEFT JOIN LATERAL (SELECT * FROM cloacina.task_results($1::bigint) WITH ORDINALITY "
    "                    WHERE s.status IN ('completed', 'failed', 'cancelled')) t ON true ORDER BY t.ordinality";

}  // namespace

RunnerCore::RunnerCore(ConnectionOptions options_in, DefaultRunnerConfig config_in)
    : options(std::move(options_in)),
      config(std::move(config_in)),
      pool(options, config.db_pool_size),
      worker_name_(config.worker_name) {
    with_retry(pool, [&](Connection& c) {
        claims_wait_ = server_version_at_least(require_supported_server(c), 0, 2);
        // notify_channel() raises 3F000 unless current_schema() is a tenant: fail here, not later.
        Result r = c.exec("SELECT current_schema(), cloacina.notify_channel()");
        if (r.rows() != 1 || r.is_null(0, 0))
            throw NotFoundError(
                "the connection selects no schema: give the tenant's credentials or use "
                "DefaultRunner::with_schema()",
                "3F000");
        schema_ = std::string(r.text(0, 0));
        return 0;
    });
}

std::string RunnerCore::require_supported_server(Connection& c) {
    std::string server;
    try {
        server = std::string(c.exec("SELECT cloacina.version()").text(0, 0));
    } catch (const SqlError& e) {
        if (e.sqlstate() != "42883") throw;  // no such function: an extension older than 0.1.0
        server = "older than 0.1.0";
    }
    if (!server_version_supported(server))
        throw IncompatibleServer(
            "the server's cloacina extension is " + server +
            "; this SDK (" CLOACINA_SDK_VERSION ") works with versions " + std::string(kOldestSupportedServer) +
            " to " + std::to_string(CLOACINA_SDK_VERSION_MAJOR) + "." + std::to_string(CLOACINA_SDK_VERSION_MINOR) +
            ": use an SDK of the server's version, or ALTER EXTENSION cloacina UPDATE");
    return server;
}

void RunnerCore::log(LogLevel level, std::string_view message) const {
    if (!log_enabled(level)) return;
    LogRecord record;
    record.level = level;
    record.message = std::string(message);
    log(std::move(record));
}

void RunnerCore::log(LogRecord record) const {
    if (!log_enabled(record.level)) return;
    record.tenant = schema_;
    record.worker = worker_name_;
    if (config.logger)
        config.logger(record);
    else
        cloacina::log(record);
}

ConnectionOptions RunnerCore::role_options(std::string_view role) const {
    ConnectionOptions o = options;
    o.application_name = "cloacina-sdk " + std::string(role);
    return o;
}

std::string RunnerCore::register_workflow(Connection& connection, const Workflow& workflow) {
    workflow.validate();
    Result r = connection.exec("SELECT cloacina.register_workflow($1::jsonb)", {Param(workflow.definition())});
    return std::string(r.text(0, 0));
}

std::int64_t RunnerCore::execute(std::string_view workflow, const Context& context, const ExecuteOptions& opts) {
    // Every call carries an idempotency key, so resending it after a dropped connection cannot
    // start a second run.
    const std::string options_text = options_json(opts, true);
    const std::int64_t id = with_retry(pool, [&](Connection& c) {
        Result r = c.exec("SELECT cloacina.execute($1::text, $2::jsonb, $3::jsonb)",
                          {Param(workflow), Param(boost::json::value(context.data())), Param(options_text)});
        return r.int64(0, 0);
    });
    remember(id, workflow);
    return id;
}

std::vector<std::int64_t> RunnerCore::execute_batch(std::string_view workflow, const std::vector<Context>& contexts,
                                                    const ExecuteOptions& opts) {
    std::vector<std::string> items;
    items.reserve(contexts.size());
    for (const auto& c : contexts) items.push_back(c.to_string());
    // Never resent after a dropped connection: the server refuses idempotency keys here, so a
    // second call could start every run twice.
    auto lease = pool.acquire();
    Result r = lease->exec(
        "SELECT ordinal, execution_id FROM cloacina.execute_batch($1::text, $2::jsonb[], $3::jsonb) "
        "ORDER BY ordinal",
        {Param(workflow), Param(array_literal(items)), Param(options_json(opts, false))});
    std::vector<std::int64_t> ids;
    for (int i = 0; i < r.rows(); ++i) ids.push_back(r.int64(i, 1));
    for (auto id : ids) remember(id, workflow);
    return ids;
}

WorkflowResult RunnerCore::assemble(std::int64_t id, const Result& rows) {
    WorkflowResult result;
    result.execution_id = id;
    result.workflow = workflow_of(id);
    result.status = parse_workflow_status(rows.text(0, 0));
    const boost::json::value final_context = rows.json(0, 1);
    result.final_context = final_context.is_object() ? Context(final_context.get_object()) : Context();
    result.error = rows.optional_text(0, 2);
    for (int i = 0; i < rows.rows(); ++i) {
        if (rows.is_null(i, 3)) continue;  // no tasks
        TaskResult t;
        t.task = std::string(rows.text(i, 3));
        t.status = parse_task_status(rows.text(i, 4));
        t.attempt = rows.is_null(i, 5) ? 0 : static_cast<int>(rows.int64(i, 5));
        t.output = rows.json(i, 6);
        t.error = rows.optional_text(i, 7);
        t.started_at = epoch_time(rows, i, 8);
        t.finished_at = epoch_time(rows, i, 9);
        result.task_results.push_back(std::move(t));
    }
    return result;
}

std::optional<WorkflowResult> RunnerCore::wait_once(std::int64_t id, std::chrono::milliseconds timeout) {
    return with_retry(pool, [&](Connection& c) -> std::optional<WorkflowResult> {
        Result r = c.exec(kWaitSql, {Param(static_cast<long long>(id)), Param(interval(timeout))});
        if (r.rows() == 0) throw NotFoundError("execution " + std::to_string(id) + " not found", "42704");
        if (!is_terminal(parse_workflow_status(r.text(0, 0)))) return std::nullopt;
        return assemble(id, r);
    });
}

std::optional<WorkflowResult> RunnerCore::wait_for(std::int64_t id, std::chrono::milliseconds timeout) {
    using namespace std::chrono;
    const auto deadline = steady_clock::now() + timeout;
    for (;;) {
        const auto left = duration_cast<milliseconds>(deadline - steady_clock::now());
        auto result = wait_once(id, std::clamp(left, milliseconds(0), kMaxServerWait));
        if (result) return result;
        if (steady_clock::now() >= deadline) return std::nullopt;
    }
}

WorkflowResult RunnerCore::result(std::int64_t id) {
    return with_retry(pool, [&](Connection& c) {
        Result r = c.exec(kResultSql, {Param(static_cast<long long>(id))});
        if (r.rows() == 0) throw NotFoundError("execution " + std::to_string(id) + " not found", "42704");
        return assemble(id, r);
    });
}

WorkflowStatus RunnerCore::status(std::int64_t id) {
    return with_retry(pool, [&](Connection& c) {
        Result r = c.exec(kStatusSql, {Param(static_cast<long long>(id))});
        if (r.rows() == 0) throw NotFoundError("execution " + std::to_string(id) + " not found", "42704");
        return parse_workflow_status(r.text(0, 0));
    });
}

bool RunnerCore::control(std::string_view function, std::int64_t id) {
    const std::string sql = "SELECT cloacina." + std::string(function) + "($1::bigint)";
    return with_retry(pool, [&](Connection& c) {
        Result r = c.exec(sql, {Param(static_cast<long long>(id))});
        return !r.is_null(0, 0) && r.boolean(0, 0);
    });
}

void RunnerCore::remember(std::int64_t id, std::string_view workflow) {
    std::lock_guard lock(names_mutex_);
    if (workflow_names_.size() > 100000) workflow_names_.clear();  // bounded memo, names are a convenience
    workflow_names_[id] = std::string(workflow);
}

std::string RunnerCore::workflow_of(std::int64_t id) const {
    std::lock_guard lock(names_mutex_);
    auto it = workflow_names_.find(id);
    return it == workflow_names_.end() ? std::string() : it->second;
}

}  // namespace cloacina::detail
