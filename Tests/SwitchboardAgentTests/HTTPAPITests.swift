import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import SwitchboardAgent
import SwitchboardCatalog
import SwitchboardCore
import SwitchboardTestSupport
import Testing

@Suite("The HTTP API against a live agent", .loadsTheMachine)
struct HTTPAPITests {
    let registration =
        #"{"address": "10.0.1.5", "port": 8080, "tags": ["v2", "public"], "meta": {"zone": "a"}, "weight": 10}"#

    @Test func registeringThenLookingUpReturnsTheInstanceWithTheIndexHeader() async throws {
        try await withLiveAgent { agent in
            let put = try await http(.PUT, "\(agent.baseURL)/v1/services/payment/instances/p1", json: registration)
            #expect(put.status == 201)
            #expect(put.index == 1)
            let instance = try put.decode(Instance.self)
            #expect(instance.definition.tags == ["public", "v2"])
            #expect(instance.status == .passing)

            let lookup = try await http(.GET, "\(agent.baseURL)/v1/services/payment")
            #expect(lookup.status == 200)
            #expect(lookup.index == 1)
            let answer = try lookup.decode(ServiceLookup.self)
            #expect(answer.instances.map(\.id.rawValue) == ["p1"])
            #expect(answer.instances.first?.definition.meta == ["zone": "a"])

            let one = try await http(.GET, "\(agent.baseURL)/v1/services/payment/instances/p1")
            #expect(try one.decode(Instance.self) == instance)
        }
    }

