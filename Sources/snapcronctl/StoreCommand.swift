import ArgumentParser
import Foundation
import Logging
import SnapcronConfig
import SnapcronCore
import SnapcronPostgres

/// `snapcronctl store`: the shared store of a cluster.
struct StoreCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "store", abstract: "Manage the shared PostgreSQL store of a cluster ([store] in the config).",
        subcommands: [StoreMigrateCommand.self])
}

/// `snapcronctl store migrate`: applies the schema steps this snapcron knows, before a rolling upgrade of the nodes
/// (each node also migrates at start). Needs no daemon.
struct StoreMigrateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "migrate", abstract: "Bring the shared store's schema to this snapcron's version.",
        discussion: """
            Reads [store] of the config and its password (password_credential from $CREDENTIALS_DIRECTORY, or \
            password_file), connects and applies the pending schema steps, one transaction each; nodes starting \
            meanwhile wait for it. A store at a newer version than this snapcron knows is refused.
            """)

    @Option(help: "The daemon config (default: \(SnapcronConfig.defaultPath)).")
    var config: String = SnapcronConfig.defaultPath

    func run() throws {
        let settings: SnapcronConfig
        do {
            settings = try SnapcronConfig.load(path: config)
        } catch {
            throw StoreCommandFailure("\(error.description)")
        }
        guard let store = settings.store else {
            throw StoreCommandFailure(
                "\(config): no [store] table: this daemon keeps its state in SQLite, which migrates itself at start")
        }
        let location: PostgresStoreLocation
        let password: String?
        do {
            location = try PostgresStoreLocation(url: store.url)
            password = try StorePassword.read(store, environment: ProcessInfo.processInfo.environment)
        } catch {
            throw StoreCommandFailure("\(error)")
        }
        var logger = Logger(label: "snapcronctl")
        logger.logLevel = .warning
        let outcome = waitFor { [logger] in
            try await PostgresStateStore.migrate(location: location, password: password, logger: logger)
        }
        switch outcome {
        case .success(let versions) where versions.before == versions.after:
            print("\(location): schema version \(versions.after), nothing to do")
        case .success(let versions):
            print("\(location): schema version \(versions.before) -> \(versions.after)")
        case .failure(let error as PostgresStoreError):
            throw StoreCommandFailure(error.message)
        case .failure(let error):
            throw StoreCommandFailure("\(location): \(error)")
        }
    }

    /// Runs `body` to its end from this synchronous command.
    private func waitFor<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) -> Result<T, any Error> {
        let box = ResultBox<T>()
        let done = DispatchSemaphore(value: 0)
        Task.detached {
            do {
                box.result = .success(try await body())
            } catch {
                box.result = .failure(error)
            }
            done.signal()
        }
        done.wait()
        return box.result!
    }
}

/// The answer of a task, handed to the waiting thread (written once, before the semaphore is signalled).
private final class ResultBox<T: Sendable>: @unchecked Sendable {
    var result: Result<T, any Error>?
}

/// A store command's failure: the message, and exit status 1.
struct StoreCommandFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = "snapcronctl store: \(description)" }
}
