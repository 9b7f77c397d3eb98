// test_execute.cpp — end to end: execute, the result's fields, context passing along a chain,
// execute_async, execute_batch, idempotency keys, task results.
#define BOOST_TEST_MODULE execute
#include "support.hpp"

#include <algorithm>
#include <optional>
#include <thread>

using namespace cloacina;
using namespace test_support;

namespace {

void process_customer_data(Context& context, const CancellationToken&) {
    const std::string tenant_id = context.value_or("tenant_id", "default");
    const int records = tenant_id == "acme_corp" ? 1250 : tenant_id == "globex_inc" ? 890 : 100;
    context.insert("processed_records", records);
    context.insert("processing_completed", true);
}

std::shared_ptr<Registry> make_registry() {
    auto registry = std::make_shared<Registry>();
    registry->add(Workflow::builder("customer_processing")
                      .description("Process customer data in isolated tenant environment")
                      .task(Task("process_customer_data").handler(process_customer_data))
                      .build());
    registry->add(Workflow::builder("chain")
                      .task(Task("first").handler([](Context& c) {
                          c.insert("step", 1);
                          c.insert("trail", "first");
                      }))
                      .task(Task("second").depends_on("first").handler([](Context& c) {
                          c.update("step", c.at<int>("step") + 1);
                          c.update("trail", c.at<std::string>("trail") + ">second");
                      }))
                      .task(Task("third").depends_on("second").handler([](Context& c) {
                          c.insert("seen_step", c.at<int>("step"));
                          c.insert("seen_input", c.value_or("input", "missing"));
                      }))
                      .build());
    return registry;
}

struct Fixture {
    std::string url = database_url();
    TenantGuard tenant{unique_name("exec"), ""};
    DefaultRunner runner = DefaultRunner::with_schema(url, tenant.schema, fast_config(make_registry()).build());
};

}  // namespace

BOOST_FIXTURE_TEST_SUITE(execute, Fixture)

BOOST_AUTO_TEST_CASE(execute_returns_status_final_context_and_task_results) {
    Context context;
    context.insert("tenant_id", "acme_corp");
    context.insert("customer_name", "acme_corp Customer");
    const WorkflowResult result = runner.execute("customer_processing", context);

    BOOST_TEST(result.status == WorkflowStatus::Completed);
    BOOST_TEST(result.execution_id > 0);
    BOOST_TEST(result.workflow == "customer_processing");
    BOOST_TEST(!result.error.has_value());
    BOOST_TEST(result.final_context.value_or<std::int64_t>("processed_records", 0) == 1250);
    BOOST_TEST(result.final_context.value_or<bool>("processing_completed", false));
    BOOST_TEST(result.final_context.value_or("customer_name", "") == "acme_corp Customer");  // input kept

    BOOST_REQUIRE(result.task_results.size() == 1u);
    const TaskResult* task = result.task("process_customer_data");
    BOOST_REQUIRE(task != nullptr);
    BOOST_TEST(task->status == TaskStatus::Completed);
    BOOST_TEST(task->attempt == 1);
    BOOST_TEST(task->output.as_object().at("processed_records").to_number<std::int64_t>() == 1250);
    BOOST_TEST(!task->output.as_object().contains("tenant_id"));  // output = what the handler wrote
    BOOST_REQUIRE(task->started_at.has_value());
    BOOST_REQUIRE(task->finished_at.has_value());
    BOOST_TEST((*task->finished_at >= *task->started_at));
}

BOOST_AUTO_TEST_CASE(context_flows_along_a_chain) {
    Context input;
    input.insert("input", "kept");
    const WorkflowResult result = runner.execute("chain", input);
    BOOST_REQUIRE(result.status == WorkflowStatus::Completed);
    BOOST_TEST(result.final_context.at<int>("step") == 2);
    BOOST_TEST(result.final_context.at<std::string>("trail") == "first>second");
    BOOST_TEST(result.final_context.at<int>("seen_step") == 2);
    BOOST_TEST(result.final_context.at<std::string>("seen_input") == "kept");
    BOOST_TEST(result.task_results.size() == 3u);
}

