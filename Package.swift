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
        .executable(name: "snapcronctl", targets: ["snapcronctl"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
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
        .testTarget(
            name: "CronExpressionTests",
            dependencies: ["CronExpression"],
            resources: [.copy("Fixtures")],
            swiftSettings: swiftSettings
        ),
    ]
)
