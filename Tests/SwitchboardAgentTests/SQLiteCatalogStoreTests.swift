import Foundation
import SwitchboardAgent
import SwitchboardCatalog
import SwitchboardCore
import SwitchboardTestSupport
import Testing

@Suite("The SQLite store", .loadsTheMachine)
struct SQLiteCatalogStoreTests {
    func definition(_ id: String, tags: [String] = []) -> InstanceDefinition {
        InstanceDefinition(
            service: try! ServiceName("payment"),
            id: try! InstanceID(id),
            address: try! HostAddress("10.0.0.1"),
            port: 8080,
            tags: tags,
            checks: [CheckDefinition(type: .ttl, ttl: .seconds(10))]
        )
    }

    @Test func aReopenedStoreRestoresInstancesMaintenanceIndexAndEvents() async throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        do {
            let store = try SQLiteCatalogStore(directory: directory)
            // Closed explicitly, not left to deinit: the reopening below must not find the directory still locked.
            defer { store.close() }
            let catalog = try await Catalog.load(from: store)
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await catalog.run() }
                _ = try await catalog.register(definition("p1", tags: ["v1"]))
                _ = try await catalog.register(definition("p2"))
                _ = try await catalog.register(definition("p3"))
                _ = try await catalog.deregister(service: try ServiceName("payment"), id: try InstanceID("p3"))
                _ = try await catalog.setMaintenance(
                    service: try ServiceName("payment"), id: try InstanceID("p2"), enabled: true, reason: "deploy")
                group.cancelAll()
            }
        }
        let reopened = try await Catalog.load(from: try SQLiteCatalogStore(directory: directory))
        #expect(reopened.index == 5)
        let lookup = reopened.instances(of: try ServiceName("payment"), matching: InstanceQuery(status: .any))
        #expect(lookup.instances.map(\.id.rawValue) == ["p1", "p2"])
        #expect(lookup.instances[1].maintenance?.reason == "deploy")
        #expect(lookup.instances[0].definition.tags == ["v1"])
        #expect(lookup.instances[0].checks.first?.status == .critical, "check results are not stored; checks restart")
        let events = try await reopened.events(since: 0, limit: 100)
        #expect(events.events.map(\.kind) == [.added, .added, .added, .removed, .status])
    }

    @Test func anObservationIsKeptInTheLogAcrossARestartAndLeavesTheInstanceAsItWas() async throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let payment = try ServiceName("payment")
        let observation = Observation(kind: .ejected, reporter: "cart/1", reason: "5 failures", duration: .seconds(30))
        do {
            let store = try SQLiteCatalogStore(directory: directory)
            // Closed explicitly, not left to deinit: the reopening below must not find the directory still locked.
            defer { store.close() }
            let catalog = try await Catalog.load(from: store)
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await catalog.run() }
                _ = try await catalog.register(definition("p1"))
                _ = try await catalog.recordObservation(observation, service: payment, id: try InstanceID("p1"))
                group.cancelAll()
            }
        }
        let reopened = try await Catalog.load(from: try SQLiteCatalogStore(directory: directory))
        #expect(reopened.index == 2)
        #expect(reopened.serviceIndex(payment) == 1)
        let lookup = reopened.instances(of: payment, matching: InstanceQuery(status: .any))
        #expect(lookup.instances.map(\.modifyIndex) == [1])
        let events = try await reopened.events(since: 0, limit: 100).events
        #expect(events.map(\.kind) == [.added, .observed])
        #expect(events.last?.observation == observation)
    }

    @Test func aServiceIndexNeverGoesBackAcrossARestart() async throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let payment = try ServiceName("payment")
        do {
            let store = try SQLiteCatalogStore(directory: directory)
            // Closed explicitly, not left to deinit: the reopening below must not find the directory still locked.
            defer { store.close() }
            let catalog = try await Catalog.load(from: store)
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await catalog.run() }
                _ = try await catalog.register(definition("p1"))
                _ = try await catalog.register(definition("p2"))
                _ = try await catalog.deregister(service: payment, id: try InstanceID("p2"))
                _ = try await catalog.deregister(service: payment, id: try InstanceID("p1"))
                #expect(catalog.instances(of: payment).index == 4)
                group.cancelAll()
            }
        }
        let reopened = try await Catalog.load(from: try SQLiteCatalogStore(directory: directory))
        #expect(reopened.instances(of: payment).index == 4, "a watcher that saw index 4 must not see it go back")
        #expect(reopened.services().services.isEmpty)
    }

    @Test func theEventLogIsPrunedToItsRetention() async throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let store = try SQLiteCatalogStore(directory: directory, configuration: .init(eventRetention: 3))
        let catalog = try await Catalog.load(from: store, configuration: Catalog.Configuration(eventCapacity: 1))
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await catalog.run() }
            for number in 1...6 { _ = try await catalog.register(definition("p\(number)")) }
            group.cancelAll()
        }
        let logged = try await store.events(after: 0, limit: 100).events
        #expect(logged.map(\.index) == [4, 5, 6])
        let page = try await catalog.events(since: 0, limit: 100)
        #expect(page.truncated)
    }

    @Test func aSecondStoreOnTheSameDirectoryIsRefused() throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let first = try SQLiteCatalogStore(directory: directory)
        #expect {
            try SQLiteCatalogStore(directory: directory)
        } throws: { error in
            String(describing: error).contains("in use by another switchboard agent")
        }
        withExtendedLifetime(first) {}
    }
}
