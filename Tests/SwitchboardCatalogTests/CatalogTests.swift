import Foundation
import SwitchboardCatalog
import SwitchboardCore
import Synchronization
import Testing

/// Runs `body` against a catalog on `store` whose writer runs for the duration, then stops the writer.
func withCatalog<T: Sendable>(
    store: any CatalogStore = InMemoryCatalogStore(),
    configuration: Catalog.Configuration = Catalog.Configuration(),
    _ body: @Sendable (Catalog) async throws -> T
) async throws -> T {
    let catalog = try await Catalog.load(from: store, configuration: configuration)
    return try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try await catalog.run() }
        defer { group.cancelAll() }
        return try await body(catalog)
    }
}

/// A store whose disk "fails": the one failure a real SQLite file cannot be made to produce on demand.
final class FailingStore: CatalogStore {
    struct DiskFull: Error {}
    private let inner = InMemoryCatalogStore()
    func load() async throws -> StoredCatalog { StoredCatalog() }
    func commit(_ changes: [PlannedChange]) async throws -> [CommittedChange] { throw DiskFull() }
    func changes(after index: UInt64) async throws -> AsyncThrowingStream<[CommittedChange], any Error> {
        try await inner.changes(after: index)
    }
    func events(after index: UInt64, limit: Int) async throws -> EventLogPage {
        EventLogPage(events: [], complete: true)
    }
}

/// A store whose change sequence cannot be opened (a remote store out of reach, say).
final class UnreachableChangesStore: CatalogStore {
    struct Unreachable: Error {}
    private let inner = InMemoryCatalogStore()
    func load() async throws -> StoredCatalog { StoredCatalog() }
    func commit(_ changes: [PlannedChange]) async throws -> [CommittedChange] { try await inner.commit(changes) }
    func changes(after index: UInt64) async throws -> AsyncThrowingStream<[CommittedChange], any Error> {
        throw Unreachable()
    }
    func events(after index: UInt64, limit: Int) async throws -> EventLogPage {
        try await inner.events(after: index, limit: limit)
    }
}

