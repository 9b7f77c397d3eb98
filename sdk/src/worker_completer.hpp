// worker_completer.hpp (private) — the completer: submits the handlers' results with complete_batch
// / fail_batch, batching whatever finished meanwhile. The completion of tasks with dependents also
// claims (while slots are free), so that a DAG's next level starts without a notification and a
// claim round trip of its own. Results are safe to resend: the fence makes a second submission
// of the same attempt a no-op.
#pragma once

#include "cloacina/connection.hpp"
#include "worker_role.hpp"

#include <memory>
#include <thread>
#include <vector>

namespace cloacina::detail {

class RunnerCore;
class TaskLedger;
class HandlerTable;
struct Completion;

class Completer {
public:
    Completer(const RunnerCore& core, TaskLedger& ledger, const HandlerTable& handlers, WorkerCounters& counters);

    /// Starts the thread on `connection`; it keeps `owner` alive.
    void start(Connection connection, const std::shared_ptr<void>& owner);
    /// Submits the results still waiting (no new ones may come: the ledger's results are closed)
    /// and joins the thread.
    void stop();

private:
    void loop(Connection& connection);
    /// One attempt at submitting `batch`; throws what the server or the connection threw.
    void submit(const std::vector<Completion>& batch, Connection& connection);

    const RunnerCore& core_;
    TaskLedger& ledger_;
    const HandlerTable& handlers_;
    WorkerCounters& counters_;
    std::thread thread_;
};

}  // namespace cloacina::detail
