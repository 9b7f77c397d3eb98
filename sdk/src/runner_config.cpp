// runner_config.cpp — DefaultRunnerConfig: its builder, its validation, and the defaults it takes
// from the environment (CLOACINA_POOLED, CLOACINA_LISTEN_URL).
#include "cloacina/error.hpp"
#include "cloacina/runner.hpp"

#include <algorithm>
#include <cctype>
#include <cstdlib>

namespace cloacina {

DefaultRunnerConfig::Builder DefaultRunnerConfig::builder() { return Builder(); }

DefaultRunnerConfig DefaultRunnerConfig::Builder::build() const {
    config_.validate();
    return config_;
}

void DefaultRunnerConfig::validate() const {
    using namespace std::chrono_literals;
    if (db_pool_size == 0) throw ConfigError("db_pool_size must be at least 1");
    if (max_concurrent_tasks == 0) throw ConfigError("max_concurrent_tasks must be at least 1");
    if (claim_batch == 0 || claim_batch > 1000) throw ConfigError("claim_batch must be between 1 and 1000");
    if (prefetch > 10000) throw ConfigError("prefetch must be at most 10000");
    if (lease < 100ms) throw ConfigError("lease must be at least 100 ms");
    if (heartbeat_interval.count() < 0 || (heartbeat_interval.count() > 0 && heartbeat_interval >= lease))
        throw ConfigError("heartbeat_interval must be shorter than the lease");
    if (poll_interval_min.count() <= 0 || poll_interval < poll_interval_min)
        throw ConfigError("poll_interval must be at least poll_interval_min, which must be positive");
    if (shutdown_timeout.count() < 0) throw ConfigError("shutdown_timeout must not be negative");
    if (execution_timeout.count() <= 0) throw ConfigError("execution_timeout must be positive");
    if (reconnect_backoff_max.count() <= 0) throw ConfigError("reconnect_backoff_max must be positive");
}

namespace detail {

bool pooled_from_environment() {
    const char* value = std::getenv("CLOACINA_POOLED");
    if (value == nullptr) return false;
    std::string v(value);
    std::transform(v.begin(), v.end(), v.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return v == "1" || v == "true" || v == "yes" || v == "on";
}

std::string listen_url_from_environment() {
    const char* value = std::getenv("CLOACINA_LISTEN_URL");
    return value == nullptr ? std::string() : std::string(value);
}

}  // namespace detail
}  // namespace cloacina