BOOST_AUTO_TEST_CASE(execute_async_and_wait) {
    Context context;
    context.insert("tenant_id", "globex_inc");
    ExecutionHandle handle = runner.execute_async("customer_processing", context);
    BOOST_TEST(handle.id() > 0);
    const WorkflowResult result = handle.wait();
    BOOST_TEST(result.status == WorkflowStatus::Completed);
    BOOST_TEST(result.final_context.at<int>("processed_records") == 890);
    BOOST_TEST(handle.status() == WorkflowStatus::Completed);
    // The result stays readable afterwards.
    BOOST_TEST(runner.result(handle.id()).final_context.at<int>("processed_records") == 890);
}

BOOST_AUTO_TEST_CASE(execute_batch_starts_one_run_per_context) {
    std::vector<Context> contexts;
    for (const char* tenant : {"acme_corp", "globex_inc", "initech"}) {
        Context c;
        c.insert("tenant_id", tenant);
        contexts.push_back(std::move(c));
    }
    auto handles = runner.execute_batch("customer_processing", contexts);
    BOOST_REQUIRE(handles.size() == 3u);
    std::vector<int> records;
    for (auto& h : handles) {
        const WorkflowResult r = h.wait();
        BOOST_TEST(r.status == WorkflowStatus::Completed);
        records.push_back(r.final_context.at<int>("processed_records"));
    }
    BOOST_TEST(records == (std::vector<int>{1250, 890, 100}));  // ordinal order kept
}

BOOST_AUTO_TEST_CASE(idempotency_key_returns_the_first_run) {
    ExecuteOptions options;
    options.idempotency_key = unique_name("key");
    ExecutionHandle first = runner.execute_async("customer_processing", Context(), options);
    ExecutionHandle second = runner.execute_async("customer_processing", Context(), options);
    BOOST_TEST(first.id() == second.id());
    BOOST_TEST(first.wait().status == WorkflowStatus::Completed);
    // Without a key, every call is a new run (the SDK's own keys are unique).
    ExecutionHandle third = runner.execute_async("customer_processing", Context());
    ExecutionHandle fourth = runner.execute_async("customer_processing", Context());
    BOOST_TEST(third.id() != fourth.id());
    BOOST_TEST(third.wait().status == WorkflowStatus::Completed);
    BOOST_TEST(fourth.wait().status == WorkflowStatus::Completed);
}

