// test_registration.cpp — declaring workflows: builder and macros, the checks only the SDK can make
// (no server needed), the definition JSON, configuration validation, the server's validation of
// the rest at registration, and the retry defaults the SDK mirrors from the server.
#define BOOST_TEST_MODULE registration
#include "support.hpp"

#include <boost/json.hpp>

using namespace cloacina;
using namespace test_support;
namespace json = boost::json;

namespace {
void noop(Context&, const CancellationToken&) {}

// The seed's #[workflow] / #[task] attributes, as macros.
CLOACINA_WORKFLOW(macro_pipeline, "Declared with the CLOACINA_* macros");
CLOACINA_TASK(macro_pipeline, fetch) { context.insert("fetched", true); }
CLOACINA_TASK(macro_pipeline, transform,
              .dependencies({"fetch"}).retry(RetryPolicy::exponential(3, std::chrono::milliseconds(100)))) {
    context.insert("transformed", context.value_or<bool>("fetched", false));
}

// The builder form, registered at static initialisation.
const WorkflowRegistration builder_pipeline = Workflow::builder("builder_pipeline")
                                                  .description("Declared with the builder")
                                                  .task(Task("a").handler(noop))
                                                  .task(Task("b")
                                                            .dependencies({"a"})
                                                            .timeout(std::chrono::seconds(5))
                                                            .trigger_rule(TriggerRule::AllDone)
                                                            .handler(noop));

std::string validation_message(const WorkflowBuilder& builder) {
    try {
        (void)builder.build();
    } catch (const ValidationError& e) {
        BOOST_TEST(e.sqlstate() == "22023");
        return e.what();
    }
    BOOST_FAIL("the workflow was not refused");
    return {};
}
}  // namespace

BOOST_AUTO_TEST_CASE(macros_register_in_the_global_registry) {
    auto workflow = Registry::global().find("macro_pipeline");
    BOOST_REQUIRE(workflow.has_value());
    BOOST_TEST(workflow->description() == "Declared with the CLOACINA_* macros");
    BOOST_REQUIRE(workflow->tasks().size() == 2u);
    BOOST_TEST(workflow->tasks()[0].id() == "fetch");
    BOOST_TEST(workflow->tasks()[1].dependencies() == std::vector<std::string>{"fetch"});
    BOOST_TEST(workflow->tasks()[1].retry()->attempts == 3);
    BOOST_CHECK_NO_THROW(workflow->validate());

    // The handlers run as plain functions.
    Context context;
    workflow->tasks()[0].handler()(context, CancellationToken());
    workflow->tasks()[1].handler()(context, CancellationToken());
    BOOST_TEST(context.at<bool>("transformed"));
}

BOOST_AUTO_TEST_CASE(builder_registration_and_definition_json) {
    auto workflow = Registry::global().find("builder_pipeline");
    BOOST_REQUIRE(workflow.has_value());
    const json::value definition = workflow->definition();
    BOOST_TEST(definition.at("name").as_string() == "builder_pipeline");
    BOOST_TEST(definition.at("description").as_string() == "Declared with the builder");
    const auto& b = definition.at("tasks").as_array().at(1).as_object();
    BOOST_TEST(b.at("id").as_string() == "b");
    BOOST_TEST(b.at("kind").as_string() == "handler");
    BOOST_TEST(b.at("dependencies").as_array().at(0).as_string() == "a");
    BOOST_TEST(b.at("timeout_ms").as_int64() == 5000);
    BOOST_TEST(b.at("trigger_rule").as_string() == "all_done");
    BOOST_TEST(!b.contains("retry"));  // omitted keys take the server's defaults

    const json::object retry =
        Task("r")
            .retry(RetryPolicy::exponential(3, std::chrono::milliseconds(500), std::chrono::seconds(30), true))
            .definition()
            .at("retry")
            .as_object();
    BOOST_TEST(retry.at("attempts").as_int64() == 3);
    BOOST_TEST(retry.at("backoff").as_string() == "exponential");
    BOOST_TEST(retry.at("delay_ms").as_int64() == 500);
    BOOST_TEST(retry.at("max_delay_ms").as_int64() == 30000);
    BOOST_TEST(retry.at("jitter").as_bool());

    const json::object when = Task("w").when(Condition::equals("tier", "gold")).definition().at("when").as_object();
    BOOST_TEST(when.at("op").as_string() == "equals");
    BOOST_TEST(when.at("value").as_string() == "gold");
}

