// database.cpp — Database and DatabaseAdmin (tenant provisioning through the admin SQL API).
#include "cloacina/database.hpp"

#include <cctype>

namespace cloacina {

namespace {

std::string percent_encoded(std::string_view text) {
    static constexpr char kHex[] = "0123456789ABCDEF";
    std::string out;
    for (unsigned char c : text) {
        if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
            out += static_cast<char>(c);
        } else {
            out += '%';
            out += kHex[c >> 4];
            out += kHex[c & 15];
        }
    }
    return out;
}

// The server builds the tenant's URI from the address it was reached at, which behind a proxy
// (PgBouncer) is the proxy's way in, not the client's. The tenant should connect the way the admin
// did: same host (or socket directory), port and database.
std::string as_reached_by(const Connection& admin, const std::string& username, const std::string& password) {
    std::string host = admin.host();
    if (host.find(':') != std::string::npos && host.front() != '/')
        host = "[" + host + "]";  // IPv6
    else
        host = percent_encoded(host);
    return "postgresql://" + percent_encoded(username) + ":" + percent_encoded(password) + "@" + host + ":" +
           admin.port() + "/" + percent_encoded(admin.dbname());
}

}  // namespace

Database::Database(std::string_view url, std::string_view name, std::size_t pool_size)
    : url_(url),
      pool_(std::make_shared<ConnectionPool>(
          ConnectionOptions{std::string(url), std::string(name), std::nullopt, "cloacina-sdk admin"}, pool_size)) {}

TenantCredentials DatabaseAdmin::create_tenant(const TenantConfig& config) {
    if (config.schema_name.empty()) throw ValidationError("tenant schema_name must not be empty", "22023");
    // create_tenant is one transaction on the server: not resent after a dropped connection, since
    // the first call may have committed.
    auto lease = database_.pool().acquire();
    Result r = lease->exec(
        "SELECT schema_name, username, password, connection_string FROM cloacina.create_tenant($1::text, $2::text, "
        "$3::text)",
        {Param(config.schema_name), config.username.empty() ? Param() : Param(config.username),
         Param(config.password)});
    if (r.rows() != 1) throw SqlError("cloacina.create_tenant returned no row");
    TenantCredentials credentials{std::string(r.text(0, 0)), std::string(r.text(0, 1)), std::string(r.text(0, 2)),
                                  std::string(r.text(0, 3))};
    if (!credentials.connection_string.empty() && !lease->host().empty())
        credentials.connection_string = as_reached_by(*lease, credentials.username, credentials.password);
    return credentials;
}

void DatabaseAdmin::remove_tenant(std::string_view schema_name, std::string_view username) {
    auto lease = database_.pool().acquire();
    (void)lease->exec("SELECT cloacina.remove_tenant($1::text, $2::text)",
                      {Param(schema_name), username.empty() ? Param() : Param(username)});
}

bool DatabaseAdmin::tenant_exists(std::string_view schema_name) {
    return with_retry(database_.pool(), [&](Connection& c) {
        Result r =
            c.exec("SELECT EXISTS (SELECT 1 FROM cloacina.tenants WHERE schema_name = $1::text)", {Param(schema_name)});
        return r.boolean(0, 0);
    });
}

}  // namespace cloacina
