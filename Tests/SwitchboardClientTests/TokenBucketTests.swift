import Testing

@testable import SwitchboardClient

@Suite struct TokenBucketTests {
    let start = ContinuousClock.now

    @Test func allowsABurstUpToCapacityThenTheSteadyRate() {
        var bucket = TokenBucket(capacity: 5, refillPerSecond: 2)
        #expect((0..<8).filter { _ in bucket.tryTake(at: start) }.count == 5)
        let wait = bucket.timeUntilAvailable(at: start)
        #expect(wait == .milliseconds(500))
        let tooEarly = bucket.tryTake(at: start + .milliseconds(499))
        let onTime = bucket.tryTake(at: start + .milliseconds(500))
        #expect(!tooEarly && onTime)
        // A long pause refills to capacity, never beyond.
        let later = bucket.available(at: start + .seconds(60))
        #expect(later == 5)
    }
}
