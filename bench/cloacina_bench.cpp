// bench/cloacina_bench.cpp — the C++ benchmark driver of bench/run: it exercises cloacina through the
// SDK (DefaultRunner, no-op handlers) and prints one JSON object per measurement on stdout.
//
//   cloacina_bench burndown --url URL --schema S --workflow one|diamond --runs N
//                           [--runners R] [--concurrency C] [--claim-batch B] [--prefetch P]
//                           [--series FILE]
//       submits N runs (execute_batch, timed apart), then starts R runners sharing C handler
//       threads and measures how fast they drain the queue; FILE gets "second<TAB>tasks" lines.
//   cloacina_bench latency --url URL --schema S --workflow one|chain3 --runs N --out FILE [--starts FILE2]
//       N sequential execute -> result round trips with idle workers waiting; FILE gets one
//       latency (microseconds) per line, FILE2 the time from execute to the first handler's start
//       (the interval graphile-worker's latency test measures: add -> start).
//   cloacina_bench raw-latency --url URL --runs N --out FILE
//       the floor of that round trip for any PostgreSQL queue: a client inserts a job and
//       commits (NOTIFY), a worker woken by it claims the job and commits, completes it and
//       commits (NOTIFY), and the client wakes: three commits and two hand-offs, in plain SQL on
//       a plain table, no engine. FILE as for latency.
//   cloacina_bench workers --url URL --schemas S1,S2,... --concurrency C [--claim-batch B]
//       runs one runner per tenant in this process until stdin closes (fairness scenario).
//
// Every URL is an admin URL; tenants are selected with DefaultRunner::with_schema.
#include <cloacina/cloacina.hpp>

#include <poll.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

using namespace cloacina;
using Clock = std::chrono::steady_clock;

