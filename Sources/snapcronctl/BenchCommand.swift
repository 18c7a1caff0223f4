import ArgumentParser
import ControlClient
import ControlProtocol
import Foundation

/// `snapcronctl bench`: latency of a read method under concurrent clients (a benchmark, not a test).
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench", abstract: "Measure the latency of status or jobs with N concurrent clients.",
        discussion: "Each client holds one connection and sends --requests requests back to back after --warmup ones.")

    @OptionGroup var connection: ConnectionOptions
    @Option(help: "status or jobs.") var method = "status"
    @Option(help: "Concurrent clients, each on its own connection and thread.") var clients = 1
    @Option(help: "Timed requests per client.") var requests = 200
    @Option(help: "Untimed requests per client first.") var warmup = 10
    @Flag(help: "Print one JSON object.") var json = false

    func validate() throws {
        guard ["status", "jobs"].contains(method) else { throw ValidationError("--method must be status or jobs") }
        guard (1...1000).contains(clients), requests >= 1, warmup >= 0 else {
            throw ValidationError("--clients must be 1-1000, --requests at least 1")
        }
    }

    func run() throws {
        let path = connection.socketPath
        let collector = Collector()
        let group = DispatchGroup()
        let start = DispatchSemaphore(value: 0)
        let (method, requests, warmup) = (self.method, self.requests, self.warmup)
        for _ in 0..<clients {
            group.enter()
            let thread = Thread {
                defer { group.leave() }
                var local: [Double] = []
                var size = 0
                do {
                    let client = try ControlClient(path: path)
                    for _ in 0..<warmup { _ = try client.rawCall(method, NoParams()) }
                    start.wait()
                    for _ in 0..<requests {
                        let begin = DispatchTime.now().uptimeNanoseconds
                        let line = try client.rawCall(method, NoParams())
                        local.append(Double(DispatchTime.now().uptimeNanoseconds - begin) / 1e6)
                        size = line.count
                    }
                } catch {
                    collector.add(failure: "\(error)")
                }
                collector.add(latencies: local, bytes: size)
            }
            thread.stackSize = 1 << 20
            thread.start()
        }
        Thread.sleep(forTimeInterval: 0.2 + Double(clients) * 0.005)
        let began = DispatchTime.now().uptimeNanoseconds
        for _ in 0..<clients { start.signal() }
        group.wait()
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - began) / 1e9
        let (latencies, failures, bytes) = collector.results
        func percentile(_ p: Double) -> Double {
            latencies.isEmpty
                ? .nan : latencies[min(latencies.count - 1, Int((Double(latencies.count) * p).rounded(.up)) - 1)]
        }
        let summary: [String: Any] = [
            "method": method, "clients": clients, "requests": latencies.count, "failures": failures.count,
            "p50_ms": percentile(0.5), "p90_ms": percentile(0.9), "p99_ms": percentile(0.99),
            "max_ms": latencies.last ?? .nan, "per_s": Double(latencies.count) / seconds, "response_bytes": bytes,
        ]
        if json {
            Output.printJSON(summary)
        } else {
            print(
                String(
                    format:
                        "%@ clients=%d requests=%d p50=%.2fms p90=%.2fms p99=%.2fms max=%.2fms %.0f req/s, %d bytes/answer",
                    method, clients, latencies.count, percentile(0.5), percentile(0.9), percentile(0.99),
                    latencies.last ?? .nan, Double(latencies.count) / seconds, bytes))
        }
        if let failure = failures.first {
            Output.printError("snapcronctl: \(failures.count) client(s) failed: \(failure)")
            throw ExitCodes.failure
        }
    }
}

/// Results of the client threads.
private final class Collector: @unchecked Sendable {  // every access holds the lock
    private let lock = NSLock()
    private var latencies: [Double] = []
    private var failures: [String] = []
    private var bytes = 0

    func add(failure: String) { lock.withLock { failures.append(failure) } }

    func add(latencies more: [Double], bytes size: Int) {
        lock.withLock {
            latencies += more
            bytes = max(bytes, size)
        }
    }

    /// Latencies sorted, in milliseconds.
    var results: ([Double], [String], Int) { lock.withLock { (latencies.sorted(), failures, bytes) } }
}
