// cloacina/database.hpp — admin access: a Database (URL + pool) and the DatabaseAdmin that provisions
// and removes tenants through cloacina.create_tenant() / cloacina.remove_tenant().
#pragma once

#include "cloacina/connection.hpp"

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

namespace cloacina {

/// A database reached through `url`, with a pool of `pool_size` connections. `name` is the database
/// used when the URL names none (the URL's own database always wins).
class Database {
public:
    Database(std::string_view url, std::string_view name, std::size_t pool_size);
    static Database new_database(std::string_view url, std::string_view name, std::size_t pool_size) {
        return Database(url, name, pool_size);
    }

    [[nodiscard]] const std::string& url() const noexcept { return url_; }
    [[nodiscard]] ConnectionPool& pool() const noexcept { return *pool_; }

private:
    std::string url_;
    std::shared_ptr<ConnectionPool> pool_;
};

/// What to provision. An empty password asks the server to generate one (returned once); an empty
/// username creates the schema only, without a login role.
struct TenantConfig {
    std::string schema_name;
    std::string username;
    std::string password;
};

/// What was provisioned. `connection_string` is a libpq URI for the tenant's role (empty when no
/// role was created) to the host, port and database the admin's connection reached, so a tenant
/// created through PgBouncer connects through it too; `password` is the only copy of a generated
/// password.
struct TenantCredentials {
    std::string schema_name;
    std::string username;
    std::string password;
    std::string connection_string;
};

class DatabaseAdmin {
public:
    explicit DatabaseAdmin(Database database) : database_(std::move(database)) {}
    static DatabaseAdmin new_admin(Database database) { return DatabaseAdmin(std::move(database)); }

    /// Creates schema, tables, role and grants in one transaction. Throws AlreadyExistsError
    /// (42P06 schema, 42710 role), ValidationError (invalid names), PermissionDenied.
    TenantCredentials create_tenant(const TenantConfig& config);
    /// Removes schema and role (username may be empty when the tenant has no role).
    void remove_tenant(std::string_view schema_name, std::string_view username = {});
    /// True when cloacina knows `schema_name` as a tenant.
    [[nodiscard]] bool tenant_exists(std::string_view schema_name);

    [[nodiscard]] const Database& database() const noexcept { return database_; }

private:
    Database database_;
};

}  // namespace cloacina
