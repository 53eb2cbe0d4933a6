import Foundation
import SwitchboardCatalog
import SwitchboardCore
import Testing

/// A store may commit changes whose instances it already encoded (with other indexes): the JSON it reuses must be
/// byte for byte what encoding the committed instance gives, however awkward the instance's strings are.
@Suite struct ReusedJSONTests {
    /// Meta, tags and check headers that spell the index keys, quotes, braces and escapes inside strings and keys.
    static func awkwardInstance(_ id: String, createIndex: UInt64, modifyIndex: UInt64) -> Instance {
        var instance = Instance(
            definition: makeDefinition(
                "payment", id,
                tags: [#"{"createIndex":1}"#, #"quote " and \ backslash"#, "]},["],
                meta: ["createIndex": "7", "modifyIndex": #"{"x":[1,2]}"#, #"we"ird\"#: "\u{1}\n"],
                checks: [
                    CheckDefinition(
                        type: .http, url: "http://x/health?modifyIndex=3", method: "GET",
                        headers: ["modifyIndex": "4", "createIndex": #""\""#], interval: .seconds(1),
                        timeout: .seconds(1))
                ]),
            createIndex: createIndex, modifyIndex: modifyIndex,
            maintenance: Maintenance(
                reason: #"to "drain" {createIndex}"#, since: Date(timeIntervalSince1970: 1_800_000_000)))
        instance.checks[0].output = #"HTTP 500: {"modifyIndex":99}"#
        return instance
    }

    @Test func reusedInstanceJSONEqualsAFreshEncodingOfTheCommittedChanges() throws {
        let registered = Self.awkwardInstance("p1", createIndex: 0, modifyIndex: 0)
        var drained = registered
        drained.maintenance = nil
        let changes = [
            PlannedChange(kind: .added, at: Date(), instance: registered, expectedModifyIndex: nil),
            PlannedChange(
                kind: .observed, at: Date(), instance: registered,
                observation: Observation(
                    kind: .ejected, reporter: "cart", reason: "refused \"x\"", duration: .seconds(30)),
                expectedModifyIndex: nil),
            PlannedChange(kind: .updated, at: Date(), instance: drained, expectedModifyIndex: nil),
            PlannedChange(
                kind: .added, at: Date(), instance: Self.awkwardInstance("p2", createIndex: 5, modifyIndex: 123_456),
                expectedModifyIndex: nil),
        ]
        // Encoded as a store encodes them before it knows the index: with whatever indexes the plan carried.
        let encodedBefore = changes.map { CommittedChange.encode($0.instance) }
        let fresh = PlannedChange.committing(changes, at: repeatElement(UInt64(987_654_321), count: changes.count))
        let reused = PlannedChange.committing(
            changes, encodedInstances: encodedBefore, at: repeatElement(UInt64(987_654_321), count: changes.count))
        #expect(fresh.map(\.instanceJSON) == reused.map(\.instanceJSON))
        #expect(fresh.map(\.eventJSON) == reused.map(\.eventJSON))
        #expect(fresh.map(\.event) == reused.map(\.event))
        let decoded = try SwitchboardJSON.decoder().decode(Instance.self, from: Data(reused[3].instanceJSON))
        #expect(decoded.createIndex == 987_654_321 && decoded.modifyIndex == 987_654_321)
        #expect(decoded.definition.meta["createIndex"] == "7", "a meta key spelled like an index is left alone")
    }

    @Test func fieldsAreFoundOnlyAtTheTopLevelAndBrokenTextIsRefused() {
        let json = Array(#"{"a":"x\"}","b":{"createIndex":1},"createIndex":42 ,"c":[1,{"d":2}],"e":true}"#.utf8)
        let fields = JSONFields.values(ofObject: json)
        #expect(fields?.map { String(decoding: json[$0.key], as: UTF8.self) } == ["a", "b", "createIndex", "c", "e"])
        #expect(fields.map { String(decoding: json[$0[2].value], as: UTF8.self) } == "42")
        let set = JSONFields.settingNumbers(["createIndex": 7], in: json).map { String(decoding: $0, as: UTF8.self) }
        #expect(set == #"{"a":"x\"}","b":{"createIndex":1},"createIndex":7 ,"c":[1,{"d":2}],"e":true}"#)
        #expect(JSONFields.settingNumbers(["modifyIndex": 7], in: json) == nil, "a missing key is not invented")
        #expect(JSONFields.settingNumbers(["a": 7], in: json) == nil, "a string is not a number to replace")
        #expect(JSONFields.values(ofObject: Array(#"{"a":"unterminated}"#.utf8)) == nil)
        #expect(JSONFields.values(ofObject: Array(#"{"a":{"b":1}"#.utf8)) == nil)
        let array = Array(#"[{"a":"]","b":{"c":[]}}, 2 ,"x"]"#.utf8)
        let elements = JSONFields.elements(ofArray: array)
        #expect(elements?.count == 3)
        #expect(
            elements.flatMap { JSONFields.value(of: "b", inObject: array, in: $0[0]) }.map {
                String(decoding: array[$0], as: UTF8.self)
            } == #"{"c":[]}"#)
        #expect(JSONFields.elements(ofArray: Array(#"{"a":1}"#.utf8)) == nil)
    }
}