BOOST_AUTO_TEST_CASE(local_checks_need_no_server) {
    // What only this process can check: a handler task has a handler, and task ids are unique
    // (the worker looks handlers up by them). The server checks everything else.
    auto base = [] { return Workflow::builder("wf"); };
    BOOST_TEST(validation_message(base().task(Task("a").handler(noop)).task(Task("a").handler(noop)))
                   .find("duplicate task id \"a\"") != std::string::npos);
    BOOST_TEST(validation_message(base().task(Task("a"))).find("task \"a\" of workflow \"wf\" has no handler") !=
               std::string::npos);
    BOOST_CHECK_NO_THROW((void)Workflow::builder("with-dash_2").task(Task("step-1").handler(noop)).build());
    BOOST_CHECK_NO_THROW(
        (void)base().task(Task("a").handler(noop)).task(Task("b").depends_on("a").sql("SELECT 1")).build());
}

BOOST_AUTO_TEST_CASE(configuration_is_validated) {
    using std::chrono::milliseconds;
    BOOST_CHECK_THROW((void)DefaultRunnerConfig::builder().db_pool_size(0).build(), ConfigError);
    BOOST_CHECK_THROW((void)DefaultRunnerConfig::builder().max_concurrent_tasks(0).build(), ConfigError);
    BOOST_CHECK_THROW(
        (void)DefaultRunnerConfig::builder().lease(milliseconds(1000)).heartbeat_interval(milliseconds(2000)).build(),
        ConfigError);
    BOOST_CHECK_THROW(
        (void)DefaultRunnerConfig::builder().poll_interval(milliseconds(1)).poll_interval_min(milliseconds(10)).build(),
        ConfigError);
    const auto config = DefaultRunnerConfig::builder().db_pool_size(5).max_concurrent_tasks(8).build();
    BOOST_TEST(config.db_pool_size == 5u);
    BOOST_TEST(config.max_concurrent_tasks == 8u);
}

BOOST_AUTO_TEST_CASE(sqlstates_map_to_the_error_hierarchy) {
    auto kind = [](const char* sqlstate) -> std::string {
        try {
            detail::throw_sql_error("m", sqlstate, "q");
        } catch (const NotFoundError&) {
            return "not_found";
        } catch (const AlreadyExistsError&) {
            return "exists";
        } catch (const ValidationError&) {
            return "validation";
        } catch (const PermissionDenied&) {
            return "permission";
        } catch (const TransientError&) {
            return "transient";
        } catch (const BrokenConnection&) {
            return "broken";
        } catch (const SqlError& e) {
            BOOST_TEST(e.query() == "q");
            return "sql";
        }
        return "none";
    };
    BOOST_TEST(kind("42704") == "not_found");
    BOOST_TEST(kind("3F000") == "not_found");
    BOOST_TEST(kind("42P06") == "exists");
    BOOST_TEST(kind("42710") == "exists");
    BOOST_TEST(kind("22023") == "validation");
    BOOST_TEST(kind("42939") == "validation");
    BOOST_TEST(kind("42501") == "permission");
    BOOST_TEST(kind("40001") == "transient");
    BOOST_TEST(kind("08006") == "broken");
    BOOST_TEST(kind("XX000") == "sql");
}

