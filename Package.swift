// swift-tools-version:6.0
import PackageDescription

// One settings list for every target (STYLE.md "Build").
let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
]

let package = Package(
    name: "snapcron",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "CronExpression", targets: ["CronExpression"]),
        .library(name: "SnapshotBackend", targets: ["SnapshotBackend"]),
        .library(name: "LocalBackend", targets: ["LocalBackend"]),
        .library(name: "SnapcronTestKit", targets: ["SnapcronTestKit"]),
        .executable(name: "snapcronctl", targets: ["snapcronctl"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.0.0"),
    ],
    targets: [
        .target(name: "CronExpression", swiftSettings: swiftSettings),
        .executableTarget(
            name: "snapcronctl",
            dependencies: [
                "CronExpression",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "SnapshotBackend",
            dependencies: [.product(name: "Logging", package: "swift-log")],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "LocalBackend",
            dependencies: [
                "SnapshotBackend",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            path: "Sources/Backends/Local",
            swiftSettings: swiftSettings
        ),
        .target(
            name: "SnapcronTestKit",
            dependencies: [
                "SnapshotBackend",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "SnapshotBackendTests",
            dependencies: ["SnapshotBackend"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "LocalBackendTests",
            dependencies: [
                "LocalBackend",
                "SnapshotBackend",
                "SnapcronTestKit",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "SnapcronTestKitTests",
            dependencies: [
                "SnapcronTestKit",
                "SnapshotBackend",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "CronExpressionTests",
            dependencies: ["CronExpression"],
            resources: [.copy("Fixtures")],
            swiftSettings: swiftSettings
        ),
    ]
)
