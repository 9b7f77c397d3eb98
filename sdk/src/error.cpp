// error.cpp — maps SQLSTATEs to the SDK's exception classes.
#include "cloacina/error.hpp"

namespace cloacina::detail {

void throw_sql_error(const std::string& message, const std::string& sqlstate, const std::string& query) {
    const std::string_view cls = std::string_view(sqlstate).substr(0, std::min<std::size_t>(2, sqlstate.size()));
    if (sqlstate.empty() || cls == "08" || sqlstate == "57P01" || sqlstate == "57P02" || sqlstate == "57P03")
        throw BrokenConnection(message, sqlstate, query);
    if (sqlstate == "42704" || sqlstate == "3F000" || sqlstate == "42883" || sqlstate == "42P01" ||
        sqlstate == "02000")
        throw NotFoundError(message, sqlstate, query);
    if (sqlstate == "42P06" || sqlstate == "42710" || sqlstate == "42P07" || sqlstate == "23505")
        throw AlreadyExistsError(message, sqlstate, query);
    if (sqlstate == "42501" || cls == "28")
        throw PermissionDenied(message, sqlstate, query);
    if (sqlstate == "40001" || sqlstate == "40P01" || sqlstate == "55P03")
        throw TransientError(message, sqlstate, query);
    if (cls == "22" || sqlstate == "42939" || sqlstate == "42602" || sqlstate == "42622" || cls == "23")
        throw ValidationError(message, sqlstate, query);
    throw SqlError(message, sqlstate, query);
}

}  // namespace cloacina::detail
