// test_isolation.cpp — tenant isolation through the SDK: a runner holding tenant A's credentials
// cannot execute, see or claim tenant B's work, and A's role cannot reach B's schema at all.
#define BOOST_TEST_MODULE isolation
#include "support.hpp"

using namespace cloacina;
using namespace test_support;

namespace {

struct Seen {
    std::mutex mutex;
    std::vector<std::string> owners;  // the "owner" key of every context a handler saw
};

std::shared_ptr<Registry> make_registry(std::shared_ptr<Seen> seen) {
    auto registry = std::make_shared<Registry>();
    registry->add(Workflow::builder("confidential")
                      .task(Task("work").handler([seen](Context& c) {
                          std::lock_guard lock(seen->mutex);
                          seen->owners.push_back(c.value_or("owner", "?"));
                          c.insert("handled", true);
                      }))
                      .build());
    return registry;
}

struct TwoTenants {
    std::string url = database_url();
    DatabaseAdmin admin{Database(url, "", 1)};
    std::string a_schema = unique_name("iso_a");
    std::string b_schema = unique_name("iso_b");
    TenantGuard a_guard{a_schema, a_schema + "_user"};
    TenantGuard b_guard{b_schema, b_schema + "_user"};
    TenantCredentials a = admin.create_tenant(TenantConfig{a_schema, a_schema + "_user", ""});
    TenantCredentials b = admin.create_tenant(TenantConfig{b_schema, b_schema + "_user", ""});
};

bool refused(Connection& connection, const std::string& sql) {
    try {
        (void)connection.exec(sql);
    } catch (const SqlError& e) {
        const bool expected = e.sqlstate() == "42501" || e.sqlstate() == "3F000";
        BOOST_TEST(expected, sql << " failed with SQLSTATE " << e.sqlstate() << ": " << e.what());
        return true;
    }
    return false;
}

}  // namespace

BOOST_FIXTURE_TEST_CASE(runner_with_tenant_a_credentials_cannot_reach_tenant_b, TwoTenants) {
    auto seen_a = std::make_shared<Seen>();
    auto seen_b = std::make_shared<Seen>();
    // A runs a worker that would happily handle "confidential.work" — in its own tenant only.
    DefaultRunner runner_a(a.connection_string, fast_config(make_registry(seen_a)).build());
    // B registers the same workflow name but runs no worker yet: its task stays claimable.
    DefaultRunner client_b(b.connection_string, fast_config(make_registry(seen_b)).enable_worker(false).build());
    BOOST_TEST(runner_a.schema() == a_schema);
    BOOST_TEST(client_b.schema() == b_schema);

    Context secret;
    secret.insert("owner", "B");
    secret.insert("secret", "b-only");
    ExecutionHandle b_run = client_b.execute_async("confidential", secret);
    CancelOnExit cancel_b{b_run};

    // A's own run completes; A's worker saw only A's context.
    Context mine;
    mine.insert("owner", "A");
    const WorkflowResult a_result = runner_a.execute("confidential", mine);
    BOOST_TEST(a_result.status == WorkflowStatus::Completed);
    // B's run is untouched by A's worker: still running (nothing in B can claim it).
    BOOST_TEST(b_run.status() == WorkflowStatus::Running);

    // "See": asking A's tenant for B's execution id never yields B's data (ids are per tenant).
    try {
        const WorkflowResult peek = runner_a.result(b_run.id());
        BOOST_TEST(!peek.final_context.contains("secret"));
    } catch (const NotFoundError&) {
    }

    // Now B gets a worker, and B's run completes there.
    DefaultRunner worker_b(b.connection_string, fast_config(make_registry(seen_b)).build());
    const WorkflowResult b_result = b_run.wait();
    BOOST_TEST(b_result.status == WorkflowStatus::Completed);
    BOOST_TEST(b_result.final_context.at<std::string>("secret") == "b-only");
    {
        std::lock_guard lock(seen_a->mutex);
        BOOST_TEST(seen_a->owners == std::vector<std::string>{"A"});
    }
    {
        std::lock_guard lock(seen_b->mutex);
        BOOST_TEST(seen_b->owners == std::vector<std::string>{"B"});
    }
}

BOOST_FIXTURE_TEST_CASE(tenant_a_role_cannot_use_tenant_b_schema, TwoTenants) {
    // B has a run, so its tables are not empty.
    DefaultRunner client_b(b.connection_string,
                           fast_config(make_registry(std::make_shared<Seen>())).enable_worker(false).build());
    CancelOnExit b_run{client_b.execute_async("confidential", Context())};

    Connection as_a(a.connection_string);
    const std::string b_quoted = as_a.quote_identifier(b_schema);
    (void)as_a.exec("SET search_path = " + b_quoted);
    // Execute, see, claim in B through the tenant API: refused by PostgreSQL's privileges.
    BOOST_TEST(refused(as_a, "SELECT cloacina.execute('confidential')"));
    BOOST_TEST(refused(as_a, "SELECT * FROM cloacina.execution_status(1)"));
    BOOST_TEST(refused(as_a, "SELECT * FROM cloacina.claim('thief', NULL, 10)"));
    BOOST_TEST(refused(as_a, "SELECT cloacina.notify_channel()"));

    // Schema-qualified access to every table of B: refused.
    Connection admin_connection(url);
    Result tables =
        admin_connection.exec("SELECT quote_ident(tablename) FROM pg_tables WHERE schemaname = $1", {Param(b_schema)});
    BOOST_TEST(tables.rows() > 0);
    for (int i = 0; i < tables.rows(); ++i)
        BOOST_TEST(refused(as_a, "SELECT count(*) FROM " + b_quoted + "." + std::string(tables.text(i, 0))),
                   "table " << tables.text(i, 0));

    // A runner given A's credentials but told to use B's schema cannot start; told to use its own
    // schema, it can (with_schema tolerates a caller that may not create tenants).
    BOOST_CHECK_THROW(
        DefaultRunner::with_schema(a.connection_string, b_schema, fast_config(std::make_shared<Registry>()).build()),
        Error);
    BOOST_CHECK_NO_THROW(
        DefaultRunner::with_schema(a.connection_string, a_schema, fast_config(std::make_shared<Registry>()).build()));

    // A's role cannot reach the admin registry.
    BOOST_TEST(refused(as_a, "SELECT * FROM cloacina.tenants"));
}
