import ArgumentParser
import ControlClient
import ControlProtocol
import CronExpression
import Foundation
import SnapcronConfig
import SnapcronCore

/// `--socket`, shared by every command that talks to the daemon; it may also come before the subcommand
/// (``LeadingOptions``).
struct ConnectionOptions: ParsableArguments {
    @Option(
        help: ArgumentHelp(
            "The daemon's control socket (default: socket_path of \(SnapcronConfig.defaultPath), else "
                + "$RUNTIME_DIRECTORY/control.sock, else \(SnapcronConfig.defaultSocketPath)).",
            valueName: "path"))
    var socket: String?

    /// The socket to connect to: the daemon's own rule (``SnapcronConfig/controlSocketPath(override:environment:)``).
    var socketPath: String {
        let config = (try? SnapcronConfig.loadIfPresent()) ?? SnapcronConfig.default()
        return config.controlSocketPath(override: socket, environment: ProcessInfo.processInfo.environment)
    }

    /// Connects, or prints why not and exits with the matching code.
    func connect(json: Bool = false) throws -> Connection {
        do {
            return Connection(client: try ControlClient(path: socketPath), json: json)
        } catch {
            throw Connection.exit(for: error, json: json)
        }
    }
}

/// A subcommand that talks to the daemon through ``ConnectionOptions``.
protocol ConnectsToDaemon: ParsableCommand {
    var connection: ConnectionOptions { get set }
}

extension StatusCommand: ConnectsToDaemon {}
extension JobsCommand: ConnectsToDaemon {}
extension NextCommand: ConnectsToDaemon {}
extension HistoryCommand: ConnectsToDaemon {}
extension ImagesCommand: ConnectsToDaemon {}
extension TriggerCommand: ConnectsToDaemon {}
extension PauseCommand: ConnectsToDaemon {}
extension ResumeCommand: ConnectsToDaemon {}
extension PinCommand: ConnectsToDaemon {}
extension UnpinCommand: ConnectsToDaemon {}
extension ReloadCommand: ConnectsToDaemon {}
extension PruneCommand: ConnectsToDaemon {}
extension EditCommand: ConnectsToDaemon {}
extension MonitorCommand: ConnectsToDaemon {}
extension BenchCommand: ConnectsToDaemon {}

/// The ``ConnectionOptions`` given before the subcommand (`snapcronctl --socket PATH status`), passed down to it.
struct LeadingOptions {
    var socket: String?

    /// Removes the connection options in front of the subcommand from `arguments` and returns them.
    static func take(from arguments: inout [String]) throws(ValidationError) -> LeadingOptions {
        var options = LeadingOptions()
        while let first = arguments.first {
            let value: String
            if first == "--socket" {
                guard arguments.count > 1, !arguments[1].hasPrefix("-") else {
                    throw ValidationError("missing value for '--socket <path>' before the subcommand")
                }
                value = arguments[1]
                arguments.removeFirst(2)
            } else if first.hasPrefix("--socket=") {
                value = String(first.dropFirst("--socket=".count))
                arguments.removeFirst()
            } else {
                break
            }
            if let earlier = options.socket, earlier != value {
                throw ValidationError("--socket given twice before the subcommand: '\(earlier)' and '\(value)'")
            }
            options.socket = value
        }
        return options
    }

    /// Gives the options to `command`; a command that does not talk to the daemon, or a different value given
    /// after the subcommand, is a usage error.
    func pass(to command: inout any ParsableCommand) throws(ValidationError) {
        guard let socket else { return }
        let name = type(of: command).configuration.commandName ?? "snapcronctl"
        guard var client = command as? any ConnectsToDaemon else {
            if command is Snapcronctl { throw ValidationError("--socket '\(socket)' needs a subcommand after it") }
            throw ValidationError("--socket '\(socket)' given, but \(name) does not talk to the daemon")
        }
        if let after = client.connection.socket, after != socket {
            throw ValidationError(
                "--socket given twice with different values: '\(socket)' before \(name), '\(after)' after it")
        }
        client.connection.socket = socket
        command = client
    }
}

/// A connection to the daemon with the CLI's error handling: messages on stderr, distinct exit codes.
struct Connection {
    let client: ControlClient
    let json: Bool

