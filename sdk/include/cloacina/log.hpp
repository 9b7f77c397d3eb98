// cloacina/log.hpp — the logging hook. The SDK never writes to a stream on its own initiative except
// through this hook. A handler receives structured records (level, message, and the tenant, worker,
// workflow, run, task and attempt they are about); the default handler prints the records at or above
// log_level() to stderr, one line each.
#pragma once

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <sstream>
#include <string>
#include <string_view>

namespace cloacina {

enum class LogLevel { Debug = 0, Info = 1, Warn = 2, Error = 3 };

[[nodiscard]] std::string_view to_string(LogLevel level) noexcept;
std::ostream& operator<<(std::ostream& out, LogLevel level);

/// One log record. Fields that do not apply to it are empty (strings) or 0 (numbers): ids and
/// attempts start at 1.
struct LogRecord {
    LogLevel level = LogLevel::Info;
    std::string message;
    std::string tenant;  ///< the tenant schema
    std::string worker;  ///< the runner's worker name
    std::string workflow;
    std::int64_t execution_id = 0;  ///< the run
    std::string task;               ///< the task's id in its workflow
    std::int64_t task_id = 0;       ///< the task row (claim's task_id)
    int attempt = 0;
};

/// The record on one line: `WARN  message [tenant=acme workflow=wf execution=12 task=t attempt=2]`.
[[nodiscard]] std::string to_string(const LogRecord& record);
std::ostream& operator<<(std::ostream& out, const LogRecord& record);

using LogHandler = std::function<void(const LogRecord& record)>;

/// Replaces the process-wide handler; an empty handler restores the default (stderr).
void set_log_handler(LogHandler handler);
/// Records below `level` are dropped before reaching any handler (default: Info).
void set_log_level(LogLevel level) noexcept;
[[nodiscard]] LogLevel log_level() noexcept;
/// True when records of `level` reach the handlers.
[[nodiscard]] bool log_enabled(LogLevel level) noexcept;

/// Sends one record through the process-wide handler (used by the SDK; usable by applications).
void log(const LogRecord& record);
void log(LogLevel level, std::string_view message);

/// The seed's tracing macros (info!, warn!, ...): the arguments, streamed one after the other, as
/// the message of a record through the process-wide hook. Nothing is formatted below log_level().
template <class... Args>
void log_message(LogLevel level, const Args&... args) {
    if (!log_enabled(level)) return;
    std::ostringstream message;
    (message << ... << args);
    log(level, message.str());
}
template <class... Args>
void debug(const Args&... args) {
    log_message(LogLevel::Debug, args...);
}
template <class... Args>
void info(const Args&... args) {
    log_message(LogLevel::Info, args...);
}
template <class... Args>
void warn(const Args&... args) {
    log_message(LogLevel::Warn, args...);
}
template <class... Args>
void error(const Args&... args) {
    log_message(LogLevel::Error, args...);
}

}  // namespace cloacina
