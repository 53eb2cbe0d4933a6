import Foundation
import SwitchboardAgent
import SwitchboardCatalog
import SwitchboardCore
import SwitchboardEtcd
import SwitchboardTestSupport
import Synchronization
import Testing

/// One store under test: how to make it, and how to open it again as a restarted agent would.
struct StoreUnderTest: Sendable, CustomStringConvertible {
    enum Kind: String, CaseIterable, Sendable {
        case memory
        case sqlite
        case skippingIndexes
        case etcd
    }

    let kind: Kind
    let make: @Sendable () throws -> any CatalogStore
    /// The same data, opened again (a durable store from disk; the others are the same object).
    let reopen: @Sendable (any CatalogStore) throws -> any CatalogStore
    let cleanUp: @Sendable () -> Void

    var description: String { kind.rawValue }

    /// A store in a real single-member etcd, under a prefix of its own; reopening makes a new store on the same keys.
    static func etcd(_ client: EtcdClient) -> StoreUnderTest {
        let configuration = EtcdCatalogStore.Configuration(prefix: "/conformance-\(UUID().uuidString)/")
        return StoreUnderTest(
            kind: .etcd, make: { EtcdCatalogStore(client: client, configuration: configuration) },
            reopen: { _ in EtcdCatalogStore(client: client, configuration: configuration) }, cleanUp: {})
    }

    static func make(_ kind: Kind) throws -> StoreUnderTest {
        switch kind {
        case .etcd:
            preconditionFailure("an etcd store needs a running etcd: use withStore")
        case .memory:
            return StoreUnderTest(
                kind: kind, make: { InMemoryCatalogStore() }, reopen: { $0 }, cleanUp: {})
        case .skippingIndexes:
            return StoreUnderTest(
                kind: kind, make: { SkippingIndexStore() }, reopen: { $0 }, cleanUp: {})
        case .sqlite:
            let directory = try makeTemporaryDirectory()
            return StoreUnderTest(
                kind: kind,
                make: { try SQLiteCatalogStore(directory: directory, configuration: .init(synchronous: .normal)) },
                reopen: { old in
                    (old as? SQLiteCatalogStore)?.close()
                    return try SQLiteCatalogStore(directory: directory, configuration: .init(synchronous: .normal))
                },
                cleanUp: { try? FileManager.default.removeItem(atPath: directory) })
        }
    }
}

/// Runs `body` with a fresh store of `kind`, removed afterwards.
func withStore<T>(
    _ kind: StoreUnderTest.Kind, _ body: (StoreUnderTest, any CatalogStore) async throws -> T
)
    async throws -> T
{
    if kind == .etcd {
        return try await withEtcdCluster(size: 1) { cluster in
            let client = EtcdClient(configuration: .init(endpoints: cluster.endpoints))
            do {
                let subject = StoreUnderTest.etcd(client)
                let result = try await body(subject, try subject.make())
                try await client.shutdown()
                return result
            } catch {
                try? await client.shutdown()
                throw error
            }
        }
    }
    let subject = try StoreUnderTest.make(kind)
    defer { subject.cleanUp() }
    return try await body(subject, try subject.make())
}

private func instance(
    _ id: String, service: String = "payment", port: Int = 8080, tags: [String] = []
) -> Instance {
    Instance(
        definition: InstanceDefinition(
            service: try! ServiceName(service), id: try! InstanceID(id), address: try! HostAddress("10.0.0.1"),
            port: port, tags: tags),
        createIndex: 0, modifyIndex: 0)
}

private func added(_ instance: Instance) -> PlannedChange {
    PlannedChange(kind: .added, at: Date(), instance: instance, expectedModifyIndex: nil)
}

private func updated(_ instance: Instance, from current: Instance) -> PlannedChange {
    PlannedChange(kind: .updated, at: Date(), instance: instance, expectedModifyIndex: current.modifyIndex)
}

private func removed(_ current: Instance) -> PlannedChange {
    PlannedChange(kind: .removed, at: Date(), instance: current, expectedModifyIndex: current.modifyIndex)
}

