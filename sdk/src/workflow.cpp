// workflow.cpp — task/workflow definitions, their local checks and JSON, and the registry.
#include "cloacina/workflow.hpp"

#include "cloacina/error.hpp"

#include <set>
#include <string_view>

namespace cloacina {

std::string_view to_string(Backoff backoff) noexcept {
    switch (backoff) {
        case Backoff::Fixed:
            return "fixed";
        case Backoff::Linear:
            return "linear";
        case Backoff::Exponential:
            return "exponential";
    }
    return "?";
}

std::string_view to_string(TriggerRule rule) noexcept {
    switch (rule) {
        case TriggerRule::AllSuccess:
            return "all_success";
        case TriggerRule::AllDone:
            return "all_done";
        case TriggerRule::OneSuccess:
            return "one_success";
        case TriggerRule::OneFailed:
            return "one_failed";
        case TriggerRule::Always:
            return "always";
    }
    return "?";
}

std::string_view to_string(Condition::Op op) noexcept {
    switch (op) {
        case Condition::Op::Equals:
            return "equals";
        case Condition::Op::NotEquals:
            return "not_equals";
        case Condition::Op::Gt:
            return "gt";
        case Condition::Op::Lt:
            return "lt";
        case Condition::Op::Contains:
            return "contains";
        case Condition::Op::Exists:
            return "exists";
        case Condition::Op::NotExists:
            return "not_exists";
    }
    return "?";
}

// ---- Task ----------------------------------------------------------------------------------------

boost::json::object Task::definition() const {
    boost::json::object task;
    task["id"] = id_;
    boost::json::array deps;
    for (const auto& d : dependencies_) deps.emplace_back(d);
    task["dependencies"] = std::move(deps);
    task["kind"] = sql_ ? "sql" : "handler";
    if (sql_) task["sql"] = *sql_;
    if (retry_) {
        task["retry"] = boost::json::object{
            {"attempts", retry_->attempts},      {"backoff", to_string(retry_->backoff)},
            {"delay_ms", retry_->delay.count()}, {"max_delay_ms", retry_->max_delay.count()},
            {"jitter", retry_->jitter},
        };
    }
    if (timeout_) task["timeout_ms"] = timeout_->count();
    task["trigger_rule"] = to_string(trigger_rule_);
    if (when_) {
        boost::json::object when{{"key", when_->key}, {"op", to_string(when_->op)}};
        if (when_->value) when["value"] = *when_->value;
        task["when"] = std::move(when);
    }
    task["priority"] = priority_;
    return task;
}

// ---- Workflow ------------------------------------------------------------------------------------

WorkflowBuilder Workflow::builder(std::string name) { return WorkflowBuilder(std::move(name)); }

const Task* Workflow::find_task(std::string_view id) const noexcept {
    for (const auto& t : tasks_)
        if (t.id() == id) return &t;
    return nullptr;
}

void Workflow::validate() const {
    // Only what the server cannot check: that a handler task has a handler in this process, and
    // that task ids are unique, since the worker looks handlers up by them. The server's
    // register_workflow checks the rest (names, dependencies, cycles, retry, timeout and condition
    // values) and names the offending task in its errors (22023, ValidationError here).
    std::set<std::string_view> ids;
    for (const auto& t : tasks_) {
        if (!ids.insert(t.id()).second)
            throw ValidationError("duplicate task id \"" + t.id() + "\" in workflow \"" + name_ + "\"", "22023");
        if (!t.is_sql() && !t.handler())
            throw ValidationError("task \"" + t.id() + "\" of workflow \"" + name_ + "\" has no handler", "22023");
    }
}

boost::json::value Workflow::definition() const {
    boost::json::array tasks;
    for (const auto& t : tasks_) tasks.emplace_back(t.definition());
    return boost::json::object{{"name", name_}, {"description", description_}, {"tasks", std::move(tasks)}};
}

// ---- WorkflowBuilder -----------------------------------------------------------------------------

WorkflowBuilder& WorkflowBuilder::description(std::string text) {
    workflow_.description_ = std::move(text);
    return *this;
}

WorkflowBuilder& WorkflowBuilder::task(Task task) {
    workflow_.tasks_.push_back(std::move(task));
    return *this;
}

Workflow WorkflowBuilder::build() const {
    workflow_.validate();
    return workflow_;
}

// ---- Registry ------------------------------------------------------------------------------------

Registry& Registry::global() {
    static Registry registry;
    return registry;
}

Workflow& Registry::entry(std::string_view workflow) {
    for (auto& w : workflows_)
        if (w.name() == workflow) return w;
    workflows_.emplace_back(std::string(workflow), std::string(), std::vector<Task>{});
    return workflows_.back();
}

void Registry::add(Workflow workflow) {
    std::lock_guard lock(mutex_);
    entry(workflow.name()) = std::move(workflow);
}

void Registry::add_task(std::string_view workflow, Task task) {
    std::lock_guard lock(mutex_);
    entry(workflow).tasks_.push_back(std::move(task));
}

void Registry::describe(std::string_view workflow, std::string description) {
    std::lock_guard lock(mutex_);
    entry(workflow).description_ = std::move(description);
}

bool Registry::remove(std::string_view workflow) {
    std::lock_guard lock(mutex_);
    const auto before = workflows_.size();
    std::erase_if(workflows_, [&](const Workflow& w) { return w.name() == workflow; });
    return workflows_.size() != before;
}

std::vector<Workflow> Registry::workflows() const {
    std::lock_guard lock(mutex_);
    return workflows_;
}

std::optional<Workflow> Registry::find(std::string_view workflow) const {
    std::lock_guard lock(mutex_);
    for (const auto& w : workflows_)
        if (w.name() == workflow) return w;
    return std::nullopt;
}

WorkflowRegistration::WorkflowRegistration(const WorkflowBuilder& builder) : WorkflowRegistration(builder.declared()) {}

WorkflowRegistration::WorkflowRegistration(Workflow workflow) : name_(workflow.name()) {
    Registry::global().add(std::move(workflow));
}

namespace detail {

WorkflowRegistrar::WorkflowRegistrar(const char* workflow, const char* description) {
    Registry::global().describe(workflow, description);
}

TaskRegistrar::TaskRegistrar(const char* workflow, const Task& task,
                             void (*handler)(Context&, const CancellationToken&)) {
    Task copy = task;
    copy.handler(handler);
    Registry::global().add_task(workflow, std::move(copy));
}

}  // namespace detail
}  // namespace cloacina
