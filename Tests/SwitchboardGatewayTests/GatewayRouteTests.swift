import AsyncHTTPClient
import Foundation
import JWTKit
import NIOCore
import NIOHTTP1
import SwitchboardCore
import SwitchboardGateway
import SwitchboardTestSupport
import Synchronization
import Testing

/// A route file in a temporary directory; `write` replaces it (the gateway reads it again every 100 ms).
final class RouteFileOnDisk: Sendable {
    let path: String

    init(_ yaml: String) throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("gateway-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        path = directory.appendingPathComponent("gateway.yaml").path
        try write(yaml)
    }

    func write(_ yaml: String) throws {
        // Written aside and renamed: the gateway never reads half a file.
        let staging = path + ".new"
        try yaml.write(toFile: staging, atomically: false, encoding: .utf8)
        _ = rename(staging, path)
    }

    deinit {
        try? FileManager.default.removeItem(atPath: (path as NSString).deletingLastPathComponent)
    }
}

/// Values seen by concurrent callers.
final class SeenValues: Sendable {
    private let seen = Mutex<(values: Set<String>, epoch: Int)>(([], 0))
    func insert(_ value: String) { seen.withLock { _ = $0.values.insert(value) } }
    /// Inserts `value` only if no ``clear()`` happened since `epoch` (a request started before the clear, answered
    /// after it, tells of the time before).
    func insert(_ value: String, since epoch: Int) {
        seen.withLock { if $0.epoch == epoch { _ = $0.values.insert(value) } }
    }
    func clear() { seen.withLock { $0 = ([], $0.epoch + 1) } }
    var epoch: Int { seen.withLock { $0.epoch } }
    var values: Set<String> { seen.withLock { $0.values } }
}

/// The claims the tests sign.
struct TestClaims: JWTPayload {
    var sub: SubjectClaim
    var exp: ExpirationClaim
    var aud: AudienceClaim?
    var iss: IssuerClaim?
    var roles: [String]?

    func verify(using algorithm: some JWTAlgorithm) async throws {}
}

func claims(
    user: String = "ada", expiresIn: TimeInterval = 300, audience: String? = "shop-api", roles: [String] = ["shopper"]
) -> TestClaims {
    TestClaims(
        sub: SubjectClaim(value: user), exp: ExpirationClaim(value: Date().addingTimeInterval(expiresIn)),
        aud: audience.map { AudienceClaim(value: [$0]) }, iss: IssuerClaim(value: "https://auth.test"), roles: roles)
}

func get(_ url: String, headers: [(String, String)] = []) async throws -> HTTPAnswer {
    try await http(.GET, url, headers: headers)
}

@Suite("Gateway routes and policies from a route file, with real backends", .serialized, .loadsTheMachine)
struct GatewayRouteTests {
    static let secret = "a-test-secret-of-at-least-32-bytes!!"

