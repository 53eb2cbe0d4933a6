import Testing

@testable import SwitchboardClient

@Suite struct RetryBudgetTests {
    let start = ContinuousClock.now

    @Test func retriesAreCappedAtTheRatioOfCalls() {
        var budget = RetryBudget(configuration: .init(ratio: 0.2, minimumPerSecond: 0, window: .seconds(10)))
        for _ in 0..<100 { budget.recordCall(at: start) }
        let allowed = (0..<50).filter { _ in budget.tryRetry(at: start) }.count
        #expect(allowed == 20)
    }

    @Test func aQuietCallerMayStillRetryAtTheMinimumRate() {
        var budget = RetryBudget(configuration: .init(ratio: 0.2, minimumPerSecond: 1, window: .seconds(10)))
        budget.recordCall(at: start)
        let allowed = (0..<50).filter { _ in budget.tryRetry(at: start) }.count
        #expect(allowed == 10)
    }

    @Test func theBudgetRefillsAsOldRetriesLeaveTheWindow() {
        var budget = RetryBudget(configuration: .init(ratio: 0, minimumPerSecond: 0.1, window: .seconds(10)))
        let first = budget.tryRetry(at: start)
        let soonAfter = budget.tryRetry(at: start + .seconds(5))
        let afterTheWindow = budget.tryRetry(at: start + .seconds(11))
        #expect(first && !soonAfter && afterTheWindow)
    }
}
