// error.cpp — the base exception's message, and the map from SQLSTATEs to the exception classes.
#include "cloacina/error.hpp"

namespace cloacina {

namespace {
// PostgreSQL's own layout (psql, the server log), so that what() reads like the server's report.
std::string full_message(const std::string& message, const ServerDiagnostics& diagnostics) {
    std::string out = message;
    if (!diagnostics.detail.empty()) out.append("\nDETAIL:  ").append(diagnostics.detail);
    if (!diagnostics.hint.empty()) out.append("\nHINT:  ").append(diagnostics.hint);
    return out;
}
}  // namespace

Error::Error(const std::string& message, std::string sqlstate, std::string query, ServerDiagnostics diagnostics)
    : std::runtime_error(full_message(message, diagnostics)),
      message_(message),
      sqlstate_(std::move(sqlstate)),
      query_(std::move(query)),
      diagnostics_(std::move(diagnostics)) {}

}  // namespace cloacina

namespace cloacina::detail {

void throw_sql_error(const std::string& message, const std::string& sqlstate, const std::string& query,
                     const ServerDiagnostics& diagnostics) {
    const std::string_view cls = std::string_view(sqlstate).substr(0, std::min<std::size_t>(2, sqlstate.size()));
    if (sqlstate.empty() || cls == "08" || sqlstate == "57P01" || sqlstate == "57P02" || sqlstate == "57P03")
        throw BrokenConnection(message, sqlstate, query, diagnostics);
    if (sqlstate == "42704" || sqlstate == "3F000" || sqlstate == "42883" || sqlstate == "42P01" || sqlstate == "02000")
        throw NotFoundError(message, sqlstate, query, diagnostics);
    if (sqlstate == "42P06" || sqlstate == "42710" || sqlstate == "42P07" || sqlstate == "23505")
        throw AlreadyExistsError(message, sqlstate, query, diagnostics);
    if (sqlstate == "42501" || cls == "28") throw PermissionDenied(message, sqlstate, query, diagnostics);
    if (sqlstate == "40001" || sqlstate == "40P01" || sqlstate == "55P03")
        throw TransientError(message, sqlstate, query, diagnostics);
    if (cls == "22" || sqlstate == "42939" || sqlstate == "42602" || sqlstate == "42622" || cls == "23")
        throw ValidationError(message, sqlstate, query, diagnostics);
    throw SqlError(message, sqlstate, query, diagnostics);
}

}  // namespace cloacina::detail
