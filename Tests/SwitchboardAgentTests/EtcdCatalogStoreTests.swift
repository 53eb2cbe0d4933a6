import Foundation
import SwitchboardCatalog
import SwitchboardCore
import SwitchboardEtcd
import SwitchboardTestSupport
import Testing

@testable import SwitchboardAgent

extension ClusterModeTests {
    /// What the etcd store does beyond the conformance suite: pruning its log, splitting a commit too large for etcd,
    /// and resuming after a compaction of revisions that touched no catalog key.
    @Suite(.serialized) struct EtcdCatalogStoreTests {
        static func withStore<T>(
            etcdArguments: [String] = [], configuration: EtcdCatalogStore.Configuration = .init(),
            _ body: (EtcdCluster, EtcdClient, EtcdCatalogStore) async throws -> T
        ) async throws -> T {
            try await withEtcdCluster(size: 1, arguments: etcdArguments) { etcd in
                let client = EtcdClient(configuration: .init(endpoints: etcd.endpoints))
                do {
                    let result = try await body(
                        etcd, client, EtcdCatalogStore(client: client, configuration: configuration))
                    try await client.shutdown()
                    return result
                } catch {
                    try? await client.shutdown()
                    throw error
                }
            }
        }

        static func definition(_ id: String, meta: [String: String] = [:]) throws -> InstanceDefinition {
            InstanceDefinition(
                service: try ServiceName("pruned"), id: try InstanceID(id), address: try HostAddress("10.0.0.1"),
                port: 80,
                meta: meta)
        }

        static func added(_ id: String) throws -> PlannedChange {
            PlannedChange(
                kind: .added, at: Date(),
                instance: Instance(definition: try definition(id), createIndex: 0, modifyIndex: 0),
                expectedModifyIndex: nil)
        }

        @Test func pruningKeepsTheNewestCommitsAndSaysTheOlderAreGone() async throws {
            try await Self.withStore(configuration: .init(logRetention: 5)) { _, _, store in
                var indexes: [UInt64] = []
                for number in 0..<12 {
                    indexes.append(try await store.commit([try Self.added("p\(number)")])[0].event.index)
                }
                try await store.pruneLog()
                let all = try await store.events(after: 0, limit: 100)
                #expect(!all.complete, "events before the pruned ones are gone, and the page says so")
                #expect(all.events.map(\.index) == Array(indexes.suffix(5)))
                let recent = try await store.events(after: indexes[6], limit: 100)
                #expect(recent.complete && recent.events.map(\.index) == Array(indexes.suffix(5)))
            }
        }

        @Test func aBatchTooLargeForEtcdIsCommittedInPartsAndEveryWriteLands() async throws {
            // etcd takes at most 256 KiB per request here; 40 registrations of ~20 KiB each are far more together.
            try await Self.withStore(etcdArguments: ["--max-request-bytes", "262144"]) { _, _, store in
                let catalog = try await Catalog.load(from: store)
                let meta = ["blob": String(repeating: "x", count: 20_000)]
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask { try await catalog.run() }
                    try await withThrowingTaskGroup(of: Void.self) { writes in
                        for number in 0..<40 {
                            writes.addTask {
                                _ = try await catalog.register(try Self.definition("big\(number)", meta: meta))
                            }
                        }
                        try await writes.waitForAll()
                    }
                    group.cancelAll()
                }
                #expect(catalog.summary().instances == 40)
                #expect(try await store.load().instances.count == 40)
            }
        }

        @Test func aCatalogLoadedAfterACompactionOfOtherKeysFollowsWithoutLoadingAgain() async throws {
            try await Self.withStore { etcd, client, store in
                _ = try await store.commit([try Self.added("before")])
                // Revisions that touch no catalog key (member keys, say), then compacted away.
                for number in 0..<5 { _ = try await client.put(Array("/switchboard/members/x\(number)".utf8), []) }
                try await etcd.compact()
                let catalog = try await Catalog.load(from: store)
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask { try await catalog.run() }
                    let written = try await catalog.register(try Self.definition("after"))
                    #expect(written.event?.kind == .added)
                    group.cancelAll()
                }
                #expect(Set(catalog.allInstances().instances.map(\.id.rawValue)) == ["before", "after"])
            }
        }
    }
}