@Suite("The concurrent catalog")
struct CatalogTests {
    @Test func writesQueuedWhenTheChangeSequenceCannotBeOpenedFailInsteadOfWaiting() async throws {
        let catalog = try await Catalog.load(from: UnreachableChangesStore())
        let queued = Task { try await catalog.register(makeDefinition()) }
        try await eventually { catalog.queuedWrites == 1 }
        await #expect(throws: UnreachableChangesStore.Unreachable.self) { try await catalog.run() }
        await #expect { _ = try await queued.value } throws: { ($0 as? CatalogError)?.isUnavailable == true }
        await #expect { _ = try await catalog.register(makeDefinition("payment", "p2")) } throws: {
            ($0 as? CatalogError)?.isUnavailable == true
        }
    }

    @Test func concurrentRegistrationsAllLandWithConsecutiveIndexes() async throws {
        try await withCatalog { catalog in
            try await withThrowingTaskGroup(of: UInt64.self) { group in
                for number in 0..<500 {
                    group.addTask {
                        let outcome = try await catalog.register(makeDefinition("svc\(number % 7)", "i\(number)"))
                        return outcome.event!.index
                    }
                }
                var indexes: [UInt64] = []
                for try await index in group { indexes.append(index) }
                #expect(indexes.sorted() == Array(1...500))
            }
            #expect(catalog.index == 500)
            #expect(catalog.summary().instances == 500)
            #expect(catalog.services().services.count == 7)
        }
    }

    @Test func aFailedCommitAppliesNothingAndReportsTheStoreFailure() async throws {
        try await withCatalog(store: FailingStore()) { catalog in
            await #expect {
                try await catalog.register(makeDefinition())
            } throws: { error in
                (error as? CatalogError)?.isStoreFailure == true
            }
            #expect(catalog.index == 0)
            let payment = try ServiceName("payment")
            #expect(catalog.instances(of: payment, matching: InstanceQuery(status: .any)).instances.isEmpty)
        }
    }

    @Test func lookupsAnswerOnlyTheirServiceSortedById() async throws {
        try await withCatalog { catalog in
            for id in ["b", "a", "c"] { _ = try await catalog.register(makeDefinition("payment", id)) }
            _ = try await catalog.register(makeDefinition("order", "o"))
            let lookup = catalog.instances(of: try ServiceName("payment"))
            #expect(lookup.instances.map(\.id.rawValue) == ["a", "b", "c"])
            #expect(lookup.index == 3)
            #expect(catalog.instances(of: try ServiceName("nobody")).instances.isEmpty)
        }
    }

    @Test func eventsComeFromTheStoreWhenTheRingNoLongerHoldsThem() async throws {
        let store = InMemoryCatalogStore(eventRetention: 100)
        try await withCatalog(store: store, configuration: Catalog.Configuration(eventCapacity: 2)) { catalog in
            for number in 1...5 { _ = try await catalog.register(makeDefinition("payment", "p\(number)")) }
            let fromRing = try await catalog.events(since: 3, limit: 10)
            #expect(fromRing.events.map(\.index) == [4, 5])
            let fromStore = try await catalog.events(since: 0, limit: 3)
            #expect(fromStore.events.map(\.index) == [1, 2, 3])
            #expect(!fromStore.truncated)
        }
    }

    @Test func prunedEventsAreReportedAsTruncated() async throws {
        let store = InMemoryCatalogStore(eventRetention: 2)
        try await withCatalog(store: store, configuration: Catalog.Configuration(eventCapacity: 2)) { catalog in
            for number in 1...5 { _ = try await catalog.register(makeDefinition("payment", "p\(number)")) }
            let page = try await catalog.events(since: 0, limit: 10)
            #expect(page.truncated)
            #expect(page.events.map(\.index) == [4, 5])
        }
    }

    @Test func writesAfterTheWriterStoppedFailAsUnavailable() async throws {
        let catalog = try await Catalog.load(from: InMemoryCatalogStore())
        let writer = Task { try await catalog.run() }
        _ = try await catalog.register(makeDefinition())
        writer.cancel()
        _ = await writer.result
        await #expect {
            try await catalog.register(makeDefinition("payment", "p2"))
        } throws: { error in
            (error as? CatalogError)?.isUnavailable == true
        }
    }

    @Test func aReloadedCatalogHasWhatTheStoreCommitted() async throws {
        let store = InMemoryCatalogStore()
        try await withCatalog(store: store) { catalog in
            _ = try await catalog.register(makeDefinition("payment", "p1", tags: ["v1"]))
            _ = try await catalog.register(makeDefinition("payment", "p2"))
            _ = try await catalog.setMaintenance(
                service: try ServiceName("payment"), id: try InstanceID("p2"), enabled: true, reason: "x")
        }
        let reloaded = try await Catalog.load(from: store)
        #expect(reloaded.index == 3)
        let all = reloaded.instances(of: try ServiceName("payment"), matching: InstanceQuery(status: .any))
        #expect(all.instances.map(\.status) == [.passing, .maintenance])
        #expect(try await reloaded.events(since: 0, limit: 10).events.count == 3)
    }
}

/// An in-memory store whose first commit waits until the test opens the gate, and whose commits can be made to
/// fail by number: it lets a test line writes up into one batch deterministically.
final class GatedStore: CatalogStore {
    private let inner = InMemoryCatalogStore()
    private let gate: AsyncStream<Void>
    private let opener: AsyncStream<Void>.Continuation
    private let commitCount = Mutex(0)
    private let failingCommit: Int?

    init(failingCommit: Int? = nil) {
        (gate, opener) = AsyncStream.makeStream(of: Void.self)
        self.failingCommit = failingCommit
    }

    /// Lets the first commit (and every later one) through.
    func open() { opener.finish() }

    var commits: Int { commitCount.withLock { $0 } }

    func load() async throws -> StoredCatalog { try await inner.load() }