namespace {

// When the first handler since the latency driver last reset it to 0 started (Clock ticks).
std::atomic<Clock::rep> first_handler_start{0};

// The benchmark workflows: no-op handlers, so that only the engine is measured. Each notes its
// start for the latency driver: a read, and a compare-and-swap only while the start is unset,
// so that the burn-downs' handler threads do not all write one cache line.
void no_op(Context&) {
    Clock::rep unset = 0;
    if (first_handler_start.load(std::memory_order_relaxed) == unset)
        first_handler_start.compare_exchange_strong(unset, Clock::now().time_since_epoch().count());
}

const WorkflowRegistration bench_one = Workflow::builder("bench_one").task(Task("t").handler(no_op));

// a -> (b, c, d) -> e: five tasks, a fan-out and a fan-in.
const WorkflowRegistration bench_diamond = Workflow::builder("bench_diamond")
                                               .task(Task("a").handler(no_op))
                                               .task(Task("b").depends_on("a").handler(no_op))
                                               .task(Task("c").depends_on("a").handler(no_op))
                                               .task(Task("d").depends_on("a").handler(no_op))
                                               .task(Task("e").dependencies({"b", "c", "d"}).handler(no_op));

const WorkflowRegistration bench_chain3 = Workflow::builder("bench_chain3")
                                              .task(Task("a").handler(no_op))
                                              .task(Task("b").depends_on("a").handler(no_op))
                                              .task(Task("c").depends_on("b").handler(no_op));

std::size_t tasks_per_run(const std::string& workflow) {
    if (workflow == "bench_one") return 1;
    if (workflow == "bench_chain3") return 3;
    if (workflow == "bench_diamond") return 5;
    throw std::runtime_error("unknown workflow " + workflow);
}

// --key value arguments.
struct Args {
    std::map<std::string, std::string> values;
    std::string get(const std::string& key, const std::string& fallback = "") const {
        const auto it = values.find(key);
        if (it != values.end()) return it->second;
        if (fallback.empty()) throw std::runtime_error("missing --" + key);
        return fallback;
    }
    long num(const std::string& key, long fallback) const {
        const auto it = values.find(key);
        return it == values.end() ? fallback : std::stol(it->second);
    }
};

Args parse(int argc, char** argv) {
    Args args;
    for (int i = 2; i + 1 < argc; i += 2) {
        std::string key = argv[i];
        if (key.rfind("--", 0) != 0) throw std::runtime_error("expected --key value, got " + key);
        args.values[key.substr(2)] = argv[i + 1];
    }
    return args;
}

std::string workflow_name(const Args& args) { return "bench_" + args.get("workflow"); }

DefaultRunnerConfig worker_config(std::size_t concurrency, std::size_t claim_batch, const std::string& workflow,
                                  bool worker, std::size_t prefetch = 0) {
    return DefaultRunnerConfig::builder()
        .max_concurrent_tasks(std::max<std::size_t>(concurrency, 1))
        .claim_batch(std::max<std::size_t>(claim_batch, 1))
        .prefetch(prefetch)
        .db_pool_size(2)
        .poll_interval(std::chrono::milliseconds(200))
        .enable_worker(worker)
        .workflows({workflow})
        .build();
}

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

int burndown(const Args& args) {
    const std::string url = args.get("url"), schema = args.get("schema"), workflow = workflow_name(args);
    const long runs = args.num("runs", 1000);
    const long runner_count = args.num("runners", 4);
    const long concurrency = args.num("concurrency", 16);
    const long claim_batch = args.num("claim-batch", 16);
    const long prefetch = args.num("prefetch", 0);
    const std::uint64_t expected = static_cast<std::uint64_t>(runs) * tasks_per_run(workflow);

    // Submit everything first (one client, batches of 1000 runs per round trip), timed apart.
    double submit_seconds = 0;
    {
        DefaultRunner client = DefaultRunner::with_schema(url, schema, worker_config(1, 1, workflow, false));
        const auto start = Clock::now();
        for (long done = 0; done < runs;) {
            const long n = std::min<long>(1000, runs - done);
            const std::vector<Context> contexts(static_cast<std::size_t>(n));
            (void)client.execute_batch(workflow, contexts);
            done += n;
        }
        submit_seconds = seconds_since(start);
        client.shutdown();
    }

    // Workers: runner_count runners sharing `concurrency` handler threads, like that many processes.
    std::vector<std::unique_ptr<DefaultRunner>> runners;
    const auto start = Clock::now();
    for (long i = 0; i < runner_count; ++i) {
        const std::size_t share =
            static_cast<std::size_t>(concurrency / runner_count + (i < concurrency % runner_count));
        runners.push_back(std::make_unique<DefaultRunner>(
            DefaultRunner::with_schema(url, schema,
                                       worker_config(share, static_cast<std::size_t>(claim_batch), workflow, true,
                                                     static_cast<std::size_t>(prefetch)))));
    }
    // Finished = completed or failed (a failed task ends its run too); `failed` is reported.
    auto finished = [&] {
        std::uint64_t sum = 0;
        for (const auto& r : runners) sum += r->stats().completed + r->stats().failed;
        return sum;
    };
    std::ofstream series;
    if (args.values.count("series")) series.open(args.get("series"));
    std::uint64_t last = 0;
    auto next_tick = start + std::chrono::seconds(1);
    int second = 0;
    const double limit = static_cast<double>(args.num("timeout", 1800));
    // A run whose result submission was lost (e.g. an error the SDK does not retry) would keep the
    // count short forever: stop after 20 s without progress and report the shortfall.
    std::uint64_t now_done = 0;
    auto last_progress = Clock::now();
    bool stalled = false;
    for (;;) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        const std::uint64_t done = finished();
        if (done != now_done) last_progress = Clock::now();
        now_done = done;
        if (Clock::now() >= next_tick) {
            ++second;
            if (series.is_open()) series << second << '\t' << (now_done - last) << std::endl;
            last = now_done;
            next_tick += std::chrono::seconds(1);
        }
        if (now_done >= expected) break;
        if (Clock::now() - last_progress > std::chrono::seconds(20) || seconds_since(start) > limit) {
            stalled = true;
            break;
        }
    }
    const double elapsed = seconds_since(start) - (stalled ? 20.0 : 0.0);
    std::uint64_t claims = 0, completions = 0, failed = 0;
    for (auto& r : runners) {
        const auto s = r->stats();
        claims += s.claim_round_trips;
        completions += s.completion_round_trips;
        failed += s.failed;
    }
    if (stalled) {
        for (auto& r : runners) r->shutdown();
        std::cerr << "cloacina_bench: burn-down stalled at " << now_done << " of " << expected << " tasks\n";
    }
    // The tasks that ended are what was measured.
    const double measured = static_cast<double>(std::min<std::uint64_t>(now_done, expected));
    std::cout << "{\"runs\": " << runs << ", \"tasks\": " << expected << ", \"seconds\": " << elapsed
              << ", \"workflows_per_s\": " << measured / double(tasks_per_run(workflow)) / elapsed
              << ", \"tasks_per_s\": " << measured / elapsed << ", \"failed\": " << failed
              << ", \"unfinished\": " << (expected - std::min<std::uint64_t>(now_done, expected))
              << ", \"submit_seconds\": " << submit_seconds << ", \"submit_per_s\": " << runs / submit_seconds
              << ", \"tasks_per_claim\": " << (claims ? double(expected) / claims : 0)
              << ", \"tasks_per_completion\": " << (completions ? double(expected) / completions : 0) << "}\n";
    return 0;
}

