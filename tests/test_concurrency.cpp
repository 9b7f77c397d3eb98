// test_concurrency.cpp — the concurrency cap: with max_concurrent_tasks = 8, never more than 8
// handlers run at once, and the cap is reached when enough work is ready; the local queue and
// the results waiting for the completer are bounded too.
#define BOOST_TEST_MODULE concurrency
#include "support.hpp"

#include <algorithm>
#include <set>
#include <thread>

using namespace cloacina;
using namespace test_support;

BOOST_AUTO_TEST_CASE(never_more_than_max_concurrent_tasks) {
    const std::string url = database_url();
    TenantGuard tenant{unique_name("cap"), ""};
    constexpr int kCap = 8;
    constexpr int kRuns = 30;
    auto active = std::make_shared<std::atomic<int>>(0);
    auto peak = std::make_shared<std::atomic<int>>(0);
    auto done = std::make_shared<std::atomic<int>>(0);
    auto registry = std::make_shared<Registry>();
    registry->add(
        Workflow::builder("capped")
            .task(Task("hold").handler([=](Context& c, const CancellationToken& token) {
                const int now = ++*active;
                int seen = peak->load();
                while (now > seen && !peak->compare_exchange_weak(seen, now)) {
                }
                // Hold the slot until the cap is reached (or all remaining work is running),
                // so that the test observes the real peak.
                wait_until(
                    [&] { return peak->load() >= kCap || done->load() + active->load() >= kRuns || token.cancelled(); },
                    std::chrono::seconds(10));
                c.insert("peak_seen", peak->load());
                --*active;
                ++*done;
            }))
            .build());
    DefaultRunner runner = DefaultRunner::with_schema(
        url, tenant.schema, fast_config(registry).max_concurrent_tasks(kCap).claim_batch(16).db_pool_size(5).build());

    std::vector<Context> contexts(kRuns);
    auto handles = runner.execute_batch("capped", contexts);
    BOOST_REQUIRE(handles.size() == static_cast<std::size_t>(kRuns));
    for (auto& h : handles) BOOST_TEST(h.wait().status == WorkflowStatus::Completed);
    BOOST_TEST(peak->load() == kCap);
    BOOST_TEST(runner.stats().max_running == static_cast<std::size_t>(kCap));
    BOOST_TEST(done->load() == kRuns);
}

BOOST_AUTO_TEST_CASE(two_runners_share_the_work_without_double_claims) {
    const std::string url = database_url();
    TenantGuard tenant{unique_name("share"), ""};
    constexpr int kRuns = 40;
    auto executions = std::make_shared<std::mutex>();
    auto seen = std::make_shared<std::map<std::string, int>>();
    auto registry = std::make_shared<Registry>();
    registry->add(Workflow::builder("shared_work")
                      .task(Task("once").handler([=](Context& c) {
                          std::lock_guard lock(*executions);
                          ++(*seen)[c.at<std::string>("item")];
                      }))
                      .build());
    DefaultRunner a =
        DefaultRunner::with_schema(url, tenant.schema, fast_config(registry).max_concurrent_tasks(3).build());
    DefaultRunner b =
        DefaultRunner::with_schema(url, tenant.schema, fast_config(registry).max_concurrent_tasks(3).build());
    std::vector<Context> contexts;
    for (int i = 0; i < kRuns; ++i) {
        Context c;
        c.insert("item", "item-" + std::to_string(i));
        contexts.push_back(std::move(c));
    }
    for (auto& h : a.execute_batch("shared_work", contexts)) BOOST_TEST(h.wait().status == WorkflowStatus::Completed);
    std::lock_guard lock(*executions);
    BOOST_TEST(seen->size() == static_cast<std::size_t>(kRuns));
    for (const auto& [item, count] : *seen) BOOST_TEST(count == 1, item << " ran " << count << " times");
    // Counters move when the completer's round trip returns, a moment after the run ends.
    BOOST_TEST(
        wait_until([&] { return a.stats().completed + b.stats().completed == static_cast<std::uint64_t>(kRuns); },
                   std::chrono::seconds(5)));
}