// ---- against the server --------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(server_refuses_invalid_definitions) {
    const std::string url = database_url();
    TenantGuard tenant{unique_name("reg"), ""};
    auto registry = std::make_shared<Registry>();
    DefaultRunner runner =
        DefaultRunner::with_schema(url, tenant.schema, fast_config(registry).enable_worker(false).build());
    BOOST_TEST(runner.schema() == tenant.schema);

    Connection connection(ConnectionOptions{url, {}, tenant.schema, "registration-test"});
    auto refuse = [&](const std::string& definition) -> std::string {
        try {
            (void)connection.exec("SELECT cloacina.register_workflow($1::jsonb)", {Param(definition)});
        } catch (const ValidationError& e) {
            return e.sqlstate();
        } catch (const SqlError& e) {
            BOOST_ERROR("unexpected SQLSTATE " << e.sqlstate() << " for " << definition << ": " << e.what());
            return e.sqlstate();
        }
        BOOST_ERROR("definition accepted: " << definition);
        return {};
    };
    BOOST_TEST(refuse(R"({"name":"w","tasks":[{"id":"a","colour":"blue"}]})") == "22023");
    BOOST_TEST(refuse(R"({"name":"w","tasks":[{"id":"a","retry":{"attempts":2,"backoff":"exponentiel"}}]})") ==
               "22023");
    BOOST_TEST(refuse(R"({"name":"w","tasks":[{"id":"a","dependencies":["ghost"]}]})") == "22023");
    BOOST_TEST(refuse(R"({"name":"w","tasks":[{"id":"a","dependencies":["b"]},{"id":"b","dependencies":["a"]}]})") ==
               "22023");
    BOOST_TEST(refuse(R"({"name":"w","tasks":[{"id":"a"},{"id":"a"}]})") == "22023");

    // Through the SDK: a valid workflow registers (upsert: same version twice), and an unknown
    // workflow cannot be executed.
    const Workflow workflow = Workflow::builder("registered_here").task(Task("a").handler(noop)).build();
    const std::string v1 = runner.register_workflow(workflow);
    const std::string v2 = runner.register_workflow(workflow);
    BOOST_TEST(!v1.empty());
    BOOST_TEST(v1 == v2);
    try {
        (void)runner.execute_async("no_such_workflow", Context());
        BOOST_FAIL("executing an unknown workflow did not throw");
    } catch (const NotFoundError& e) {
        BOOST_TEST(e.sqlstate() == "42704");
    }
}

BOOST_AUTO_TEST_CASE(the_server_validates_the_rest_and_names_the_task) {
    const std::string url = database_url();
    TenantGuard tenant{unique_name("valid"), ""};
    DefaultRunner runner = DefaultRunner::with_schema(
        url, tenant.schema, fast_config(std::make_shared<Registry>()).enable_worker(false).build());
    auto refusal = [&](const WorkflowBuilder& builder) -> std::string {
        try {
            (void)runner.register_workflow(builder.build());
        } catch (const ValidationError& e) {
            BOOST_TEST(e.sqlstate() == "22023");
            return e.what();
        }
        BOOST_ERROR("the workflow was not refused");
        return {};
    };
    const auto says = [](const std::string& message, const std::string& part) {
        return message.find(part) != std::string::npos;
    };
    auto base = [] { return Workflow::builder("wf"); };
    BOOST_TEST(says(refusal(base()), "workflow \"wf\": tasks must be a non-empty array"));
    BOOST_TEST(says(refusal(Workflow::builder("bad name").task(Task("a").handler(noop))), "\"bad name\""));
    BOOST_TEST(says(refusal(Workflow::builder("_leading").task(Task("a").handler(noop))), "\"_leading\""));
    BOOST_TEST(says(refusal(base().task(Task("a").dependencies({"ghost"}).handler(noop))),
                    "task \"a\" depends on unknown task \"ghost\""));
    BOOST_TEST(says(
        refusal(
            base().task(Task("a").dependencies({"b"}).handler(noop)).task(Task("b").dependencies({"a"}).handler(noop))),
        "workflow \"wf\" has a dependency cycle"));
    BOOST_TEST(says(refusal(base().task(Task("a").dependencies({"a"}).handler(noop))), "task \"a\" depends on itself"));
    BOOST_TEST(
        says(refusal(base().task(Task("a").retry(RetryPolicy::fixed(0, std::chrono::milliseconds(1))).handler(noop))),
             "task \"a\": retry.attempts"));
    BOOST_TEST(says(
        refusal(base().task(
            Task("a").retry(RetryPolicy::linear(2, std::chrono::seconds(2), std::chrono::seconds(1))).handler(noop))),
        "task \"a\": retry.max_delay_ms"));
    BOOST_TEST(says(refusal(base().task(Task("a").timeout(std::chrono::milliseconds(0)).handler(noop))),
                    "task \"a\": timeout_ms"));
    BOOST_TEST(says(refusal(base().task(Task("a").when(Condition::exists("")).handler(noop))), "task \"a\": when.key"));
    BOOST_CHECK_NO_THROW(
        (void)runner.register_workflow(Workflow::builder("with-dash_2").task(Task("step-1").handler(noop)).build()));
}

