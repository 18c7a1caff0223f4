// swift-tools-version:6.0
import PackageDescription

// Benchmarks live in their own package so that the product's build stays lean.
let package = Package(
    name: "snapcron-benchmarks",
    platforms: [.macOS(.v14)],
    dependencies: [
        .package(name: "snapcron", path: "..")
    ],
    targets: [
        .executableTarget(
            name: "cron-bench",
            dependencies: [.product(name: "CronExpression", package: "snapcron")],
            swiftSettings: [.unsafeFlags(["-Ounchecked"], .when(configuration: .release))]
        ),
        .executableTarget(
            name: "daemon-bench",
            dependencies: [
                .product(name: "SnapcronCore", package: "snapcron"),
                .product(name: "SnapcronConfig", package: "snapcron"),
                .product(name: "BackendTypes", package: "snapcron"),
                .product(name: "ExecDescriptor", package: "snapcron"),
                .product(name: "SnapcronStore", package: "snapcron"),
                .product(name: "SnapcronTestKit", package: "snapcron"),
                .product(name: "CronExpression", package: "snapcron"),
                .product(name: "SnapshotBackend", package: "snapcron"),
                .product(name: "SnapcronPostgres", package: "snapcron"),
                .product(name: "PostgresHarness", package: "snapcron"),
            ]
        ),
        // A fleet's night on the real run engine and real backend code: TWCC against the stand-in API, exec with
        // real processes; time runs on a clock sped up by a known factor (the backend's pacing too).
        .executableTarget(
            name: "fleet-bench",
            dependencies: [
                .product(name: "SnapcronCore", package: "snapcron"),
                .product(name: "SnapcronStore", package: "snapcron"),
                .product(name: "SnapshotBackend", package: "snapcron"),
                .product(name: "TWCCBackend", package: "snapcron"),
                .product(name: "TWCCDescriptor", package: "snapcron"),
                .product(name: "ExecDescriptor", package: "snapcron"),
                .product(name: "BackendTypes", package: "snapcron"),
                .product(name: "TWCCStandIn", package: "snapcron"),
                .product(name: "ExecBackend", package: "snapcron"),
            ]
        ),
        // Cluster mode's claim path: one minute's fires claimed by several nodes on one real PostgreSQL.
        .executableTarget(
            name: "store-claim-bench",
            dependencies: [
                .product(name: "SnapcronCore", package: "snapcron"),
                .product(name: "SnapcronPostgres", package: "snapcron"),
                .product(name: "PostgresHarness", package: "snapcron"),
            ]
        ),
    ]
)
