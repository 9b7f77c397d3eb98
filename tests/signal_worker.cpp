// signal_worker.cpp — a worker process for test_signals: it joins tenant argv[2] through the admin
// URL argv[1] and runs until SIGINT/SIGTERM (run_until_signal) with a drain deadline of argv[3] ms.
// Its handler ("drain_me.work") says "started", then returns when a line arrives on stdin (or
// when its token is cancelled). Log records and the final report go to stdout, one line each.
#include <cloacina/cloacina.hpp>

#include <poll.h>
#include <unistd.h>

#include <chrono>
#include <iostream>
#include <mutex>
#include <string>

namespace {

std::mutex output_mutex;

void say(const std::string& line) {
    std::lock_guard lock(output_mutex);
    std::cout << line << std::endl;
}

// Waits (in slices, so that a cancellation is seen) for a line on stdin.
bool line_on_stdin(const cloacina::CancellationToken& token) {
    while (!token.cancelled()) {
        pollfd fd{STDIN_FILENO, POLLIN, 0};
        if (poll(&fd, 1, 50) > 0) {
            std::string line;
            return static_cast<bool>(std::getline(std::cin, line));
        }
    }
    return false;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 4) {
        std::cerr << "usage: cloacina_test_signal_worker <admin-url> <schema> <drain-ms>\n";
        return 2;
    }
    using namespace std::chrono_literals;
    cloacina::set_log_handler([](const cloacina::LogRecord& record) { say("log " + cloacina::to_string(record)); });
    auto registry = std::make_shared<cloacina::Registry>();
    registry->add(cloacina::Workflow::builder("drain_me")
                      .task(cloacina::Task("work")
                                .retry(cloacina::RetryPolicy::fixed(3, 10ms))
                                .handler([](cloacina::Context& context, const cloacina::CancellationToken& token) {
                                    say("started");
                                    if (!line_on_stdin(token)) token.throw_if_cancelled();
                                    context.insert("finished", true);
                                }))
                      .build());
    cloacina::DefaultRunner runner =
        cloacina::DefaultRunner::with_schema(argv[1], argv[2],
                                             cloacina::DefaultRunnerConfig::builder()
                                                 .registry(registry)
                                                 .poll_interval(100ms)
                                                 .poll_interval_min(10ms)
                                                 .shutdown_timeout(std::chrono::milliseconds(std::stol(argv[3])))
                                                 .build());
    const cloacina::ShutdownReport report = runner.run_until_signal();
    say("report drained=" + std::to_string(report.drained) + " abandoned=" + std::to_string(report.abandoned) +
        " signal=" + std::to_string(report.signal));
    return 0;
}