    func commit(_ changes: [PlannedChange]) async throws -> [CommittedChange] {
        let number = commitCount.withLock { count -> Int in
            count += 1
            return count
        }
        if number == 1 {
            // Opens by itself after 15 s, so a test that fails before opening it fails instead of hanging.
            await withTaskGroup(of: Void.self) { group in
                group.addTask { for await _ in self.gate {} }
                group.addTask { try? await Task.sleep(for: .seconds(15)) }
                await group.next()
                group.cancelAll()
            }
        }
        if number == failingCommit { throw FailingStore.DiskFull() }
        return try await inner.commit(changes)
    }

    func changes(after index: UInt64) async throws -> AsyncThrowingStream<[CommittedChange], any Error> {
        try await inner.changes(after: index)
    }

    func events(after index: UInt64, limit: Int) async throws -> EventLogPage {
        try await inner.events(after: index, limit: limit)
    }
}

/// Waits (without a fixed sleep) until `condition` holds, for at most 10 s.
func eventually(_ condition: () -> Bool) async throws {
    let deadline = ContinuousClock.now + .seconds(10)
    while !condition() {
        guard ContinuousClock.now < deadline else { throw CancellationError() }
        try await Task.sleep(for: .milliseconds(2))
    }
}

@Suite("Group commit")
struct GroupCommitTests {
    @Test func writesToOneInstanceInOneBatchArePlannedInOrder() async throws {
        let store = GatedStore()
        try await withCatalog(store: store) { catalog in
            let payment = try ServiceName("payment")
            async let first = catalog.register(makeDefinition("order", "other"))
            try await eventually { store.commits == 1 }
            // The writer is stuck committing `first`; these three queue up and form the next batch, in this order.
            async let register = catalog.register(makeDefinition(port: 1))
            try await eventually { catalog.queuedWrites == 1 }
            async let deregister = catalog.deregister(service: payment, id: try InstanceID("p1"))
            try await eventually { catalog.queuedWrites == 2 }
            async let reregister = catalog.register(makeDefinition(port: 3))
            try await eventually { catalog.queuedWrites == 3 }
            store.open()

            #expect(try await first.event?.index == 1)
            #expect(try await register.event?.kind == .added)
            let removed = try await deregister
            #expect(removed.event?.kind == .removed && removed.instance.definition.port == 1)
            let last = try await reregister
            #expect(last.event?.kind == .added && last.event?.index == 4)
            #expect(catalog.instances(of: payment).instances.map(\.definition.port) == [3])
            #expect(store.commits == 2, "the three writes shared one commit")
        }
    }

    @Test func aFailedBatchAlsoFailsTheWritesPlannedAgainstIt() async throws {
        let store = GatedStore(failingCommit: 2)
        try await withCatalog(store: store) { catalog in
            async let first = catalog.register(makeDefinition("order", "other"))
            try await eventually { store.commits == 1 }
            async let created = catalog.register(makeDefinition())
            try await eventually { catalog.queuedWrites == 1 }
            // Identical to the one before it: planned as a no-op against a registration that never became durable.
            async let repeated = catalog.register(makeDefinition())
            try await eventually { catalog.queuedWrites == 2 }
            store.open()

            _ = try await first
            var failures: [CatalogError] = []
            do { _ = try await created } catch let error as CatalogError { failures.append(error) }
            do { _ = try await repeated } catch let error as CatalogError { failures.append(error) }
            #expect(failures.count == 2, "neither write of the failed batch may be acknowledged")
            #expect(failures.allSatisfy { $0.isStoreFailure })
            #expect(catalog.instances(of: try ServiceName("payment")).instances.isEmpty)
            #expect(catalog.index == 1)
        }
    }

    @Test func finishingWritesCommitsWhatIsQueuedThenRefusesMore() async throws {
        let store = GatedStore()
        let catalog = try await Catalog.load(from: store)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await catalog.run() }
            async let first = catalog.register(makeDefinition("payment", "a"))
            try await eventually { store.commits == 1 }
            async let queued = catalog.register(makeDefinition("payment", "b"))
            try await eventually { catalog.queuedWrites == 1 }
            catalog.finishWrites()
            await #expect {
                try await catalog.register(makeDefinition("payment", "c"))
            } throws: { error in
                (error as? CatalogError)?.isUnavailable == true
            }
            store.open()
            #expect(try await first.event != nil)
            #expect(try await queued.event != nil, "a write queued before the shutdown is still committed")
            try await group.waitForAll()
        }
        #expect(catalog.summary().instances == 2)
    }
}

