import Testing

@testable import SwitchboardGateway

@Suite("The gateway's path normalisation, rewriting and route file checks")
struct RoutingTests {
    @Test func pathsAreNormalisedSoEveryReadingOfAPathMeetsTheSameRoute() {
        let cases: [(String, String?)] = [
            ("/api/admin", "/api/admin"),
            ("/api//admin", "/api/admin"),
            ("/api/./admin", "/api/admin"),
            ("/api/x/../admin", "/api/admin"),
            ("/api/%61dmin?x=%2F", "/api/admin?x=%2F"),
            ("/api/a%2fb", nil),
            ("/api/a%5Cb", nil),
            ("/api\\admin", nil),
            ("/api/%00", nil),
            ("/../etc/passwd", nil),
            ("/api/%zz", nil),
            ("/api/caf%c3%a9", "/api/caf%C3%A9"),
            ("/api/", "/api/"),
            ("/api/.", "/api/"),
            ("/api/..", "/"),
            ("/", "/"),
            ("/.well-known/x", "/.well-known/x"),
            ("/a/..b", "/a/..b"),
            ("*", "*"),
        ]
        for (target, expected) in cases {
            #expect(RequestPath.normalize(target) == expected, "\(target)")
        }
    }

    @Test func rewritingReplacesThePrefixAndKeepsSegmentsApart() {
        func path(prefix: String, rewrite: String, target: String) -> String {
            let route = Route(name: "r", prefix: prefix, targets: [], rewrite: rewrite)
            let rest = Route.afterPrefix(prefix, of: Substring(target)) ?? ""
            return route.upstreamPath(original: target, rest: rest)
        }
        #expect(path(prefix: "/a", rewrite: "/b/", target: "/a/x?q") == "/b/x?q")
        #expect(path(prefix: "/a", rewrite: "/b", target: "/a/x") == "/b/x")
        #expect(path(prefix: "/api/", rewrite: "/v2", target: "/api/users") == "/v2/users")
        #expect(path(prefix: "/a", rewrite: "/", target: "/a") == "/")
        #expect(path(prefix: "/a", rewrite: "/", target: "/a?x=1") == "/?x=1")
        #expect(Route.afterPrefix("/api", of: "/apiary") == nil)
    }

    @Test func routeFilesBreakingARuleAreRefusedNamingTheField() async {
        let cases: [(String, String)] = [
            ("routes:\n  - match: { prefix: /a }\n    service: s\n    retires: 2\n", "routes[0].retires"),
            ("routes:\n  - match: { prefix: a }\n    service: s\n", "routes[0].match.prefix"),
            ("routes:\n  - match: { prefix: /a }\n", "routes[0].service"),
            ("routes:\n  - service: s\n    timeout: soon\n", "routes[0].timeout"),
            (
                "routes:\n  - service: s\n    cors: { origins: ['*'], credentials: true }\n",
                "routes[0].cors"
            ),
            ("routes:\n  - service: s\n    auth: { method: jwt }\n", "routes[0].auth"),
            (
                "authentication:\n  jwt:\n    keys:\n      - { algorithm: HS256, secret: short }\n"
                    + "routes:\n  - service: s\n", "authentication.jwt.keys[0]"
            ),
            ("routes:\n  - { name: a, service: s }\n  - { name: a, service: t }\n", "routes[1].name"),
            ("routes:\n  - service: s\n    split: [{ service: t, weight: 1 }]\n", "routes[0].split"),
            ("routes:\n  - service: s\n    sticky: { header: X-User }\n    balancer: random\n", "routes[0].balancer"),
            ("routes:\n  - service: s\n    sticky: { header: X-User, maxAge: 1h }\n", "routes[0].sticky"),
            ("routes:\n  - service: s\n    sticky: { cookie: 'a b' }\n", "routes[0].sticky.cookie"),
            ("routes:\n  - service: s\n    sticky: {}\n", "routes[0].sticky"),
            ("routes:\n  - service: s\n    balancer: consistent-hash\n", "routes[0].balancer"),
            ("routes:\n  - service: s\n    cache: { ttl: 1s, purge: maybe }\n", "routes[0].cache.purge"),
            ("routes: [\n", ""),
        ]
        for (yaml, field) in cases {
            do {
                _ = try await RouteFile.parse(yaml, source: "test")
                Issue.record("accepted: \(yaml)")
            } catch {
                #expect(error.field == field, "\(yaml): \(error)")
            }
        }
    }
}
