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
        .library(name: "SnapcronCore", targets: ["SnapcronCore"]),
        .executable(name: "snapcronctl", targets: ["snapcronctl"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/LebJe/TOMLKit", from: "0.6.0"),
    ],
    targets: [
        .target(name: "CronExpression", swiftSettings: swiftSettings),
        .target(
            name: "SnapcronCore",
            dependencies: [
                "CronExpression",
                .product(name: "TOMLKit", package: "TOMLKit"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "snapcronctl",
            dependencies: [
                "CronExpression",
                "SnapcronCore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "CronExpressionTests",
            dependencies: ["CronExpression"],
            resources: [.copy("Fixtures")],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "SnapcronCoreTests",
            dependencies: ["SnapcronCore"],
            swiftSettings: swiftSettings
        ),
        // Runs the built snapcronctl binary; no module dependency, it only needs the product to exist.
        .testTarget(
            name: "SnapcronctlTests",
            swiftSettings: swiftSettings
        ),
    ]
)
