// reliability_fault_worker.cpp — a worker process for the faults-under-load test
// (regress/t/103_faults.pl). It runs the handlers of two workflows in one tenant, through
// cloacina::DefaultRunner on the tenant's own connection string, until it is killed:
//   single: one task "only";
//   dag:    a -> (b, c) -> d.
// Every handler execution appends one line "<run-tag> <task> <nonce>" to a record file (O_APPEND,
// one write(2) per line, so lines of concurrent processes never interleave) and puts the same
// nonce into its output, so the test can prove that every accepted output came from a handler
// execution that really happened ("work not lost") and count executions.
// The test kills it with SIGKILL, stops it with SIGSTOP, and restarts the server under it; it must
// simply carry on (the runner reconnects), or exit non-zero if it cannot start within a minute.
#include <cloacina/cloacina.hpp>

#include <fcntl.h>
#include <unistd.h>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstring>
#include <iostream>
#include <memory>
#include <random>
#include <string>
#include <thread>

namespace {

std::atomic<bool> stop_requested{false};
void on_term(int) { stop_requested = true; }

class RecordFile {
public:
    explicit RecordFile(const std::string& path) : fd_(::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644)) {
        if (fd_ < 0) throw std::runtime_error("cannot open " + path + ": " + std::strerror(errno));
    }
    ~RecordFile() { ::close(fd_); }
    RecordFile(const RecordFile&) = delete;
    RecordFile& operator=(const RecordFile&) = delete;
    void append(const std::string& line) {
        if (::write(fd_, line.data(), line.size()) != static_cast<ssize_t>(line.size()))
            throw std::runtime_error("short write to the record file");
    }

private:
    int fd_;
};

}  // namespace

int main(int argc, char** argv) {
    if (argc != 6) {
        std::cerr
            << "usage: reliability_fault_worker <tenant-url> <worker-name> <record-file> <work-ms-min> <work-ms-max>\n";
        return 2;
    }
    const int work_min = std::stoi(argv[4]);
    const int work_max = std::stoi(argv[5]);
    using namespace std::chrono_literals;
    const std::string url = argv[1];
    const std::string name = argv[2];
    auto records = std::make_shared<RecordFile>(argv[3]);
    std::signal(SIGTERM, on_term);
    cloacina::set_log_level(cloacina::LogLevel::Error);

    auto counter = std::make_shared<std::atomic<std::uint64_t>>(0);
    auto make_handler = [records, counter, name, work_min, work_max](std::string task) {
        return [records, counter, name, task, work_min, work_max](cloacina::Context& context,
                                                                  const cloacina::CancellationToken& token) {
            thread_local std::mt19937 rng{std::random_device{}()};
            // a few milliseconds of "work", so that kills and stops find handlers in flight
            token.wait_for(std::chrono::milliseconds(std::uniform_int_distribution<int>(work_min, work_max)(rng)));
            token.throw_if_cancelled();
            const std::string nonce = name + "." + std::to_string(::getpid()) + "." + std::to_string(++*counter);
            const auto run = context.value_or<std::int64_t>("run", -1);
            records->append(std::to_string(run) + " " + task + " " + nonce + "\n");
            context.upsert(task + "_nonce", nonce);
        };
    };
    const auto retry = cloacina::RetryPolicy::fixed(25, 10ms);
    auto registry = std::make_shared<cloacina::Registry>();
    registry->add(cloacina::Workflow::builder("single")
                      .task(cloacina::Task("only").retry(retry).handler(make_handler("only")))
                      .build());
    registry->add(cloacina::Workflow::builder("dag")
                      .task(cloacina::Task("a").retry(retry).handler(make_handler("a")))
                      .task(cloacina::Task("b").depends_on("a").retry(retry).handler(make_handler("b")))
                      .task(cloacina::Task("c").depends_on("a").retry(retry).handler(make_handler("c")))
                      .task(cloacina::Task("d").dependencies({"b", "c"}).retry(retry).handler(make_handler("d")))
                      .build());
    const auto config = cloacina::DefaultRunnerConfig::builder()
                            .registry(registry)
                            .worker_name(name)
                            .lease(2s)
                            .max_concurrent_tasks(8)
                            .claim_batch(8)
                            .db_pool_size(1)
                            .poll_interval(200ms)
                            .reconnect_backoff_max(500ms)
                            .shutdown_timeout(5s)
                            .build();

    // The server may be restarting when this process starts: retry the start for a while.
    std::unique_ptr<cloacina::DefaultRunner> runner;
    const auto give_up = std::chrono::steady_clock::now() + 60s;
    while (!runner) {
        try {
            runner = std::make_unique<cloacina::DefaultRunner>(url, config);
        } catch (const std::exception& e) {
            if (std::chrono::steady_clock::now() > give_up) {
                std::cerr << name << ": cannot start: " << e.what() << "\n";
                return 1;
            }
            std::this_thread::sleep_for(200ms);  // start-up backoff, not a correctness wait
        }
    }
    std::cout << "worker " << name << " pid " << ::getpid() << " started" << std::endl;
    while (!stop_requested) std::this_thread::sleep_for(100ms);  // the worker threads do the work
    runner->shutdown();
    return 0;
}
