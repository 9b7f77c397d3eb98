// cloacina/error.hpp — the SDK's error hierarchy.
//
// Every exception the SDK throws derives from cloacina::Error, which carries the SQLSTATE reported by
// the server (or the SQLSTATE the SDK assigns to a client-side error of the same nature, e.g. 22023 for
// an invalid workflow definition), the statement that failed, when there was one, and the server's
// DETAIL and HINT fields.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

namespace cloacina {

/// The optional fields of a server error report besides its message (PostgreSQL's DETAIL and HINT).
struct ServerDiagnostics {
    std::string detail;  ///< DETAIL: more about what happened (empty when the server sent none)
    std::string hint;    ///< HINT: what to do about it (empty when the server sent none)
};

/// Base of every exception thrown by the SDK.
class Error : public std::runtime_error {
public:
    /// what() is `message`, followed by the detail and the hint as PostgreSQL prints them
    /// ("\nDETAIL:  ...", "\nHINT:  ...") when there are any.
    explicit Error(const std::string& message, std::string sqlstate = {}, std::string query = {},
                   ServerDiagnostics diagnostics = {});

    /// Five-character SQLSTATE, empty when the error did not come from (or map to) the database.
    [[nodiscard]] const std::string& sqlstate() const noexcept { return sqlstate_; }
    /// The statement that failed, empty for client-side errors.
    [[nodiscard]] const std::string& query() const noexcept { return query_; }
    /// The primary message alone, without detail and hint.
    [[nodiscard]] const std::string& message() const noexcept { return message_; }
    /// The server's DETAIL, empty when it sent none (and for client-side errors).
    [[nodiscard]] const std::string& detail() const noexcept { return diagnostics_.detail; }
    /// The server's HINT, empty when it sent none (and for client-side errors).
    [[nodiscard]] const std::string& hint() const noexcept { return diagnostics_.hint; }

private:
    std::string message_;
    std::string sqlstate_;
    std::string query_;
    ServerDiagnostics diagnostics_;
};

/// The connection to the server is gone (or could not be made). Safe to retry only idempotent work.
class BrokenConnection : public Error {
public:
    using Error::Error;
};

/// The server reported an error while executing a statement.
class SqlError : public Error {
public:
    using Error::Error;
};

/// An object does not exist: unknown workflow (42704), unknown tenant schema (3F000), ...
class NotFoundError : public SqlError {
public:
    using SqlError::SqlError;
};

/// An object already exists: tenant schema (42P06), role (42710), ...
class AlreadyExistsError : public SqlError {
public:
    using SqlError::SqlError;
};

/// A definition or argument was refused (22023, 42939, 42602, ...). Also thrown client-side, with
/// SQLSTATE 22023, for workflow definitions that cannot be valid.
class ValidationError : public SqlError {
public:
    using SqlError::SqlError;
};

/// The role lacks a privilege (42501): typically one tenant reaching for another tenant's objects.
class PermissionDenied : public SqlError {
public:
    using SqlError::SqlError;
};

/// Transient server conflict that is safe to retry (40001 serialization failure, 40P01 deadlock).
class TransientError : public SqlError {
public:
    using SqlError::SqlError;
};

/// Misuse of a Context: inserting an existing key, updating a missing one, converting to a wrong type.
class ContextError : public Error {
public:
    explicit ContextError(const std::string& message) : Error(message) {}
};

/// An SDK configuration value is invalid (pool size of zero, empty worker name, ...).
class ConfigError : public Error {
public:
    explicit ConfigError(const std::string& message) : Error(message, "22023") {}
};

/// The server's cloacina extension is a version this SDK does not work with (see version.hpp).
class IncompatibleServer : public Error {
public:
    explicit IncompatibleServer(const std::string& message) : Error(message, "0A000") {}
};

/// A wait ran out of time; the run itself goes on (execution_id() says which, when known).
class TimeoutError : public Error {
public:
    explicit TimeoutError(const std::string& message, std::int64_t execution_id = 0)
        : Error(message), execution_id_(execution_id) {}
    /// The run that was waited for, 0 when the wait was not for a run.
    [[nodiscard]] std::int64_t execution_id() const noexcept { return execution_id_; }

private:
    std::int64_t execution_id_;
};

/// Thrown by a task handler to fail its task. `retryable() == false` fails the task at once, without
/// spending the remaining attempts of its retry policy.
class TaskError : public Error {
public:
    explicit TaskError(const std::string& message, bool retryable = true) : Error(message), retryable_(retryable) {}
    [[nodiscard]] bool retryable() const noexcept { return retryable_; }

private:
    bool retryable_;
};

/// Thrown by CancellationToken::throw_if_cancelled(); the worker reports the task as cancelled.
class Cancelled : public Error {
public:
    explicit Cancelled(const std::string& message) : Error(message, "57014") {}
};

namespace detail {
/// Throws the Error subclass matching `sqlstate` (used by Connection, exposed for tests).
[[noreturn]] void throw_sql_error(const std::string& message, const std::string& sqlstate, const std::string& query,
                                  const ServerDiagnostics& diagnostics = {});
}  // namespace detail

}  // namespace cloacina
