// reliability_isolation_probe.cpp — the SDK side of the isolation matrix (regress/t/101_isolation.pl).
// It connects with one tenant's own connection string (the attacker) and tries to reach another
// tenant (the victim) through every SDK path: a runner whose handlers carry the victim's workflow
// names, results and handles of the victim's run ids, with_schema() on the victim's schema, the
// admin API, and raw statements on an SDK connection. Each attempt prints one line
//     probe <label> clean|crossed <detail>
// and the TAP test counts them ("crossed" = the attacker read or changed the victim's data).
#include <cloacina/cloacina.hpp>

#include <boost/json/serialize.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <iostream>
#include <memory>
#include <string>

namespace {

void report(const std::string& label, bool crossed, const std::string& detail) {
    std::string flat = detail;
    for (char& c : flat)
        if (c == '\n') c = ' ';
    std::cout << "probe " << label << ' ' << (crossed ? "crossed" : "clean") << ' ' << flat << std::endl;
}

// Runs `attempt`, which returns true when it reached the victim's data. An exception is a refusal.
template <class Attempt>
void probe(const std::string& label, Attempt&& attempt) {
    try {
        const bool crossed = attempt();
        report(label, crossed, crossed ? "reached the victim" : "no victim data");
    } catch (const cloacina::Error& e) {
        report(label, false, std::string("refused ") + std::string(e.sqlstate()) + " " + e.what());
    } catch (const std::exception& e) {
        report(label, false, std::string("refused ") + e.what());
    }
}

template <class Json>
bool mentions(const Json& v, const std::string& marker) {
    return boost::json::serialize(v).find(marker) != std::string::npos;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 5) {
        std::cerr
            << "usage: reliability_isolation_probe <attacker-url> <victim-schema> <victim-run-id> <victim-marker>\n";
        return 2;
    }
    using namespace std::chrono_literals;
    const std::string url = argv[1];
    const std::string victim = argv[2];
    const std::int64_t victim_run = std::stoll(argv[3]);
    const std::string marker = argv[4];
    cloacina::set_log_level(cloacina::LogLevel::Error);

    // A runner of the attacker that has handlers for the victim's workflow name: it must only ever
    // see the attacker's own tasks, while the victim's tasks of that name are ready.
    auto seen_victim = std::make_shared<std::atomic<int>>(0);
    auto ran = std::make_shared<std::atomic<int>>(0);
    auto handler = [seen_victim, ran, marker](cloacina::Context& context) {
        ++*ran;
        if (mentions(context.data(), marker)) ++*seen_victim;
        context.upsert("handled_by_attacker", true);
    };
    auto registry = std::make_shared<cloacina::Registry>();
    registry->add(cloacina::Workflow::builder("secret_work")
                      .task(cloacina::Task("s1").handler(handler))
                      .task(cloacina::Task("s2").depends_on("s1").handler(handler))
                      .build());
    try {
        cloacina::DefaultRunner runner(url, cloacina::DefaultRunnerConfig::builder()
                                                .registry(registry)
                                                .lease(2s)
                                                .poll_interval(50ms)
                                                .max_concurrent_tasks(4)
                                                .execution_timeout(60s)
                                                .build());
        probe("sdk-runner-claims-only-own-tasks", [&] {
            cloacina::Context own;
            own.insert("own", true);
            const auto result = runner.execute("secret_work", own);
            if (result.status != cloacina::WorkflowStatus::Completed)
                throw std::runtime_error("positive control: the attacker's own run did not complete");
            return seen_victim->load() > 0;
        });
        probe("sdk-result-of-victim-run-id", [&] {
            const auto result = runner.result(victim_run);
            return mentions(result.final_context.data(), marker) ||
                   std::any_of(result.task_results.begin(), result.task_results.end(),
                               [&](const cloacina::TaskResult& t) { return mentions(t.output, marker); });
        });
        probe("sdk-handle-status-of-victim-run-id", [&] {
            auto handle = runner.handle(victim_run);
            (void)handle.status();
            return false;  // the victim's run is checked unchanged by the TAP test
        });
        probe("sdk-execute-victim-workflow-name", [&] {
            cloacina::Context c;
            const auto result = runner.execute("secret_work", c);
            return mentions(result.final_context.data(), marker);
        });
        runner.shutdown();
    } catch (const std::exception& e) {
        std::cerr << "the attacker's own runner failed: " << e.what() << "\n";
        return 1;
    }

    probe("sdk-with-schema-on-victim", [&] {
        cloacina::DefaultRunner r = cloacina::DefaultRunner::with_schema(
            url, victim, cloacina::DefaultRunnerConfig::builder().enable_worker(false).build());
        const auto result = r.result(victim_run);
        return mentions(result.final_context.data(), marker) || !result.task_results.empty();
    });
    probe("sdk-admin-remove-victim", [&] {
        cloacina::DatabaseAdmin admin(cloacina::Database(url, "", 1));
        admin.remove_tenant(victim);
        return true;
    });
    probe("sdk-admin-create-tenant", [&] {
        cloacina::DatabaseAdmin admin(cloacina::Database(url, "", 1));
        (void)admin.create_tenant(cloacina::TenantConfig{"evil_from_sdk", "evil_sdk_user", ""});
        return true;
    });
    probe("sdk-admin-tenant-exists-victim", [&] {
        cloacina::DatabaseAdmin admin(cloacina::Database(url, "", 1));
        return admin.tenant_exists(victim);  // true would mean the registry is readable
    });
    probe("sdk-connection-select-victim-tasks", [&] {
        cloacina::Connection c(url);
        auto r = c.exec("SELECT input::text FROM " + c.quote_identifier(victim) + ".tasks");
        return r.rows() > 0;
    });
    probe("sdk-connection-claim-in-victim", [&] {
        cloacina::Connection c(url);
        c.exec("SELECT pg_catalog.set_config('search_path', $1, false)", {victim});
        auto r = c.exec("SELECT context::text FROM cloacina.claim('thief', NULL, 10)");
        return r.rows() > 0;
    });
    probe("sdk-connection-engine-execute-victim", [&] {
        cloacina::Connection c(url);
        auto r = c.exec("SELECT cloacina._execute($1, 'secret_work', '{}', '{}')", {victim});
        return r.rows() > 0;
    });
    probe("sdk-connection-victim-channel", [&] {
        cloacina::Connection c(url);
        c.exec("SELECT pg_catalog.set_config('search_path', $1, false)", {victim});
        auto r = c.exec("SELECT cloacina.notify_channel()");
        return r.rows() > 0 && !r.is_null(0, 0);
    });
    return 0;
}
