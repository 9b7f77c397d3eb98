// cloacina/connection.hpp — RAII access to one libpq connection, its results, and a small pool.
//
// A Connection is move-only and owns its PGconn. Every statement passes its parameters out of line
// ($1, $2, ...) in text format, as an unnamed statement, and leaves no state in the server session
// behind it: a schema (ConnectionOptions::search_path) is set inside each statement's own
// transaction. So a Connection works through a transaction-pooling proxy such as PgBouncer
// (pool_mode = transaction). exec_prepared() keeps a named statement in the session: direct
// connections only. A Connection may re-open itself (reconnect()). A PGconn is not thread-safe: one
// Connection belongs to one thread at a time, which is why the runner gives each thread role its own.
#pragma once

#include "cloacina/error.hpp"

#include <boost/json/value.hpp>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

struct pg_conn;
struct pg_result;
struct pg_cancel;

namespace cloacina {

/// One statement parameter in text format; a default-constructed Param is SQL NULL.
class Param {
public:
    Param() = default;
    Param(std::nullopt_t) {}
    Param(std::string_view text) : text_(std::string(text)) {}
    Param(const char* text) : text_(std::string(text)) {}
    Param(const std::string& text) : text_(text) {}
    Param(std::string&& text) : text_(std::move(text)) {}
    Param(bool value) : text_(value ? "true" : "false") {}
    Param(int value) : text_(std::to_string(value)) {}
    Param(long value) : text_(std::to_string(value)) {}
    Param(long long value) : text_(std::to_string(value)) {}
    Param(const boost::json::value& json);
    template <class T>
    Param(const std::optional<T>& value) {
        if (value) *this = Param(*value);
    }

    [[nodiscard]] bool is_null() const noexcept { return !text_.has_value(); }
    [[nodiscard]] const char* c_str() const noexcept { return text_ ? text_->c_str() : nullptr; }

private:
    std::optional<std::string> text_;
};

/// A PostgreSQL array literal ('{"a","b"}') of the given elements, each quoted and escaped.
[[nodiscard]] std::string array_literal(const std::vector<std::string>& elements);
/// The same for integers ('{1,2,3}').
[[nodiscard]] std::string array_literal(const std::vector<std::int64_t>& elements);

/// Owns one PGresult. Rows and columns are zero-based.
class Result {
public:
    Result() = default;
    explicit Result(pg_result* result) noexcept;

    [[nodiscard]] int rows() const noexcept;
    [[nodiscard]] int columns() const noexcept;
    [[nodiscard]] bool is_null(int row, int column) const;
    /// The value as text ("" for NULL).
    [[nodiscard]] std::string_view text(int row, int column) const;
    [[nodiscard]] std::optional<std::string> optional_text(int row, int column) const;
    [[nodiscard]] std::int64_t int64(int row, int column) const;
    [[nodiscard]] double float8(int row, int column) const;
    [[nodiscard]] bool boolean(int row, int column) const;
    /// Parses a json/jsonb column; NULL becomes json null.
    [[nodiscard]] boost::json::value json(int row, int column) const;

private:
    struct Deleter {
        void operator()(pg_result* result) const noexcept;
    };
    std::unique_ptr<pg_result, Deleter> result_;
};

/// How a Connection connects, and the schema its statements run in.
struct ConnectionOptions {
    std::string conninfo;         ///< libpq URI or key=value string
    std::string fallback_dbname;  ///< used only when conninfo names no database
    /// A single schema (quoted on use), set for each statement in its own transaction
    /// (set_config(..., true), in the same round trip); empty: the role's own search_path.
    std::optional<std::string> search_path;
    std::string application_name = "cloacina-sdk";
};

/// Cancels the statement running on a connection, from any thread (libpq's PQcancel). Made by
/// Connection::canceller() on the thread that uses the connection; valid while that session lasts.
class Canceller {
public:
    /// Asks the server to cancel the statement in progress, if there is one; false when the
    /// request could not be sent.
    bool cancel() const noexcept;

private:
    friend class Connection;
    struct Deleter {
        void operator()(pg_cancel* handle) const noexcept;
    };
    std::unique_ptr<pg_cancel, Deleter> handle_;
};

class Connection {
public:
    explicit Connection(ConnectionOptions options);
    explicit Connection(std::string_view conninfo);
    Connection(Connection&&) noexcept;
    Connection& operator=(Connection&&) noexcept;
    Connection(const Connection&) = delete;
    Connection& operator=(const Connection&) = delete;
    ~Connection();

