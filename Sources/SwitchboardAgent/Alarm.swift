import Synchronization

/// The sleep of a loop that serves deadlines (the health scheduler, the watch hub's timeouts), cut short when
/// someone gives the loop an earlier one.
///
/// Those loops used to wake on a fixed 10 or 20 ms tick so that new work was never missed: 150 wake-ups a second
/// on an idle agent. With an alarm they sleep until their next deadline; whoever adds work due sooner calls
/// ``wake(before:)``. One loop sleeps on an alarm at a time.
final class Alarm: Sendable {
    private struct State {
        /// When the sleeping loop means to wake; nil while it is awake.
        var target: ContinuousClock.Instant?
        var sleeper: CheckedContinuation<Void, Never>?
        /// Work came while the loop was awake: its next sleep ends at once (it may have missed that work).
        var rung = false
        /// The sleep was ended (woken, or by its deadline) before the sleeper registered.
        var ended = false

        /// The sleeper, now woken: the sleep is over whether or not it had registered yet.
        mutating func takeSleeper() -> CheckedContinuation<Void, Never>? {
            defer {
                sleeper = nil
                ended = true
            }
            return sleeper
        }
    }

    private let state = Mutex(State())

    /// Ends the current sleep (or the next one, when the loop is awake) if it would last past `instant`.
    func wake(before instant: ContinuousClock.Instant?) {
        guard let instant else { return }
        let sleeper = state.withLock { state -> CheckedContinuation<Void, Never>? in
            guard let target = state.target else {
                state.rung = true
                return nil
            }
            guard instant < target else { return nil }
            return state.takeSleeper()
        }
        sleeper?.resume()
    }

    /// Sleeps until `target`, a ``wake(before:)`` with an earlier instant, or cancellation.
    func sleep(until target: ContinuousClock.Instant) async {
        let awake = state.withLock { state in
            defer { state.rung = false }
            if state.rung { return true }
            state.target = target
            state.ended = false
            return false
        }
        guard !awake else { return }
        await withTaskGroup(of: Void.self) { group in
            group.addTask { try? await Task.sleep(until: target, clock: .continuous) }
            group.addTask { await self.waitForWake() }
            await group.next()
            group.cancelAll()
        }
        state.withLock { $0.target = nil }
    }

    private func waitForWake() async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let resumeNow = state.withLock { state in
                    if state.ended || state.target == nil { return true }
                    state.sleeper = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            let sleeper = state.withLock { state in
                state.ended = true
                return state.takeSleeper()
            }
            sleeper?.resume()
        }
    }
}
