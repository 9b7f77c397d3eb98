// signal.cpp — SignalCatcher: signal dispositions that write the signal's number to a pipe.
#include "cloacina/signal.hpp"

#include "cloacina/error.hpp"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>
#include <atomic>
#include <cerrno>
#include <cstring>

namespace cloacina {
namespace {

// The write end of the active catcher's pipe, -1 when none; the only state the handler touches.
std::atomic<int> g_signal_pipe{-1};

extern "C" void on_signal(int signal_number) {
    const int saved_errno = errno;
    const int fd = g_signal_pipe.load();
    if (fd >= 0) {
        const auto byte = static_cast<unsigned char>(signal_number);
        [[maybe_unused]] auto written = write(fd, &byte, 1);  // a full pipe has enough wake-ups in it
    }
    errno = saved_errno;
}

}  // namespace

SignalCatcher::SignalCatcher(std::vector<int> signals) : signals_(std::move(signals)) {
    if (pipe(pipe_) != 0) throw Error(std::string("cannot create the signal pipe: ") + std::strerror(errno));
    for (int fd : pipe_) {
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        fcntl(fd, F_SETFD, FD_CLOEXEC);
    }
    int expected = -1;
    if (!g_signal_pipe.compare_exchange_strong(expected, pipe_[1])) {
        close(pipe_[0]);
        close(pipe_[1]);
        throw Error("another cloacina::SignalCatcher is active in this process");
    }
    struct sigaction action {};
    action.sa_handler = on_signal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART;
    previous_.resize(signals_.size());
    for (std::size_t i = 0; i < signals_.size(); ++i) sigaction(signals_[i], &action, &previous_[i]);
}

SignalCatcher::~SignalCatcher() {
    for (std::size_t i = 0; i < signals_.size(); ++i) sigaction(signals_[i], &previous_[i], nullptr);
    g_signal_pipe.store(-1);
    close(pipe_[0]);
    close(pipe_[1]);
}

int SignalCatcher::wait() { return wait_ms(-1); }

int SignalCatcher::wait_for(std::chrono::milliseconds timeout) {
    return wait_ms(static_cast<int>(std::max<std::chrono::milliseconds::rep>(0, timeout.count())));
}

void SignalCatcher::interrupt() noexcept {
    const unsigned char zero = 0;
    [[maybe_unused]] auto written = write(pipe_[1], &zero, 1);
}

int SignalCatcher::wait_ms(int timeout_ms) {
    for (;;) {
        unsigned char byte = 0;
        if (read(pipe_[0], &byte, 1) == 1) return byte;
        pollfd fd{pipe_[0], POLLIN, 0};
        const int n = poll(&fd, 1, timeout_ms);
        if (n == 0) return 0;
        if (n < 0 && errno != EINTR) throw Error(std::string("waiting for a signal failed: ") + std::strerror(errno));
    }
}

}  // namespace cloacina
