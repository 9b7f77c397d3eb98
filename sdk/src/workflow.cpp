// workflow.cpp — task/workflow definitions, their validation and JSON, and the registry.
#include "cloacina/workflow.hpp"

#include "cloacina/error.hpp"

#include <algorithm>
#include <functional>
#include <map>
#include <set>

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

namespace {

// The server's rule: letters, digits, '_' and '-', starting with a letter, at most 63 characters.
bool valid_name(std::string_view name) {
    const auto letter = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); };
    if (name.empty() || name.size() > 63 || !letter(name.front())) return false;
    return std::all_of(name.begin(), name.end(),
                       [&](char c) { return letter(c) || (c >= '0' && c <= '9') || c == '_' || c == '-'; });
}

[[noreturn]] void invalid(const std::string& message) { throw ValidationError(message, "22023"); }

}  // namespace

void Workflow::validate() const {
    if (!valid_name(name_))
        invalid("invalid workflow name \"" + name_ + "\": use letters, digits, '_' or '-', starting with a letter");
    if (tasks_.empty()) invalid("workflow \"" + name_ + "\" has no tasks");

    std::map<std::string, const Task*, std::less<>> by_id;
    for (const auto& t : tasks_) {
        const std::string where = "task \"" + t.id() + "\" of workflow \"" + name_ + "\"";
        if (!valid_name(t.id())) invalid("invalid task id \"" + t.id() + "\" in workflow \"" + name_ + "\"");
        if (!by_id.emplace(t.id(), &t).second)
            invalid("duplicate task id \"" + t.id() + "\" in workflow \"" + name_ + "\"");
        if (!t.is_sql() && !t.handler()) invalid(where + " has no handler");
        if (t.is_sql() && t.sql()->empty()) invalid(where + " has an empty SQL statement");
        if (const auto& r = t.retry()) {
            if (r->attempts < 1) invalid(where + ": retry attempts must be at least 1");
            if (r->delay.count() < 0 || r->max_delay.count() < 0)
                invalid(where + ": retry delays must not be negative");
            if (r->max_delay < r->delay) invalid(where + ": retry max_delay is shorter than delay");
        }
        if (t.timeout() && t.timeout()->count() <= 0) invalid(where + ": timeout must be positive");
        if (t.when() && t.when()->key.empty()) invalid(where + ": condition has an empty key");
        std::set<std::string_view> seen;
        for (const auto& d : t.dependencies()) {
            if (!seen.insert(d).second) invalid(where + " lists dependency \"" + d + "\" twice");
            if (d == t.id()) invalid(where + " depends on itself");
        }
    }
    for (const auto& t : tasks_)
        for (const auto& d : t.dependencies())
            if (!by_id.contains(d))
                invalid("task \"" + t.id() + "\" of workflow \"" + name_ + "\" depends on unknown task \"" + d + "\"");

    // Cycle check: depth-first search with colours, reporting one task on the cycle.
    std::map<std::string_view, int> colour;  // 0 new, 1 on stack, 2 done
    std::function<void(const Task&)> visit = [&](const Task& t) {
        colour[t.id()] = 1;
        for (const auto& d : t.dependencies()) {
            const int c = colour[d];
            if (c == 1) invalid("workflow \"" + name_ + "\" has a dependency cycle through task \"" + d + "\"");
            if (c == 0) visit(*by_id.find(d)->second);
        }
        colour[t.id()] = 2;
    };
    for (const auto& t : tasks_)
        if (colour[t.id()] == 0) visit(t);
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
