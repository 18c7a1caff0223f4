import BackendTypes
import LocalDescriptor
import NIOConcurrencyHelpers
import SnapcronConfig
import SnapcronCore
import Testing

@testable import SnapcronDaemon

@Suite struct SerialTaskQueueTests {
    @Test func operationsNeverInterleaveEvenWhenTheyAwait() async {
        let queue = SerialTaskQueue()
        let events = NIOLockedValueBox<[String]>([])
        await withTaskGroup(of: Int.self) { group in
            for index in 0..<40 {
                group.addTask {
                    await queue.run {
                        events.withLockedValue { $0.append("start \(index)") }
                        // Suspension points in the middle, as a reload has (it awaits the scheduler).
                        for _ in 0..<3 { await Task.yield() }
                        try? await Task.sleep(for: .milliseconds(1))
                        events.withLockedValue { $0.append("end \(index)") }
                        return index
                    }
                }
            }
            var results: [Int] = []
            for await result in group { results.append(result) }
            #expect(results.sorted() == Array(0..<40))
        }
        let log = events.withLockedValue { $0 }
        #expect(log.count == 80)
        for pair in stride(from: 0, to: log.count, by: 2) {
            let index = log[pair].dropFirst("start ".count)
            #expect(log[pair].hasPrefix("start ") && log[pair + 1] == "end \(index)", "interleaved at \(pair): \(log)")
        }
    }

    @Test func laterSubmissionsRunAfterEarlierOnes() async {
        let queue = SerialTaskQueue()
        let order = NIOLockedValueBox<[Int]>([])
        for index in 0..<10 {
            _ = await queue.run { order.withLockedValue { $0.append(index) } }
        }
        #expect(order.withLockedValue { $0 } == Array(0..<10))
    }
}

@Suite struct StateDirectoryOverrideTests {
    /// `snapcrond --state-dir` replaces the config's `state_dir` as the file is read.
    @Test func movingTheStateDirectoryKeepsTheLocalBackendsOtherSettings() throws {
        let config = try SnapcronConfig.parse(
            """
            [daemon]
            state_dir = "/var/lib/snapcron"

            [backends.local]
            type = "local"
            reflink = false

            [backends.elsewhere]
            type = "local"
            images_dir = "/srv/images"
            """, file: "snapcron.toml", stateDirectory: "/tmp/state")
        let moved = config
        #expect(moved.stateDirectory == "/tmp/state")
        #expect(
            moved.backends["local"]?.local == LocalBackendSettings(imagesDirectory: "/tmp/state/images", reflink: false))
        #expect(moved.backends["elsewhere"]?.local?.imagesDirectory == "/srv/images", "an explicit folder stays")
    }
}

@Suite struct BackendFactoryTests {
    /// Every listed backend type can be built here: its backend module, linked into the daemon, declares the
    /// factory of its descriptor (a missing one would make every job of that type "not available in this build").
    @Test func everyBackendTypeHasItsFactoryInTheDaemon() {
        #expect(BackendType.all.map(\.name) == ["local", "exec", "twcc", "libvirt"])
        for type in BackendType.all { #expect(type.factory != nil, "\(type) has no factory") }
    }
}