/// Reads up to `count` commits from a change sequence, failing after 10 s instead of hanging.
private func read(
    _ count: Int, from changes: AsyncThrowingStream<[CommittedChange], any Error>
) async throws -> [CommittedChange] {
    try await withThrowingTaskGroup(of: [CommittedChange]?.self) { group in
        group.addTask {
            var received: [CommittedChange] = []
            for try await commit in changes {
                received += commit
                if received.count >= count { break }
            }
            return received
        }
        group.addTask {
            try await Task.sleep(for: .seconds(10))
            return nil
        }
        defer { group.cancelAll() }
        guard let received = try await group.next() ?? nil else {
            throw TestFailure("the change sequence did not deliver \(count) changes within 10 s")
        }
        return received
    }
}

/// The contract every ``CatalogStore`` meets, run against each store: in memory, SQLite, and one whose indexes skip.
/// and cluster mode's etcd store (on a real single-member etcd).
@Suite("Catalog store conformance", .loadsTheMachine)
struct CatalogStoreConformanceTests {
    @Test(arguments: StoreUnderTest.Kind.allCases)
    func aNewStoreIsEmptyAtIndexZero(_ kind: StoreUnderTest.Kind) async throws {
        try await withStore(kind) { _, store in
            let loaded = try await store.load()
            #expect(loaded.index == 0)
            #expect(loaded.instances.isEmpty && loaded.recentEvents.isEmpty)
            #expect(try await store.events(after: 0, limit: 10).events.isEmpty)
        }
    }

    @Test(arguments: StoreUnderTest.Kind.allCases)
    func commitsGetRisingIndexesAndInstancesCarryThem(_ kind: StoreUnderTest.Kind) async throws {
        try await withStore(kind) { _, store in
            var last: UInt64 = 0
            for number in 1...20 {
                let commit = try await store.commit([
                    added(instance("a\(number)")), added(instance("b\(number)", service: "order")),
                ])
                #expect(commit.count == 2)
                let indexes = commit.map(\.event.index)
                #expect(indexes.allSatisfy { $0 > last }, "a later commit's indexes are all higher")
                #expect(indexes == indexes.sorted(), "indexes never go down within a commit")
                for change in commit {
                    #expect(change.event.kind == .added)
                    #expect(change.event.instance.modifyIndex == change.event.index)
                    #expect(change.event.instance.createIndex == change.event.index)
                }
                last = indexes.max()!
            }
            #expect(try await store.load().index == last)
        }
    }

