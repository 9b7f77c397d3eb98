// cloacina/workflow.hpp — declaring workflows: tasks, their dependencies and policies, handlers,
// and the registry that runners register in their tenant when they start.
//
// Two equivalent ways to declare, both auto-registering in Registry::global():
//
//   // builder — reads like the picture of the graph
//   static const cloacina::WorkflowRegistration customer_processing =
//       cloacina::Workflow::builder("customer_processing")
//           .description("Process customer data")
//           .task(cloacina::Task("process_customer_data").handler(process_customer_data));
//
//   // macros — the seed's #[workflow] / #[task] attributes
//   CLOACINA_WORKFLOW(customer_processing, "Process customer data");
//   CLOACINA_TASK(customer_processing, process_customer_data, .dependencies({})) {
//       context.insert("processed_records", 1250);
//   }
#pragma once

#include "cloacina/cancellation.hpp"
#include "cloacina/context.hpp"

#include <boost/json/value.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace cloacina {

/// A task handler: reads its input from the context, writes its output into it.
/// Throw TaskError (or any exception) to fail the attempt.
using TaskHandler = std::function<void(Context&, const CancellationToken&)>;

enum class Backoff { Fixed, Linear, Exponential };

/// A task's retry defaults. They are the server's, which fills in whatever a definition leaves out
/// (sql/src/workflows.sql, cloacina._normalize_workflow), mirrored here once: RetryPolicy{} means
/// what no retry at all means. tests/test_registration.cpp compares the two on a server.
namespace retry_defaults {
inline constexpr int attempts = 1;
inline constexpr Backoff backoff = Backoff::Exponential;
inline constexpr std::chrono::milliseconds delay{1000};
/// Without max_delay_ms the server caps the backoff at the larger of this and the delay.
inline constexpr std::chrono::milliseconds max_delay_floor{300000};
inline constexpr bool jitter = false;

/// The server's max_delay_ms for a definition that gives only `delay_ms`.
constexpr std::chrono::milliseconds max_delay(std::chrono::milliseconds delay) noexcept {
    return delay > max_delay_floor ? delay : max_delay_floor;
}
}  // namespace retry_defaults

/// `attempts` is the total number of tries, the first included. The defaults are the server's.
struct RetryPolicy {
    int attempts = retry_defaults::attempts;
    Backoff backoff = retry_defaults::backoff;
    std::chrono::milliseconds delay = retry_defaults::delay;
    std::chrono::milliseconds max_delay = retry_defaults::max_delay(retry_defaults::delay);
    bool jitter = retry_defaults::jitter;

    static RetryPolicy none() { return {}; }
    static RetryPolicy fixed(int attempts, std::chrono::milliseconds delay) {
        return {attempts, Backoff::Fixed, delay, delay, retry_defaults::jitter};
    }
    /// Without `max_delay`, the server's default for `delay` (retry_defaults::max_delay).
    static RetryPolicy linear(int attempts, std::chrono::milliseconds delay,
                              std::optional<std::chrono::milliseconds> max_delay = std::nullopt) {
        return {attempts, Backoff::Linear, delay, max_delay.value_or(retry_defaults::max_delay(delay)),
                retry_defaults::jitter};
    }
    /// Without `max_delay`, the server's default for `delay` (retry_defaults::max_delay).
    static RetryPolicy exponential(int attempts, std::chrono::milliseconds delay,
                                   std::optional<std::chrono::milliseconds> max_delay = std::nullopt,
                                   bool jitter = retry_defaults::jitter) {
        return {attempts, Backoff::Exponential, delay, max_delay.value_or(retry_defaults::max_delay(delay)), jitter};
    }
    RetryPolicy& with_jitter(bool on = true) {
        jitter = on;
        return *this;
    }
};

enum class TriggerRule { AllSuccess, AllDone, OneSuccess, OneFailed, Always };

/// A context condition evaluated (server-side) when the task's dependencies are done.
struct Condition {
    enum class Op { Equals, NotEquals, Gt, Lt, Contains, Exists, NotExists };
    std::string key;
    Op op = Op::Exists;
    std::optional<boost::json::value> value;

    static Condition equals(std::string key, boost::json::value value) {
        return {std::move(key), Op::Equals, std::move(value)};
    }
    static Condition not_equals(std::string key, boost::json::value value) {
        return {std::move(key), Op::NotEquals, std::move(value)};
    }
    static Condition greater_than(std::string key, boost::json::value value) {
        return {std::move(key), Op::Gt, std::move(value)};
    }
    static Condition less_than(std::string key, boost::json::value value) {
        return {std::move(key), Op::Lt, std::move(value)};
    }
    static Condition contains(std::string key, boost::json::value value) {
        return {std::move(key), Op::Contains, std::move(value)};
    }
    static Condition exists(std::string key) { return {std::move(key), Op::Exists, std::nullopt}; }
    static Condition not_exists(std::string key) { return {std::move(key), Op::NotExists, std::nullopt}; }
};