int latency(const Args& args) {
    const std::string url = args.get("url"), schema = args.get("schema"), workflow = workflow_name(args);
    const long runs = args.num("runs", 1000);
    DefaultRunner worker = DefaultRunner::with_schema(url, schema, worker_config(4, 4, workflow, true));
    DefaultRunner client = DefaultRunner::with_schema(url, schema, worker_config(1, 1, workflow, false));
    // Warm up connections and plans, then let the workers go idle (waiting on LISTEN).
    for (int i = 0; i < 20; ++i) (void)client.execute(workflow, Context());
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    std::vector<double> micros, start_micros;
    micros.reserve(static_cast<std::size_t>(runs));
    start_micros.reserve(static_cast<std::size_t>(runs));
    for (long i = 0; i < runs; ++i) {
        first_handler_start = 0;
        const auto start = Clock::now();
        const WorkflowResult result = client.execute(workflow, Context());
        micros.push_back(std::chrono::duration<double, std::micro>(Clock::now() - start).count());
        if (result.status != WorkflowStatus::Completed) throw std::runtime_error("a run did not complete");
        if (first_handler_start.load() == 0) throw std::runtime_error("a run completed without its handler");
        const Clock::time_point started{Clock::duration{first_handler_start.load()}};
        start_micros.push_back(std::chrono::duration<double, std::micro>(started - start).count());
    }
    std::ofstream out(args.get("out"));
    for (double m : micros) out << m << '\n';
    if (args.values.count("starts")) {
        std::ofstream starts(args.get("starts"));
        for (double m : start_micros) starts << m << '\n';
    }
    client.shutdown();
    worker.shutdown();
    std::sort(micros.begin(), micros.end());
    std::cout << "{\"runs\": " << runs << ", \"p50_us\": " << micros[micros.size() / 2] << "}\n";
    return 0;
}

// Waits until the job `id` is done: a notification with its id, or (a notification can be missed,
// and correctness must not depend on one) the job's row, checked every 50 ms without one.
void wait_until_done(Connection& c, std::int64_t id) {
    const std::string payload = std::to_string(id);
    for (;;) {
        for (const auto& p : c.consume_notifications())
            if (p == payload) return;
        pollfd fd{c.socket(), POLLIN, 0};
        if (poll(&fd, 1, 50) == 0 &&
            c.exec_prepared("raw_done", "SELECT status = 'done' FROM bench_latency.jobs WHERE id = $1", {Param(id)})
                .boolean(0, 0))
            return;
    }
}

