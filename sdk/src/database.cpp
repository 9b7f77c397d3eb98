// database.cpp — Database and DatabaseAdmin (tenant provisioning through the admin SQL API).
#include "cloacina/database.hpp"

namespace cloacina {

Database::Database(std::string_view url, std::string_view name, std::size_t pool_size)
    : url_(url),
      pool_(std::make_shared<ConnectionPool>(
          ConnectionOptions{std::string(url), std::string(name), std::nullopt, "cloacina-sdk admin"},
          pool_size)) {}

TenantCredentials DatabaseAdmin::create_tenant(const TenantConfig& config) {
    if (config.schema_name.empty()) throw ValidationError("tenant schema_name must not be empty", "22023");
    // create_tenant is one transaction on the server: not resent after a dropped connection, since
    // the first call may have committed.
    auto lease = database_.pool().acquire();
    Result r = lease->exec(
        "SELECT schema_name, username, password, connection_string FROM cloacina.create_tenant($1::text, $2::text, $3::text)",
        {Param(config.schema_name), config.username.empty() ? Param() : Param(config.username), Param(config.password)});
    if (r.rows() != 1) throw SqlError("cloacina.create_tenant returned no row");
    return TenantCredentials{std::string(r.text(0, 0)), std::string(r.text(0, 1)), std::string(r.text(0, 2)),
                             std::string(r.text(0, 3))};
}

void DatabaseAdmin::remove_tenant(std::string_view schema_name, std::string_view username) {
    auto lease = database_.pool().acquire();
    (void)lease->exec("SELECT cloacina.remove_tenant($1::text, $2::text)",
                      {Param(schema_name), username.empty() ? Param() : Param(username)});
}

bool DatabaseAdmin::tenant_exists(std::string_view schema_name) {
    return with_retry(database_.pool(), [&](Connection& c) {
        Result r = c.exec("SELECT EXISTS (SELECT 1 FROM cloacina.tenants WHERE schema_name = $1::text)",
                          {Param(schema_name)});
        return r.boolean(0, 0);
    });
}

}  // namespace cloacina
