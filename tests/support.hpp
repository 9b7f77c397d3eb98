// tests/support.hpp — shared helpers of the SDK test suites: the server URL, unique tenant names,
// tenant clean-up, and waiting on a condition with a deadline (tests never sleep for correctness).
#pragma once

#include <cloacina/cloacina.hpp>

#include <boost/test/unit_test.hpp>

#include <unistd.h>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <string>

namespace test_support {

using namespace std::chrono_literals;

/// The admin (superuser) URL. A suite that needs the server FAILS without it: it never skips.
inline std::string database_url() {
    const char* url = std::getenv("DATABASE_URL");
    BOOST_REQUIRE_MESSAGE(url != nullptr && *url != '\0',
                          "DATABASE_URL is not set: these tests need a PostgreSQL server with the cloacina "
                          "extension (an admin/superuser URL)");
    return url;
}

/// A schema/role name unique to this process and call: "<prefix>_<pid>_<n>".
inline std::string unique_name(const std::string& prefix) {
    static std::atomic<int> counter{0};
    return prefix + "_" + std::to_string(getpid()) + "_" + std::to_string(++counter);
}

/// Removes a tenant if present; clean-up must not mask the test's own outcome.
inline void drop_tenant(const std::string& schema, const std::string& username = {}) {
    try {
        cloacina::DatabaseAdmin admin(cloacina::Database(database_url(), "", 1));
        admin.remove_tenant(schema, username);
    } catch (const std::exception& e) {
        BOOST_TEST_MESSAGE("clean-up of tenant " << schema << " failed: " << e.what());
    }
}

/// Drops a tenant at the end of a scope.
struct TenantGuard {
    std::string schema;
    std::string username;
    ~TenantGuard() { drop_tenant(schema, username); }
};

/// Cancels a run at the end of a scope (a no-op when it already ended): a tenant with unfinished
/// runs cannot be removed, so a failing test must not leave one behind. Declare after the
/// TenantGuard, so that it runs first.
struct CancelOnExit {
    cloacina::ExecutionHandle handle;
    ~CancelOnExit() {
        try {
            (void)handle.cancel();
        } catch (const std::exception& e) {
            BOOST_TEST_MESSAGE("cancelling run " << handle.id() << " failed: " << e.what());
        }
    }
};

/// Polls `condition` every few milliseconds until it holds or `timeout` passes; returns whether it held.
template <class Condition>
bool wait_until(Condition&& condition, std::chrono::milliseconds timeout = 20s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    std::mutex m;
    std::condition_variable never;
    for (;;) {
        if (condition()) return true;
        if (std::chrono::steady_clock::now() >= deadline) return false;
        std::unique_lock lock(m);
        never.wait_for(lock, 5ms);
    }
}

/// A one-shot gate handlers can wait on (with a deadline) until the test opens it.
class Gate {
public:
    void open() {
        {
            std::lock_guard lock(mutex_);
            open_ = true;
        }
        cv_.notify_all();
    }
    /// True when opened before `timeout`.
    bool wait(std::chrono::milliseconds timeout = 20s) {
        std::unique_lock lock(mutex_);
        return cv_.wait_for(lock, timeout, [&] { return open_; });
    }
    bool is_open() {
        std::lock_guard lock(mutex_);
        return open_;
    }

private:
    std::mutex mutex_;
    std::condition_variable cv_;
    bool open_ = false;
};

/// A fast-reacting runner configuration for tests (short poll backstop, short lease).
inline cloacina::DefaultRunnerConfig::Builder fast_config(std::shared_ptr<cloacina::Registry> registry) {
    return cloacina::DefaultRunnerConfig::builder()
        .registry(std::move(registry))
        .poll_interval(200ms)
        .poll_interval_min(10ms)
        .execution_timeout(60s)
        .shutdown_timeout(10s);
}

}  // namespace test_support