BOOST_AUTO_TEST_CASE(retry_defaults_are_the_servers) {
    // RetryPolicy's defaults mirror what the server fills in for a definition that leaves them out
    // (cloacina._normalize_workflow): the stored, normalised definitions must agree.
    using std::chrono::milliseconds, std::chrono::seconds;
    const std::string url = database_url();
    TenantGuard tenant{unique_name("defaults"), ""};
    DefaultRunner runner = DefaultRunner::with_schema(
        url, tenant.schema, fast_config(std::make_shared<Registry>()).enable_worker(false).build());
    (void)runner.register_workflow(
        Workflow::builder("sdk_retries")
            .task(Task("no_retry").handler(noop))
            .task(Task("default_policy").retry(RetryPolicy{}).handler(noop))
            .task(Task("exponential").retry(RetryPolicy::exponential(3, milliseconds(500))).handler(noop))
            .task(Task("slow_linear").retry(RetryPolicy::linear(2, seconds(400))).handler(noop))
            .build());
    // The same retries as a definition without max_delay_ms, for the server's default cap.
    Connection c(ConnectionOptions{url, {}, tenant.schema, "registration-test"});
    (void)c.exec("SELECT cloacina.register_workflow($1::jsonb)", {Param(R"({"name": "server_retries", "tasks": [
                      {"id": "exponential", "retry": {"attempts": 3, "backoff": "exponential", "delay_ms": 500}},
                      {"id": "slow_linear", "retry": {"attempts": 2, "backoff": "linear", "delay_ms": 400000}}]})")});
    const auto stored = [&](const std::string& workflow, const std::string& task) {
        Result r = c.exec(
            "SELECT t -> 'retry' FROM cloacina.workflows w, jsonb_array_elements(w.definition -> 'tasks') t "
            "WHERE w.name = $1 AND t ->> 'id' = $2",
            {Param(workflow), Param(task)});
        BOOST_REQUIRE_EQUAL(r.rows(), 1);
        return r.json(0, 0);
    };

    const json::value sdk_defaults = Task("t").retry(RetryPolicy{}).definition().at("retry");
    BOOST_TEST(stored("sdk_retries", "no_retry") == sdk_defaults);
    BOOST_TEST(stored("sdk_retries", "default_policy") == sdk_defaults);
    BOOST_TEST(stored("sdk_retries", "exponential") == stored("server_retries", "exponential"));
    BOOST_TEST(stored("sdk_retries", "slow_linear") == stored("server_retries", "slow_linear"));
}

