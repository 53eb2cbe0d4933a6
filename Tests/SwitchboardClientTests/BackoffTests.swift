import SwitchboardCore
import Testing

@testable import SwitchboardClient

@Suite struct BackoffTests {
    @Test func theCeilingGrowsExponentiallyUpToTheMaximum() {
        let backoff = Backoff(initial: .milliseconds(10), maximum: .milliseconds(100), multiplier: 2)
        #expect(
            (0..<6).map { backoff.ceiling(forAttempt: $0) } == [10, 20, 40, 80, 100, 100].map { .milliseconds($0) })
    }

    @Test func delaysAreSpreadOverTheWholeRangeBelowTheCeiling() {
        let backoff = Backoff(initial: .milliseconds(100), maximum: .seconds(1))
        var random = FastRandom(seed: 5)
        let delays = (0..<1_000).map { _ in backoff.delay(forAttempt: 0, using: &random) }
        #expect(delays.allSatisfy { $0 >= .zero && $0 <= .milliseconds(100) })
        #expect(delays.contains { $0 < .milliseconds(10) } && delays.contains { $0 > .milliseconds(90) })
    }
}
