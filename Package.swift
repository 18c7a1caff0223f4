// swift-tools-version:6.0
import PackageDescription

// One settings list for every target (STYLE.md "Build").
let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
]

let logging = Target.Dependency.product(name: "Logging", package: "swift-log")
let argumentParser = Target.Dependency.product(name: "ArgumentParser", package: "swift-argument-parser")
let nioCore = Target.Dependency.product(name: "NIOCore", package: "swift-nio")
let nioPosix = Target.Dependency.product(name: "NIOPosix", package: "swift-nio")
let nioConcurrency = Target.Dependency.product(name: "NIOConcurrencyHelpers", package: "swift-nio")

let package = Package(
    name: "snapcron",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "CronExpression", targets: ["CronExpression"]),
        .library(name: "SnapshotBackend", targets: ["SnapshotBackend"]),
        .library(name: "LocalBackend", targets: ["LocalBackend"]),
        .library(name: "TWCCBackend", targets: ["TWCCBackend"]),
        .library(name: "ExecBackend", targets: ["ExecBackend"]),
        .library(name: "LibvirtBackend", targets: ["LibvirtBackend"]),
        .library(name: "SnapcronCore", targets: ["SnapcronCore"]),
        .library(name: "SnapcronConfig", targets: ["SnapcronConfig"]),
        .library(name: "BackendTypes", targets: ["BackendTypes"]),
        .library(name: "ExecDescriptor", targets: ["ExecDescriptor"]),
        .library(name: "TWCCDescriptor", targets: ["TWCCDescriptor"]),
        .library(name: "LibvirtDescriptor", targets: ["LibvirtDescriptor"]),
        .library(name: "SnapcronStore", targets: ["SnapcronStore"]),
        .library(name: "SnapcronPostgres", targets: ["SnapcronPostgres"]),
        // A throwaway PostgreSQL for the tests and for Benchmarks/ (store-claim-bench).
        .library(name: "PostgresHarness", targets: ["PostgresHarness"]),
        .library(name: "SnapcronTestKit", targets: ["SnapcronTestKit"]),
        .library(name: "TWCCStandIn", targets: ["TWCCStandIn"]),
        .library(name: "SnapcronSystemd", targets: ["SnapcronSystemd"]),
        .library(name: "ControlProtocol", targets: ["ControlProtocol"]),
        .library(name: "ControlClient", targets: ["ControlClient"]),
        .library(name: "SnapcronMetrics", targets: ["SnapcronMetrics"]),
        .executable(name: "snapcrond", targets: ["snapcrond"]),
        .executable(name: "snapcronctl", targets: ["snapcronctl"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.0"),  // LogHandler.log(event:)
        .package(url: "https://github.com/apple/swift-crypto", from: "3.0.0"),
        .package(url: "https://github.com/LebJe/TOMLKit", from: "0.6.0"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.0.0"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.20.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),  // ChannelOptions.bufferedWritableBytes
        .package(url: "https://github.com/apple/swift-metrics", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.20.0"),
    ],
    targets: [
        .target(name: "CronExpression", swiftSettings: swiftSettings),
        // timerfd/eventfd, which Glibc's Swift module does not export.
        .target(name: "CLinuxShims"),
        .target(name: "SnapshotBackend", dependencies: [logging], swiftSettings: swiftSettings),
        // What a backend type is (descriptor and factory protocols, target rules, the settings reader, config
        // values), pure: every backend type's descriptor builds on it.
        .target(name: "BackendTypes", dependencies: ["SnapshotBackend"], swiftSettings: swiftSettings),
        // One folder per backend type: a pure descriptor module (keys, settings, target rule) in Descriptor/, which
        // the config reader and `snapcronctl check` link, and the backend module with its factory, which only the
        // daemon links. Listed once, in BackendType.all (Sources/SnapcronConfig).
        .target(
            name: "LocalDescriptor", dependencies: ["BackendTypes"], path: "Sources/Backends/Local/Descriptor",
            swiftSettings: swiftSettings),
        .target(
            name: "LocalBackend",
            dependencies: [
                "SnapshotBackend", "BackendTypes", "LocalDescriptor", logging,
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            path: "Sources/Backends/Local",
            exclude: ["Descriptor"],
            swiftSettings: swiftSettings
        ),
        // pipe2, POSIX_SPAWN_SETSID and addclosefrom_np, which Glibc's Swift module does not export.
        .target(name: "CExecShims"),
        .target(
            name: "ExecDescriptor", dependencies: ["BackendTypes"], path: "Sources/Backends/Exec/Descriptor",
            swiftSettings: swiftSettings),
        .target(
            name: "ExecBackend",
            dependencies: ["SnapshotBackend", "BackendTypes", "ExecDescriptor", "CExecShims", logging],
            path: "Sources/Backends/Exec",
            exclude: ["Descriptor"],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "TWCCDescriptor", dependencies: ["BackendTypes"], path: "Sources/Backends/TWCC/Descriptor",
            swiftSettings: swiftSettings),
        .target(
            name: "TWCCBackend",
            dependencies: [
                "SnapshotBackend", "BackendTypes", "TWCCDescriptor", logging,
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            path: "Sources/Backends/TWCC",
            exclude: ["Descriptor"],
            swiftSettings: swiftSettings
        ),
        // libvirt's client API, loaded when first used (nothing of libvirt is mapped by a daemon without a libvirt
        // backend); nothing above LibvirtBackend sees C. Headers from Debian's libvirt-dev.
        .target(name: "CLibvirtLoader", path: "Sources/CLibvirtLoader"),
        .target(
            name: "LibvirtDescriptor", dependencies: ["BackendTypes"], path: "Sources/Backends/Libvirt/Descriptor",
            swiftSettings: swiftSettings),
        .target(
            name: "LibvirtBackend",
            dependencies: ["SnapshotBackend", "BackendTypes", "LibvirtDescriptor", "CLibvirtLoader", logging],
            path: "Sources/Backends/Libvirt",
            exclude: ["Descriptor"],
            swiftSettings: swiftSettings
        ),
        // A stand-in of the TWCC VCS API on loopback, for the TWCC tests and the benchmarks (simulated time).
        .target(
            name: "TWCCStandIn",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"), nioConcurrency,
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "SnapcronStore",
            dependencies: ["SnapcronCore", .product(name: "GRDB", package: "GRDB.swift")],
            swiftSettings: swiftSettings
        ),
        // The StateStore on a PostgreSQL shared by several daemons (cluster mode, issue 11).
        .target(
            name: "SnapcronPostgres",
            dependencies: ["SnapcronCore", logging, .product(name: "PostgresNIO", package: "postgres-nio")],
            swiftSettings: swiftSettings
        ),
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
        .target(
            name: "SnapcronCore",
            dependencies: [
                "CronExpression", "CLinuxShims", "SnapshotBackend", "BackendTypes", logging,
            ],
            swiftSettings: swiftSettings
        ),
        // Reads snapcron.toml (TOMLKit) into SnapcronCore's model, each backend table by its type's descriptor; the
        // list of backend types. No backend module: `snapcronctl check` uses it without their network stacks.
        .target(
            name: "SnapcronConfig",
            dependencies: [
                "SnapcronCore", "BackendTypes", "LocalDescriptor", "ExecDescriptor", "TWCCDescriptor",
                "LibvirtDescriptor", .product(name: "TOMLKit", package: "TOMLKit"),
            ],
            swiftSettings: swiftSettings
        ),
        // JSON-RPC messages and line framing of the control socket; no sockets (DESIGN.md).
        .target(name: "ControlProtocol", swiftSettings: swiftSettings),
        // A small blocking client of the control socket, shared by snapcronctl, tests and the benchmark.
        .target(name: "ControlClient", dependencies: ["ControlProtocol"], swiftSettings: swiftSettings),
        // zlib, for the gzip encoding of /metrics (Prometheus asks for it; 16 MB of text for 10,000 jobs).
        .systemLibrary(name: "CZlib", path: "Sources/CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        // The daemon's Prometheus metrics: the families (names, help, buckets), the scheduler's and the backends'
        // counters through swift-metrics, the per-job figures, and the rendered exposition scrapes are served from.
        .target(
            name: "SnapcronMetrics",
            dependencies: [
                "SnapcronCore", "SnapshotBackend", "CZlib", logging, nioCore,
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: swiftSettings
        ),
        // Wiring shared by snapcrond and its tests: config -> backends -> store -> scheduler, control socket,
        // signals, reload.
        .target(
            name: "SnapcronDaemon",
            dependencies: [
                "SnapcronCore", "SnapcronConfig", "BackendTypes", "SnapcronStore", "SnapcronPostgres", "SnapshotBackend",
                // Linked for their factories (BackendType.factory finds them); only ExecBackend is named in the
                // code, for the command runner the hooks share with it.
                "LocalBackend", "ExecBackend", "TWCCBackend", "LibvirtBackend",
                "SnapcronSystemd", "ControlProtocol", "SnapcronMetrics", logging, nioCore, nioPosix, nioConcurrency,
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "SnapcronTestKit",
            dependencies: ["SnapshotBackend", "SnapcronCore", logging],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "snapcrond",
            dependencies: ["SnapcronDaemon", "SnapcronCore", "SnapcronSystemd", argumentParser, logging],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "snapcronctl",
            // No backend module: `check` validates settings and targets by the descriptors (SnapcronConfig).
            dependencies: [
                "CronExpression", "SnapcronCore", "SnapcronConfig", "ControlProtocol", "ControlClient", argumentParser,
                // `store migrate` and `store copy` (SQLite to the cluster's PostgreSQL).
                "SnapcronPostgres", "SnapcronStore", logging,
            ],
            swiftSettings: swiftSettings
        ),
        // Child process for the crash-safety test: hammers the store until SIGKILLed.
        .executableTarget(
            name: "snapcron-store-torture", dependencies: ["SnapcronStore", "SnapcronCore"], swiftSettings: swiftSettings),
        .testTarget(
            name: "CronExpressionTests",
            dependencies: ["CronExpression", "TestThreads"],
            resources: [.copy("Fixtures")],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "SnapcronCoreTests",
            dependencies: [
                "SnapcronCore", "SnapcronConfig", "BackendTypes", "LocalDescriptor", "ExecDescriptor", "TWCCDescriptor",
                "SnapcronStore", "SnapcronTestKit", "SnapshotBackend", "TestThreads", logging,
            ],
            swiftSettings: swiftSettings
        ),
        // snapcron.toml read into the model, every backend type's settings by its descriptor.
        .testTarget(
            name: "SnapcronConfigTests",
            dependencies: [
                "SnapcronConfig", "SnapcronCore", "BackendTypes", "LocalDescriptor", "ExecDescriptor", "TWCCDescriptor",
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "SnapcronStoreTests",
            dependencies: [
                "TestThreads", "SnapcronStore", "SnapcronCore", "snapcron-store-torture",
                .product(name: "GRDB", package: "GRDB.swift"),
            ],
            swiftSettings: swiftSettings
        ),
        // A throwaway PostgreSQL (initdb in a temporary folder, loopback port and Unix socket) for the store tests.
        .target(
            name: "PostgresHarness", dependencies: ["CExecShims"], path: "Tests/PostgresHarness",
            swiftSettings: swiftSettings),
        // The StateStore contract, run against SQLite and against a real PostgreSQL (PostgresHarness).
        .testTarget(
            name: "StoreConformanceTests",
            dependencies: [
                "TestThreads", "SnapcronCore", "SnapcronStore", "SnapcronPostgres", "PostgresHarness", logging,
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(name: "ControlProtocolTests", dependencies: ["ControlProtocol"], swiftSettings: swiftSettings),
        // The control server in-process and over a real Unix socket, abuse included.
        .testTarget(
            name: "ControlServerTests",
            dependencies: [
                "TestThreads", "SnapcronDaemon", "ControlProtocol", "ControlClient", "SnapcronCore", "SnapcronConfig",
                "BackendTypes", "ExecDescriptor", "SnapcronStore", "SnapcronTestKit", "SnapshotBackend", logging,
                nioCore,
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(name: "SnapshotBackendTests", dependencies: ["SnapshotBackend"], swiftSettings: swiftSettings),
        .testTarget(
            name: "LocalBackendTests",
            dependencies: [
                "TestThreads", "LocalBackend", "SnapshotBackend", "SnapcronTestKit", logging,
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings
        ),
        // The systemd sandbox as the end-to-end tests drive it (scripts/systemd-sandbox), shared by both suites.
        .target(name: "SystemdSandbox", path: "Tests/SystemdSandbox", swiftSettings: swiftSettings),
        // The `.onOwnThreads` trait for suites that block (process waits, polls): off the cooperative pool.
        .target(name: "TestThreads", path: "Tests/TestThreads", swiftSettings: swiftSettings),
        .testTarget(
            name: "SnapcronSystemdTests", dependencies: ["TestThreads", "SnapcronSystemd", logging],
            swiftSettings: swiftSettings),
        // Boots systemd 252 in private namespaces (scripts/systemd-sandbox); needs root.
        .testTarget(
            name: "SystemdIntegrationTests",
            dependencies: ["TestThreads", "snapcron-notify-probe", "SnapcronSystemd", "SystemdSandbox"],
            swiftSettings: swiftSettings
        ),
        // Installs the shipped unit and the built binaries with the Makefile into a booted systemd
        // (scripts/systemd-sandbox) and drives snapcrond through systemctl and the journal; needs root.
        .testTarget(
            name: "ServiceIntegrationTests",
            dependencies: [
                "TestThreads", "snapcrond", "snapcronctl", "SnapcronStore", "SnapcronSystemd", "SystemdSandbox",
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "TWCCBackendTests",
            dependencies: [
                "TWCCBackend", "TWCCStandIn", "TWCCDescriptor", "BackendTypes", "SnapshotBackend", "SnapcronTestKit",
                "SnapcronCore", "SnapcronConfig", "SnapcronStore", logging,
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        // Runs real commands: the shipped qemu-img adapter on real qcow2 files, and scripts for every failure mode.
        .testTarget(
            name: "ExecBackendTests",
            dependencies: [
                "TestThreads", "ExecBackend", "ExecDescriptor", "BackendTypes", "SnapshotBackend", "SnapcronTestKit",
                "SnapcronCore", "SnapcronConfig", "SnapcronDaemon", "SnapcronStore", logging,
            ],
            swiftSettings: swiftSettings
        ),
        // The libvirt backend against libvirt's test driver (in-process, no hypervisor) and, where libvirtd and
        // QEMU are installed and the tests run as root, a real guest under TCG.
        .testTarget(
            name: "LibvirtBackendTests",
            dependencies: [
                "TestThreads", "LibvirtBackend", "LibvirtDescriptor", "CLibvirtLoader", "BackendTypes",
                "SnapshotBackend", "SnapcronTestKit", "SnapcronConfig", "SnapcronCore", "SnapcronDaemon",
                "SnapcronStore", logging, nioConcurrency,
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "SnapcronTestKitTests",
            dependencies: ["SnapcronTestKit", "SnapshotBackend", logging],
            swiftSettings: swiftSettings
        ),
        // Runs the built snapcronctl binary; no module dependency, it only needs the product to exist.
        .testTarget(name: "SnapcronctlTests", dependencies: ["TestThreads"], swiftSettings: swiftSettings),
        // Runs the built snapcrond binary against real files and a real database, and kills it.
        .testTarget(
            name: "SnapcrondTests",
            dependencies: [
                "TestThreads", "snapcrond", "snapcronctl", "SnapcronStore", "SnapcronDaemon", "SnapcronConfig",
                "BackendTypes", "LocalDescriptor", "SnapcronTestKit", "SnapshotBackend", "SnapcronMetrics",
                "PostgresHarness", "SnapcronPostgres", nioConcurrency, nioCore,
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
    ]
)
