import Foundation
import SwitchboardCore
import Testing

@Suite("Validation of names, addresses and durations")
struct NameAndAddressValidationTests {
    @Test(arguments: ["payment", "a", "order-v2", "x0", String(repeating: "a", count: 63)])
    func serviceNamesThatAreDNSLabelsAreAccepted(name: String) throws {
        #expect(try ServiceName(name).rawValue == name)
    }

    @Test(arguments: [
        ("", "1..63"), ("Payment", "lowercase"), ("pay_ment", "lowercase"), ("-pay", "start or end"),
        ("pay-", "start or end"), (String(repeating: "a", count: 64), "1..63"), ("pay.ment", "lowercase"),
    ])
    func serviceNamesThatAreNotDNSLabelsAreRejectedWithTheRule(name: String, rule: String) {
        #expect {
            try ServiceName(name)
        } throws: { error in
            let error = error as! SwitchboardCore.ValidationError
            return error.field == "service" && error.message.contains(rule)
        }
    }

    @Test func instanceIDsAllowIPv6DefaultIDsAndRejectSlashes() throws {
        let service = try ServiceName("order")
        let id = try InstanceID.defaultID(service: service, address: HostAddress("::1"), port: 9000)
        #expect(id.rawValue == "order-::1-9000")
        #expect(throws: SwitchboardCore.ValidationError.self) { try InstanceID("a/b") }
        #expect(throws: SwitchboardCore.ValidationError.self) { try InstanceID("") }
        #expect(throws: SwitchboardCore.ValidationError.self) { try InstanceID(String(repeating: "x", count: 129)) }
    }

    @Test(arguments: [
        ("10.0.1.5", HostAddress.Kind.ipv4), ("::1", .ipv6), ("fe80::1:2", .ipv6), ("2001:db8::8a2e:370:7334", .ipv6),
        ("payment-1.internal", .hostname), ("localhost", .hostname), ("Node-7.Example.COM", .hostname),
    ])
    func addressesAreClassifiedByKind(text: String, kind: HostAddress.Kind) throws {
        #expect(try HostAddress(text).kind == kind)
    }

    @Test(arguments: [
        "256.1.1.1", "10.0.0", "01.2.3.4", "a..b", "-a.com", "a-.com", ":::", "1::2::3", "host name", "",
        "10.0.0.1\u{0}evil", "::1\u{0}x", "10.0.0.1\n",
    ])
    func malformedAddressesAreRejected(text: String) {
        #expect {
            try HostAddress(text)
        } throws: { error in
            (error as! SwitchboardCore.ValidationError).field == "address"
        }
    }

    @Test func hostnamesAreLowercasedSoTheyCompareEqual() throws {
        #expect(try HostAddress("DB.Example.com") == HostAddress("db.example.com"))
    }

    @Test(arguments: [("250ms", 250), ("10s", 10_000), ("1m", 60_000), ("1h30m", 5_400_000), ("1.5s", 1500)])
    func durationsParseWithUnits(text: String, milliseconds: Int64) throws {
        #expect(try HumanDuration(parsing: text, field: "ttl").milliseconds == milliseconds)
    }

    @Test(arguments: ["10", "10x", "", "s", "1d", "-1s", "1 s"])
    func durationsWithoutAValidUnitAreRejected(text: String) {
        #expect(throws: SwitchboardCore.ValidationError.self) { try HumanDuration(parsing: text, field: "ttl") }
    }

    @Test func durationsPrintInTheirShortestExactForm() {
        #expect(HumanDuration(milliseconds: 5_400_000).description == "1h30m")
        #expect(HumanDuration(milliseconds: 1500).description == "1s500ms")
        #expect(HumanDuration(milliseconds: 250).description == "250ms")
    }
}

@Suite("Validation of registrations")
struct RegistrationValidationTests {
    let service = try! ServiceName("payment")
    let id = try! InstanceID("p1")

    func validate(_ json: String) throws -> InstanceDefinition {
        let request = try SwitchboardJSON.decoder().decode(RegistrationRequest.self, from: Data(json.utf8))
        return try request.validated(service: service, id: id)
    }

    func rejection(_ json: String) -> SwitchboardCore.ValidationError? {
        do {
            _ = try validate(json)
            return nil
        } catch let error as SwitchboardCore.ValidationError {
            return error
        } catch {
            Issue.record("unexpected error \(error)")
            return nil
        }
    }