    @Test func routesMatchOnPrefixHostHeaderAndMethodAndRewriteThePath() async throws {
        let agent = try await AgentProcess(dataDirectory: nil, dnsAddress: nil)
        let stable = try await ExampleBackend(agents: [agent.baseURL], service: "shop", tags: ["v1"], id: "shop-v1")
        let canary = try await ExampleBackend(agents: [agent.baseURL], service: "shop", tags: ["canary"], id: "shop-c")
        let admin = try await ExampleBackend(agents: [agent.baseURL], service: "admin", id: "admin-1")
        _ = (stable, canary, admin)
        try await waitForHealthy(agent, "shop", count: 2)
        try await waitForHealthy(agent, "admin", count: 1)
        let file = try RouteFileOnDisk(
            """
            routes:
              - name: admin-by-host
                match: { prefix: /, host: "*.admin.test" }
                service: admin
              - name: canary-by-header
                match: { prefix: /shop, headers: { X-Canary: "yes" } }
                service: shop
                tags: [canary]
                stripPrefix: true
              - name: echo-by-method
                match: { prefix: /shop, methods: [POST] }
                service: shop
                tags: [v1]
                rewrite: /echo
              - name: shop
                match: { prefix: /shop }
                service: shop
                tags: [v1]
                stripPrefix: true
              - name: greet
                match: { prefix: /greet }
                service: shop
                rewrite: /hello
              - name: split
                match: { prefix: /split }
                split:
                  - { service: shop, tags: [v1], weight: 3 }
                  - { service: shop, tags: [canary], weight: 1 }
                rewrite: /hello
            """)
        try await withGateway(agent: agent, configure: { $0.routeFile = file.path }) { gateway in
            #expect(try await get("\(gateway)/shop/hello").text.hasPrefix("hello from shop-v1"))
            #expect(
                try await get("\(gateway)/shop/hello", headers: [("X-Canary", "yes")]).text.hasPrefix(
                    "hello from shop-c"))
            let echoed = try await http(.POST, "\(gateway)/shop", body: Data("posted".utf8))
            #expect(echoed.status == 200 && echoed.text == "posted", "\(echoed.text)")
            #expect(try await get("\(gateway)/greet").text.hasPrefix("hello from shop-"))
            #expect(
                try await get("\(gateway)/hello", headers: [("Host", "ops.admin.test:7080")]).text.hasPrefix(
                    "hello from admin-1"))
            // Segment-aware prefixes, and nothing for what no route takes.
            let none = try await get("\(gateway)/shopping/hello")
            #expect(none.status == 404 && none.object["error"] as? String == "no_route")
            #expect(try await get("\(gateway)/hello").status == 404)
            // A weighted split sends to both sides, the heavier side more.
            var answers: [String: Int] = [:]
            for _ in 0..<80 {
                let text = try await get("\(gateway)/split").text
                answers[text.hasPrefix("hello from shop-v1") ? "v1" : "canary", default: 0] += 1
            }
            #expect((answers["v1"] ?? 0) > (answers["canary"] ?? 0) && (answers["canary"] ?? 0) > 5, "\(answers)")
        }
    }

    @Test func aRouteFileChangedUnderLoadTakesEffectWithoutAFailedCall() async throws {
        let agent = try await AgentProcess(dataDirectory: nil, dnsAddress: nil)
        let blue = try await ExampleBackend(agents: [agent.baseURL], service: "shop", tags: ["blue"], id: "blue")
        let green = try await ExampleBackend(agents: [agent.baseURL], service: "shop", tags: ["green"], id: "green")
        _ = (blue, green)
        try await waitForHealthy(agent, "shop", count: 2)
        @Sendable func routes(_ color: String) -> String {
            "routes:\n  - name: shop\n    match: { prefix: /shop }\n    service: shop\n    tags: [\(color)]\n    stripPrefix: true\n"
        }
        let file = try RouteFileOnDisk(routes("blue"))
        try await withGateway(
            agent: agent,
            configure: {
                $0.routeFile = file.path
                $0.routeReloadInterval = .milliseconds(100)
            }
        ) { gateway in
            let tally = LoadTally()
            let seen = SeenValues()
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<8 {
                    group.addTask {
                        while !tally.stop.load(ordering: .relaxed) {
                            do {
                                let epoch = seen.epoch
                                let answer = try await get("\(gateway)/shop/hello")
                                if answer.status == 200 {
                                    tally.completed.add(1, ordering: .relaxed)
                                    let color = answer.text.hasPrefix("hello from blue") ? "blue" : "green"
                                    seen.insert(color, since: epoch)
                                } else {
                                    tally.fail("status \(answer.status)")
                                }
                            } catch {
                                tally.fail("\(error)")
                            }
                        }
                    }
                }
                try await Task.sleep(for: .milliseconds(700))
                // A broken file is refused: the blue routes stay.
                try file.write("routes:\n  - name: shop\n    match: { prefix: shop }\n    service: shop\n")
                try await Task.sleep(for: .milliseconds(500))
                #expect(seen.values == ["blue"])
                try file.write(routes("green"))
                try await Task.sleep(for: .milliseconds(700))
                seen.clear()
                try await Task.sleep(for: .milliseconds(500))
                tally.stop.store(true, ordering: .relaxed)
                try await group.waitForAll()
            }
            #expect(tally.failures == [])
            // Calls kept flowing through both reloads (a loaded machine completes fewer in the window; none failed).
            #expect(tally.completed.load(ordering: .relaxed) > 20)
            #expect(seen.values == ["green"])
        }
    }

    @Test func tokensAndAPIKeysAreCheckedAndTheIdentityForwardedWithSpoofsStripped() async throws {
        let agent = try await AgentProcess(dataDirectory: nil, dnsAddress: nil)
        let backend = try await ExampleBackend(agents: [agent.baseURL], service: "shop")
        _ = backend
        try await waitForHealthy(agent, "shop", count: 1)
        let ecKey = ES256PrivateKey()
        let rsaPEM = try await runProgram("/usr/bin/openssl", ["genrsa", "2048"]).stdout
        let rsaKey = try Insecure.RSA.PrivateKey(pem: rsaPEM)
        let signers = JWTKeyCollection()
        await signers.add(hmac: HMACKey(from: Self.secret), digestAlgorithm: .sha256, kid: "hs")
        await signers.add(ecdsa: ecKey, kid: "ec")
        await signers.add(rsa: rsaKey, digestAlgorithm: .sha256, kid: "rs")
        let strangers = JWTKeyCollection()
        await strangers.add(hmac: HMACKey(from: String(Self.secret.reversed())), digestAlgorithm: .sha256, kid: "hs")
        func indent(_ pem: String) -> String {
            pem.split(separator: "\n").map { "          \($0)" }.joined(separator: "\n")
        }
        let file = try RouteFileOnDisk(
            """
            authentication:
              jwt:
                issuer: https://auth.test
                audience: shop-api
                keys:
                  - { kid: hs, algorithm: HS256, secret: "\(Self.secret)" }
                  - kid: ec
                    algorithm: ES256
                    publicKey: |
            \(indent(ecKey.publicKey.pemRepresentation))
                  - kid: rs
                    algorithm: RS256
                    publicKey: |
            \(indent(rsaKey.publicKey.pemRepresentation))
              apiKeys:
                - { key: "reporting-key-0123456789", user: reporting, roles: [reader] }
            routes:
              - name: admin
                match: { prefix: /admin }
                service: shop
                rewrite: /headers
                auth: { method: jwt, roles: [admin] }
              - name: orders
                match: { prefix: /orders }
                service: shop
                rewrite: /headers
                auth: { method: any }
              - name: open
                match: { prefix: /open }
                service: shop
                rewrite: /headers
            """)
        try await withGateway(agent: agent, configure: { $0.routeFile = file.path }) { gateway in
            func bearer(_ token: String) -> [(String, String)] { [("Authorization", "Bearer \(token)")] }
            for kid in ["hs", "ec", "rs"] {
                let token = try await signers.sign(claims(), kid: JWKIdentifier(string: kid))
                let answer = try await get(
                    "\(gateway)/orders", headers: bearer(token) + [("X-User-ID", "mallory"), ("X-User-Roles", "admin")])
                #expect(answer.status == 200, "\(kid): \(answer.text)")
                let seen = answer.object as? [String: String] ?? [:]
                #expect(seen["x-user-id"] == "ada" && seen["x-user-roles"] == "shopper", "\(kid): \(seen)")
            }
            let refusals: [(String, String, String)] = [
                ("expired", try await signers.sign(claims(expiresIn: -60), kid: "hs"), "expired"),
                ("wrong signature", try await strangers.sign(claims(), kid: "hs"), "signature"),
                ("wrong audience", try await signers.sign(claims(audience: "billing"), kid: "hs"), "audience"),
                ("garbage", "not.a.token", "well-formed"),
            ]
            for (name, token, reason) in refusals {
                let answer = try await get("\(gateway)/orders", headers: bearer(token))
                #expect(answer.status == 401, "\(name)")
                #expect((answer.object["message"] as? String)?.contains(reason) == true, "\(name): \(answer.text)")
                #expect(answer.headers.first(name: "WWW-Authenticate")?.hasPrefix("Bearer") == true, "\(name)")
            }
            let missing = try await get("\(gateway)/orders")
            #expect(missing.status == 401 && missing.headers.first(name: "WWW-Authenticate") == "Bearer")
            // Roles: an allow list.
            let shopper = try await signers.sign(claims(), kid: "hs")
            #expect(try await get("\(gateway)/admin", headers: bearer(shopper)).status == 403)
            let adminToken = try await signers.sign(claims(user: "grace", roles: ["admin"]), kid: "ec")
            #expect(try await get("\(gateway)/admin", headers: bearer(adminToken)).status == 200)
            // API keys.
            let keyed = try await get("\(gateway)/orders", headers: [("X-API-Key", "reporting-key-0123456789")])
            #expect(keyed.status == 200 && (keyed.object as? [String: String])?["x-user-id"] == "reporting")
            #expect(
                try await get("\(gateway)/orders", headers: [("X-API-Key", "guessed-key-0123456789")]).status == 401)
            #expect(
                try await get("\(gateway)/admin", headers: [("X-API-Key", "reporting-key-0123456789")]).status == 401)
            // Other spellings of a protected path meet the protected route, not the open one.
            let port = try #require(Int(gateway.split(separator: ":").last ?? ""))
            for spelling in ["/open/../admin", "//admin", "/%61dmin", "/open/%2e%2e/admin", "/open/./../admin/"] {
                let answer = await rawExchange(
                    ["GET \(spelling) HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"], port: port)
                #expect(answer.hasPrefix("HTTP/1.1 401"), "\(spelling): \(answer.prefix(120))")
            }
            for refused in ["/open/%2fadmin", "/open/..%5cadmin", "/../admin"] {
                let answer = await rawExchange(
                    ["GET \(refused) HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"], port: port)
                #expect(answer.hasPrefix("HTTP/1.1 400"), "\(refused): \(answer.prefix(120))")
            }
            // Without authentication, a caller's identity headers are dropped all the same.
            let open = try await get("\(gateway)/open", headers: [("X-User-ID", "mallory"), ("X-User-Roles", "admin")])
            let seen = open.object as? [String: String] ?? [:]
            #expect(open.status == 200 && seen["x-user-id"] == nil && seen["x-user-roles"] == nil, "\(seen)")
        }
    }

    @Test func rateLimitsCacheCORSAndHeaderEditsApplyPerRoute() async throws {
        let agent = try await AgentProcess(dataDirectory: nil, dnsAddress: nil)
        let backend = try await ExampleBackend(agents: [agent.baseURL], service: "shop")
        try await waitForHealthy(agent, "shop", count: 1)
        let logFile = FileManager.default.temporaryDirectory.appendingPathComponent("access-\(UUID().uuidString).log")
            .path
        defer { try? FileManager.default.removeItem(atPath: logFile) }
        let file = try RouteFileOnDisk(
            """
            routes:
              - name: limited
                match: { prefix: /limited }
                service: shop
                rewrite: /hello
                rateLimit: { key: client-ip, rate: 0.01, burst: 3 }
              - name: cached
                match: { prefix: /cached }
                service: shop
                rewrite: /hello
                cache: { ttl: 1s }
              - name: browser
                match: { prefix: /browser }
                service: shop
                rewrite: /headers
                cors: { origins: ["https://shop.test"], methods: [GET, POST], headers: [Content-Type], maxAge: 60 }
                requestHeaders: { set: { X-From-Gateway: "yes" }, remove: [X-Internal] }
                responseHeaders: { set: { X-Served-By: gateway }, remove: [Date] }
            """)
        let adminPort = try freePort()
        try await withGateway(
            agent: agent,
            configure: {
                $0.routeFile = file.path
                $0.accessLog = .file(logFile)
                $0.admin = ("127.0.0.1", adminPort)
            }
        ) { gateway in
            var statuses: [Int] = []
            var refused: HTTPAnswer?
            for _ in 0..<4 {
                let answer = try await get("\(gateway)/limited?token=secret")
                statuses.append(answer.status)
                if answer.status == 429 { refused = answer }
            }
            #expect(statuses == [200, 200, 200, 429])
            #expect(Int(refused?.headers.first(name: "Retry-After") ?? "") ?? 0 >= 1)
            #expect(refused?.headers.first(name: "X-RateLimit-Remaining") == "0")

            let before = try await backend.answeredCalls()
            let first = try await get("\(gateway)/cached")
            let second = try await get("\(gateway)/cached")
            #expect(first.headers.first(name: "X-Cache") == "MISS" && second.headers.first(name: "X-Cache") == "HIT")
            #expect(first.text == second.text)
            #expect(try await backend.answeredCalls() == before + 1)
            try await Task.sleep(for: .milliseconds(1200))
            let third = try await get("\(gateway)/cached")
            #expect(third.headers.first(name: "X-Cache") == "MISS" && third.text != first.text)
            #expect(try await backend.answeredCalls() == before + 2)

            let preflight = try await http(
                .OPTIONS, "\(gateway)/browser",
                headers: [("Origin", "https://shop.test"), ("Access-Control-Request-Method", "POST")])
            #expect(preflight.status == 204)
            #expect(preflight.headers.first(name: "Access-Control-Allow-Origin") == "https://shop.test")
            #expect(preflight.headers.first(name: "Access-Control-Allow-Methods") == "GET, POST")
            let foreign = try await get("\(gateway)/browser", headers: [("Origin", "https://evil.test")])
            #expect(foreign.status == 403)
            let actual = try await get(
                "\(gateway)/browser", headers: [("Origin", "https://shop.test"), ("X-Internal", "secret")])
            #expect(actual.headers.first(name: "Access-Control-Allow-Origin") == "https://shop.test")
            #expect(actual.headers.first(name: "X-Served-By") == "gateway" && actual.headers.first(name: "Date") == nil)
            let seen = actual.object as? [String: String] ?? [:]
            #expect(seen["x-from-gateway"] == "yes" && seen["x-internal"] == nil, "\(seen)")

            // Metrics per route and upstream on the admin address.
            let metrics = try await get("http://127.0.0.1:\(adminPort)/metrics").text
            #expect(
                metrics.contains(#"switchboard_gateway_requests_total{route="limited",service="shop",code="4xx"} 1"#),
                "\(metrics)")
            #expect(
                metrics.contains(#"switchboard_gateway_requests_total{route="limited",service="shop",code="2xx"} 3"#))
            #expect(metrics.contains(#"switchboard_gateway_rate_limited_total{route="limited"} 1"#))
            #expect(metrics.contains(#"switchboard_gateway_cache_total{route="cached",result="hit"} 1"#))
            #expect(metrics.contains("switchboard_gateway_upstream_requests_total{service=\"shop\""))
            #expect(metrics.contains("switchboard_gateway_request_duration_seconds_bucket{route=\"cached\""))
            let routes = try await get("http://127.0.0.1:\(adminPort)/routes")
            #expect(routes.text.contains(#""name":"browser""#))
        }
        // One JSON line per request; the query (which may hold secrets) is not logged.
        let lines = try String(contentsOfFile: logFile, encoding: .utf8).split(separator: "\n")
        let entries = try lines.map { try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] ?? [:] }
        #expect(entries.count == 10, "\(lines)")
        let limited = entries.filter { $0["route"] as? String == "limited" }
        #expect(limited.map { $0["status"] as? Int } == [200, 200, 200, 429])
        #expect(limited.allSatisfy { $0["path"] as? String == "/limited" && ($0["requestId"] as? String)?.count == 32 })
        #expect(!lines.contains { $0.contains("secret") })
        #expect(entries.contains { $0["cache"] as? String == "HIT" })
    }

    @Test func aStickyRouteKeepsACallerOnOneInstanceUntilItDiesAndMovesOnlyItsCallers() async throws {
        let agent = try await AgentProcess(dataDirectory: nil, dnsAddress: nil)
        var backends: [String: ExampleBackend] = [:]
        for id in ["shop-a", "shop-b", "shop-c"] {
            backends[id] = try await ExampleBackend(agents: [agent.baseURL], service: "shop", id: id)
        }
        try await waitForHealthy(agent, "shop", count: 3)
        let started = backends
        let file = try RouteFileOnDisk(
            """
            routes:
              - name: cart
                match: { prefix: /cart }
                service: shop
                rewrite: /hello
                sticky: { cookie: sb-session, maxAge: 1h }
              - name: user
                match: { prefix: /user }
                service: shop
                rewrite: /hello
                sticky: { header: X-User-ID }
            """)
        try await withGateway(agent: agent, configure: { $0.routeFile = file.path }) { gateway in
            func instance(_ answer: HTTPAnswer) -> String {
                answer.text.split(separator: " ").dropFirst(2).first.map(String.init) ?? "none: \(answer.text)"
            }
            // The gateway sets the cookie on the first answer; the caller sending it back stays put.
            let first = try await get("\(gateway)/cart")
            let cookie = try #require(first.headers.first(name: "Set-Cookie"), "\(first.headers)")
            #expect(cookie.hasSuffix("; Path=/; HttpOnly; SameSite=Lax; Max-Age=3600"), "\(cookie)")
            let session = String(cookie.prefix { $0 != ";" })
            let pinned = instance(first)
            for _ in 0..<20 {
                let answer = try await get("\(gateway)/cart", headers: [("Cookie", "theme=dark; \(session)")])
                #expect(instance(answer) == pinned && answer.headers.first(name: "Set-Cookie") == nil)
            }
            // A header's value is hashed the same way: each user keeps an instance, and the users spread.
            var byUser: [String: String] = [:]
            for user in (1...12).map({ "user-\($0)" }) {
                var seen: Set<String> = []
                for _ in 0..<4 {
                    seen.insert(instance(try await get("\(gateway)/user", headers: [("X-User-ID", user)])))
                }
                #expect(seen.count == 1, "\(user) reached \(seen)")
                byUser[user] = seen.first
            }
            #expect(Set(byUser.values).count > 1, "\(byUser)")

            // The pinned instance dies: once the registry drops it, the caller moves to one other instance and stays
            // there; callers of the other instances do not move.
            await started[pinned]!.stop(with: SIGKILL)
            try await waitForHealthy(agent, "shop", count: 2)
            try await Task.sleep(for: .milliseconds(300))
            var after: Set<String> = []
            for _ in 0..<10 {
                let answer = try await get("\(gateway)/cart", headers: [("Cookie", session)])
                #expect(answer.status == 200, "\(answer.text)")
                after.insert(instance(answer))
            }
            #expect(after.count == 1 && !after.contains(pinned), "\(after) after \(pinned) died")
            for (user, owner) in byUser where owner != pinned {
                let now = instance(try await get("\(gateway)/user", headers: [("X-User-ID", user)]))
                #expect(now == owner, "\(user) moved from \(owner) to \(now) though \(owner) lives")
            }
        }
    }

    @Test func aPurgeDropsCachedAnswersThroughTheProxyAndTheAdminAddress() async throws {
        let agent = try await AgentProcess(dataDirectory: nil, dnsAddress: nil)
        let backend = try await ExampleBackend(agents: [agent.baseURL], service: "shop")
        _ = backend
        try await waitForHealthy(agent, "shop", count: 1)
        let file = try RouteFileOnDisk(
            """
            routes:
              - name: items
                match: { prefix: /items, methods: [GET] }
                service: shop
                rewrite: /hello
                cache: { ttl: 60s, purge: true }
              - name: plain
                match: { prefix: /plain }
                service: shop
                rewrite: /hello
                cache: { ttl: 60s }
            """)
        let adminPort = try freePort()
        let admin = "http://127.0.0.1:\(adminPort)"
        try await withGateway(
            agent: agent,
            configure: {
                $0.routeFile = file.path
                $0.admin = ("127.0.0.1", adminPort)
            }
        ) { gateway in
            func cacheState(_ path: String) async throws -> String? {
                try await get("\(gateway)\(path)").headers.first(name: "X-Cache")
            }
            for path in ["/items?id=1", "/items?id=2", "/plain"] {
                #expect(try await cacheState(path) == "MISS")
                #expect(try await cacheState(path) == "HIT")
            }
            // PURGE on the proxy, where the route's cache takes it: that path's answer only.
            let purge = try await http(.PURGE, "\(gateway)/items?id=1")
            #expect(purge.status == 200 && purge.object["purged"] as? Int == 1, "\(purge.text)")
            #expect(try await cacheState("/items?id=1") == "MISS")
            #expect(try await cacheState("/items?id=2") == "HIT")
            let refused = try await http(.PURGE, "\(gateway)/plain")
            #expect(refused.status == 405 && refused.text.contains("cache.purge"), "\(refused.text)")
            #expect(try await cacheState("/plain") == "HIT")

            // The admin address: every path under a prefix, or a whole route.
            let underItems = try await http(.DELETE, "\(admin)/cache?route=items&path=/items*")
            #expect(underItems.status == 200 && underItems.object["purged"] as? Int == 2, "\(underItems.text)")
            #expect(try await cacheState("/items?id=2") == "MISS")
            let whole = try await http(.DELETE, "\(admin)/cache?route=plain")
            #expect(whole.status == 200 && whole.object["purged"] as? Int == 1, "\(whole.text)")
            #expect(try await cacheState("/plain") == "MISS")
            #expect(try await http(.DELETE, "\(admin)/cache?route=nothing").status == 404)
            let missing = try await http(.DELETE, "\(admin)/cache")
            #expect(missing.status == 400 && missing.text.contains("route is required"), "\(missing.text)")
            let relative = try await http(.DELETE, "\(admin)/cache?route=items&path=items")
            #expect(relative.status == 400 && relative.text.contains("path must start with '/'"), "\(relative.text)")
        }
    }
}