[[nodiscard]] std::string_view to_string(Backoff backoff) noexcept;
[[nodiscard]] std::string_view to_string(TriggerRule rule) noexcept;
[[nodiscard]] std::string_view to_string(Condition::Op op) noexcept;

/// One task of a workflow. Setters chain: Task("b").dependencies({"a"}).retry(...).handler(f).
class Task {
public:
    explicit Task(std::string id) : id_(std::move(id)) {}

    Task& dependencies(std::vector<std::string> ids) {
        dependencies_ = std::move(ids);
        return *this;
    }
    Task& depends_on(std::string id) {
        dependencies_.push_back(std::move(id));
        return *this;
    }
    Task& retry(RetryPolicy policy) {
        retry_ = policy;
        return *this;
    }
    Task& timeout(std::chrono::milliseconds timeout) {
        timeout_ = timeout;
        return *this;
    }
    Task& trigger_rule(TriggerRule rule) {
        trigger_rule_ = rule;
        return *this;
    }
    Task& when(Condition condition) {
        when_ = std::move(condition);
        return *this;
    }
    Task& priority(int priority) {
        priority_ = priority;
        return *this;
    }
    /// The C++ function that runs this task (kind "handler"): any callable taking
    /// (Context&, const CancellationToken&), or just (Context&) when it ignores cancellation.
    template <class F>
    Task& handler(F&& fn) {
        using Fn = std::decay_t<F>;
        if constexpr (std::is_invocable_v<Fn&, Context&, const CancellationToken&>) {
            handler_ = TaskHandler(std::forward<F>(fn));
        } else {
            static_assert(std::is_invocable_v<Fn&, Context&>,
                          "a task handler takes (Context&, const CancellationToken&) or (Context&)");
            handler_ = [f = Fn(std::forward<F>(fn))](Context& c, const CancellationToken&) mutable { f(c); };
        }
        sql_.reset();
        return *this;
    }
    /// Runs `sql` inside the database, as the tenant's role (kind "sql"); no handler needed.
    Task& sql(std::string statement) {
        sql_ = std::move(statement);
        handler_ = nullptr;
        return *this;
    }

    [[nodiscard]] const std::string& id() const noexcept { return id_; }
    [[nodiscard]] const std::vector<std::string>& dependencies() const noexcept { return dependencies_; }
    [[nodiscard]] const std::optional<RetryPolicy>& retry() const noexcept { return retry_; }
    [[nodiscard]] const std::optional<std::chrono::milliseconds>& timeout() const noexcept { return timeout_; }
    [[nodiscard]] TriggerRule trigger_rule() const noexcept { return trigger_rule_; }
    [[nodiscard]] const std::optional<Condition>& when() const noexcept { return when_; }
    [[nodiscard]] int priority() const noexcept { return priority_; }
    [[nodiscard]] const TaskHandler& handler() const noexcept { return handler_; }
    [[nodiscard]] bool is_sql() const noexcept { return sql_.has_value(); }
    [[nodiscard]] const std::optional<std::string>& sql() const noexcept { return sql_; }

    /// The task's JSON, as sent inside a workflow definition.
    [[nodiscard]] boost::json::object definition() const;

private:
    std::string id_;
    std::vector<std::string> dependencies_;
    std::optional<RetryPolicy> retry_;
    std::optional<std::chrono::milliseconds> timeout_;
    TriggerRule trigger_rule_ = TriggerRule::AllSuccess;
    std::optional<Condition> when_;
    int priority_ = 0;
    TaskHandler handler_;
    std::optional<std::string> sql_;
};

class WorkflowBuilder;

/// A named DAG of tasks.
class Workflow {
public:
    Workflow(std::string name, std::string description, std::vector<Task> tasks)
        : name_(std::move(name)), description_(std::move(description)), tasks_(std::move(tasks)) {}

    static WorkflowBuilder builder(std::string name);

    [[nodiscard]] const std::string& name() const noexcept { return name_; }
    [[nodiscard]] const std::string& description() const noexcept { return description_; }
    [[nodiscard]] const std::vector<Task>& tasks() const noexcept { return tasks_; }
    [[nodiscard]] const Task* find_task(std::string_view id) const noexcept;

