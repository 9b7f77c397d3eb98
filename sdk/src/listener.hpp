// listener.hpp (private) — where a worker's wake-up notifications come from. By default the claimer
// LISTENs on its own connection. With listen_url it LISTENs on a dedicated connection to that
// (direct) URL, which it reopens after a failure while the claimer polls. With `pooled` and no
// listen_url there is nothing to listen on (a transaction-pooling proxy cannot carry a LISTEN):
// the claimer polls.
#pragma once

#include "cloacina/connection.hpp"

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace cloacina::detail {

class RunnerCore;

class WakeupListener {
public:
    enum class Mode { Shared, Dedicated, None };

    explicit WakeupListener(const RunnerCore& core);

    /// LISTENs on the tenant's channel (its name asked on `claimer`). A dedicated connection that
    /// cannot be opened throws, so that a wrong listen_url fails the runner's start.
    void start(Connection& claimer);
    /// The socket to poll for notifications, -1 when there is none.
    [[nodiscard]] int socket(const Connection& claimer) const noexcept;
    /// The payloads received so far. A shared connection's failure throws BrokenConnection (the
    /// claimer reconnects it, then calls relisten()); a dedicated one is reopened here, with
    /// backoff, and a reopening answers "ready" (notifications may have been missed meanwhile).
    std::vector<std::string> consume(Connection& claimer);
    /// LISTENs again after the claimer reopened its connection (shared mode; otherwise nothing).
    void relisten(Connection& claimer);
    [[nodiscard]] Mode mode() const noexcept { return mode_; }

private:
    void listen(Connection& connection);
    [[nodiscard]] ConnectionOptions dedicated_options() const;
    bool reopen_dedicated();

    const RunnerCore& core_;
    Mode mode_;
    std::string channel_;
    std::optional<Connection> dedicated_;
    std::chrono::steady_clock::time_point retry_at_{};
    std::chrono::milliseconds backoff_{100};
};

}  // namespace cloacina::detail