extension GatewayRouteTests {
    @Test func aReloadKeepsCallersRateLimitsUnlessTheLimitChanged() async throws {
        let agent = try await AgentProcess(dataDirectory: nil, dnsAddress: nil)
        let backend = try await ExampleBackend(agents: [agent.baseURL], service: "shop")
        try await waitForHealthy(agent, "shop", count: 1)
        @Sendable func routes(burst: Int, extra: String) -> String {
            """
            routes:
              - name: limited
                match: { prefix: /limited }
                service: shop
                rewrite: /hello
                rateLimit: { key: client-ip, rate: 0.01, burst: \(burst) }
              - name: marker
                match: { prefix: /marker }
                service: shop
                rewrite: \(extra)
            """
        }
        let file = try RouteFileOnDisk(routes(burst: 2, extra: "/hello"))
        try await withGateway(agent: agent, configure: { $0.routeFile = file.path }) { gateway in
            @Sendable func limitedStatuses(_ count: Int) async throws -> [Int] {
                var statuses: [Int] = []
                for _ in 0..<count { statuses.append(try await get("\(gateway)/limited").status) }
                return statuses
            }
            /// Rewrites the file and waits until the gateway answers /marker from the new routes.
            @Sendable func reload(burst: Int, extra: String, expecting marker: String) async throws {
                try file.write(routes(burst: burst, extra: extra))
                let deadline = ContinuousClock.now + .seconds(10)
                while try await get("\(gateway)/marker").text.hasPrefix(marker) == false {
                    guard ContinuousClock.now < deadline else {
                        throw TestFailure("the changed route file was never put in force")
                    }
                    try await Task.sleep(for: .milliseconds(50))
                }
            }
            #expect(try await limitedStatuses(3) == [200, 200, 429])
            // Another route changed, this one did not: the caller's bucket is still empty.
            try await reload(burst: 2, extra: "/uri", expecting: "/uri")
            #expect(try await limitedStatuses(1) == [429])
            // The limit itself changed: a new bucket, full.
            try await reload(burst: 3, extra: "/hello", expecting: "hello")
            #expect(try await limitedStatuses(4) == [200, 200, 200, 429])
        }
        _ = backend
    }