    /// Checks what only this process can: every handler task has a handler, and task ids are
    /// unique (the worker looks handlers up by them). Throws ValidationError (SQLSTATE 22023)
    /// naming the task. Everything else (names, dependencies, cycles, retry and timeout values)
    /// the server checks when a runner registers the workflow, with the same exception.
    void validate() const;
    /// The definition sent to cloacina.register_workflow().
    [[nodiscard]] boost::json::value definition() const;

private:
    friend class Registry;
    friend class WorkflowBuilder;
    std::string name_;
    std::string description_;
    std::vector<Task> tasks_;
};

class WorkflowBuilder {
public:
    explicit WorkflowBuilder(std::string name) : workflow_(std::move(name), {}, {}) {}

    WorkflowBuilder& description(std::string text);
    WorkflowBuilder& task(Task task);
    /// Shorthand: task(Task(id).dependencies(deps).handler(handler)).
    template <class Handler>
    WorkflowBuilder& task(std::string id, std::vector<std::string> dependencies, Handler&& handler) {
        Task spec(std::move(id));
        spec.dependencies(std::move(dependencies)).handler(std::forward<Handler>(handler));
        return task(std::move(spec));
    }
    /// The workflow, checked by Workflow::validate() (throws ValidationError).
    [[nodiscard]] Workflow build() const;
    /// The workflow as declared, validated later (at registration by a runner).
    [[nodiscard]] const Workflow& declared() const noexcept { return workflow_; }

private:
    Workflow workflow_;
};

/// Workflows known to this process, by name. Runners register them in their tenant at start and
/// claim the tasks that have handlers. Thread-safe.
class Registry {
public:
    Registry() = default;
    Registry(const Registry&) = delete;
    Registry& operator=(const Registry&) = delete;

    /// The process-wide registry filled by WorkflowRegistration and the CLOACINA_* macros.
    static Registry& global();

    /// Adds or replaces a whole workflow (not validated here: runners validate at registration).
    void add(Workflow workflow);
    /// Adds one task to a workflow, creating the workflow entry if needed (macro support).
    void add_task(std::string_view workflow, Task task);
    /// Sets a workflow's description, creating the entry if needed (macro support).
    void describe(std::string_view workflow, std::string description);
    bool remove(std::string_view workflow);

    [[nodiscard]] std::vector<Workflow> workflows() const;
    [[nodiscard]] std::optional<Workflow> find(std::string_view workflow) const;

private:
    Workflow& entry(std::string_view workflow);
    mutable std::mutex mutex_;
    std::vector<Workflow> workflows_;
};

/// Registers a workflow in Registry::global() during static initialisation.
class WorkflowRegistration {
public:
    WorkflowRegistration(const WorkflowBuilder& builder);
    WorkflowRegistration(Workflow workflow);
    [[nodiscard]] const std::string& name() const noexcept { return name_; }

private:
    std::string name_;
};

namespace detail {
struct WorkflowRegistrar {
    WorkflowRegistrar(const char* workflow, const char* description);
};
struct TaskRegistrar {
    TaskRegistrar(const char* workflow, const Task& task, void (*handler)(Context&, const CancellationToken&));
};
}  // namespace detail

}  // namespace cloacina

/// Declares (and registers) a workflow; tasks are attached with CLOACINA_TASK.
#define CLOACINA_WORKFLOW(workflow_name, description_text)                                           \
    static const ::cloacina::detail::WorkflowRegistrar cloacina_workflow_registrar_##workflow_name { \
#workflow_name, description_text                                                             \
    }

/// Declares a task of `workflow_name` and opens its handler body, which sees `context`
/// (cloacina::Context&) and `cancellation` (const cloacina::CancellationToken&). Optional Task
/// setters follow the id: CLOACINA_TASK(wf, load, .dependencies({"fetch"}).retry(...)) { ... }
#define CLOACINA_TASK(workflow_name, task_id, ...)                                                                     \
    static void cloacina_task_##workflow_name##_##task_id(::cloacina::Context&, const ::cloacina::CancellationToken&); \
    static const ::cloacina::detail::TaskRegistrar cloacina_task_registrar_##workflow_name##_##task_id{                \
        #workflow_name, ::cloacina::Task(#task_id) __VA_ARGS__, &cloacina_task_##workflow_name##_##task_id};           \
    static void cloacina_task_##workflow_name##_##task_id(                                                             \
        [[maybe_unused]] ::cloacina::Context& context,                                                                 \
        [[maybe_unused]] const ::cloacina::CancellationToken& cancellation)
