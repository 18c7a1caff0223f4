// swift-tools-version:6.0
import PackageDescription

// One settings list for every target (STYLE.md "Build").
let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
]

let logging = Target.Dependency.product(name: "Logging", package: "swift-log")

let package = Package(
    name: "snapcron",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "CronExpression", targets: ["CronExpression"]),
        .library(name: "SnapshotBackend", targets: ["SnapshotBackend"]),
        .library(name: "LocalBackend", targets: ["LocalBackend"]),
        .library(name: "SnapcronCore", targets: ["SnapcronCore"]),
        .library(name: "SnapcronStore", targets: ["SnapcronStore"]),
        .library(name: "SnapcronTestKit", targets: ["SnapcronTestKit"]),
        .library(name: "SnapcronSystemd", targets: ["SnapcronSystemd"]),
        .executable(name: "snapcronctl", targets: ["snapcronctl"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.0"),  // LogHandler.log(event:)
        .package(url: "https://github.com/apple/swift-crypto", from: "3.0.0"),
        .package(url: "https://github.com/LebJe/TOMLKit", from: "0.6.0"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.0.0"),
    ],
    targets: [
        .target(name: "CronExpression", swiftSettings: swiftSettings),
        .target(name: "SnapshotBackend", dependencies: [logging], swiftSettings: swiftSettings),
        .target(
            name: "LocalBackend",
            dependencies: ["SnapshotBackend", logging, .product(name: "Crypto", package: "swift-crypto")],
            path: "Sources/Backends/Local",
            swiftSettings: swiftSettings
        ),
        .target(
            name: "SnapcronCore",
            dependencies: [.product(name: "TOMLKit", package: "TOMLKit")],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "SnapcronStore",
            dependencies: [.product(name: "GRDB", package: "GRDB.swift")],
            swiftSettings: swiftSettings
        ),
        .target(name: "SnapcronTestKit", dependencies: ["SnapshotBackend", logging], swiftSettings: swiftSettings),
        // libsystemd, wrapped once: nothing above SnapcronSystemd sees C (STYLE.md "systemd").
        .systemLibrary(
            name: "CSystemd",
            path: "Sources/CSystemd",
            pkgConfig: "libsystemd",
            providers: [.apt(["libsystemd-dev"])]
        ),
        .target(name: "SnapcronSystemd", dependencies: ["CSystemd", logging], swiftSettings: swiftSettings),
        // Child process for the systemd end-to-end test: a tiny Type=notify service.
        .executableTarget(
            name: "snapcron-notify-probe",
            dependencies: ["SnapcronSystemd", logging],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "snapcronctl",
            dependencies: ["CronExpression", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: swiftSettings
        ),
        // Child process for the crash-safety test: hammers the store until SIGKILLed.
        .executableTarget(name: "snapcron-store-torture", dependencies: ["SnapcronStore"], swiftSettings: swiftSettings),
        .testTarget(
            name: "CronExpressionTests",
            dependencies: ["CronExpression"],
            resources: [.copy("Fixtures")],
            swiftSettings: swiftSettings
        ),
        .testTarget(name: "SnapcronCoreTests", dependencies: ["SnapcronCore"], swiftSettings: swiftSettings),
        .testTarget(
            name: "SnapcronStoreTests",
            dependencies: ["SnapcronStore", "snapcron-store-torture", .product(name: "GRDB", package: "GRDB.swift")],
            swiftSettings: swiftSettings
        ),
        .testTarget(name: "SnapshotBackendTests", dependencies: ["SnapshotBackend"], swiftSettings: swiftSettings),
        .testTarget(
            name: "LocalBackendTests",
            dependencies: [
                "LocalBackend", "SnapshotBackend", "SnapcronTestKit", logging,
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(name: "SnapcronSystemdTests", dependencies: ["SnapcronSystemd", logging], swiftSettings: swiftSettings),
        // Boots systemd 252 in private namespaces (scripts/systemd-sandbox); needs root.
        .testTarget(
            name: "SystemdIntegrationTests",
            dependencies: ["snapcron-notify-probe", "SnapcronSystemd"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "SnapcronTestKitTests",
            dependencies: ["SnapcronTestKit", "SnapshotBackend", logging],
            swiftSettings: swiftSettings
        ),
    ]
)