BOOST_AUTO_TEST_CASE(client_only_runner_waits_for_other_workers) {
    // A runner with enable_worker(false) submits; this fixture's runner does the work.
    DefaultRunner client = DefaultRunner::with_schema(
        url, tenant.schema, fast_config(std::make_shared<Registry>()).enable_worker(false).build());
    const WorkflowResult result = client.execute("customer_processing", Context());
    BOOST_TEST(result.status == WorkflowStatus::Completed);
    BOOST_TEST(result.final_context.at<int>("processed_records") == 100);
    BOOST_TEST(client.stats().claimed == 0u);
    // The worker's counter moves when its completer's round trip returns, a moment after the
    // run ended (and the client's wait returned).
    BOOST_TEST(wait_until([&] { return runner.stats().completed >= 1u; }, std::chrono::seconds(5)));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_CASE(notifications_wake_an_idle_worker) {
    // With a 10 s polling backstop, only the tenant's NOTIFY can make the idle worker claim quickly.
    const std::string url = database_url();
    TenantGuard tenant{unique_name("notify"), ""};
    DefaultRunner runner = DefaultRunner::with_schema(url, tenant.schema,
                                                      fast_config(make_registry())
                                                          .poll_interval_min(std::chrono::milliseconds(10000))
                                                          .poll_interval(std::chrono::milliseconds(10000))
                                                          .build());
    // Let the claimer go idle: it finds nothing and starts its long wait.
    BOOST_TEST(wait_until([&] { return runner.stats().claimed == 0; }));
    for (int i = 0; i < 3; ++i) {
        const auto begin = std::chrono::steady_clock::now();
        const WorkflowResult result = runner.execute("customer_processing", Context());
        const auto took = std::chrono::steady_clock::now() - begin;
        BOOST_TEST(result.status == WorkflowStatus::Completed);
        BOOST_TEST(
            (took < std::chrono::seconds(3)),
            "run " << i << " took " << std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << " ms");
    }
}

BOOST_AUTO_TEST_CASE(a_waiting_client_does_not_hold_back_vacuum) {
    // A statement keeps its snapshot while it runs, so a long server-side wait would keep vacuum
    // from removing any row that died after it began. The SDK waits in short slices: while the
    // run is held, the waiting backend's xmin moves on as transactions commit.
    const std::string url = database_url();
    TenantGuard tenant{unique_name("horizon"), ""};
    const std::string worker = unique_name("w");
    auto release = std::make_shared<Gate>();
    auto registry = std::make_shared<Registry>();
    registry->add(Workflow::builder("held").task(Task("held").handler([=](Context&) { release->wait(); })).build());
    DefaultRunner runner =
        DefaultRunner::with_schema(url, tenant.schema, fast_config(registry).worker_name(worker).build());
    ExecutionHandle handle = runner.execute_async("held", Context());
    CancelOnExit cancel_on_failure{handle};
    std::optional<WorkflowResult> result;
    std::thread waiter([&] { result = handle.wait_for(std::chrono::seconds(30)); });

    Connection admin(url);
    const auto waiter_xmin = [&]() -> std::optional<long long> {
        Result r = admin.exec(
            "SELECT backend_xmin::text::bigint FROM pg_stat_activity "
            "WHERE application_name = 'cloacina-sdk client ' || $1 AND wait_event = 'Extension'",
            {Param(worker)});
        if (r.rows() != 1 || r.is_null(0, 0)) return std::nullopt;
        return r.int64(0, 0);
    };
    BOOST_REQUIRE(wait_until([&] { return waiter_xmin().has_value(); }));
    const long long first = *waiter_xmin();
    // Transactions commit meanwhile (each takes an xid); the waiter's horizon must follow.
    const bool moved = wait_until(
        [&] {
            (void)admin.exec("SELECT txid_current()");
            const auto now = waiter_xmin();
            return now && *now > first;
        },
        std::chrono::seconds(10));
    release->open();
    waiter.join();
    BOOST_TEST(moved);
    BOOST_REQUIRE(result.has_value());
    BOOST_TEST(result->status == WorkflowStatus::Completed);
}

BOOST_AUTO_TEST_CASE(heartbeats_keep_a_long_task_leased) {
    // The task runs three times longer than its lease: only heartbeats keep the background worker
    // from taking it back, so it must complete on its first attempt with its handler run once.
    const std::string url = database_url();
    TenantGuard tenant{unique_name("beat"), ""};
    auto runs = std::make_shared<std::atomic<int>>(0);
    auto registry = std::make_shared<Registry>();
    registry->add(Workflow::builder("long_task")
                      .task(Task("slow")
                                .retry(RetryPolicy::fixed(3, std::chrono::milliseconds(10)))
                                .handler([runs](Context& c, const CancellationToken& token) {
                                    ++*runs;
                                    // The work itself: 3 s, interrupted only by cancellation.
                                    const bool cancelled = token.wait_for(std::chrono::seconds(3));
                                    c.insert("cancelled", cancelled);
                                }))
                      .build());
    DefaultRunner runner = DefaultRunner::with_schema(url, tenant.schema,
                                                      fast_config(registry)
                                                          .lease(std::chrono::milliseconds(1000))
                                                          .heartbeat_interval(std::chrono::milliseconds(200))
                                                          .build());
    const WorkflowResult result = runner.execute("long_task", Context());
    BOOST_TEST(result.status == WorkflowStatus::Completed);
    BOOST_TEST(!result.final_context.at<bool>("cancelled"));
    BOOST_TEST(result.task("slow")->attempt == 1);
    BOOST_TEST(runs->load() == 1);
}

BOOST_AUTO_TEST_CASE(sql_tasks_and_handler_tasks_share_a_context) {
    // A "sql" task runs inside the database as the tenant's role; its output (a JSON object from
    // its last statement) reaches the handler task that depends on it.
    const std::string url = database_url();
    DatabaseAdmin admin(Database(url, "", 1));
    const std::string schema = unique_name("mixed");
    TenantGuard guard{schema, schema + "_user"};
    const TenantCredentials credentials = admin.create_tenant(TenantConfig{schema, schema + "_user", ""});
    auto registry = std::make_shared<Registry>();
    registry->add(Workflow::builder("mixed")
                      .task(Task("double_it")
                                .sql("SELECT jsonb_build_object('doubled', ($1->>'n')::int * 2, "
                                     "'who', current_user::text)"))
                      .task(Task("report").depends_on("double_it").handler([](Context& c) {
                          c.insert("report", "doubled=" + std::to_string(c.at<int>("doubled")));
                      }))
                      .build());
    DefaultRunner runner(credentials.connection_string, fast_config(registry).build());
    Context input;
    input.insert("n", 21);
    const WorkflowResult result = runner.execute("mixed", input);
    BOOST_REQUIRE_MESSAGE(result.status == WorkflowStatus::Completed,
                          "status " << result.status << ": " << result.error.value_or(""));
    BOOST_TEST(result.final_context.at<int>("doubled") == 42);
    BOOST_TEST(result.final_context.at<std::string>("who") == schema + "_user");
    BOOST_TEST(result.final_context.at<std::string>("report") == "doubled=42");
}

BOOST_FIXTURE_TEST_CASE(execute_gives_up_after_execution_timeout, Fixture) {
    // No worker handles the task: execute() throws TimeoutError, and the run itself goes on.
    DefaultRunner client = DefaultRunner::with_schema(
        url, tenant.schema,
        fast_config(make_registry()).enable_worker(false).execution_timeout(std::chrono::milliseconds(300)).build());
    runner.shutdown();  // the fixture's worker would otherwise run it
    ExecutionHandle handle = client.execute_async("customer_processing", Context());
    CancelOnExit cancel{handle};
    BOOST_CHECK_THROW(handle.wait(), TimeoutError);
    BOOST_TEST(handle.status() == WorkflowStatus::Running);
    try {
        (void)client.execute("customer_processing", Context());
        BOOST_FAIL("execute did not time out");
    } catch (const TimeoutError& e) {
        BOOST_TEST(e.execution_id() > handle.id());  // says which run, so it can be found again
        BOOST_TEST(client.handle(e.execution_id()).cancel());
    }
}

BOOST_FIXTURE_TEST_CASE(logging_hook_receives_runner_messages, Fixture) {
    auto lines = std::make_shared<std::vector<std::string>>();
    auto mutex = std::make_shared<std::mutex>();
    DefaultRunner logged = DefaultRunner::with_schema(
        url, tenant.schema,
        fast_config(make_registry())
            .worker_name(unique_name("logged"))
            .logger([=](const LogRecord& record) {
                std::lock_guard lock(*mutex);
                lines->push_back(std::string(to_string(record.level)) + " " + record.message);
            })
            .build());
    const std::string name = logged.worker_name();
    logged.shutdown();
    std::lock_guard lock(*mutex);
    auto has = [&](const std::string& text) {
        return std::any_of(lines->begin(), lines->end(),
                           [&](const std::string& l) { return l.find(text) != std::string::npos; });
    };
    BOOST_TEST(has("INFO runner " + name + " started in schema " + tenant.schema));
    BOOST_TEST(has("INFO runner " + name + " shut down"));
}
