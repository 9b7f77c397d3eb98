// test_admin.cpp — the admin API: Database, DatabaseAdmin::create_tenant with a generated password,
// the returned connection string, duplicate and invalid names, removal.
#define BOOST_TEST_MODULE admin
#include "support.hpp"

#include <sstream>

using namespace cloacina;
using namespace test_support;

BOOST_AUTO_TEST_CASE(create_tenant_with_generated_password) {
    const std::string url = database_url();
    DatabaseAdmin admin(Database(url, "cloacina", 2));
    const std::string schema = unique_name("admin");
    const std::string user = schema + "_user";
    TenantGuard guard{schema, user};

    const TenantCredentials credentials = admin.create_tenant(TenantConfig{schema, user, ""});
    BOOST_TEST(credentials.schema_name == schema);
    BOOST_TEST(credentials.username == user);
    BOOST_TEST(credentials.password.size() >= 32u);
    BOOST_TEST(credentials.password.find_first_not_of(
                   "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") == std::string::npos);
    BOOST_TEST(!credentials.connection_string.empty());
    BOOST_TEST(admin.tenant_exists(schema));

    // The connection string logs in as the tenant's role and lands in its schema.
    Connection tenant(credentials.connection_string);
    Result who = tenant.exec("SELECT current_user, current_schema()");
    BOOST_TEST(who.text(0, 0) == user);
    BOOST_TEST(who.text(0, 1) == schema);

    // Duplicate tenant: 42P06 (schema exists).
    try {
        (void)admin.create_tenant(TenantConfig{schema, "", ""});
        BOOST_FAIL("duplicate tenant accepted");
    } catch (const AlreadyExistsError& e) {
        BOOST_TEST(e.sqlstate() == "42P06");
    }
}

BOOST_AUTO_TEST_CASE(explicit_password_and_schema_only_tenant) {
    const std::string url = database_url();
    DatabaseAdmin admin(Database(url, "", 1));
    const std::string schema = unique_name("pw");
    const std::string user = schema + "_user";
    TenantGuard guard{schema, user};
    const TenantCredentials credentials = admin.create_tenant(TenantConfig{schema, user, "s3cret-Pass_word"});
    BOOST_TEST(credentials.password == "s3cret-Pass_word");
    Connection tenant(credentials.connection_string);
    BOOST_TEST(tenant.exec("SELECT current_user").text(0, 0) == user);

    const std::string bare = unique_name("bare");
    TenantGuard bare_guard{bare, ""};
    const TenantCredentials schema_only = admin.create_tenant(TenantConfig{bare, "", ""});
    BOOST_TEST(schema_only.schema_name == bare);
    BOOST_TEST(schema_only.username.empty());
    BOOST_TEST(schema_only.password.empty());
    BOOST_TEST(schema_only.connection_string.empty());
}

BOOST_AUTO_TEST_CASE(invalid_and_reserved_names_are_refused) {
    DatabaseAdmin admin(Database(database_url(), "", 1));
    for (const char* name : {"public", "pg_evil", "cloacina", "1starts_with_digit", "has space", "semi;colon",
                             "Robert\"); DROP TABLE x;--"}) {
        try {
            (void)admin.create_tenant(TenantConfig{name, "", ""});
            drop_tenant(name);
            BOOST_ERROR("name accepted: " << name);
        } catch (const AlreadyExistsError& e) {
            BOOST_TEST(std::string(name) == "public", name << ": " << e.sqlstate());
        } catch (const ValidationError& e) {
            BOOST_TEST((e.sqlstate() == "22023" || e.sqlstate() == "42939"), name << ": " << e.sqlstate());
        } catch (const SqlError& e) {
            BOOST_ERROR(name << " refused with unexpected SQLSTATE " << e.sqlstate() << ": " << e.what());
        }
    }
}

BOOST_AUTO_TEST_CASE(existing_role_is_refused_and_nothing_is_left_behind) {
    const std::string url = database_url();
    DatabaseAdmin admin(Database(url, "", 1));
    const std::string first = unique_name("roleowner");
    const std::string user = first + "_user";
    TenantGuard guard{first, user};
    (void)admin.create_tenant(TenantConfig{first, user, ""});
    const std::string second = unique_name("rolethief");
    try {
        (void)admin.create_tenant(TenantConfig{second, user, ""});
        drop_tenant(second);
        BOOST_FAIL("existing role accepted");
    } catch (const AlreadyExistsError& e) {
        BOOST_TEST(e.sqlstate() == "42710");
    }
    // All or nothing: the second schema does not exist.
    BOOST_TEST(!admin.tenant_exists(second));
    Connection c(url);
    BOOST_TEST(c.exec("SELECT count(*) FROM pg_namespace WHERE nspname = $1", {Param(second)}).int64(0, 0) == 0);
}

