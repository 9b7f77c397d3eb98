// test_pooled.cpp — runners that keep no session state (pooled): without a listen_url the claimer
// polls; with one, wake-ups arrive on a connection of its own; a schema set for one statement
// stays with that statement. scripts/test runs this suite both directly and through PgBouncer in
// transaction mode (then CLOACINA_LISTEN_URL is a direct URL).
#define BOOST_TEST_MODULE pooled
#include "support.hpp"

#include <cstdlib>

using namespace cloacina;
using namespace test_support;

namespace {

std::shared_ptr<Registry> make_registry() {
    auto registry = std::make_shared<Registry>();
    registry->add(Workflow::builder("pooled_work")
                      .task(Task("a").handler([](Context& c) { c.insert("a", true); }))
                      .task(Task("b").depends_on("a").handler([](Context& c) { c.insert("b", c.at<bool>("a")); }))
                      .build());
    return registry;
}

/// A URL that reaches the server without a pooler.
std::string direct_url() {
    const char* listen = std::getenv("CLOACINA_LISTEN_URL");
    return listen != nullptr && *listen != '\0' ? listen : database_url();
}

bool has_listener(const std::string& worker) {
    Connection c(direct_url());
    return c.exec("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                  {Param("cloacina-sdk listener " + worker)})
               .int64(0, 0) == 1;
}

}  // namespace

BOOST_AUTO_TEST_CASE(without_listen_url_the_claimer_polls) {
    TenantGuard tenant{unique_name("pooled"), ""};
    DefaultRunner runner = DefaultRunner::with_schema(
        database_url(), tenant.schema,
        fast_config(make_registry()).pooled(true).listen_url("").worker_name(unique_name("poller")).build());
    const WorkflowResult result = runner.execute("pooled_work", Context());
    BOOST_TEST(result.status == WorkflowStatus::Completed);
    BOOST_TEST(result.final_context.value_or("b", false));
    BOOST_TEST(!has_listener(runner.worker_name()));
}

BOOST_AUTO_TEST_CASE(listen_url_carries_the_wakeups) {
    TenantGuard tenant{unique_name("pooled"), ""};
    // Idle waits of a minute: only a notification can start the run in time.
    DefaultRunner runner = DefaultRunner::with_schema(database_url(), tenant.schema,
                                                      fast_config(make_registry())
                                                          .pooled(true)
                                                          .listen_url(direct_url())
                                                          .poll_interval_min(60s)
                                                          .poll_interval(60s)
                                                          .worker_name(unique_name("listener"))
                                                          .build());
    BOOST_TEST(has_listener(runner.worker_name()));
    const auto result = runner.execute_async("pooled_work", Context()).wait_for(20s);
    BOOST_REQUIRE_MESSAGE(result.has_value(), "the run did not end within 20 s: no wake-up arrived");
    BOOST_TEST(result->status == WorkflowStatus::Completed);
}

BOOST_AUTO_TEST_CASE(a_schema_lasts_one_statement) {
    TenantGuard tenant{unique_name("pooled"), ""};
    Connection(database_url()).exec("SELECT 1 FROM cloacina.create_tenant($1)", {Param(tenant.schema)});
    // Through PgBouncer these take turns on the same few server sessions: a schema that outlived
    // its statement would show in the other connection.
    Connection in_tenant(ConnectionOptions{database_url(), "", tenant.schema, "test_pooled"});
    Connection plain(database_url());
    for (int i = 0; i < 20; ++i) {
        BOOST_TEST(in_tenant.exec("SELECT current_schema()").text(0, 0) == tenant.schema);
        BOOST_TEST(plain.exec("SELECT current_schema()").text(0, 0) == "public");
    }
    // Errors still arrive whole, from the right statement.
    try {
        (void)in_tenant.exec("SELECT cloacina.execute('no_such_workflow')");
        BOOST_FAIL("an unknown workflow was accepted");
    } catch (const NotFoundError& e) {
        BOOST_TEST(e.message().find("no_such_workflow") != std::string::npos, e.what());
    }
    BOOST_TEST(in_tenant.exec("SELECT current_schema()").text(0, 0) == tenant.schema);
}