    @Test(arguments: StoreUnderTest.Kind.allCases)
    func aChangeWhosePreconditionNoLongerHoldsIsRefusedAndNothingIsCommitted(
        _ kind: StoreUnderTest.Kind
    ) async throws {
        try await withStore(kind) { _, store in
            let first = try await store.commit([added(instance("p1"))])[0].event.instance
            let before = try await store.load()

            // Added again as if new, and updated from a modify index it no longer has: both refused.
            for refused in [added(instance("p1", port: 1)), updated(instance("p1", port: 2), from: instance("p1"))] {
                await #expect {
                    _ = try await store.commit([added(instance("p2")), refused])
                } throws: { error in
                    (error as? CatalogStoreError)?.isConflict == true
                }
            }
            let after = try await store.load()
            #expect(after.index == before.index, "a refused commit takes no index")
            #expect(after.instances.map(\.id.rawValue) == ["p1"], "nothing of a refused commit is kept, p2 neither")
            #expect(try await store.events(after: before.index, limit: 10).events.isEmpty)

            // Planned against the modify index the store holds: committed.
            var next = first
            next.definition.port = 9090
            let update = try await store.commit([updated(next, from: first)])[0]
            #expect(update.event.instance.definition.port == 9090)
            #expect(update.event.instance.createIndex == first.createIndex)
            #expect(update.event.index > first.modifyIndex)
        }
    }

    @Test(arguments: StoreUnderTest.Kind.allCases)
    func changesOfOneInstanceInOneCommitAreCheckedAgainstTheStoreBeforeIt(_ kind: StoreUnderTest.Kind) async throws {
        try await withStore(kind) { _, store in
            // An addition then an update planned against it: both carry the precondition "no instance yet".
            var later = instance("p1", port: 2)
            later.modifyIndex = 1
            let commit = try await store.commit([
                added(instance("p1")),
                PlannedChange(kind: .updated, at: Date(), instance: later, expectedModifyIndex: nil),
            ])
            #expect(commit.map(\.event.kind) == [.added, .updated])
            // Indexes never go down within a commit; etcd gives the whole commit one revision.
            #expect(commit[1].event.index >= commit[0].event.index)
            #expect(commit[1].event.instance.createIndex == commit[0].event.index)
            let stored = try await store.load().instances
            #expect(stored.map(\.definition.port) == [2])
        }
    }

    @Test(arguments: StoreUnderTest.Kind.allCases)
    func theChangeSequenceReplaysWhatFollowsItsIndexThenFollowsNewCommits(
        _ kind: StoreUnderTest.Kind
    ) async throws {
        try await withStore(kind) { _, store in
            let early = try await store.commit([added(instance("p1"))])
            let middle = try await store.commit([added(instance("p2")), added(instance("o1", service: "order"))])
            let changes = try await store.changes(after: early[0].event.index)
            let late = try await store.commit([removed(early[0].event.instance)])
            let received = try await read(3, from: changes)
            #expect(received.map(\.event.index) == (middle + late).map(\.event.index))
            #expect(received.map(\.event.kind) == [.added, .added, .removed])
            #expect(received.map(\.event.id.rawValue) == ["p2", "o1", "p1"])
        }
    }

    @Test(arguments: StoreUnderTest.Kind.allCases)
    func everyOpenSequenceSeesEveryCommitInOrder(_ kind: StoreUnderTest.Kind) async throws {
        try await withStore(kind) { _, store in
            let first = try await store.changes(after: 0)
            let second = try await store.changes(after: 0)
            let writers = 4
            let perWriter = 25
            try await withThrowingTaskGroup(of: Void.self) { group in
                for writer in 0..<writers {
                    group.addTask {
                        for number in 0..<perWriter {
                            _ = try await store.commit([added(instance("w\(writer)-\(number)"))])
                        }
                    }
                }
                try await group.waitForAll()
            }
            for changes in [first, second] {
                let received = try await read(writers * perWriter, from: changes)
                let indexes = received.map(\.event.index)
                #expect(indexes == indexes.sorted() && Set(indexes).count == indexes.count)
                #expect(Set(received.map(\.event.id)).count == writers * perWriter)
            }
        }
    }

    @Test(arguments: StoreUnderTest.Kind.allCases)
    func aStoreOpenedAgainHoldsWhatWasCommitted(_ kind: StoreUnderTest.Kind) async throws {
        try await withStore(kind) { subject, store in
            let p1 = try await store.commit([added(instance("p1", tags: ["v1"])), added(instance("p2"))])
            let o1 = try await store.commit([added(instance("o1", service: "order"))])[0].event.instance
            let gone = try await store.commit([removed(o1)])[0]
            let reopened = try subject.reopen(store)
            let loaded = try await reopened.load()
            #expect(loaded.index == gone.event.index)
            #expect(Set(loaded.instances.map(\.id.rawValue)) == ["p1", "p2"])
            #expect(loaded.instances.first { $0.id.rawValue == "p1" }?.definition.tags == ["v1"])
            #expect(loaded.instances.allSatisfy { $0.modifyIndex == $0.createIndex && $0.modifyIndex > 0 })
            #expect(loaded.serviceIndexes[try ServiceName("order")] == gone.event.index, "kept after its last instance")
            #expect(loaded.serviceIndexes[try ServiceName("payment")] == p1.map(\.event.index).max())
            #expect(loaded.recentEvents.map(\.kind) == [.added, .added, .added, .removed])
            let page = try await reopened.events(after: 0, limit: 100)
            #expect(page.complete)
            #expect(page.events.map(\.index) == loaded.recentEvents.map(\.index))
        }
    }

    @Test(arguments: StoreUnderTest.Kind.allCases)
    func eventPagesAreInOrderAndNeverEndInsideAnIndex(_ kind: StoreUnderTest.Kind) async throws {
        try await withStore(kind) { _, store in
            var all: [CommittedChange] = []
            for number in 0..<10 {
                all += try await store.commit([
                    added(instance("p\(number)")), added(instance("o\(number)", service: "order")),
                    added(instance("c\(number)", service: "cart")),
                ])
            }
            var since: UInt64 = 0
            var paged: [ChangeEvent] = []
            while true {
                let page = try await store.events(after: since, limit: 4)
                #expect(page.complete)
                guard let last = page.events.last else { break }
                #expect(page.events.count >= 4 || paged.count + page.events.count == all.count)
                #expect(page.events.allSatisfy { $0.index > since })
                paged += page.events
                since = last.index
            }
            #expect(paged.map(\.index) == all.map(\.event.index), "paging loses and repeats nothing")
            #expect(paged.map(\.id) == all.map(\.event.id))
        }
    }

    @Test(arguments: StoreUnderTest.Kind.allCases)
    func aCatalogOnTheStoreTakesConcurrentWritesAndAppliesThemInOrder(_ kind: StoreUnderTest.Kind) async throws {
        try await withStore(kind) { _, store in
            let catalog = try await Catalog.load(from: store)
            let observed = Mutex<[UInt64]>([])
            catalog.addChangeObserver { changes in observed.withLock { $0 += changes.map(\.event.index) } }
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await catalog.run() }
                try await withThrowingTaskGroup(of: Catalog.WriteOutcome.self) { writes in
                    for number in 0..<200 {
                        writes.addTask {
                            try await catalog.register(
                                InstanceDefinition(
                                    service: try ServiceName("svc\(number % 5)"), id: try InstanceID("i\(number)"),
                                    address: try HostAddress("10.0.0.1"), port: 8080))
                        }
                    }
                    for try await outcome in writes {
                        let event = try #require(outcome.event)
                        #expect(outcome.instance.modifyIndex == event.index)
                        #expect(outcome.index >= event.index, "acknowledged once applied")
                    }
                }
                group.cancelAll()
            }
            let indexes = observed.withLock { $0 }
            #expect(indexes.count == 200)
            #expect(indexes == indexes.sorted(), "applied in index order")
            #expect(catalog.summary().instances == 200)
            #expect(catalog.index == (try await store.load()).index)
        }
    }

    @Test(arguments: StoreUnderTest.Kind.allCases)
    func aSequenceOpenedWhileCommitsLandMissesNoneOfThem(_ kind: StoreUnderTest.Kind) async throws {
        try await withStore(kind) { _, store in
            let total = 60
            // Sequences opened at every moment of a stream of commits: each one must see every commit, from the
            // replay or from the publication, and none twice.
            let sequences = try await withThrowingTaskGroup(
                of: AsyncThrowingStream<[CommittedChange], any Error>?.self
            ) { group in
                group.addTask {
                    for number in 0..<total { _ = try await store.commit([added(instance("c\(number)"))]) }
                    return nil
                }
                for _ in 0..<12 {
                    group.addTask {
                        try await Task.sleep(for: .microseconds(Int.random(in: 0...4000)))
                        return try await store.changes(after: 0)
                    }
                }
                var opened: [AsyncThrowingStream<[CommittedChange], any Error>] = []
                for try await sequence in group { if let sequence { opened.append(sequence) } }
                return opened
            }
            let all = try await store.events(after: 0, limit: 1000).events.map(\.index)
            #expect(all.count == total)
            for changes in sequences {
                let received = try await read(total, from: changes).map(\.event.index)
                #expect(received == all, "a sequence missed or repeated a commit")
            }
        }
    }
}
