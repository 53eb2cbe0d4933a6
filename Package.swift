// swift-tools-version:6.1
import PackageDescription

// One set of Swift settings for every target, so the whole package builds under the same rules.
let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "switchboard",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "switchboard", targets: ["switchboard"]),
        .library(name: "SwitchboardCore", targets: ["SwitchboardCore"]),
        .library(name: "SwitchboardCatalog", targets: ["SwitchboardCatalog"]),
        .library(name: "SwitchboardAgent", targets: ["SwitchboardAgent"]),
        .library(name: "SwitchboardClient", targets: ["SwitchboardClient"]),
        .library(name: "SwitchboardDNS", targets: ["SwitchboardDNS"]),
        .library(name: "SwitchboardGateway", targets: ["SwitchboardGateway"]),
        .executable(name: "switchboard-example", targets: ["SwitchboardExample"]),
    ],
    dependencies: [
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-collections.git", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/vapor/jwt-kit.git", from: "5.8.0"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-distributed-tracing.git", from: "1.7.3"),
        // Settings of the commands from flags, SWITCHBOARD_* variables and a YAML file (Hummingbird depends on it too).
        .package(url: "https://github.com/apple/swift-configuration.git", from: "1.4.0", traits: ["YAML"]),
        .package(url: "https://github.com/apple/swift-system.git", from: "1.8.1"),
        .package(url: "https://github.com/CoreOffice/XMLCoder.git", from: "0.18.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        // HTTP/2 to the gateway's callers (h2 over TLS by ALPN, h2c with prior knowledge).
        .package(url: "https://github.com/apple/swift-nio-http2.git", from: "1.46.0"),
        // SHA-256 of ACL token secrets (jwt-kit and swift-certificates depend on it too).
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
        // Spans exported over OTLP/HTTP when --otlp-endpoint is given; only the HTTP exporter (the default traits also
        // build gRPC).
        .package(url: "https://github.com/swift-otel/swift-otel.git", from: "1.6.0", traits: ["OTLPHTTP"]),
    ],
    targets: [
        // The model, its validation, the API's wire types and paths: what every part (and every user of the client
        // library) shares. Foundation only.
        .target(name: "SwitchboardCore"),
        // The catalog: its state machine, the live catalog and the store contract. The agent and DNS build on it;
        // the client library never does.
        .target(
            name: "SwitchboardCatalog",
            dependencies: [
                "SwitchboardCore",
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "HashTreeCollections", package: "swift-collections"),
            ]
        ),
        // What the executables share about being a process: unbuffered standard streams, ending with the parent; and
        // the process figures (memory, descriptors, CPU) the agent's and the gateway's /metrics end with.
        .target(name: "ProcessSupport"),
        // DNS for the agent: a hand-written message codec (no listed package does DNS) and UDP/TCP servers.
        .target(
            name: "SwitchboardDNS",
            dependencies: [
                "SwitchboardCore",
                "SwitchboardCatalog",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // A client of etcd's v3 API over its JSON gateway, with failover between members: cluster mode's store.
        .target(
            name: "SwitchboardEtcd",
            dependencies: [
                "SwitchboardCore",
                "SwitchboardClient",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
        // Server-side TLS material shared by the agent and the gateway: certificates loaded and re-read on change.
        .target(
            name: "SwitchboardTLS",
            dependencies: [
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .target(
            name: "SwitchboardAgent",
            dependencies: [
                "ProcessSupport",
                "SwitchboardTLS",
                "SwitchboardCore",
                "SwitchboardCatalog",
                "SwitchboardClient",
                "SwitchboardDNS",
                "SwitchboardEtcd",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "XMLCoder", package: "XMLCoder"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "HeapModule", package: "swift-collections"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
            ],
            resources: [.embedInCode("Resources/openapi.yaml")]
                // The dashboard's files (see `Dashboard.swift`), one by one: each becomes bytes in the binary.
                + [
                    "index.html", "dashboard.css", "app.js", "api.js", "stream.js", "view.js", "services.js",
                    "service.js", "events.js", "agent.js", "gateways.js",
                ].map { .embedInCode("Resources/ui/\($0)") }
        ),
        .target(
            name: "SwitchboardClient",
            dependencies: [
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                "SwitchboardCore",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
            ]
        ),
        // The gateway: server-side discovery, an HTTP/1.1 reverse proxy on SwiftNIO over the client library.
        .target(
            name: "SwitchboardGateway",
            dependencies: [
                "ProcessSupport",
                "SwitchboardTLS",
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                "SwitchboardCore",
                "SwitchboardClient",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOExtras", package: "swift-nio-extras"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
            ]
        ),
        // A runnable example of the client library (a self-registering backend and a caller); the client's
        // integration tests run it as processes.
        .target(
            name: "Demo",
            dependencies: [
                "SwitchboardCore",
                "ProcessSupport",
                "SwitchboardClient",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
            ],
            // The polyglot member of the shop: a Python service the runner writes out and starts under sidecars.
            resources: [.embedInCode("Resources/notification.py")]
        ),
        .executableTarget(
            name: "SwitchboardExample",
            dependencies: [
                "ProcessSupport",
                "SwitchboardClient",
                "SwitchboardCore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
        // Micro-benchmarks of the client library (bench/client.sh runs them on a release build).
        .executableTarget(
            name: "SwitchboardClientBench",
            dependencies: [
                "SwitchboardClient",
                "SwitchboardCore",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        // `switchboard sidecar`: registration, probes and supervision for a service in any language, over the client
        // library (its outbound proxy is the gateway's engine).
        .target(
            name: "SwitchboardSidecar",
            dependencies: [
                "SwitchboardCore",
                "SwitchboardClient",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ]
        ),
        .executableTarget(
            name: "switchboard",
            dependencies: [
                "SwitchboardSidecar",
                "SwitchboardTLS",
                "ProcessSupport",
                "SwitchboardCore",
                "SwitchboardCatalog",
                "SwitchboardClient",
                "SwitchboardAgent",
                "SwitchboardDNS",
                "SwitchboardGateway",
                "Demo",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Configuration", package: "swift-configuration"),
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "OTel", package: "swift-otel"),
            ]
        ),
        .testTarget(name: "SwitchboardCoreTests", dependencies: ["SwitchboardCore"]),
        // The rules of ARCHITECTURE.md (arrows that must never exist, paths built in one place), checked against the
        // manifest, the compiler's dependency files and the sources.
        .testTarget(name: "ArchitectureTests"),
        .testTarget(
            name: "SwitchboardCatalogTests",
            dependencies: [
                "SwitchboardCatalog",
                "SwitchboardCore",
                .product(name: "HashTreeCollections", package: "swift-collections"),
            ]
        ),
        // What the test targets share: an in-process agent, the built binary as a process.
        .target(
            name: "SwitchboardTestSupport",
            dependencies: [
                "ProcessSupport",
                "SwitchboardCore",
                "SwitchboardCatalog",
                "SwitchboardAgent",
                "SwitchboardDNS",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            path: "Tests/SwitchboardTestSupport"
        ),
        .testTarget(
            name: "SwitchboardClientTests",
            dependencies: [
                "SwitchboardClient",
                "SwitchboardCore",
                "SwitchboardTestSupport",
                "SwitchboardExample",
                "switchboard",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "InMemoryTracing", package: "swift-distributed-tracing"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
            ]
        ),
        .testTarget(
            name: "DemoTests",
            dependencies: [
                "SwitchboardTestSupport", "switchboard", "SwitchboardCore",
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "SwitchboardGatewayTests",
            dependencies: [
                "SwitchboardCore",
                "SwitchboardClient",
                "SwitchboardGateway",
                "SwitchboardTestSupport",
                "SwitchboardExample",
                "switchboard",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                // The upstream proxy's tests run TCP echo servers and callers.
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "JWTKit", package: "jwt-kit"),
                // The proxy handler's tests drive it on embedded channels, without sockets.
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "InMemoryTracing", package: "swift-distributed-tracing"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
            ]
        ),
        .testTarget(
            name: "SwitchboardDNSTests",
            dependencies: [
                "SwitchboardCore",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                "SwitchboardDNS",
                "SwitchboardAgent",
                "SwitchboardClient",
                "SwitchboardEtcd",
                "SwitchboardTestSupport",
                "switchboard",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .testTarget(
            name: "SwitchboardAgentTests",
            dependencies: [
                "SwitchboardCore",
                "SwitchboardAgent",
                "SwitchboardClient",
                "SwitchboardEtcd",
                "SwitchboardTestSupport",
                "switchboard",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
            ]
        ),
    ]
)

for target in package.targets {
    target.swiftSettings = (target.swiftSettings ?? []) + swiftSettings
}