@Suite("The hand-built JSON of the hot paths")
struct EncodedJSONTests {
    @Test func theServiceListOfAReloadedCatalogMatchesTheEncoder() async throws {
        let store = InMemoryCatalogStore()
        try await withCatalog(store: store) { catalog in
            _ = try await catalog.register(makeDefinition("payment", "p1", tags: ["v1", #"q"t"#]))
            _ = try await catalog.register(makeDefinition("order", "o1"))
            _ = try await catalog.deregister(service: try ServiceName("order"), id: try InstanceID("o1"))
        }
        let reloaded = try await Catalog.load(from: store)
        let expected = try SwitchboardJSON.encoder().encode(reloaded.services())
        #expect(
            String(decoding: reloaded.servicesJSON().body, as: UTF8.self) == String(decoding: expected, as: UTF8.self))
        #expect(reloaded.services().services.map(\.name.rawValue) == ["payment"])
    }

    @Test func lookupsServiceListsInstancesAndEventsMatchTheEncoderByteForByte() async throws {
        try await withCatalog { catalog in
            let payment = try ServiceName("payment")
            let tags = [#"q"uote"#, #"back\slash"#, "a/b", "caf\u{e9}", "\u{1F680}"]
            _ = try await catalog.register(makeDefinition("payment", "p1", tags: tags, meta: ["k": "v\"/\u{e9}"]))
            _ = try await catalog.register(
                makeDefinition("payment", "p2", checks: [CheckDefinition(type: .ttl, ttl: .seconds(10))]))
            let drained = try await catalog.setMaintenance(
                service: payment, id: try InstanceID("p1"), enabled: true, reason: "r\"")
            _ = try await catalog.register(makeDefinition("order", "o1", tags: ["x"]))
            let encoder = SwitchboardJSON.encoder()

            for query in [InstanceQuery(status: .any), InstanceQuery(), InstanceQuery(tags: ["a/b"])] {
                let expected = try encoder.encode(catalog.instances(of: payment, matching: query))
                #expect(
                    String(decoding: catalog.instancesJSON(of: payment, matching: query).body, as: UTF8.self)
                        == String(decoding: expected, as: UTF8.self))
            }
            #expect(
                catalog.instancesJSON(of: try ServiceName("nobody")).body
                    == Array(try encoder.encode(catalog.instances(of: try ServiceName("nobody")))))
            #expect(
                String(decoding: catalog.servicesJSON().body, as: UTF8.self)
                    == String(decoding: try encoder.encode(catalog.services()), as: UTF8.self))
            let one = try #require(catalog.instance(service: payment, id: try InstanceID("p1")).instance)
            #expect(
                catalog.instanceJSON(service: payment, id: try InstanceID("p1")).body == Array(try encoder.encode(one)))
            let event = try #require(drained.event)
            #expect(
                String(decoding: CommittedChange(event: event).eventJSON, as: UTF8.self)
                    == String(decoding: try encoder.encode(event), as: UTF8.self))
            let observed = try await catalog.recordObservation(
                Observation(kind: .ejected, reporter: "cart \"1\"", reason: "a\\b", duration: .seconds(30)),
                service: payment, id: try InstanceID("p1"))
            let observation = try #require(observed.event)
            #expect(
                String(decoding: CommittedChange(event: observation).eventJSON, as: UTF8.self)
                    == String(decoding: try encoder.encode(observation), as: UTF8.self))
        }
    }

    @Test func stringsAreEscapedAsTheEncoderEscapesThem() throws {
        let text = "a\"b\\c/d\u{8}\u{c}\n\r\t\u{1}\u{1f}\u{e9}"
        var json = JSONText()
        json.appendString(text)
        #expect(
            String(decoding: json.bytes, as: UTF8.self)
                == String(decoding: try SwitchboardJSON.encoder().encode(text), as: UTF8.self))
    }
}
