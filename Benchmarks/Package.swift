// swift-tools-version:6.1
import PackageDescription

// Micro-benchmarks with ordo-one/benchmark: allocations (and time) per proxied exchange in the gateway, measured in
// memory through the gateway's `InMemoryGateway`. A package of its own, so the project's build and `swift test`
// never fetch or build the benchmark framework. Run from this folder:
//
//     swift package benchmark                       # run and print
//     swift package benchmark thresholds check      # compare with Thresholds/, exit 2 on a regression
//
// bench/allocations.sh does both.
let package = Package(
    name: "SwitchboardBenchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "switchboard", path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "ProxyAllocations",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "SwitchboardGateway", package: "switchboard"),
                .product(name: "SwitchboardClient", package: "switchboard"),
                .product(name: "SwitchboardCore", package: "switchboard"),
            ],
            path: "Benchmarks/ProxyAllocations",
            swiftSettings: [.swiftLanguageMode(.v6)],
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        )
    ]
)
