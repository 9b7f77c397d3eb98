// log.cpp — the process-wide logging hook.
#include "cloacina/log.hpp"

#include <atomic>
#include <iostream>
#include <mutex>
#include <string>

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

}  // namespace

std::string_view to_string(LogLevel level) noexcept {
    switch (level) {
        case LogLevel::Debug: return "DEBUG";
        case LogLevel::Info: return "INFO";
        case LogLevel::Warn: return "WARN";
        case LogLevel::Error: return "ERROR";
    }
    return "?";
}

void set_log_handler(LogHandler handler) {
    std::lock_guard lock(handler_mutex());
    current_handler() = std::move(handler);
}

void set_log_level(LogLevel level) noexcept { current_level().store(level); }
LogLevel log_level() noexcept { return current_level().load(); }

void log(LogLevel level, std::string_view message) {
    if (level < current_level().load()) return;
    LogHandler handler;
    {
        std::lock_guard lock(handler_mutex());
        handler = current_handler();
    }
    if (handler) {
        handler(level, message);
    } else if (level >= LogLevel::Warn) {
        std::string line = "cloacina ";
        line.append(to_string(level)).append(": ").append(message).append("\n");
        std::cerr << line << std::flush;
    }
}

}  // namespace cloacina
