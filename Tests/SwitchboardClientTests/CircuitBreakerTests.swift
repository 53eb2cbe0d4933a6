import Testing

@testable import SwitchboardClient

@Suite struct CircuitBreakerTests {
    let start = ContinuousClock.now
    let configuration = CircuitBreaker.Configuration(
        failureRateThreshold: 0.5, minimumCalls: 10, window: .seconds(10), openDuration: .seconds(5),
        halfOpenProbes: 2)

    func at(_ seconds: Double) -> ContinuousClock.Instant { start + .milliseconds(Int64(seconds * 1000)) }

    /// A permit at `time`, failing the test when the breaker refuses.
    func permit(_ breaker: inout CircuitBreaker, at time: ContinuousClock.Instant) throws -> CircuitBreaker.Permit {
        let permit = breaker.acquire(at: time)
        return try #require(permit)
    }

    /// Makes `count` calls at `time`, failing the last `failures` of them; returns the transitions.
    func calls(
        _ breaker: inout CircuitBreaker, _ count: Int, failures: Int, at time: Double
    ) -> [CircuitBreaker.Transition] {
        (0..<count).compactMap { index in
            guard let permit = breaker.acquire(at: at(time)) else { return nil }
            return breaker.record(index < count - failures, for: permit, at: at(time))
        }
    }

    @Test func opensOnlyOnceEnoughCallsFailAtTheThresholdRate() {
        var breaker = CircuitBreaker(configuration: configuration)
        // Nine failures out of nine: below the minimum number of calls.
        #expect(calls(&breaker, 9, failures: 9, at: 0).isEmpty)
        #expect(breaker.state(at: at(0)) == .closed)
        #expect(calls(&breaker, 1, failures: 1, at: 0) == [.opened])
        #expect(breaker.state(at: at(1)) == .open(until: at(5)))
        #expect(breaker.acquire(at: at(1)) == nil)
    }

    @Test func staysClosedWhileTheFailureRateIsBelowTheThreshold() {
        var breaker = CircuitBreaker(configuration: configuration)
        // 4 of 10, then 4 of 10 again: 40%.
        #expect(calls(&breaker, 10, failures: 4, at: 0).isEmpty)
        #expect(calls(&breaker, 10, failures: 4, at: 1).isEmpty)
        #expect(breaker.state(at: at(1)) == .closed)
    }

    @Test func forgetsFailuresOlderThanTheWindow() {
        var breaker = CircuitBreaker(configuration: configuration)
        #expect(calls(&breaker, 9, failures: 9, at: 0).isEmpty)
        // Eleven seconds later those nine are out of the window: one failure among one call is below the minimum.
        #expect(calls(&breaker, 1, failures: 1, at: 11).isEmpty)
        #expect(breaker.state(at: at(11)) == .closed)
    }

    @Test func halfOpenLetsALimitedNumberOfTrialCallsThroughAndClosesWhenTheySucceed() throws {
        var breaker = CircuitBreaker(configuration: configuration)
        _ = calls(&breaker, 10, failures: 10, at: 0)
        #expect(breaker.state(at: at(5)) == .halfOpen)
        let first = try permit(&breaker, at: at(5))
        let second = try permit(&breaker, at: at(5))
        #expect(first.isProbe && second.isProbe)
        #expect(breaker.acquire(at: at(5)) == nil, "only two trial calls at once")
        #expect(breaker.record(true, for: first, at: at(5.1)) == nil)
        #expect(breaker.record(true, for: second, at: at(5.2)) == .closed)
        #expect(breaker.state(at: at(5.2)) == .closed)
        #expect(breaker.acquire(at: at(5.2))?.isProbe == false)
    }

    @Test func aFailedTrialCallOpensTheCircuitAgain() throws {
        var breaker = CircuitBreaker(configuration: configuration)
        _ = calls(&breaker, 10, failures: 10, at: 0)
        let probe = try permit(&breaker, at: at(6))
        #expect(probe.isProbe)
        #expect(breaker.record(false, for: probe, at: at(6)) == .opened)
        #expect(breaker.state(at: at(7)) == .open(until: at(11)))
    }

    @Test func lateResultsOfCallsStartedInAnEarlierPeriodDoNotCount() throws {
        var breaker = CircuitBreaker(configuration: configuration)
        let slowCall = try permit(&breaker, at: at(0))
        _ = calls(&breaker, 10, failures: 10, at: 0)
        let slowProbe = try permit(&breaker, at: at(5))
        // The slow call started while closed fails now: it neither reopens nor counts as a trial.
        #expect(breaker.record(false, for: slowCall, at: at(5)) == nil)
        #expect(breaker.state(at: at(5)) == .halfOpen)
        // A second trial fails and reopens; the first trial's late success belongs to the earlier half-open spell.
        let failing = try permit(&breaker, at: at(5))
        #expect(breaker.record(false, for: failing, at: at(5.1)) == .opened)
        let nextProbe = try permit(&breaker, at: at(10.1))
        #expect(breaker.record(true, for: slowProbe, at: at(10.2)) == nil)
        #expect(breaker.record(true, for: nextProbe, at: at(10.3)) == nil, "one of two trial successes")
        #expect(breaker.state(at: at(10.3)) == .halfOpen)
    }
}
