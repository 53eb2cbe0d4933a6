import Foundation
import SwitchboardCore
import Testing

/// Runs `body` against a catalog on `store` whose writer runs for the duration, then stops the writer.
func withCatalog<T: Sendable>(
    store: any CatalogStore = InMemoryCatalogStore(),
    configuration: Catalog.Configuration = Catalog.Configuration(),
    _ body: @Sendable (Catalog) async throws -> T
) async throws -> T {
    let catalog = try await Catalog.load(from: store, configuration: configuration)
    return try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { await catalog.runWriter() }
        defer { group.cancelAll() }
        return try await body(catalog)
    }
}

/// A store whose disk "fails": the one failure a real SQLite file cannot be made to produce on demand.
final class FailingStore: CatalogStore {
    struct DiskFull: Error {}
    func load() async throws -> StoredCatalog { StoredCatalog() }
    func commit(_ changes: [CommittedChange]) async throws { throw DiskFull() }
    func events(after index: UInt64, limit: Int) async throws -> [ChangeEvent] { [] }
}

@Suite("The concurrent catalog")
struct CatalogTests {
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

    @Test func writesToTheSameInstanceInOneBatchSeeEachOther() async throws {
        try await withCatalog { catalog in
            async let first = catalog.register(makeDefinition(port: 1))
            async let second = catalog.deregister(service: try ServiceName("payment"), id: try InstanceID("p1"))
            async let third = catalog.register(makeDefinition(port: 3))
            _ = try await first
            _ = try? await second
            _ = try await third
            let lookup = catalog.instances(of: try ServiceName("payment"))
            #expect(lookup.instances.map(\.definition.port) == [3])
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
        let writer = Task { await catalog.runWriter() }
        _ = try await catalog.register(makeDefinition())
        writer.cancel()
        await writer.value
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