    @Test func reRegisteringIsIdempotentAndUpdatesAnswer200() async throws {
        try await withLiveAgent { agent in
            let url = "\(agent.baseURL)/v1/services/payment/instances/p1"
            #expect(try await http(.PUT, url, json: registration).status == 201)
            let same = try await http(.PUT, url, json: registration)
            #expect(same.status == 200)
            #expect(same.index == 1)
            let changed = try await http(.PUT, url, json: #"{"address": "10.0.1.5", "port": 9090}"#)
            #expect(changed.status == 200)
            #expect(changed.index == 2)
            #expect(try changed.decode(Instance.self).createIndex == 1)
        }
    }

    @Test func lookupsFilterByStatusTagAndMeta() async throws {
        try await withLiveAgent { agent in
            let base = "\(agent.baseURL)/v1/services/payment"
            _ = try await http(
                .PUT, "\(base)/instances/a",
                json: #"{"address": "10.0.0.1", "port": 1, "tags": ["v1"], "meta": {"zone": "a"}}"#)
            _ = try await http(
                .PUT, "\(base)/instances/b",
                json: #"{"address": "10.0.0.2", "port": 1, "tags": ["v2"], "meta": {"zone": "b"}}"#)
            _ = try await http(
                .PUT,
                "\(base)/instances/c",
                json: #"{"address": "10.0.0.3", "port": 1, "tags": ["v2"], "checks": [{"type": "ttl", "ttl": "10s"}]}"#
            )
            func ids(_ query: String) async throws -> [String] {
                try await http(.GET, "\(base)?\(query)").decode(ServiceLookup.self).instances.map(\.id.rawValue)
            }
            #expect(try await ids("") == ["a", "b"])
            #expect(try await ids("status=any") == ["a", "b", "c"])
            #expect(try await ids("status=critical") == ["c"])
            #expect(try await ids("status=any&tag=v2") == ["b", "c"])
            #expect(try await ids("tag=v2&tag=v1").isEmpty)
            #expect(try await ids("meta=zone:b") == ["b"])
            let bad = try await http(.GET, "\(base)?status=dead")
            #expect(bad.status == 400)
            #expect(bad.errorField == "status")
        }
    }

    @Test func servicesListCountsByStatusAndTags() async throws {
        try await withLiveAgent { agent in
            _ = try await http(.PUT, "\(agent.baseURL)/v1/services/payment/instances/p1", json: registration)
            _ = try await http(
                .PUT,
                "\(agent.baseURL)/v1/services/payment/instances/p2",
                json: #"{"address": "10.0.0.2", "port": 1, "checks": [{"type": "ttl", "ttl": "10s"}]}"#
            )
            _ = try await http(.PUT, "\(agent.baseURL)/v1/services/order/instances/o1", json: registration)
            let list = try await http(.GET, "\(agent.baseURL)/v1/services").decode(ServiceList.self)
            #expect(list.services.map(\.name.rawValue) == ["order", "payment"])
            let payment = list.services[1]
            #expect(payment.counts.passing == 1 && payment.counts.critical == 1)
            #expect(payment.tags == ["public", "v2"])
            #expect(list.index == 3)
        }
    }

    @Test func maintenanceDrainsWithoutDeregistering() async throws {
        try await withLiveAgent { agent in
            let url = "\(agent.baseURL)/v1/services/payment/instances/p1"
            _ = try await http(.PUT, url, json: registration)
            let on = try await http(.PUT, "\(url)/maintenance", json: #"{"enabled": true, "reason": "deploy"}"#)
            #expect(on.status == 200)
            #expect(try on.decode(Instance.self).status == .maintenance)
            #expect(
                try await http(.GET, "\(agent.baseURL)/v1/services/payment").decode(ServiceLookup.self).instances
                    .isEmpty)
            #expect(try await http(.GET, url).status == 200)
            let off = try await http(.PUT, "\(url)/maintenance", json: #"{"enabled": false}"#)
            #expect(try off.decode(Instance.self).status == .passing)
            let missing = try await http(.PUT, "\(url)/maintenance", json: #"{"reason": "x"}"#)
            #expect(missing.status == 422 && missing.errorField == "enabled")
            let unknown = try await http(
                .PUT, "\(agent.baseURL)/v1/services/payment/instances/zz/maintenance", json: #"{"enabled": true}"#)
            #expect(unknown.status == 404)
        }
    }

    @Test func deregisteringReturnsTheRemovedInstanceThen404() async throws {
        try await withLiveAgent { agent in
            let url = "\(agent.baseURL)/v1/services/payment/instances/p1"
            _ = try await http(.PUT, url, json: registration)
            let removed = try await http(.DELETE, url)
            #expect(removed.status == 200)
            #expect(try removed.decode(Instance.self).id.rawValue == "p1")
            #expect(removed.index == 2)
            let again = try await http(.DELETE, url)
            #expect(again.status == 404)
            #expect(again.errorCode == "not_found")
            #expect(try await http(.GET, url).status == 404)
        }
    }

    @Test func percentEncodedPathParametersAreDecoded() async throws {
        try await withLiveAgent { agent in
            let put = try await http(
                .PUT, "\(agent.baseURL)/v1/services/order/instances/order-%3A%3A1-9000", json: registration)
            #expect(put.status == 201)
            #expect(try put.decode(Instance.self).id.rawValue == "order-::1-9000")
            #expect(try await http(.GET, "\(agent.baseURL)/v1/services/order/instances/order-::1-9000").status == 200)
        }
    }

    @Test func aKnownPathWithAnUnservedMethodAnswers405WithAllow() async throws {
        try await withLiveAgent { agent in
            let answer = try await http(.POST, "\(agent.baseURL)/v1/services/payment/instances/p1", json: registration)
            #expect(answer.status == 405)
            #expect(answer.errorCode == "method_not_allowed")
            #expect(answer.headers.first(name: "Allow") == "GET, PUT, DELETE")
            #expect(try await http(.PATCH, "\(agent.baseURL)/v1/agent").headers.first(name: "Allow") == "GET")
        }
    }

    @Test func compareAndSetConflictsAnswer409() async throws {
        try await withLiveAgent { agent in
            let url = "\(agent.baseURL)/v1/services/payment/instances/p1"
            #expect(try await http(.PUT, "\(url)?cas=0", json: registration).status == 201)
            let conflict = try await http(.PUT, "\(url)?cas=0", json: #"{"address": "10.0.1.5", "port": 1}"#)
            #expect(conflict.status == 409)
            #expect(conflict.errorCode == "conflict")
            #expect(try await http(.PUT, "\(url)?cas=1", json: #"{"address": "10.0.1.5", "port": 1}"#).status == 200)
            #expect(try await http(.PUT, "\(url)?cas=x", json: registration).status == 400)
        }
    }

    @Test func theEventLogListsChangesAfterAnIndex() async throws {
        try await withLiveAgent { agent in
            let url = "\(agent.baseURL)/v1/services/payment/instances/p1"
            _ = try await http(.PUT, url, json: registration)
            _ = try await http(.PUT, "\(url)/maintenance", json: #"{"enabled": true}"#)
            _ = try await http(.DELETE, url)
            let page = try await http(.GET, "\(agent.baseURL)/v1/events?since=1").decode(EventPage.self)
            #expect(page.events.map(\.kind) == [.status, .removed])
            #expect(page.index == 3 && !page.truncated)
            let bad = try await http(.GET, "\(agent.baseURL)/v1/events?since=-1")
            #expect(bad.status == 400 && bad.errorField == "since")
        }
    }

    @Test func theAgentEndpointReportsVersionCountsAndIndex() async throws {
        try await withLiveAgent { agent in
            _ = try await http(.PUT, "\(agent.baseURL)/v1/services/payment/instances/p1", json: registration)
            let info = try await http(.GET, "\(agent.baseURL)/v1/agent").decode(AgentInfo.self)
            #expect(info.version == SwitchboardVersion.current)
            #expect(info.index == 1 && info.instances == 1 && info.services == 1)
            #expect(info.counts.passing == 1)
            #expect(info.uptimeSeconds >= 0)
        }
    }
}

@Suite("Bad input gets a JSON error and the agent keeps serving", .loadsTheMachine)
struct BadInputTests {
    /// Sends `attempt`, checks its status and error, then proves the agent still answers.
    func expectRejected(
        _ agent: LiveAgent,
        status: Int,
        code: String,
        field: String? = nil,
        _ attempt: () async throws -> HTTPAnswer
    ) async throws {
        let answer = try await attempt()
        #expect(answer.status == status, "\(answer.text)")
        #expect(answer.errorCode == code, "\(answer.text)")
        #expect(answer.errorMessage?.isEmpty == false)
        if let field { #expect(answer.errorField == field, "\(answer.text)") }
        #expect(answer.index != nil, "every response carries X-Switchboard-Index")
        #expect(answer.headers.first(name: "Content-Type") == "application/json")
        #expect(try await http(.GET, "\(agent.baseURL)/v1/agent").status == 200)
        #expect(agent.catalog.summary().instances == 0, "a rejected write leaves nothing behind")
    }

    @Test(arguments: ["Payment", "pay_ment", "-pay", String(repeating: "a", count: 64)])
    func badServiceNamesAreRejected(name: String) async throws {
        try await withLiveAgent { agent in
            try await expectRejected(agent, status: 400, code: "invalid_argument", field: "service") {
                try await http(
                    .PUT, "\(agent.baseURL)/v1/services/\(name)/instances/p1",
                    json: #"{"address": "10.0.0.1", "port": 1}"#)
            }
        }
    }

    @Test func portZeroIsRejected() async throws {
        try await withLiveAgent { agent in
            try await expectRejected(agent, status: 422, code: "invalid_argument", field: "port") {
                try await http(
                    .PUT, "\(agent.baseURL)/v1/services/payment/instances/p1",
                    json: #"{"address": "10.0.0.1", "port": 0}"#)
            }
        }
    }

    @Test func aTwoMebibyteBodyIsRejectedAs413() async throws {
        try await withLiveAgent { agent in
            let huge =
                Data(#"{"address": "10.0.0.1", "port": 1, "meta": {"k": ""#.utf8)
                + Data(repeating: 0x61, count: 2 << 20)
                + Data(#""}}"#.utf8)
            try await expectRejected(agent, status: 413, code: "payload_too_large") {
                try await http(.PUT, "\(agent.baseURL)/v1/services/payment/instances/p1", body: huge)
            }
        }
    }

    @Test func aTwoMebibyteChunkedBodyIsRejectedAs413() async throws {
        try await withLiveAgent { agent in
            try await expectRejected(agent, status: 413, code: "payload_too_large") {
                // No Content-Length: the limit must hold while the body streams in.
                let chunks = AsyncStream<ByteBuffer> { continuation in
                    continuation.yield(ByteBuffer(string: #"{"address": "10.0.0.1", "port": 1, "meta": {"k": ""#))
                    for _ in 0..<32 { continuation.yield(ByteBuffer(repeating: 0x61, count: 64 * 1024)) }
                    continuation.yield(ByteBuffer(string: #""}}"#))
                    continuation.finish()
                }
                var request = HTTPClientRequest(url: "\(agent.baseURL)/v1/services/payment/instances/p1")
                request.method = .PUT
                request.headers.add(name: "Content-Type", value: "application/json")
                request.body = .stream(chunks, length: .unknown)
                let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
                var body = try await response.body.collect(upTo: 1 << 20)
                return HTTPAnswer(
                    status: Int(response.status.code),
                    headers: response.headers,
                    body: Data(body.readBytes(length: body.readableBytes) ?? [])
                )
            }
        }
    }

    @Test(arguments: [
        (#"{"address": "10.0.0.1", "port": "80"}"#, "port"),
        (#"{"address": 10, "port": 80}"#, "address"),
        (#"{"address": "10.0.0.1", "port": 80, "tags": "v1"}"#, "tags"),
        (#"{"address": "10.0.0.1", "port": 80, "checks": [{"type": "ttl", "ttl": 10}]}"#, "checks[0].ttl"),
        (#"{"address": "10.0.0.1", "port": 80.5}"#, "port"),
        (#"{"address": "10.0.0.1", "port": 1e30}"#, "port"),
        (
            #"{"address": "10.0.0.1", "port": 80, "checks": [{"type": "ttl", "ttl": "1s", "failuresBeforeCritical": 1.5}]}"#,
            "checks[0].failuresBeforeCritical"
        ),
        (#"[1, 2]"#, ""),
    ])
    func wrongJSONTypesAreRejectedNamingTheField(json: String, field: String) async throws {
        try await withLiveAgent { agent in
            try await expectRejected(agent, status: 400, code: "malformed_json", field: field.isEmpty ? nil : field) {
                try await http(.PUT, "\(agent.baseURL)/v1/services/payment/instances/p1", json: json)
            }
        }
    }

    @Test(arguments: ["hello", "{", "", "{\"address\": \"10.0.0.1\" \"port\": 80}", "null"])
    func nonJSONBodiesAreRejected(body: String) async throws {
        try await withLiveAgent { agent in
            try await expectRejected(agent, status: 400, code: "malformed_json") {
                try await http(.PUT, "\(agent.baseURL)/v1/services/payment/instances/p1", json: body)
            }
        }
    }

    @Test func formEncodedBodiesAreRejectedAs415() async throws {
        try await withLiveAgent { agent in
            try await expectRejected(agent, status: 415, code: "unsupported_media_type") {
                try await http(
                    .PUT,
                    "\(agent.baseURL)/v1/services/payment/instances/p1",
                    json: "address=10.0.0.1&port=80",
                    contentType: "application/x-www-form-urlencoded"
                )
            }
        }
    }

    @Test func unknownFieldsAreRejected() async throws {
        try await withLiveAgent { agent in
            try await expectRejected(agent, status: 422, code: "invalid_argument", field: "adress") {
                try await http(
                    .PUT, "\(agent.baseURL)/v1/services/payment/instances/p1",
                    json: #"{"adress": "10.0.0.1", "port": 1}"#)
            }
        }
    }

    @Test(arguments: [
        "/nope", "/v1/service", "/v1/services/payment/instances", "/v1/services/payment/instances/p1/nope",
    ])
    func unknownRoutesGetAJSON404(path: String) async throws {
        try await withLiveAgent { agent in
            try await expectRejected(agent, status: 404, code: "not_found") {
                try await http(.GET, agent.baseURL + path)
            }
        }
    }

    @Test func manyBadRequestsInParallelLeaveTheAgentServing() async throws {
        try await withLiveAgent { agent in
            let bodies = [
                #"{"address": "10.0.0.1", "port": 0}"#, "nope", #"{"port": "x"}"#, "",
                #"{"address": "::::", "port": 1}"#,
                String(repeating: "[", count: 10_000), #"{"address": "\u0000", "port": 1}"#,
            ]
            try await withThrowingTaskGroup(of: Int.self) { group in
                for round in 0..<70 {
                    group.addTask {
                        try await http(
                            .PUT, "\(agent.baseURL)/v1/services/payment/instances/p\(round)",
                            json: bodies[round % bodies.count]
                        ).status
                    }
                }
                for try await status in group { #expect((400..<500).contains(status)) }
            }
            #expect(agent.catalog.summary().instances == 0)
            let good = try await http(
                .PUT, "\(agent.baseURL)/v1/services/payment/instances/ok", json: #"{"address": "10.0.0.1", "port": 1}"#)
            #expect(good.status == 201)
        }
    }
}