    @Test func aFullRegistrationIsAcceptedWithDefaultsFilledIn() throws {
        let definition = try validate(
            """
            {"address": "10.0.1.5", "port": 8080, "tags": ["v2", "public", "v2"], "meta": {"zone": "a"}, "weight": 10,
             "checks": [{"type": "http", "url": "http://10.0.1.5:8080/health", "interval": "1s"},
                        {"type": "tcp", "target": "10.0.1.5:8080"}, {"type": "ttl", "ttl": "10s"}]}
            """
        )
        #expect(definition.tags == ["public", "v2"])
        #expect(definition.weight == 10)
        #expect(definition.checks[0].method == "GET")
        #expect(definition.checks[0].timeout == HumanDuration(milliseconds: 1000))
        #expect(definition.checks[1].interval == .seconds(10))
        #expect(definition.checks[1].timeout == .seconds(5))
        #expect(definition.checks[2].initialStatus == .critical)
        #expect(definition.checkIDs == ["p1:http", "p1:tcp", "p1:ttl"])
    }

    @Test(arguments: [
        (#"{"address": "10.0.0.1", "port": 0}"#, "port", "1..65535"),
        (#"{"address": "10.0.0.1", "port": 65536}"#, "port", "1..65535"),
        (#"{"port": 80}"#, "address", "required"),
        (#"{"address": "10.0.0.1"}"#, "port", "required"),
        (#"{"address": "999.0.0.1", "port": 80}"#, "address", "IPv4"),
        (#"{"address": "10.0.0.1", "port": 80, "weight": 0}"#, "weight", "1..10000"),
        (#"{"address": "10.0.0.1", "port": 80, "tags": ["a b"]}"#, "tags[0]", "spaces"),
        (#"{"address": "10.0.0.1", "port": 80, "meta": {"bad key": "x"}}"#, "meta", "meta key"),
        (#"{"address": "10.0.0.1", "port": 80, "adress": "x"}"#, "adress", "unknown field"),
        (#"{"address": "10.0.0.1", "port": 80, "id": "p2"}"#, "id", "does not match"),
        (#"{"address": "10.0.0.1", "port": 80, "checks": [{"type": "ttl"}]}"#, "checks[0].ttl", "required"),
        (#"{"address": "10.0.0.1", "port": 80, "checks": [{"type": "dns"}]}"#, "checks[0].type", "ttl, http, tcp"),
        (
            #"{"address": "10.0.0.1", "port": 80, "checks": [{"type": "tcp", "target": "x:1", "url": "http://x"}]}"#,
            "checks[0].url", "does not apply"
        ),
        (
            #"{"address": "10.0.0.1", "port": 80, "checks": [{"type": "http", "url": "ftp://x"}]}"#, "checks[0].url",
            "http://"
        ),
        (
            #"{"address": "10.0.0.1", "port": 80, "checks": [{"type": "tcp", "target": "x:0"}]}"#, "checks[0].target",
            "1..65535"
        ),
        (
            #"{"address": "10.0.0.1", "port": 80, "checks": [{"type": "tcp", "target": "x:1", "interval": "1s", "timeout": "2s"}]}"#,
            "checks[0].timeout", "not be longer than interval"
        ),
        (
            #"{"address": "10.0.0.1", "port": 80, "checks": [{"type": "ttl", "ttl": "10ms"}]}"#, "checks[0].ttl",
            "100ms and 24h"
        ),
        (
            #"{"address": "10.0.0.1", "port": 80, "checks": [{"type": "ttl", "ttl": "1s", "bogus": 1}]}"#,
            "checks[0].bogus", "unknown field"
        ),
        (
            #"{"address": "10.0.0.1", "port": 80, "checks": [{"type": "ttl", "ttl": "1s", "failuresBeforeCritical": 0}]}"#,
            "checks[0].failuresBeforeCritical", "1..100"
        ),
    ])
    func invalidRegistrationsNameTheFieldAndTheRule(json: String, field: String, rule: String) {
        let error = rejection(json)
        #expect(error?.field == field)
        #expect(error?.message.contains(rule) == true, "\(String(describing: error))")
    }

    @Test func tooManyTagsMetaOrChecksAreRejected() {
        let tags = (0...64).map { "\"t\($0)\"" }.joined(separator: ",")
        #expect(rejection(#"{"address": "h", "port": 1, "tags": [\#(tags)]}"#)?.field == "tags")
        let meta = (0...64).map { "\"k\($0)\": \"v\"" }.joined(separator: ",")
        #expect(rejection(#"{"address": "h", "port": 1, "meta": {\#(meta)}}"#)?.field == "meta")
        let checks = (0...16).map { _ in #"{"type": "ttl", "ttl": "1s"}"# }.joined(separator: ",")
        #expect(rejection(#"{"address": "h", "port": 1, "checks": [\#(checks)]}"#)?.field == "checks")
        let longValue = String(repeating: "v", count: 513)
        #expect(rejection(#"{"address": "h", "port": 1, "meta": {"k": "\#(longValue)"}}"#)?.field == "meta.k")
    }

    @Test func wrongJSONTypesSurfaceAsDecodingErrorsWithThePath() {
        #expect {
            try validate(#"{"address": "h", "port": "80"}"#)
        } throws: { error in
            guard case DecodingError.typeMismatch(_, let context) = error else { return false }
            return JSONPath.render(context.codingPath) == "port"
        }
    }
}