// prefetch: the runner holds at most max_concurrent_tasks + prefetch claimed tasks that no handler
// has finished, still runs at most max_concurrent_tasks handlers, and claims in batches while its
// handlers are busy.
BOOST_AUTO_TEST_CASE(prefetch_bounds_the_local_queue_and_batches_claims) {
    const std::string url = database_url();
    TenantGuard tenant{unique_name("prefetch"), ""};
    constexpr int kHandlers = 2;
    constexpr int kPrefetch = 6;
    constexpr int kRuns = 60;
    auto active = std::make_shared<std::atomic<int>>(0);
    auto peak = std::make_shared<std::atomic<int>>(0);
    auto finished_mutex = std::make_shared<std::mutex>();
    auto finished = std::make_shared<std::set<std::string>>();  // items whose handler returned
    auto registry = std::make_shared<Registry>();
    registry->add(Workflow::builder("queued")
                      .task(Task("work").handler([=](Context& c) {
                          const int now = ++*active;
                          int seen = peak->load();
                          while (now > seen && !peak->compare_exchange_weak(seen, now)) {
                          }
                          std::this_thread::sleep_for(std::chrono::milliseconds(10));  // the work itself
                          --*active;
                          std::lock_guard lock(*finished_mutex);
                          finished->insert(c.at<std::string>("item"));
                      }))
                      .build());
    DefaultRunner runner = DefaultRunner::with_schema(
        url, tenant.schema,
        fast_config(registry).max_concurrent_tasks(kHandlers).prefetch(kPrefetch).claim_batch(8).build());

    // Watch the claimed tasks (running on the server) that no handler has finished yet: the
    // server's view is read first, so every task counted was unfinished at that moment.
    std::atomic<bool> watching{true};
    std::atomic<long> most_held{0};
    std::thread watcher([&] {
        Connection c(url);
        const std::string sql =
            "SELECT input ->> 'item' FROM " + c.quote_identifier(tenant.schema) + ".tasks WHERE status = 'running'";
        while (watching.load()) {
            Result running = c.exec(sql);
            long held = 0;
            std::lock_guard lock(*finished_mutex);
            for (int i = 0; i < running.rows(); ++i) held += finished->count(std::string(running.text(i, 0))) == 0;
            most_held = std::max(most_held.load(), held);
        }
    });
    std::vector<Context> contexts;
    for (int i = 0; i < kRuns; ++i) {
        Context c;
        c.insert("item", "item-" + std::to_string(i));
        contexts.push_back(std::move(c));
    }
    auto handles = runner.execute_batch("queued", contexts);
    for (auto& h : handles) BOOST_TEST(h.wait().status == WorkflowStatus::Completed);
    watching = false;
    watcher.join();

    BOOST_TEST(peak->load() <= kHandlers);
    BOOST_TEST(most_held.load() <= kHandlers + kPrefetch);
    BOOST_TEST(most_held.load() > kHandlers, "the local queue was used: " << most_held.load() << " held at once");
    const auto stats = runner.stats();
    BOOST_TEST(stats.claimed >= static_cast<std::uint64_t>(kRuns));
    BOOST_TEST(stats.claimed >= 2 * stats.claim_round_trips,
               stats.claimed << " tasks in " << stats.claim_round_trips << " claims");
}

BOOST_AUTO_TEST_CASE(results_waiting_for_the_completer_hold_their_slots) {
    // While completions cannot get through, a runner must not keep claiming: every claimed task
    // stays held (and heartbeated) until its result is submitted. Results waiting beyond one
    // capacity's worth take slots, so at most twice the capacity is held.
    const std::string url = database_url();
    TenantGuard tenant{unique_name("backlog"), ""};
    constexpr int kHandlers = 2;
    constexpr int kRuns = 40;
    auto registry = std::make_shared<Registry>();
    registry->add(Workflow::builder("quick").task(Task("work").handler([](Context&) {})).build());
    DefaultRunner client =
        DefaultRunner::with_schema(url, tenant.schema, fast_config(registry).enable_worker(false).build());
    auto handles = client.execute_batch("quick", std::vector<Context>(kRuns));

    // Completions lock their runs first: with the runs' table locked they all wait.
    Connection blocker(url);
    blocker.exec("BEGIN");
    blocker.exec("LOCK TABLE " + blocker.quote_identifier(tenant.schema) + ".executions IN EXCLUSIVE MODE");
    DefaultRunner worker = DefaultRunner::with_schema(
        url, tenant.schema, fast_config(registry).max_concurrent_tasks(kHandlers).claim_batch(8).build());
    Connection watcher(url);
    const std::string held_sql =
        "SELECT count(*) FROM " + watcher.quote_identifier(tenant.schema) + ".tasks WHERE status = 'running'";
    const auto held = [&] { return watcher.exec(held_sql).int64(0, 0); };
    BOOST_TEST(wait_until([&] { return held() >= 2 * kHandlers - 1; }));
    // Every handler has long returned; without the bound the claimer would take all 40 at once.
    BOOST_TEST(!wait_until([&] { return held() > 2 * kHandlers; }, std::chrono::seconds(1)),
               held() << " tasks held with " << kHandlers << " slots");
    blocker.exec("COMMIT");
    for (auto& h : handles) BOOST_TEST(h.wait().status == WorkflowStatus::Completed);
}
