import Testing

@testable import SwitchboardAgent

/// The deadline loops' sleep: cut short by earlier work, never by later work, and never missing work that came
/// while the loop was awake.
@Suite struct AlarmTests {
    @Test func workDueSoonerEndsTheSleepAndLaterWorkDoesNot() async throws {
        let alarm = Alarm()
        let started = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await alarm.sleep(until: started + .seconds(30)) }
            try await Task.sleep(for: .milliseconds(100))
            // Later than the sleep's end: nothing to do.
            alarm.wake(before: started + .seconds(60))
            try await Task.sleep(for: .milliseconds(100))
            alarm.wake(before: started + .seconds(1))
            try await group.next()
        }
        let slept = ContinuousClock.now - started
        #expect(slept >= .milliseconds(200) && slept < .seconds(10), "\(slept)")
    }

    @Test func workThatCameWhileAwakeEndsTheNextSleepAtOnce() async {
        let alarm = Alarm()
        alarm.wake(before: .now + .seconds(5))
        let started = ContinuousClock.now
        await alarm.sleep(until: started + .seconds(30))
        #expect(ContinuousClock.now - started < .seconds(10))
        // Only once: the sleep after it lasts.
        await alarm.sleep(until: .now + .milliseconds(200))
        #expect(ContinuousClock.now - started >= .milliseconds(200))
    }

    @Test func cancellationEndsTheSleep() async {
        let alarm = Alarm()
        let started = ContinuousClock.now
        let sleeper = Task { await alarm.sleep(until: started + .seconds(30)) }
        try? await Task.sleep(for: .milliseconds(50))
        sleeper.cancel()
        await sleeper.value
        #expect(ContinuousClock.now - started < .seconds(10))
    }
}
