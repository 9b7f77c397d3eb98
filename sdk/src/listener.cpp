// listener.cpp — WakeupListener: the LISTEN that carries a worker's wake-up hints.
#include "listener.hpp"

#include "runner_core.hpp"

namespace cloacina::detail {

using Clock = std::chrono::steady_clock;

WakeupListener::WakeupListener(const RunnerCore& core)
    : core_(core),
      mode_(!core.config.listen_url.empty() ? Mode::Dedicated
            : core.config.pooled            ? Mode::None
                                            : Mode::Shared) {}

void WakeupListener::start(Connection& claimer) {
    if (mode_ == Mode::None) {
        core_.log(LogLevel::Info, "pooled connection and no listen_url: the claimer polls (every " +
                                      std::to_string(core_.config.poll_interval.count()) + " ms at most)");
        return;
    }
    // The channel is the tenant's, whichever connection asks; the claimer's selects the tenant.
    Result r = claimer.exec("SELECT cloacina.notify_channel()");
    if (r.rows() != 1 || r.is_null(0, 0)) return;
    channel_ = std::string(r.text(0, 0));
    if (mode_ == Mode::Shared) {
        listen(claimer);
        return;
    }
    dedicated_.emplace(dedicated_options());
    listen(*dedicated_);
}

ConnectionOptions WakeupListener::dedicated_options() const {
    ConnectionOptions options = core_.role_options("listener " + core_.worker_name());
    options.conninfo = core_.config.listen_url;
    return options;
}

void WakeupListener::listen(Connection& connection) {
    if (!channel_.empty()) (void)connection.exec("LISTEN " + connection.quote_identifier(channel_));
}

int WakeupListener::socket(const Connection& claimer) const noexcept {
    switch (mode_) {
        case Mode::Shared:
            return claimer.socket();
        case Mode::Dedicated:
            return dedicated_ && dedicated_->is_open() ? dedicated_->socket() : -1;
        case Mode::None:
            return -1;
    }
    return -1;
}

std::vector<std::string> WakeupListener::consume(Connection& claimer) {
    switch (mode_) {
        case Mode::Shared:
            return claimer.consume_notifications();
        case Mode::None:
            return {};
        case Mode::Dedicated:
            break;
    }
    if (!dedicated_ || !dedicated_->is_open()) {
        if (Clock::now() < retry_at_ || !reopen_dedicated()) return {};
        return {"ready"};
    }
    try {
        return dedicated_->consume_notifications();
    } catch (const BrokenConnection& e) {
        core_.log(LogLevel::Warn, std::string("listener lost its connection (polling until it is back): ") + e.what());
        dedicated_.reset();
        retry_at_ = Clock::now();
        backoff_ = std::chrono::milliseconds(100);
        return {"ready"};
    }
}

bool WakeupListener::reopen_dedicated() {
    try {
        if (dedicated_)
            dedicated_->reconnect();
        else
            dedicated_.emplace(dedicated_options());
        listen(*dedicated_);
        core_.log(LogLevel::Info, "listener reconnected");
        backoff_ = std::chrono::milliseconds(100);
        return true;
    } catch (const Error& e) {
        dedicated_.reset();
        core_.log(LogLevel::Warn, "listener cannot reconnect (retrying in " + std::to_string(backoff_.count()) +
                                      " ms; polling meanwhile): " + e.what());
        retry_at_ = Clock::now() + backoff_;
        backoff_ = std::min<std::chrono::milliseconds>(backoff_ * 2, core_.config.reconnect_backoff_max);
        return false;
    }
}

void WakeupListener::relisten(Connection& claimer) {
    if (mode_ == Mode::Shared) listen(claimer);
}

}  // namespace cloacina::detail