    @Test func anAggregateRouteAnswersWithEveryPartAndMarksTheOnesThatFailed() async throws {
        let agent = try await AgentProcess(dataDirectory: nil, dnsAddress: nil)
        let users = try await ExampleBackend(agents: [agent.baseURL], service: "users")
        let posts = try await ExampleBackend(agents: [agent.baseURL], service: "posts")
        _ = (users, posts)
        try await waitForHealthy(agent, "users", count: 1)
        try await waitForHealthy(agent, "posts", count: 1)
        let file = try RouteFileOnDisk(
            """
            routes:
              - name: profile
                match: { prefix: /profile }
                aggregate:
                  timeout: 400ms
                  parts:
                    - { name: user, service: users, path: /headers }
                    - { name: posts, service: posts, path: "/uri?user={rest}" }
                    - { name: comments, service: comments, path: /hello }
                    - { name: likes, service: posts, path: /slow, timeout: 300ms }
            """)
        try await withGateway(agent: agent, configure: { $0.routeFile = file.path }) { gateway in
            let started = ContinuousClock.now
            let answer = try await get("\(gateway)/profile/42?ms=3000", headers: [("X-Request-ID", "profile-1")])
            #expect(ContinuousClock.now - started < .seconds(2))
            #expect(answer.status == 200, "\(answer.text)")
            let object = answer.object
            #expect(object["partial"] as? Bool == true, "\(answer.text)")
            #expect((object["user"] as? [String: String])?["x-request-id"] == "profile-1", "\(answer.text)")
            // {rest} is what followed the prefix, escaped as one query value; the caller's query is passed on.
            #expect(object["posts"] as? String == "/uri?user=42&ms=3000\n", "\(answer.text)")
            for spoof in ["/profile/42&role=admin", "/profile/42%26role%3Dadmin"] {
                let escaped = try await get("\(gateway)\(spoof)")
                #expect(escaped.object["posts"] as? String == "/uri?user=42%26role%3Dadmin\n", "\(escaped.text)")
            }
            #expect(object["comments"] is NSNull && object["likes"] is NSNull, "\(answer.text)")
            let errors = object["errors"] as? [String: String] ?? [:]
            #expect(errors["comments"]?.contains("comments") == true, "\(errors)")
            #expect(errors["likes"]?.contains("no answer within") == true, "\(errors)")
            #expect(errors["user"] == nil && errors["posts"] == nil)
        }
    }
}