BOOST_AUTO_TEST_CASE(remove_tenant_removes_schema_and_role) {
    const std::string url = database_url();
    DatabaseAdmin admin(Database(url, "", 1));
    const std::string schema = unique_name("gone");
    const std::string user = schema + "_user";
    const TenantCredentials credentials = admin.create_tenant(TenantConfig{schema, user, ""});
    admin.remove_tenant(schema, user);
    BOOST_TEST(!admin.tenant_exists(schema));
    Connection c(url);
    BOOST_TEST(c.exec("SELECT count(*) FROM pg_namespace WHERE nspname = $1", {Param(schema)}).int64(0, 0) == 0);
    BOOST_TEST(c.exec("SELECT count(*) FROM pg_roles WHERE rolname = $1", {Param(user)}).int64(0, 0) == 0);
    BOOST_CHECK_THROW(Connection{credentials.connection_string}, BrokenConnection);
}

BOOST_AUTO_TEST_CASE(tenant_roles_cannot_use_the_admin_api) {
    const std::string url = database_url();
    DatabaseAdmin admin(Database(url, "", 1));
    const std::string schema = unique_name("nopriv");
    const std::string user = schema + "_user";
    TenantGuard guard{schema, user};
    const TenantCredentials credentials = admin.create_tenant(TenantConfig{schema, user, ""});
    DatabaseAdmin impostor(Database(credentials.connection_string, "", 1));
    try {
        (void)impostor.create_tenant(TenantConfig{unique_name("sneaky"), "", ""});
        BOOST_FAIL("a tenant role created a tenant");
    } catch (const PermissionDenied& e) {
        BOOST_TEST(e.sqlstate() == "42501");
    }
}

BOOST_AUTO_TEST_CASE(server_versions_the_sdk_works_with) {
    const std::string major = std::to_string(CLOACINA_SDK_VERSION_MAJOR);
    const std::string minor = std::to_string(CLOACINA_SDK_VERSION_MINOR);
    BOOST_TEST(server_version_supported(CLOACINA_SDK_VERSION));
    BOOST_TEST(server_version_supported("0.1.0"));
    BOOST_TEST(server_version_supported(major + "." + minor + ".7"));
    BOOST_TEST(!server_version_supported("0.0.9"));
    BOOST_TEST(!server_version_supported(major + "." + std::to_string(CLOACINA_SDK_VERSION_MINOR + 1) + ".0"));
    BOOST_TEST(!server_version_supported(std::to_string(CLOACINA_SDK_VERSION_MAJOR + 1) + ".0.0"));
    BOOST_TEST(!server_version_supported("older than 0.1.0"));
    BOOST_TEST(!server_version_supported(""));

    // The server these suites run against is one of them (every runner checks it when it starts).
    Connection connection(database_url());
    BOOST_TEST(server_version_supported(connection.exec("SELECT cloacina.version()").text(0, 0)));
}

BOOST_AUTO_TEST_CASE(connection_string_goes_where_the_admin_went) {
    // Through PgBouncer, the server sees PgBouncer's way in; the tenant must use the admin's.
    const std::string url = database_url();
    DatabaseAdmin admin(Database(url, "", 1));
    const std::string schema = unique_name("via");
    const std::string user = schema + "_user";
    TenantGuard guard{schema, user};
    const TenantCredentials credentials = admin.create_tenant(TenantConfig{schema, user, ""});
    Connection reference(url);
    Connection tenant(credentials.connection_string);
    BOOST_TEST(tenant.host() == reference.host());
    BOOST_TEST(tenant.port() == reference.port());
    BOOST_TEST(tenant.dbname() == reference.dbname());
    BOOST_TEST(tenant.exec("SELECT current_user").text(0, 0) == user);
}

BOOST_AUTO_TEST_CASE(with_schema_on_an_existing_tenant_writes_no_error_to_the_server_log) {
    const std::string url = database_url();
    const std::string schema = unique_name("quiet");
    TenantGuard guard{schema, ""};
    Connection observer(url);
    const Result log = observer.exec("SELECT pg_current_logfile()");
    BOOST_REQUIRE_MESSAGE(!log.is_null(0, 0), "the server runs without logging_collector: its log cannot be read");
    const std::string file(log.text(0, 0));
    const auto log_size = [&] { return observer.exec("SELECT size FROM pg_stat_file($1)", {Param(file)}).int64(0, 0); };
    (void)DefaultRunner::with_schema(url, schema, fast_config(std::make_shared<Registry>()).build());  // creates it
    const std::int64_t before = log_size();
    {
        DefaultRunner again =
            DefaultRunner::with_schema(url, schema, fast_config(std::make_shared<Registry>()).build());
        again.shutdown();
    }
    // The log is written by the logging collector: wait until a marker logged after the runner is in it.
    const std::string marker = "cloacina-test-marker-" + schema;
    std::string appended;
    const bool seen = wait_until([&] {
        (void)observer.exec("DO $$ BEGIN RAISE LOG '" + marker + "'; END $$");
        const std::int64_t after = log_size();
        appended = std::string(
            observer
                .exec("SELECT pg_read_file($1, $2, $3)", {Param(file), Param(static_cast<long long>(before)),
                                                          Param(static_cast<long long>(after - before))})
                .text(0, 0));
        return appended.find(marker) != std::string::npos;
    });
    BOOST_REQUIRE_MESSAGE(seen, "the marker never reached the server log");
    std::istringstream lines(appended);
    for (std::string line; std::getline(lines, line);)
        BOOST_TEST(!(line.find("ERROR") != std::string::npos && line.find(schema) != std::string::npos), line);
}