    /// Calls `method`; on a JSON-RPC error prints it (and its diagnostics) and exits with the matching code.
    func call<Params: ControlParams, Result: Decodable & Sendable>(
        _ method: ControlMethod, _ params: Params, as type: Result.Type
    ) throws -> (value: Result, json: JSONValue) {
        let line: Data
        do {
            line = try client.rawCall(method.rawValue, params)
        } catch {
            throw Self.exit(for: error, json: json)
        }
        let decoder = ControlCoding.decoder
        guard let raw = try? decoder.decode(RPCResponse<JSONValue>.self, from: line) else {
            Output.printError(
                "snapcronctl: unexpected answer from the daemon: \(String(decoding: line.prefix(200), as: UTF8.self))")
            throw ExitCodes.failure
        }
        if let error = raw.error { throw Self.exit(for: ControlClientError.remote(error), json: json) }
        do {
            let typed = try decoder.decode(RPCResponse<Result>.self, from: line)
            guard let value = typed.result else { throw ControlClientError.io("no result") }
            return (value, raw.result ?? .null)
        } catch {
            Output.printError("snapcronctl: cannot read the daemon's answer to \(method.rawValue): \(error)")
            throw ExitCodes.failure
        }
    }

    /// Prints a failure and returns the exit code for it.
    static func exit(for error: any Error, json: Bool) -> ExitCode {
        guard let error = error as? ControlClientError else {
            Output.printError("snapcronctl: \(error)")
            return ExitCodes.failure
        }
        switch error {
        case .notRunning:
            Output.printError("snapcronctl: \(error)")
            return ExitCodes.notRunning
        case .permissionDenied:
            Output.printError("snapcronctl: \(error)")
            return ExitCodes.notPermitted
        case .io(let message):
            Output.printError("snapcronctl: \(message)")
            return ExitCodes.notRunning
        case .remote(let rpc):
            if json, let data = try? ControlCoding.encoder.encode(["error": rpc]) {
                print(String(decoding: data, as: UTF8.self))
            }
            for diagnostic in rpc.data?.diagnostics ?? [] { Output.printError(diagnostic.rendered) }
            Output.printError("snapcronctl: \(rpc.message)")
            switch rpc.code {
            case .notPermitted: return ExitCodes.notPermitted
            case .notFound: return ExitCodes.notFound
            case .invalidParams, .invalidRequest, .methodNotFound, .parseError: return ExitCodes.usage
            default: return ExitCodes.failure
            }
        }
    }

    /// Prints a result as one line of JSON with sorted keys.
    static func printJSON(_ value: JSONValue) {
        guard let data = try? ControlCoding.encoder.encode(value) else { return }
        print(String(decoding: data, as: UTF8.self))
    }
}

/// Aligned columns for people.
struct Table {
    var headers: [String]
    var rows: [[String]] = []

    init(_ headers: String...) { self.headers = headers }

    mutating func add(_ cells: String...) { rows.append(cells) }

    /// The table as text: a header line, then one line per row, columns two spaces apart.
    func render() -> String {
        var widths = headers.map(\.count)
        for row in rows {
            for (index, cell) in row.enumerated() where index < widths.count {
                widths[index] = max(widths[index], cell.count)
            }
        }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { index, cell in
                index == cells.count - 1 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
            }.joined(separator: "  ").trimmingCharacters(in: .whitespaces)
        }
        return ([line(headers)] + rows.map(line)).joined(separator: "\n")
    }
}

/// Times and durations for people.
enum Human {
    static let zone = CronTimeZone.current

    /// `2026-01-31 02:00:00+08:00`, in the local zone.
    static func time(_ date: Date?) -> String {
        guard let date else { return "-" }
        return CronFormat.iso8601(date, in: zone).replacingOccurrences(of: "T", with: " ")
    }

    /// `3d4h`, `12m30s`, `45s`.
    static func duration(_ seconds: TimeInterval) -> String {
        var rest = Int(max(0, seconds.rounded()))
        let units: [(String, Int)] = [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)]
        var parts: [String] = []
        for (name, size) in units where rest >= size || (parts.isEmpty && size == 1) {
            parts.append("\(rest / size)\(name)")
            rest %= size
            if parts.count == 2 { break }
        }
        return parts.joined()
    }

    /// `1.2 GiB`.
    static func size(_ bytes: Int64?) -> String {
        guard let bytes else { return "-" }
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(bytes)
        var unit = 0
        while value >= 1024 && unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        return unit == 0 ? "\(bytes) B" : String(format: "%.1f %@", value, units[unit])
    }
}
