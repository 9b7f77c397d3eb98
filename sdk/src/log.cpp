// log.cpp — the process-wide logging hook, its level, and the default handler (stderr).
#include "cloacina/log.hpp"

#include <atomic>
#include <iostream>
#include <mutex>

namespace cloacina {
namespace {

std::mutex& handler_mutex() {
    static std::mutex mutex;
    return mutex;
}
LogHandler& current_handler() {
    static LogHandler handler;
    return handler;
}
std::atomic<LogLevel>& current_level() {
    static std::atomic<LogLevel> level{LogLevel::Info};
    return level;
}

void print_to_stderr(const LogRecord& record) {
    // One write per line, so that lines of concurrent threads do not interleave.
    const std::string line = "cloacina " + to_string(record) + "\n";
    std::cerr << line << std::flush;
}

}  // namespace

std::string_view to_string(LogLevel level) noexcept {
    switch (level) {
        case LogLevel::Debug:
            return "DEBUG";
        case LogLevel::Info:
            return "INFO";
        case LogLevel::Warn:
            return "WARN";
        case LogLevel::Error:
            return "ERROR";
    }
    return "?";
}

std::string to_string(const LogRecord& record) {
    std::string out(to_string(record.level));
    out.append(": ").append(record.message);
    std::string fields;
    const auto field = [&](std::string_view key, const std::string& value) {
        if (value.empty()) return;
        fields.append(fields.empty() ? "" : " ").append(key).append("=").append(value);
    };
    field("tenant", record.tenant);
    field("worker", record.worker);
    field("workflow", record.workflow);
    field("execution", record.execution_id ? std::to_string(record.execution_id) : "");
    field("task", record.task);
    field("task_id", record.task_id ? std::to_string(record.task_id) : "");
    field("attempt", record.attempt ? std::to_string(record.attempt) : "");
    if (!fields.empty()) out.append(" [").append(fields).append("]");
    return out;
}

std::ostream& operator<<(std::ostream& out, LogLevel level) { return out << to_string(level); }

std::ostream& operator<<(std::ostream& out, const LogRecord& record) { return out << to_string(record); }

void set_log_handler(LogHandler handler) {
    std::lock_guard lock(handler_mutex());
    current_handler() = std::move(handler);
}

void set_log_level(LogLevel level) noexcept { current_level().store(level); }
LogLevel log_level() noexcept { return current_level().load(); }
bool log_enabled(LogLevel level) noexcept { return level >= current_level().load(); }

void log(const LogRecord& record) {
    if (!log_enabled(record.level)) return;
    LogHandler handler;
    {
        std::lock_guard lock(handler_mutex());
        handler = current_handler();
    }
    if (handler)
        handler(record);
    else
        print_to_stderr(record);
}

void log(LogLevel level, std::string_view message) {
    if (!log_enabled(level)) return;
    LogRecord record;
    record.level = level;
    record.message = std::string(message);
    log(record);
}

}  // namespace cloacina
