// test_signals.cpp — DefaultRunner::run_until_signal in a worker process (signal_worker.cpp) that
// receives real signals: the first stops claiming and drains the running handler, which completes
// its task; a second one cuts the drain short and releases the task for a retry.
#define BOOST_TEST_MODULE signals
#include "support.hpp"

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/wait.h>

#include <csignal>

extern char** environ;

using namespace cloacina;
using namespace test_support;

namespace {

/// The worker process, its stdin and its stdout.
class Worker {
public:
    Worker(const std::string& url, const std::string& schema, std::chrono::milliseconds drain) {
        int in[2], out[2];
        BOOST_REQUIRE(pipe(in) == 0 && pipe(out) == 0);
        posix_spawn_file_actions_t actions;
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_adddup2(&actions, in[0], STDIN_FILENO);
        posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
        for (int fd : {in[0], in[1], out[0], out[1]}) posix_spawn_file_actions_addclose(&actions, fd);
        std::string program = CLOACINA_TEST_SIGNAL_WORKER, url_arg = url, schema_arg = schema,
                    drain_arg = std::to_string(drain.count());
        char* args[] = {program.data(), url_arg.data(), schema_arg.data(), drain_arg.data(), nullptr};
        const int spawned = posix_spawn(&pid_, program.c_str(), &actions, nullptr, args, environ);
        posix_spawn_file_actions_destroy(&actions);
        close(in[0]);
        close(out[1]);
        stdin_ = in[1];
        stdout_ = out[0];
        BOOST_REQUIRE_MESSAGE(spawned == 0, "cannot start " << program);
    }
    ~Worker() {
        if (pid_ > 0) {  // a failed test must not leave it behind
            kill(pid_, SIGKILL);
            waitpid(pid_, nullptr, 0);
        }
        close(stdin_);
        close(stdout_);
    }

    /// Reads the worker's output until a line containing `text` (true) or the deadline (false).
    bool wait_for_line(const std::string& text, std::chrono::milliseconds timeout = 30s) {
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        for (;;) {
            for (auto newline = buffer_.find('\n'); newline != std::string::npos; newline = buffer_.find('\n')) {
                const std::string line = buffer_.substr(0, newline);
                buffer_.erase(0, newline + 1);
                BOOST_TEST_MESSAGE("worker: " << line);
                if (line.find(text) != std::string::npos) return true;
            }
            const auto left =
                std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
            if (left.count() <= 0) return false;
            pollfd fd{stdout_, POLLIN, 0};
            if (poll(&fd, 1, static_cast<int>(left.count())) <= 0) continue;
            char chunk[4096];
            const ssize_t n = read(stdout_, chunk, sizeof chunk);
            if (n <= 0) return false;  // the worker exited
            buffer_.append(chunk, static_cast<std::size_t>(n));
        }
    }

    void signal(int number) { BOOST_REQUIRE(kill(pid_, number) == 0); }
    void tell_handler_to_finish() { BOOST_REQUIRE(write(stdin_, "finish\n", 7) == 7); }

    /// The exit status once the worker exited, or -1 when it is still running at the deadline.
    int wait_for_exit(std::chrono::milliseconds timeout = 30s) {
        int status = 0;
        const bool exited = wait_until([&] { return waitpid(pid_, &status, WNOHANG) == pid_; }, timeout);
        if (!exited) return -1;
        pid_ = 0;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }

private:
    pid_t pid_ = 0;
    int stdin_ = -1;
    int stdout_ = -1;
    std::string buffer_;
};

struct Fixture {
    std::string url = database_url();
    TenantGuard tenant{unique_name("signals"), ""};
    // Registers nothing: the worker process registers drain_me when it starts.
    std::shared_ptr<Registry> registry = std::make_shared<Registry>();
    DefaultRunner client() {
        return DefaultRunner::with_schema(url, tenant.schema, fast_config(registry).enable_worker(false).build());
    }
};

}  // namespace

BOOST_FIXTURE_TEST_CASE(sigterm_stops_claiming_and_drains_the_running_handler, Fixture) {
    Worker worker(url, tenant.schema, 60s);
    BOOST_REQUIRE_MESSAGE(worker.wait_for_line("runs until a signal"), "the worker did not reach run_until_signal");
    DefaultRunner runner = client();
    ExecutionHandle drained = runner.execute_async("drain_me", Context());
    CancelOnExit cancel_drained{drained};
    BOOST_REQUIRE(worker.wait_for_line("started"));

    worker.signal(SIGTERM);
    BOOST_REQUIRE(worker.wait_for_line("signal 15 received"));
    BOOST_REQUIRE(worker.wait_for_line("stopped claiming"));
    // Claiming stopped: a run started now is left for another worker.
    ExecutionHandle waiting = runner.execute_async("drain_me", Context());
    CancelOnExit cancel_waiting{waiting};
    worker.tell_handler_to_finish();
    BOOST_TEST(worker.wait_for_line("report drained=1 abandoned=0 signal=15"));
    BOOST_TEST(worker.wait_for_exit() == 0);

    const auto result = drained.wait_for(20s);
    BOOST_REQUIRE(result.has_value());
    BOOST_TEST(result->status == WorkflowStatus::Completed);
    BOOST_TEST(result->final_context.value_or("finished", false));
    const WorkflowResult left = runner.result(waiting.id());
    BOOST_REQUIRE(left.task("work") != nullptr);
    BOOST_TEST(left.task("work")->status == TaskStatus::Ready);
}

BOOST_FIXTURE_TEST_CASE(second_signal_cuts_the_drain_short, Fixture) {
    Worker worker(url, tenant.schema, 60s);  // a deadline the test would notice waiting for
    BOOST_REQUIRE(worker.wait_for_line("runs until a signal"));
    DefaultRunner runner = client();
    ExecutionHandle handle = runner.execute_async("drain_me", Context());
    CancelOnExit cancel{handle};
    BOOST_REQUIRE(worker.wait_for_line("started"));

    worker.signal(SIGINT);
    BOOST_REQUIRE(worker.wait_for_line("signal 2 received"));
    worker.signal(SIGINT);
    BOOST_TEST(worker.wait_for_line("report drained=0 abandoned=1 signal=2", 20s));
    BOOST_TEST(worker.wait_for_exit() == 0);

    // The attempt was failed as retryable: the task waits for another worker.
    const WorkflowResult r = runner.result(handle.id());
    BOOST_TEST(r.status == WorkflowStatus::Running);
    BOOST_REQUIRE(r.task("work") != nullptr);
    BOOST_TEST(r.task("work")->error.value_or("").find("shut down before the handler finished") != std::string::npos);
}