    /// Runs one statement with out-of-line parameters; throws an Error subclass on failure.
    Result exec(std::string_view sql, const std::vector<Param>& params = {});
    /// Like exec(), but prepares the statement once per session under `name`: only for a direct
    /// connection (a transaction-pooling proxy hands the session to other clients). With a
    /// search_path it is exec().
    Result exec_prepared(const std::string& name, std::string_view sql, const std::vector<Param>& params = {});

    /// True when the underlying connection is open and healthy.
    [[nodiscard]] bool is_open() const noexcept;
    /// Drops the current connection (if any) and opens a fresh one, re-applying session settings.
    void reconnect();
    /// The backend's process id (for diagnostics and tests).
    [[nodiscard]] int backend_pid() const noexcept;
    /// A Canceller for the statements of the current session; throws BrokenConnection when closed.
    [[nodiscard]] Canceller canceller() const;
    /// The socket to poll for input (LISTEN), -1 when closed.
    [[nodiscard]] int socket() const noexcept;
    /// Where this connection went (libpq's PQhost, PQport, PQdb): a host name, an address, or a
    /// Unix-socket directory; empty when closed.
    [[nodiscard]] std::string host() const;
    [[nodiscard]] std::string port() const;
    [[nodiscard]] std::string dbname() const;
    /// Reads pending input and returns the payloads of notifications received so far.
    /// Throws BrokenConnection when the connection dropped.
    std::vector<std::string> consume_notifications();
    /// Quotes an identifier for this connection's encoding.
    [[nodiscard]] std::string quote_identifier(std::string_view identifier) const;
    [[nodiscard]] const ConnectionOptions& options() const noexcept { return options_; }

private:
    void open();
    /// exec() with the search_path set in the statement's transaction (one round trip).
    Result exec_in_schema(const std::string& statement, const std::vector<const char*>& raw);
    static void on_notice(void* unused, const char* message);
    [[noreturn]] void raise(pg_result* result, std::string_view sql);

    struct Deleter {
        void operator()(pg_conn* conn) const noexcept;
    };
    ConnectionOptions options_;
    std::unique_ptr<pg_conn, Deleter> conn_;
    std::string quoted_search_path_;
    std::unordered_set<std::string> prepared_;
};

/// A bounded pool of Connections with the same options. acquire() blocks while all are lent out.
class ConnectionPool {
public:
    ConnectionPool(ConnectionOptions options, std::size_t size);
    ConnectionPool(const ConnectionPool&) = delete;
    ConnectionPool& operator=(const ConnectionPool&) = delete;

    /// A Connection lent by the pool; returned (or discarded when broken) on destruction.
    class Lease {
    public:
        Lease(ConnectionPool& pool, std::unique_ptr<Connection> connection) noexcept
            : pool_(&pool), connection_(std::move(connection)) {}
        Lease(Lease&&) noexcept = default;
        /// Not assignable: a defaulted move-assignment would drop the connection it replaces
        /// without giving its slot back to the pool (lent_ would never come down again).
        Lease& operator=(Lease&&) = delete;
        ~Lease();
        Connection& operator*() const noexcept { return *connection_; }
        Connection* operator->() const noexcept { return connection_.get(); }

    private:
        ConnectionPool* pool_;
        std::unique_ptr<Connection> connection_;
    };

    [[nodiscard]] Lease acquire();
    [[nodiscard]] std::size_t size() const noexcept { return size_; }
    [[nodiscard]] const ConnectionOptions& options() const noexcept { return options_; }

private:
    void release(std::unique_ptr<Connection> connection) noexcept;

    ConnectionOptions options_;
    std::size_t size_;
    std::mutex mutex_;
    std::condition_variable available_;
    std::vector<std::unique_ptr<Connection>> idle_;
    std::size_t lent_ = 0;
};

/// Runs `work(connection)` on a pooled connection; after a BrokenConnection it reconnects and tries
/// once more. Only for work that is safe to repeat (reads, fenced or idempotent writes).
template <class Work>
auto with_retry(ConnectionPool& pool, Work&& work) {
    auto lease = pool.acquire();
    try {
        return work(*lease);
    } catch (const BrokenConnection&) {
        lease->reconnect();
        return work(*lease);
    }
}

}  // namespace cloacina
