import SwitchboardCore
import Testing

@testable import SwitchboardClient

@Suite struct OutlierDetectorTests {
    let start = ContinuousClock.now
    let configuration = OutlierDetector.Configuration(
        consecutiveFailures: 3, baseEjection: .seconds(10), maximumEjection: .seconds(25), maximumEjectedShare: 0.5)
    let a = testInstance("a").id
    let b = testInstance("b").id
    let c = testInstance("c").id

    func fail(
        _ detector: inout OutlierDetector, _ id: InstanceID, times: Int, at time: ContinuousClock.Instant,
        known: Int = 4
    ) -> OutlierDetector.Ejection? {
        var ejection: OutlierDetector.Ejection?
        for _ in 0..<times {
            ejection = detector.record(false, on: id, knownInstances: known, at: time) ?? ejection
        }
        return ejection
    }

    @Test func consecutiveFailuresEjectAndASuccessInBetweenResetsTheCount() {
        var detector = OutlierDetector(configuration: configuration)
        #expect(fail(&detector, a, times: 2, at: start) == nil)
        detector.record(true, on: a, knownInstances: 4, at: start)
        #expect(fail(&detector, a, times: 2, at: start) == nil)
        let ejection = fail(&detector, a, times: 1, at: start)
        #expect(ejection?.duration == .seconds(10))
        #expect(detector.isEjected(a, at: start + .seconds(9)))
        #expect(!detector.isEjected(a, at: start + .seconds(10)))
    }

    @Test func repeatedEjectionsLastLongerUpToTheMaximum() {
        var detector = OutlierDetector(configuration: configuration)
        var time = start
        var durations: [Duration] = []
        for _ in 0..<4 {
            let ejection = fail(&detector, a, times: 3, at: time)!
            durations.append(ejection.duration)
            time = ejection.until  // failing again as soon as it is back
        }
        #expect(durations == [.seconds(10), .seconds(20), .seconds(25), .seconds(25)])
    }

    @Test func quietTimeAfterAnEjectionShortensTheNextOne() {
        var detector = OutlierDetector(configuration: configuration)
        let first = fail(&detector, a, times: 3, at: start)!
        let second = fail(&detector, a, times: 3, at: first.until)!
        #expect(second.count == 2)
        // Two base intervals of quiet after the second ends take the count back to zero.
        let third = fail(&detector, a, times: 3, at: second.until + .seconds(20))!
        #expect(third.count == 1 && third.duration == .seconds(10))
    }

    @Test func neverEjectsMoreThanTheShareOfInstances() {
        var detector = OutlierDetector(configuration: configuration)
        #expect(fail(&detector, a, times: 3, at: start) != nil)
        #expect(fail(&detector, b, times: 3, at: start) != nil)
        // Two of four are out: c stays in, however often it fails.
        #expect(fail(&detector, c, times: 10, at: start) == nil)
        let candidates = InstanceSet(["a", "b", "c", "d"].map { testInstance($0) })
        let available = detector.excludingEjected(from: candidates, at: start)
        #expect(available.instances.map(\.id.rawValue) == ["c", "d"])
        // Once a is back, c can go.
        #expect(fail(&detector, c, times: 3, at: start + .seconds(10)) != nil)
    }

    @Test func oneInstanceMayAlwaysBeEjected() {
        var detector = OutlierDetector(configuration: configuration)
        #expect(fail(&detector, a, times: 3, at: start, known: 1) != nil)
    }
}