BOOST_AUTO_TEST_CASE(runner_start_registers_its_workflows) {
    const std::string url = database_url();
    TenantGuard tenant{unique_name("reg"), ""};
    auto registry = std::make_shared<Registry>();
    registry->add(Workflow::builder("auto_registered").task(Task("only").handler(noop)).build());
    DefaultRunner runner = DefaultRunner::with_schema(url, tenant.schema, fast_config(registry).build());
    // with_schema twice for the same tenant is fine (42P06 is "already there").
    DefaultRunner second =
        DefaultRunner::with_schema(url, tenant.schema, fast_config(registry).enable_worker(false).build());
    const WorkflowResult result = second.execute("auto_registered", Context());
    BOOST_TEST(result.status == WorkflowStatus::Completed);

    // An invalid workflow in the registry fails the runner's start with the server's refusal.
    auto bad = std::make_shared<Registry>();
    bad->add(Workflow("broken", "", {Task("a").dependencies({"ghost"}).handler(noop)}));
    try {
        DefaultRunner refused = DefaultRunner::with_schema(url, tenant.schema, fast_config(bad).build());
        BOOST_ERROR("a runner started with an invalid workflow");
    } catch (const ValidationError& e) {
        BOOST_TEST(e.sqlstate() == "22023");
        BOOST_TEST(std::string(e.what()).find("unknown task \"ghost\"") != std::string::npos, e.what());
    }
}

BOOST_AUTO_TEST_CASE(concurrent_with_schema_starts_are_safe) {
    const std::string url = database_url();
    TenantGuard tenant{unique_name("race"), ""};
    auto registry = std::make_shared<Registry>();
    std::atomic<int> ok{0};
    std::vector<std::thread> threads;
    std::mutex errors_mutex;
    std::vector<std::string> errors;
    for (int i = 0; i < 4; ++i) {
        threads.emplace_back([&] {
            try {
                DefaultRunner r =
                    DefaultRunner::with_schema(url, tenant.schema, fast_config(registry).enable_worker(false).build());
                ++ok;
            } catch (const std::exception& e) {
                std::lock_guard lock(errors_mutex);
                errors.push_back(e.what());
            }
        });
    }
    for (auto& t : threads) t.join();
    for (const auto& e : errors) BOOST_ERROR("concurrent start failed: " << e);
    BOOST_TEST(ok.load() == 4);
}

BOOST_AUTO_TEST_CASE(tenant_functions_outside_a_tenant_schema_fail_clearly) {
    Connection connection(database_url());
    (void)connection.exec("SET search_path = public");
    try {
        (void)connection.exec("SELECT cloacina.execute('anything')");
        BOOST_FAIL("no error outside a tenant schema");
    } catch (const SqlError& e) {
        BOOST_TEST(e.sqlstate() == "3F000");
    }
    // And a runner on such a connection refuses to start.
    BOOST_CHECK_THROW(DefaultRunner(database_url(), fast_config(std::make_shared<Registry>()).build()), Error);
}

BOOST_AUTO_TEST_CASE(server_errors_carry_detail_and_hint) {
    // A tenant function outside a tenant schema: the server says what to do in its HINT.
    Connection c(test_support::database_url());
    try {
        (void)c.exec("SELECT cloacina.execute('anything')");
        BOOST_FAIL("a tenant function ran outside a tenant schema");
    } catch (const NotFoundError& e) {
        BOOST_TEST(e.sqlstate() == "3F000");
        BOOST_TEST(!e.hint().empty());
        BOOST_TEST(std::string(e.what()).find("\nHINT:  " + e.hint()) != std::string::npos, e.what());
        BOOST_TEST(std::string(e.what()).rfind(e.message(), 0) == 0);
    }
    // DETAIL, from PostgreSQL itself.
    try {
        (void)c.exec("SELECT 'x'::jsonb");
        BOOST_FAIL("invalid JSON accepted");
    } catch (const ValidationError& e) {
        BOOST_TEST(!e.detail().empty());
        BOOST_TEST(std::string(e.what()).find("\nDETAIL:  " + e.detail()) != std::string::npos, e.what());
    }
}
