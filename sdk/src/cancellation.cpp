// cancellation.cpp — the shared flag behind CancellationToken / CancellationSource.
#include "cloacina/cancellation.hpp"

#include "cloacina/error.hpp"

#include <string>

namespace cloacina {

std::string_view to_string(CancelReason reason) noexcept {
    switch (reason) {
        case CancelReason::None:
            return "none";
        case CancelReason::RunCancelled:
            return "run cancelled";
        case CancelReason::LeaseLost:
            return "lease lost";
        case CancelReason::Timeout:
            return "timed out";
        case CancelReason::Shutdown:
            return "runner shutting down";
    }
    return "?";
}

CancellationToken::CancellationToken() : state_(std::make_shared<detail::CancellationState>()) {}

bool CancellationToken::cancelled() const noexcept { return reason() != CancelReason::None; }

CancelReason CancellationToken::reason() const noexcept {
    std::lock_guard lock(state_->mutex);
    return state_->reason;
}

void CancellationToken::throw_if_cancelled() const {
    const CancelReason why = reason();
    if (why != CancelReason::None) throw Cancelled("task cancelled: " + std::string(to_string(why)));
}

CancellationSource::CancellationSource() : state_(std::make_shared<detail::CancellationState>()) {}

bool CancellationSource::cancel(CancelReason reason) noexcept {
    {
        std::lock_guard lock(state_->mutex);
        if (state_->reason != CancelReason::None) return false;
        state_->reason = reason;
    }
    state_->signalled.notify_all();
    return true;
}

bool CancellationSource::cancelled() const noexcept {
    std::lock_guard lock(state_->mutex);
    return state_->reason != CancelReason::None;
}

}  // namespace cloacina
