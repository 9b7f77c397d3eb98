// helper_worker.cpp — a worker process for test_lease_recovery: it joins tenant argv[2] through the
// admin URL argv[1] with a short lease and runs a handler that never finishes, until it is killed.
#include <cloacina/cloacina.hpp>

#include <chrono>
#include <iostream>
#include <thread>

int main(int argc, char** argv) {
    if (argc != 3) {
        std::cerr << "usage: cloacina_test_worker <admin-url> <schema>\n";
        return 2;
    }
    using namespace std::chrono_literals;
    auto registry = std::make_shared<cloacina::Registry>();
    registry->add(cloacina::Workflow::builder("lease_victim")
                      .task(cloacina::Task("work")
                                .retry(cloacina::RetryPolicy::fixed(3, 10ms))
                                .handler([](cloacina::Context&, const cloacina::CancellationToken& token) {
                                    std::cout << "started" << std::endl;
                                    token.wait_for(std::chrono::hours(1));  // killed before this returns
                                }))
                      .build());
    cloacina::DefaultRunner runner = cloacina::DefaultRunner::with_schema(
        argv[1], argv[2],
        cloacina::DefaultRunnerConfig::builder().registry(registry).lease(2s).poll_interval(100ms).build());
    std::this_thread::sleep_for(std::chrono::hours(1));  // a stand-in for a real worker's main loop
    return 0;
}