int raw_latency(const Args& args) {
    const std::string url = args.get("url");
    const long runs = args.num("runs", 1000);
    {
        Connection setup(url);
        setup.exec("DROP SCHEMA IF EXISTS bench_latency CASCADE");
        setup.exec("CREATE SCHEMA bench_latency");
        setup.exec(
            "CREATE TABLE bench_latency.jobs (id bigserial PRIMARY KEY, status text NOT NULL DEFAULT 'ready', "
            "payload jsonb NOT NULL DEFAULT '{}', output jsonb)");
        setup.exec("CREATE INDEX ON bench_latency.jobs (id) WHERE status = 'ready'");
    }
    std::atomic<bool> stop{false};
    struct Joiner {  // the worker stops and is joined however this function ends
        std::atomic<bool>& stop;
        std::thread thread;
        ~Joiner() {
            stop = true;
            if (thread.joinable()) thread.join();
        }
    } worker{stop, std::thread([&] {
                 Connection c(url);
                 c.exec("LISTEN bench_latency_jobs");
                 while (!stop.load()) {
                     // Claim on a notification (also one read with an earlier reply) or, as the backstop
                     // for one sent before this LISTEN, every 100 ms.
                     if (c.consume_notifications().empty()) {
                         pollfd fd{c.socket(), POLLIN, 0};
                         if (poll(&fd, 1, 100) > 0) continue;
                     }
                     for (;;) {
                         Result claimed = c.exec_prepared(
                             "raw_claim",
                             "UPDATE bench_latency.jobs SET status = 'running' WHERE id = (SELECT id FROM "
                             "bench_latency.jobs "
                             "WHERE status = 'ready' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING id");
                         if (claimed.rows() == 0) break;
                         c.exec_prepared(
                             "raw_complete",
                             "WITH done AS (UPDATE bench_latency.jobs SET status = 'done', output = '{}' "
                             "WHERE id = $1 RETURNING id) SELECT pg_notify('bench_latency_done', id::text) FROM done",
                             {Param(claimed.int64(0, 0))});
                     }
                 }
             })};
    Connection client(url);
    client.exec("LISTEN bench_latency_done");
    std::vector<double> micros;
    for (long i = -20; i < runs; ++i) {  // 20 warm-up round trips
        const auto start = Clock::now();
        Result r = client.exec_prepared("raw_enqueue",
                                        "WITH job AS (INSERT INTO bench_latency.jobs DEFAULT VALUES RETURNING id) "
                                        "SELECT id, pg_notify('bench_latency_jobs', '') FROM job");
        wait_until_done(client, r.int64(0, 0));
        if (i >= 0) micros.push_back(std::chrono::duration<double, std::micro>(Clock::now() - start).count());
    }
    stop = true;
    worker.thread.join();
    Connection(url).exec("DROP SCHEMA bench_latency CASCADE");
    std::ofstream out(args.get("out"));
    for (double m : micros) out << m << '\n';
    std::sort(micros.begin(), micros.end());
    std::cout << "{\"runs\": " << runs << ", \"p50_us\": " << micros[micros.size() / 2] << "}\n";
    return 0;
}

int workers(const Args& args) {
    const std::string url = args.get("url");
    const std::string list = args.get("schemas");
    const long concurrency = args.num("concurrency", 4);
    const long claim_batch = args.num("claim-batch", 4);
    const std::string workflow = workflow_name(args);
    std::vector<std::unique_ptr<DefaultRunner>> runners;
    for (std::size_t pos = 0; pos <= list.size();) {
        const std::size_t comma = std::min(list.find(',', pos), list.size());
        const std::string schema = list.substr(pos, comma - pos);
        if (!schema.empty())
            runners.push_back(std::make_unique<DefaultRunner>(
                DefaultRunner::with_schema(url, schema,
                                           worker_config(static_cast<std::size_t>(concurrency),
                                                         static_cast<std::size_t>(claim_batch), workflow, true))));
        pos = comma + 1;
    }
    std::cout << "ready" << std::endl;
    std::string line;
    while (std::getline(std::cin, line)) {
    }
    for (auto& r : runners) r->shutdown();
    return 0;
}

}  // namespace

int main(int argc, char** argv) try {
    set_log_level(LogLevel::Warn);
    if (argc < 2) {
        std::cerr << "usage: cloacina_bench burndown|latency|raw-latency|workers --key value ...\n";
        return 2;
    }
    const std::string command = argv[1];
    const Args args = parse(argc, argv);
    if (command == "burndown") return burndown(args);
    if (command == "latency") return latency(args);
    if (command == "raw-latency") return raw_latency(args);
    if (command == "workers") return workers(args);
    std::cerr << "unknown command " << command << "\n";
    return 2;
} catch (const std::exception& e) {
    std::cerr << "cloacina_bench: " << e.what() << "\n";
    return 1;
}
