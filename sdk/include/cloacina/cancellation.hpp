// cloacina/cancellation.hpp — cooperative cancellation for task handlers.
//
// The worker hands every handler a CancellationToken. It is signalled when the run is cancelled, the
// task's lease is lost to another worker, the task's timeout passes, or the runner shuts down past
// its drain deadline. Handlers poll it (cancelled(), throw_if_cancelled()) or wait on it instead of
// sleeping (wait_for()), so a long step stops as soon as its result can no longer be used.
#pragma once

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string_view>

namespace cloacina {

enum class CancelReason {
    None,
    RunCancelled,  ///< the run was cancelled (heartbeat answered 'cancelled')
    LeaseLost,     ///< another worker owns the task now (heartbeat answered 'lost')
    Timeout,       ///< the task's timeout_ms passed
    Shutdown,      ///< the runner is shutting down and the drain deadline passed
};

[[nodiscard]] std::string_view to_string(CancelReason reason) noexcept;

namespace detail {
struct CancellationState {
    mutable std::mutex mutex;
    std::condition_variable signalled;
    CancelReason reason = CancelReason::None;
};
}  // namespace detail

/// Read side, given to handlers. Cheap to copy; all copies observe the same state.
class CancellationToken {
public:
    /// A token that is never cancelled (for calling handlers directly, e.g. in unit tests).
    CancellationToken();

    [[nodiscard]] bool cancelled() const noexcept;
    [[nodiscard]] CancelReason reason() const noexcept;
    /// Throws cloacina::Cancelled when cancelled.
    void throw_if_cancelled() const;
    /// Waits up to `duration`; returns true when woken by cancellation (a cancellable sleep).
    template <class Rep, class Period>
    bool wait_for(std::chrono::duration<Rep, Period> duration) const {
        std::unique_lock lock(state_->mutex);
        return state_->signalled.wait_for(lock, duration, [&] { return state_->reason != CancelReason::None; });
    }

private:
    friend class CancellationSource;
    explicit CancellationToken(std::shared_ptr<detail::CancellationState> state) noexcept : state_(std::move(state)) {}
    std::shared_ptr<detail::CancellationState> state_;
};

/// Write side, kept by the worker.
class CancellationSource {
public:
    CancellationSource();
    /// Signals every token; the first reason sticks. Returns false when already cancelled.
    bool cancel(CancelReason reason) noexcept;
    [[nodiscard]] CancellationToken token() const noexcept { return CancellationToken(state_); }
    [[nodiscard]] bool cancelled() const noexcept;

private:
    std::shared_ptr<detail::CancellationState> state_;
};

}  // namespace cloacina
