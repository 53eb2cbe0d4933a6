import Foundation
import Testing

/// Bounds how many tests that load the machine run at once.
///
/// Swift Testing runs every test in parallel by default. Most of this package's tests start servers: agents
/// (in-process or as processes), gateways, backends, a three-member etcd, Chromium, the whole demo. Run all at
/// once on a 2-core machine, they starve one another's processes past the timeouts the tests must keep (a
/// registration answered after 5 s, a dead instance dropped after 3 s). A suite marked `.loadsTheMachine` runs each
/// of its tests only while it holds one of a few slots (`SWITCHBOARD_TEST_SLOTS`, default 4); tests of plain values
/// run beside them unbounded. The wait for a slot comes before the test starts, so it never counts against the
/// test's own time bounds.
public struct LoadsTheMachine: SuiteTrait, TestTrait, TestScoping {
    public var isRecursive: Bool { true }

    public func provideScope(
        for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void
    ) async throws {
        await MachineSlots.shared.acquire()
        do {
            try await function()
        } catch {
            await MachineSlots.shared.release()
            throw error
        }
        await MachineSlots.shared.release()
    }
}

extension Trait where Self == LoadsTheMachine {
    /// Each test of the suite starts servers or processes: at most a few such tests run at once.
    public static var loadsTheMachine: Self { LoadsTheMachine() }
}

/// A counting semaphore, first come first served, for `LoadsTheMachine`.
actor MachineSlots {
    static let shared = MachineSlots(
        slots: ProcessInfo.processInfo.environment["SWITCHBOARD_TEST_SLOTS"].flatMap { Int($0) }.map { max(1, $0) }
            ?? 4)

    private var free: Int
    private var waiting: [CheckedContinuation<Void, Never>] = []

    init(slots: Int) { free = slots }

    func acquire() async {
        if free > 0 {
            free -= 1
            return
        }
        await withCheckedContinuation { waiting.append($0) }
    }

    func release() {
        if waiting.isEmpty {
            free += 1
        } else {
            waiting.removeFirst().resume()
        }
    }
}
