// cloacina/signal.hpp — catching the signals that ask a worker process to stop (SIGINT, SIGTERM),
// for DefaultRunner::run_until_signal() and for programs that run several runners.
#pragma once

#include <chrono>
#include <csignal>
#include <vector>

namespace cloacina {

/// While it lives, the given signals no longer take their usual action: each one wakes wait().
/// The previous dispositions come back when it is destroyed. One SignalCatcher at a time per
/// process (a second one throws cloacina::Error). The signal handler only writes a byte to a pipe,
/// so any thread may receive the signal.
class SignalCatcher {
public:
    explicit SignalCatcher(std::vector<int> signals = {SIGINT, SIGTERM});
    ~SignalCatcher();
    SignalCatcher(const SignalCatcher&) = delete;
    SignalCatcher& operator=(const SignalCatcher&) = delete;

    /// Blocks until one of the signals arrives and returns its number, or 0 after interrupt().
    int wait();
    /// Like wait(), for at most `timeout`; 0 when nothing arrived.
    int wait_for(std::chrono::milliseconds timeout);
    /// Wakes a wait() (from another thread), which returns 0. Async-signal-safe.
    void interrupt() noexcept;

private:
    int wait_ms(int timeout_ms);
    std::vector<int> signals_;
    std::vector<struct sigaction> previous_;
    int pipe_[2] = {-1, -1};
};

}  // namespace cloacina
