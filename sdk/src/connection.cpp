// connection.cpp — Connection, Result, Param and ConnectionPool over libpq.
#include "cloacina/connection.hpp"

#include "cloacina/log.hpp"

#include <libpq-fe.h>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <charconv>
#include <cstdlib>
#include <cstring>

namespace cloacina {

// ---- Param / arrays ------------------------------------------------------------------------------

Param::Param(const boost::json::value& json) : text_(boost::json::serialize(json)) {}

std::string array_literal(const std::vector<std::string>& elements) {
    std::string out = "{";
    for (std::size_t i = 0; i < elements.size(); ++i) {
        if (i) out += ',';
        out += '"';
        for (char c : elements[i]) {
            if (c == '"' || c == '\\') out += '\\';
            out += c;
        }
        out += '"';
    }
    out += '}';
    return out;
}

std::string array_literal(const std::vector<std::int64_t>& elements) {
    std::string out = "{";
    for (std::size_t i = 0; i < elements.size(); ++i) {
        if (i) out += ',';
        out += std::to_string(elements[i]);
    }
    out += '}';
    return out;
}

// ---- Result --------------------------------------------------------------------------------------

void Result::Deleter::operator()(pg_result* result) const noexcept { PQclear(result); }

Result::Result(pg_result* result) noexcept : result_(result) {}

int Result::rows() const noexcept { return result_ ? PQntuples(result_.get()) : 0; }
int Result::columns() const noexcept { return result_ ? PQnfields(result_.get()) : 0; }

bool Result::is_null(int row, int column) const {
    if (row < 0 || row >= rows() || column < 0 || column >= columns())
        throw Error("result position (" + std::to_string(row) + ", " + std::to_string(column) + ") out of range");
    return PQgetisnull(result_.get(), row, column) != 0;
}

std::string_view Result::text(int row, int column) const {
    if (is_null(row, column)) return {};
    return {PQgetvalue(result_.get(), row, column), static_cast<std::size_t>(PQgetlength(result_.get(), row, column))};
}

std::optional<std::string> Result::optional_text(int row, int column) const {
    if (is_null(row, column)) return std::nullopt;
    return std::string(text(row, column));
}

std::int64_t Result::int64(int row, int column) const {
    const std::string_view s = text(row, column);
    std::int64_t value = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
    if (ec != std::errc() || end != s.data() + s.size())
        throw Error("not an integer in result: \"" + std::string(s) + "\"");
    return value;
}

double Result::float8(int row, int column) const {
    const std::string value(text(row, column));
    char* end = nullptr;
    const double parsed = std::strtod(value.c_str(), &end);
    if (value.empty() || end != value.c_str() + value.size()) throw Error("not a number in result: \"" + value + "\"");
    return parsed;
}

bool Result::boolean(int row, int column) const {
    const std::string_view s = text(row, column);
    return s == "t" || s == "true";
}

boost::json::value Result::json(int row, int column) const {
    if (is_null(row, column)) return nullptr;
    boost::system::error_code ec;
    boost::json::value value = boost::json::parse(text(row, column), ec);
    if (ec) throw Error("invalid JSON in result: " + ec.message());
    return value;
}

// ---- Connection ----------------------------------------------------------------------------------

void Connection::Deleter::operator()(pg_conn* conn) const noexcept { PQfinish(conn); }

Connection::Connection(ConnectionOptions options) : options_(std::move(options)) { open(); }

Connection::Connection(std::string_view conninfo)
    : Connection(ConnectionOptions{std::string(conninfo), {}, {}, "cloacina-sdk"}) {}

Connection::Connection(Connection&&) noexcept = default;
Connection& Connection::operator=(Connection&&) noexcept = default;
Connection::~Connection() = default;

void Connection::open() {
    prepared_.clear();
    conn_.reset();
    // Later keywords override what the expanded URI says, except dbname, which only fills a gap.
    std::vector<const char*> keys{"dbname"};
    std::vector<const char*> values{options_.conninfo.c_str()};
    bool has_dbname = false;
    if (!options_.fallback_dbname.empty()) {
        char* error = nullptr;
        PQconninfoOption* parsed = PQconninfoParse(options_.conninfo.c_str(), &error);
        if (parsed == nullptr) {
            std::string message = error ? error : "invalid connection string";
            PQfreemem(error);
            throw BrokenConnection("cannot parse connection string: " + message, "08001");
        }
        for (PQconninfoOption* o = parsed; o->keyword; ++o)
            if (std::strcmp(o->keyword, "dbname") == 0 && o->val && *o->val) has_dbname = true;
        PQconninfoFree(parsed);
        if (!has_dbname) {
            keys.push_back("dbname");
            values.push_back(options_.fallback_dbname.c_str());
        }
    }
    // The SDK names its connections so that operators (and tests) can tell runner roles apart in
    // pg_stat_activity; this overrides an application_name given in the URL.
    keys.push_back("application_name");
    values.push_back(options_.application_name.c_str());
    keys.push_back(nullptr);
    values.push_back(nullptr);

    conn_.reset(PQconnectdbParams(keys.data(), values.data(), 1));
    if (!conn_) throw BrokenConnection("out of memory while connecting", "08001");
    if (PQstatus(conn_.get()) != CONNECTION_OK) {
        std::string message = PQerrorMessage(conn_.get());
        while (!message.empty() && (message.back() == '\n' || message.back() == ' ')) message.pop_back();
        conn_.reset();
        throw BrokenConnection("cannot connect: " + message, "08001");
    }
    // Server notices (and the FATAL a terminated backend sends) go to the log hook, not stderr.
    PQsetNoticeProcessor(conn_.get(), &Connection::on_notice, nullptr);
    // No SET here: a session setting would leak to other clients behind a transaction-pooling
    // proxy (and be lost to this one). exec() sets the search_path in each statement's transaction.
    if (options_.search_path) quoted_search_path_ = quote_identifier(*options_.search_path);
}

void Connection::reconnect() { open(); }

void Connection::on_notice(void*, const char* message) {
    std::string text = message ? message : "";
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
    log(LogLevel::Info, "server: " + text);
}

bool Connection::is_open() const noexcept { return conn_ && PQstatus(conn_.get()) == CONNECTION_OK; }

int Connection::backend_pid() const noexcept { return conn_ ? PQbackendPID(conn_.get()) : 0; }

int Connection::socket() const noexcept { return conn_ ? PQsocket(conn_.get()) : -1; }

void Canceller::Deleter::operator()(pg_cancel* handle) const noexcept { PQfreeCancel(handle); }

bool Canceller::cancel() const noexcept {
    char error[256];
    return handle_ && PQcancel(handle_.get(), error, sizeof error) == 1;
}

Canceller Connection::canceller() const {
    Canceller c;
    if (conn_) c.handle_.reset(PQgetCancel(conn_.get()));
    if (!c.handle_) throw BrokenConnection("cannot cancel statements of a closed connection", "08003");
    return c;
}

namespace {
std::string text_or_empty(const char* value) { return value ? value : ""; }
}  // namespace

std::string Connection::host() const { return conn_ ? text_or_empty(PQhost(conn_.get())) : ""; }
std::string Connection::port() const { return conn_ ? text_or_empty(PQport(conn_.get())) : ""; }
std::string Connection::dbname() const { return conn_ ? text_or_empty(PQdb(conn_.get())) : ""; }

std::string Connection::quote_identifier(std::string_view identifier) const {
    if (!conn_) throw BrokenConnection("connection is closed", "08003");
    char* quoted = PQescapeIdentifier(conn_.get(), identifier.data(), identifier.size());
    if (quoted == nullptr) throw Error(std::string("cannot quote identifier: ") + PQerrorMessage(conn_.get()));
    std::string out(quoted);
    PQfreemem(quoted);
    return out;
}

void Connection::raise(pg_result* raw, std::string_view sql) {
    Result result(raw);  // frees raw on every path
    std::string message;
    std::string sqlstate;
    ServerDiagnostics diagnostics;
    if (raw != nullptr) {
        if (const char* m = PQresultErrorField(raw, PG_DIAG_MESSAGE_PRIMARY)) message = m;
        if (const char* s = PQresultErrorField(raw, PG_DIAG_SQLSTATE)) sqlstate = s;
        if (const char* d = PQresultErrorField(raw, PG_DIAG_MESSAGE_DETAIL)) diagnostics.detail = d;
        if (const char* h = PQresultErrorField(raw, PG_DIAG_MESSAGE_HINT)) diagnostics.hint = h;
    }
    if (message.empty() && conn_) message = PQerrorMessage(conn_.get());
    while (!message.empty() && (message.back() == '\n' || message.back() == ' ')) message.pop_back();
    if (sqlstate.empty() || !is_open()) {
        throw BrokenConnection(message.empty() ? "connection lost" : message, sqlstate.empty() ? "08006" : sqlstate,
                               std::string(sql), diagnostics);
    }
    detail::throw_sql_error(message, sqlstate, std::string(sql), diagnostics);
}

namespace {
std::vector<const char*> raw_params(const std::vector<Param>& params) {
    std::vector<const char*> raw;
    raw.reserve(params.size());
    for (const auto& p : params) raw.push_back(p.c_str());
    return raw;
}
bool ok(pg_result* result) {
    const ExecStatusType status = PQresultStatus(result);
    return status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK;
}
}  // namespace

Result Connection::exec(std::string_view sql, const std::vector<Param>& params) {
    if (!conn_) throw BrokenConnection("connection is closed", "08003", std::string(sql));
    const std::string statement(sql);
    const auto raw = raw_params(params);
    if (options_.search_path) return exec_in_schema(statement, raw);
    pg_result* result = PQexecParams(conn_.get(), statement.c_str(), static_cast<int>(raw.size()), nullptr, raw.data(),
                                     nullptr, nullptr, 0);
    if (result == nullptr || !ok(result)) raise(result, sql);
    return Result(result);
}

Result Connection::exec_in_schema(const std::string& statement, const std::vector<const char*>& raw) {
    // set_config(..., true) lasts until the end of the transaction, and the statements between two
    // Syncs of the extended protocol form one implicit transaction: in pipeline mode both go out in
    // one round trip, and no setting outlives the statement.
    PGconn* conn = conn_.get();
    const char* schema[] = {quoted_search_path_.c_str()};
    const bool sent = PQenterPipelineMode(conn) == 1 &&
                      PQsendQueryParams(conn, "SELECT pg_catalog.set_config('search_path', $1, true)", 1, nullptr,
                                        schema, nullptr, nullptr, 0) == 1 &&
                      PQsendQueryParams(conn, statement.c_str(), static_cast<int>(raw.size()), nullptr, raw.data(),
                                        nullptr, nullptr, 0) == 1 &&
                      PQpipelineSync(conn) == 1;
    pg_result* failure = nullptr;  // the first error (a later statement only says "aborted")
    pg_result* answer = nullptr;
    bool clean = sent;
    for (int query = 0; clean && query < 2; ++query) {
        pg_result* r = PQgetResult(conn);
        if (r == nullptr) {
            clean = false;
            break;
        }
        if (query == 1 && ok(r))
            answer = r;
        else if (!ok(r) && failure == nullptr && PQresultStatus(r) != PGRES_PIPELINE_ABORTED)
            failure = r;
        else
            PQclear(r);
        while (pg_result* rest = PQgetResult(conn)) PQclear(rest);  // up to this query's end (NULL)
    }
    if (clean) {
        pg_result* sync = PQgetResult(conn);
        clean = sync != nullptr && PQresultStatus(sync) == PGRES_PIPELINE_SYNC;
        PQclear(sync);
        clean = clean && PQexitPipelineMode(conn) == 1;
    }
    if (!clean) {
        // The conversation lost its footing (a broken connection, most likely): start afresh.
        PQclear(answer);
        std::string message = PQerrorMessage(conn);
        conn_.reset();
        if (failure != nullptr) raise(failure, statement);
        while (!message.empty() && (message.back() == '\n' || message.back() == ' ')) message.pop_back();
        throw BrokenConnection(message.empty() ? "connection lost" : message, "08006", statement);
    }
    if (failure != nullptr || answer == nullptr) {
        PQclear(answer);
        raise(failure, statement);
    }
    return Result(answer);
}

Result Connection::exec_prepared(const std::string& name, std::string_view sql, const std::vector<Param>& params) {
    if (!conn_) throw BrokenConnection("connection is closed", "08003", std::string(sql));
    // A session-level statement would be parsed outside the transaction that sets the schema.
    if (options_.search_path) return exec(sql, params);
    if (!prepared_.contains(name)) {
        const std::string statement(sql);
        pg_result* prepared = PQprepare(conn_.get(), name.c_str(), statement.c_str(), 0, nullptr);
        if (prepared == nullptr || !ok(prepared)) raise(prepared, sql);
        PQclear(prepared);
        prepared_.insert(name);
    }
    const auto raw = raw_params(params);
    pg_result* result =
        PQexecPrepared(conn_.get(), name.c_str(), static_cast<int>(raw.size()), raw.data(), nullptr, nullptr, 0);
    if (result == nullptr || !ok(result)) raise(result, sql);
    return Result(result);
}

std::vector<std::string> Connection::consume_notifications() {
    if (!conn_) throw BrokenConnection("connection is closed", "08003");
    if (PQconsumeInput(conn_.get()) == 0 || PQstatus(conn_.get()) != CONNECTION_OK) {
        std::string message = PQerrorMessage(conn_.get());
        throw BrokenConnection("connection lost while listening: " + message, "08006");
    }
    std::vector<std::string> payloads;
    while (PGnotify* n = PQnotifies(conn_.get())) {
        payloads.emplace_back(n->extra ? n->extra : "");
        PQfreemem(n);
    }
    return payloads;
}

// ---- ConnectionPool ------------------------------------------------------------------------------

ConnectionPool::ConnectionPool(ConnectionOptions options, std::size_t size)
    : options_(std::move(options)), size_(size == 0 ? 1 : size) {}

ConnectionPool::Lease ConnectionPool::acquire() {
    std::unique_ptr<Connection> connection;
    {
        std::unique_lock lock(mutex_);
        available_.wait(lock, [&] { return !idle_.empty() || lent_ < size_; });
        ++lent_;
        if (!idle_.empty()) {
            connection = std::move(idle_.back());
            idle_.pop_back();
        }
    }
    try {
        if (!connection) {
            connection = std::make_unique<Connection>(options_);
        } else if (!connection->is_open()) {
            connection->reconnect();
        }
    } catch (...) {
        release(nullptr);
        throw;
    }
    return Lease(*this, std::move(connection));
}

void ConnectionPool::release(std::unique_ptr<Connection> connection) noexcept {
    {
        std::lock_guard lock(mutex_);
        --lent_;
        if (connection && connection->is_open()) idle_.push_back(std::move(connection));
    }
    available_.notify_one();
}

ConnectionPool::Lease::~Lease() {
    if (pool_ != nullptr && connection_) pool_->release(std::move(connection_));
}

}  // namespace cloacina
