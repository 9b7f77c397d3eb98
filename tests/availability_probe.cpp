// availability_probe.cpp — the SDK round trip of the noisy-neighbour suite (regress/t/104_availability.pl).
// It connects with a tenant's own connection string, registers a one-task handler workflow and runs
// it `count` times, one run after the other, through DefaultRunner::execute(), timing each call
// (submit, claim, handler, completion, wait). It prints one line
//     p50_ms=<median> max_ms=<max>
// and exits 0 when every run completed, 1 when some did not (a run that did not end within the
// runner's execution_timeout counts with the time it was waited for).
#include <cloacina/cloacina.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

int main(int argc, char** argv) {
    if (argc != 3) {
        std::cerr << "usage: availability_probe <tenant-url> <count>\n";
        return 2;
    }
    using namespace std::chrono_literals;
    using Clock = std::chrono::steady_clock;
    const std::string url = argv[1];
    const int count = std::atoi(argv[2]);
    if (count < 1) {
        std::cerr << "count must be at least 1\n";
        return 2;
    }
    cloacina::set_log_level(cloacina::LogLevel::Error);

    auto registry = std::make_shared<cloacina::Registry>();
    registry->add(
        cloacina::Workflow::builder("sdk_probe")
            .task(cloacina::Task("pong").handler([](cloacina::Context& context) { context.upsert("pong", true); }))
            .build());
    // A stall shows as a slow run, not a hung probe: execute() gives up after execution_timeout.
    const auto config = cloacina::DefaultRunnerConfig::builder()
                            .registry(registry)
                            .worker_name("availability-probe")
                            .db_pool_size(1)
                            .max_concurrent_tasks(1)
                            .claim_batch(1)
                            .execution_timeout(10s)
                            .shutdown_timeout(2s)
                            .build();

    std::vector<double> latencies_ms;
    int incomplete = 0;
    try {
        cloacina::DefaultRunner runner(url, config);
        for (int i = 0; i < count; ++i) {
            const auto start = Clock::now();
            try {
                const auto result = runner.execute("sdk_probe", cloacina::Context());
                if (result.status != cloacina::WorkflowStatus::Completed) {
                    std::cerr << "run " << result.execution_id << " ended " << result.status << "\n";
                    ++incomplete;
                }
            } catch (const cloacina::Error& e) {
                std::cerr << "run " << i << ": " << e.what() << "\n";
                ++incomplete;
            }
            latencies_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
        }
        runner.shutdown();
    } catch (const std::exception& e) {
        std::cerr << "runner: " << e.what() << "\n";
        return 1;
    }

    std::sort(latencies_ms.begin(), latencies_ms.end());
    const std::size_t n = latencies_ms.size();
    const double median = n % 2 ? latencies_ms[n / 2] : (latencies_ms[n / 2 - 1] + latencies_ms[n / 2]) / 2;
    std::printf("p50_ms=%.2f max_ms=%.2f\n", median, latencies_ms.back());
    return incomplete == 0 ? 0 : 1;
}
