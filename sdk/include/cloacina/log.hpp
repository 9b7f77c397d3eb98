// cloacina/log.hpp — the logging hook. The SDK never writes to a stream on its own initiative except
// through this hook; the default handler prints warnings and errors to stderr.
#pragma once

#include <functional>
#include <string_view>

namespace cloacina {

enum class LogLevel { Debug = 0, Info = 1, Warn = 2, Error = 3 };

[[nodiscard]] std::string_view to_string(LogLevel level) noexcept;

using LogHandler = std::function<void(LogLevel, std::string_view message)>;

/// Replaces the process-wide handler; an empty handler restores the default (stderr).
void set_log_handler(LogHandler handler);
/// Messages below `level` are dropped before reaching any handler (default: Info).
void set_log_level(LogLevel level) noexcept;
[[nodiscard]] LogLevel log_level() noexcept;

/// Sends one message through the process-wide handler (used by the SDK; usable by applications).
void log(LogLevel level, std::string_view message);

}  // namespace cloacina
