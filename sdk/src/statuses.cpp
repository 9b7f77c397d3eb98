// statuses.cpp — the names of run and task statuses, as the server spells them, and the look-ups
// of a run's result.
#include "cloacina/error.hpp"
#include "cloacina/runner.hpp"

#include <ostream>

namespace cloacina {

std::string_view to_string(WorkflowStatus status) noexcept {
    switch (status) {
        case WorkflowStatus::Running:
            return "running";
        case WorkflowStatus::Paused:
            return "paused";
        case WorkflowStatus::Completed:
            return "completed";
        case WorkflowStatus::Failed:
            return "failed";
        case WorkflowStatus::Cancelled:
            return "cancelled";
    }
    return "?";
}

std::string_view to_string(TaskStatus status) noexcept {
    switch (status) {
        case TaskStatus::Waiting:
            return "waiting";
        case TaskStatus::Ready:
            return "ready";
        case TaskStatus::Running:
            return "running";
        case TaskStatus::Completed:
            return "completed";
        case TaskStatus::Failed:
            return "failed";
        case TaskStatus::Skipped:
            return "skipped";
        case TaskStatus::Cancelled:
            return "cancelled";
        case TaskStatus::Unknown:
            return "unknown";
    }
    return "?";
}

WorkflowStatus parse_workflow_status(std::string_view text) {
    for (auto s : {WorkflowStatus::Running, WorkflowStatus::Paused, WorkflowStatus::Completed, WorkflowStatus::Failed,
                   WorkflowStatus::Cancelled})
        if (to_string(s) == text) return s;
    throw Error("unknown workflow status \"" + std::string(text) + "\"");
}

TaskStatus parse_task_status(std::string_view text) noexcept {
    for (auto s : {TaskStatus::Waiting, TaskStatus::Ready, TaskStatus::Running, TaskStatus::Completed,
                   TaskStatus::Failed, TaskStatus::Skipped, TaskStatus::Cancelled})
        if (to_string(s) == text) return s;
    return TaskStatus::Unknown;
}

bool is_terminal(WorkflowStatus status) noexcept {
    return status == WorkflowStatus::Completed || status == WorkflowStatus::Failed ||
           status == WorkflowStatus::Cancelled;
}

std::ostream& operator<<(std::ostream& out, WorkflowStatus status) { return out << to_string(status); }
std::ostream& operator<<(std::ostream& out, TaskStatus status) { return out << to_string(status); }

const TaskResult* WorkflowResult::task(std::string_view id) const noexcept {
    for (const auto& t : task_results)
        if (t.task == id) return &t;
    return nullptr;
}

}  // namespace cloacina
