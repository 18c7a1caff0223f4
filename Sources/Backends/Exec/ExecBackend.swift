import Foundation
public import Logging
public import SnapshotBackend
import BackendTypes
import ExecDescriptor

/// A backend that runs configured commands (argv templates, never a shell) which speak JSON on stdout.
///
/// It wraps tools such as `qemu-img`, `zfs`, `lvm`, `virsh` or cloud CLIs, usually through a small adapter script.
/// The contract (see `docs/backends-exec.md`):
/// - `create` (required) gets `{target}`, `{name}`, `{job}`, `{description}` and prints nothing or
///   `{"id": "...", "state": "queued|saving|active|error", "error": "..."}`. Without an `id`, the image id is the
///   `image_id` template (default `{name}`).
/// - `status` (optional) gets `{image}` and prints `{"state": "queued|saving|active|error|gone", "error": "..."}`;
///   no output means `active`. Without a status command every image is taken as `active` (create is synchronous).
/// - `list` (optional) gets `{target}` and prints an array of
///   `{"id", "name", "description", "created_at", "state", "size_bytes", "target"}` (only `id` required). When
///   configured, `create` looks its name up first, so a retried create never makes a duplicate.
/// - `delete` (optional) gets `{image}` and exits 0 when the image is deleted or already gone.
///
/// Exit status 0 is success; a status in ``Configuration/transientExitCodes`` (default 75, `EX_TEMPFAIL`), a death
/// by signal, a timeout or a failure to fork are transient; any other status, a missing command, malformed JSON or
/// oversize output is permanent. Error messages carry the end of the command's stderr.
public struct ExecBackend: SnapshotBackend {
    /// How an exec backend is set up; mirrors a `[backends.NAME] type = "exec"` table.
    public struct Configuration: Sendable {
        /// The configured backend name, e.g. `qemu`.
        public var name: String
        /// The create argv template (required).
        public var create: [String]
        /// The status argv template; `nil` means an image is `active` once created.
        public var status: [String]?
        /// The list argv template; `nil` means list returns nothing and create does not look names up.
        public var list: [String]?
        /// The delete argv template; `nil` means images cannot be deleted (retention reports an error).
        public var delete: [String]?
        /// The image id when the create command prints none, e.g. `{target}@{name}`.
        public var imageID: String
        /// How long one command may run before its process group gets SIGTERM.
        public var timeout: Duration
        /// How long after SIGTERM the process group gets SIGKILL.
        public var killGrace: Duration
        /// Exit statuses that mean "try again later".
        public var transientExitCodes: Set<Int32>
        /// Variables added to (or replacing) the minimal environment; never logged.
        public var environment: [String: String]
        /// A regular expression a whole target must match, checked by `validate(target:)`.
        public var targetPattern: String?
        /// At most this much stdout is read; a command that prints more is killed and fails.
        public var maxStdoutBytes: Int
        /// At most this much of the end of stderr is kept for error messages.
        public var maxStderrBytes: Int

        public init(
            name: String,
            create: [String],
            status: [String]? = nil,
            list: [String]? = nil,
            delete: [String]? = nil,
            imageID: String = "{name}",
            timeout: Duration = .seconds(600),
            killGrace: Duration = .seconds(5),
            transientExitCodes: Set<Int32> = [75],
            environment: [String: String] = [:],
            targetPattern: String? = nil,
            maxStdoutBytes: Int = 1 << 20,
            maxStderrBytes: Int = 4096
        ) {
            self.name = name
            self.create = create
            self.status = status
            self.list = list
            self.delete = delete
            self.imageID = imageID
            self.timeout = timeout
            self.killGrace = killGrace
            self.transientExitCodes = transientExitCodes
            self.environment = environment
            self.targetPattern = targetPattern
            self.maxStdoutBytes = maxStdoutBytes
            self.maxStderrBytes = maxStderrBytes
        }
    }

    /// A configuration that cannot work, worded for the operator (e.g. `status: unknown placeholder {id} ...`).
    public struct ConfigurationError: Error, Hashable, Sendable, CustomStringConvertible {
        public var message: String
        public var description: String { message }
    }

    /// The placeholders each command may use.
    public static let placeholders: [SnapshotBackendError.Operation: [Placeholder]] = [
        .create: [.target, .name, .job, .description],
        .status: [.image],
        .list: [.target],
        .delete: [.image],
    ]
    /// The placeholders of the `image_id` template.
    public static let imageIDPlaceholders: [Placeholder] = [.target, .name, .job]

    /// `PATH` of the minimal environment, also used to find bare command names.
    public static let defaultSearchPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

    /// The environment every command starts from (before ``Configuration/environment``); `SNAPCRON_BACKEND` and
    /// `SNAPCRON_OPERATION` are added per call.
    public static let baseEnvironment: [String: String] = [
        "PATH": defaultSearchPath, "LC_ALL": "C.UTF-8", "TZ": "UTC",
    ]

    /// The configured backend name, e.g. `qemu`.
    public let name: String
    let createCommand: CommandTemplate
    let statusCommand: CommandTemplate?
    let listCommand: CommandTemplate?
    let deleteCommand: CommandTemplate?
    let imageID: StringTemplate
    let transientExitCodes: Set<Int32>
    let targetPattern: String?
    let runner: CommandRunner

    /// Checks the templates and the target pattern; throws a ``ConfigurationError`` naming the key.
    public init(configuration: Configuration) throws(ConfigurationError) {
        func template(_ argv: [String]?, _ operation: SnapshotBackendError.Operation) throws(ConfigurationError)
            -> CommandTemplate?
        {
            guard let argv else { return nil }
            do {
                return try CommandTemplate(argv, allowed: Self.placeholders[operation] ?? [])
            } catch {
                throw ConfigurationError(message: "\(operation): \(error.message)")
            }
        }
        name = configuration.name
        createCommand = try template(configuration.create, .create)!
        statusCommand = try template(configuration.status, .status)
        listCommand = try template(configuration.list, .list)
        deleteCommand = try template(configuration.delete, .delete)
        do {
            imageID = try StringTemplate(configuration.imageID, allowed: Self.imageIDPlaceholders)
        } catch {
            throw ConfigurationError(message: "image_id: \(error.message)")
        }
        if let pattern = configuration.targetPattern {
            do {
                _ = try Regex(pattern)
            } catch {
                throw ConfigurationError(message: "target_pattern: invalid regular expression '\(pattern)': \(error)")
            }
        }
        guard configuration.timeout > .zero else {
            throw ConfigurationError(message: "timeout: expected a duration greater than 0")
        }
        targetPattern = configuration.targetPattern
        transientExitCodes = configuration.transientExitCodes
        runner = CommandRunner(
            timeout: configuration.timeout, killGrace: configuration.killGrace,
            maxStdoutBytes: max(configuration.maxStdoutBytes, 1), maxStderrBytes: max(configuration.maxStderrBytes, 1),
            environment: Self.baseEnvironment.merging(configuration.environment) { _, configured in configured }
                .merging(["SNAPCRON_BACKEND": configuration.name]) { _, backend in backend })
    }

    // MARK: - SnapshotBackend

    /// Accepts a non-empty target without control characters that does not start with `-` (it is passed as an
    /// argument) and, when configured, matches `target_pattern` as a whole (``TargetRule/exec(pattern:)``).
    public func validate(target: String) throws {
        try TargetRule.exec(pattern: targetPattern).validate(target, backend: name)
    }

    /// Runs the create command, after looking `name` up with the list command when there is one.
    ///
    /// An existing image of that name is returned as is, unless it is in `error` and a delete command exists: then
    /// it is deleted and created afresh.
    public func create(target: String, name imageName: String, description: String, logger: Logger) async throws
        -> ImageRef
    {
        try await createImage(target: target, name: imageName, description: description, logger: logger).ref
    }

    /// ``create(target:name:description:logger:)`` with the state the create command printed, or the existing
    /// image's listed state.
    public func createImage(
        target: String, name imageName: String, description: String, logger: Logger
    ) async throws -> CreatedImage {
        var logger = logger
        logger[metadataKey: "backend.name"] = "\(name)"
        logger[metadataKey: "image.name"] = "\(imageName)"
        logger[metadataKey: "image.target"] = "\(target)"
        do {
            try validate(target: target)
        } catch let error as SnapshotBackendError {
            throw SnapshotBackendError.permanent(backend: name, .create, target: target, error.message)
        }
        guard !imageName.isEmpty, !imageName.hasPrefix("-"),
            !imageName.unicodeScalars.contains(where: { $0.properties.generalCategory == .control })
        else {
            throw SnapshotBackendError.permanent(
                backend: name, .create, target: target,
                "invalid image name '\(imageName)': empty, starting with '-' or with a control character")
        }

        if listCommand != nil {
            let existing: ImageInfo?
            do {
                existing = try await list(target: target, logger: logger).first { $0.name == imageName }
            } catch let error as SnapshotBackendError {
                throw SnapshotBackendError(
                    backend: name, operation: .create, target: target, message: error.message,
                    isTransient: error.isTransient)
            }
            if let existing {
                if case .error(let reason) = existing.state, deleteCommand != nil {
                    logger.info(
                        "Deleting a failed image before creating it afresh",
                        metadata: ["image.id": "\(existing.id)", "error": "\(reason)"])
                    try await delete(existing.id, logger: logger)
                } else {
                    logger.debug("Image already exists", metadata: ["image.id": "\(existing.id)"])
                    return CreatedImage(ref: existing.id, state: existing.state)
                }
            }
        }

        let values: [Placeholder: String] = [
            .target: target, .name: imageName, .job: Self.jobName(in: description) ?? "", .description: description,
        ]
        let output = try await run(.create, createCommand, values, target: target, image: nil, logger: logger)
        let fallback = ImageRef(id: imageID.expand(values))
        guard let json = try parseJSON(output, .create, createCommand, target: target, image: nil) else {
            logger.info("Image created", metadata: ["image.id": "\(fallback)"])
            return CreatedImage(ref: fallback)
        }
        func malformed(_ reason: String) -> SnapshotBackendError {
            malformedOutput(.create, createCommand, reason, target: target, image: nil)
        }
        guard let object = json as? [String: Any] else { throw malformed("expected a JSON object") }
        var image = fallback
        if let id = object["id"], !(id is NSNull) {
            guard let id = id as? String, !id.isEmpty else { throw malformed("\"id\" must be a non-empty string") }
            image = ImageRef(id: id)
        }
        var createdState: ImageState?
        if let state = object["state"], !(state is NSNull) {
            let parsed = try imageState(state, error: object["error"], malformed: malformed)
            createdState = parsed
            switch parsed {
            case .error(let reason):
                throw SnapshotBackendError.permanent(
                    backend: name, .create, target: target, image: image,
                    "\(createCommand.label) reported an error: \(reason)")
            case .gone:
                throw malformed("state \"gone\" is not a state of a created image")
            case .queued, .saving, .active:
                break
            }
        }
        logger.info("Image created", metadata: ["image.id": "\(image)"])
        return CreatedImage(ref: image, state: createdState)
    }

    /// Runs the status command; `.active` without one or when it prints nothing.
    public func status(_ image: ImageRef, logger: Logger) async throws -> ImageState {
        guard let statusCommand else { return .active }
        guard Self.isUsableImageID(image.id) else { return .gone }
        var logger = logger
        logger[metadataKey: "backend.name"] = "\(name)"
        logger[metadataKey: "image.id"] = "\(image)"
        let output = try await run(
            .status, statusCommand, [.image: image.id], target: nil, image: image, logger: logger)
        guard let json = try parseJSON(output, .status, statusCommand, target: nil, image: image) else {
            return .active
        }
        func malformed(_ reason: String) -> SnapshotBackendError {
            malformedOutput(.status, statusCommand, reason, target: nil, image: image)
        }
        guard let object = json as? [String: Any] else { throw malformed("expected a JSON object") }
        guard let state = object["state"] else { throw malformed("missing \"state\"") }
        return try imageState(state, error: object["error"], malformed: malformed)
    }

    /// Runs the list command; empty without one or when it prints nothing. Entries of other targets are dropped.
    public func list(target: String, logger: Logger) async throws -> [ImageInfo] {
        guard let listCommand else { return [] }
        var logger = logger
        logger[metadataKey: "backend.name"] = "\(name)"
        logger[metadataKey: "image.target"] = "\(target)"
        let output = try await run(.list, listCommand, [.target: target], target: target, image: nil, logger: logger)
        guard let json = try parseJSON(output, .list, listCommand, target: target, image: nil) else { return [] }
        guard let entries = json as? [Any] else {
            throw malformedOutput(.list, listCommand, "expected a JSON array", target: target, image: nil)
        }
        var images: [ImageInfo] = []
        for (index, entry) in entries.enumerated() {
            func malformed(_ reason: String) -> SnapshotBackendError {
                malformedOutput(.list, listCommand, "entry \(index): \(reason)", target: target, image: nil)
            }
            guard let object = entry as? [String: Any] else { throw malformed("expected a JSON object") }
            guard let id = object["id"] as? String, !id.isEmpty else {
                throw malformed("missing \"id\" (a non-empty string)")
            }
            let name = try optionalString(object, "name", malformed) ?? id
            let description = try optionalString(object, "description", malformed) ?? ""
            if let entryTarget = try optionalString(object, "target", malformed), entryTarget != target {
                continue
            }
            let state = try object["state"].map { try imageState($0, error: object["error"], malformed: malformed) }
            if state == .gone { continue }
            images.append(
                ImageInfo(
                    id: ImageRef(id: id), name: name, description: description, target: target,
                    createdAt: try createdAt(object["created_at"], malformed), state: state ?? .active,
                    sizeBytes: try sizeBytes(object["size_bytes"], malformed)))
        }
        return images
    }

    /// Runs the delete command; it must succeed for an image that is already gone.
    public func delete(_ image: ImageRef, logger: Logger) async throws {
        guard let deleteCommand else {
            throw SnapshotBackendError.permanent(
                backend: name, .delete, image: image, "no delete command is configured")
        }
        guard Self.isUsableImageID(image.id) else { return }
        var logger = logger
        logger[metadataKey: "backend.name"] = "\(name)"
        logger[metadataKey: "image.id"] = "\(image)"
        _ = try await run(.delete, deleteCommand, [.image: image.id], target: nil, image: image, logger: logger)
        logger.info("Image deleted")
    }

    // MARK: - Running commands

    /// Runs one command and returns its stdout, or throws the error its ending maps to.
    private func run(
        _ operation: SnapshotBackendError.Operation, _ template: CommandTemplate, _ values: [Placeholder: String],
        target: String?, image: ImageRef?, logger: Logger
    ) async throws(SnapshotBackendError) -> [UInt8] {
        func failure(_ message: String, transient: Bool) -> SnapshotBackendError {
            SnapshotBackendError(
                backend: name, operation: operation, target: target, image: image, message: message,
                isTransient: transient)
        }
        let argv = template.expand(values)
        if argv.contains(where: { $0.contains("\0") }) {
            throw failure("an argument of \(template.label) contains a NUL character", transient: false)
        }
        var runner = runner
        runner.environment["SNAPCRON_OPERATION"] = operation.name
        logger.debug("Running command", metadata: ["exec.operation": "\(operation)", "exec.argv": "\(argv)"])

        let outcome: CommandOutcome
        do {
            outcome = try await runner.run(argv)
        } catch {
            switch error {
            case .notFound(let command, let searchPath):
                throw failure("command not found: \(command) (searched PATH=\(searchPath))", transient: false)
            case .system(let call, let path, let code):
                throw failure(
                    "cannot run \(path): \(call): \(String(cString: strerror(code)).lowercased())",
                    transient: error.isTransient)
            }
        }
        let label = template.label
        let stderr = Self.summary(of: outcome.stderr, truncated: outcome.stderrTruncated)
        let detail = stderr.isEmpty ? "" : ": \(stderr)"
        let (seconds, attoseconds) = outcome.duration.components
        logger.debug(
            "Command finished",
            metadata: [
                "exec.operation": "\(operation)", "exec.command": "\(label)",
                "exec.termination": "\(outcome.termination)",
                "exec.duration_ms": "\(seconds * 1000 + attoseconds / 1_000_000_000_000_000)",
            ])

        if outcome.timedOut {
            throw failure(
                "\(label) timed out after \(Self.format(runner.timeout)); its process group was killed\(detail)",
                transient: true)
        }
        if outcome.cancelled {
            throw failure("\(label) was cancelled; its process group was killed", transient: true)
        }
        if outcome.stdoutOverflowed {
            throw failure(
                "\(label) printed more than \(runner.maxStdoutBytes) bytes on stdout; it was killed", transient: false)
        }
        switch outcome.termination {
        case .exited(0):
            if !stderr.isEmpty { logger.debug("Command wrote to stderr", metadata: ["exec.stderr": "\(stderr)"]) }
            return outcome.stdout
        case .exited(let code):
            throw failure("\(label) exited with status \(code)\(detail)", transient: transientExitCodes.contains(code))
        case .signaled(let signal):
            throw failure("\(label) was killed by \(signalName(signal))\(detail)", transient: true)
        }
    }

    /// The parsed JSON of `output`, or `nil` when it is only whitespace.
    private func parseJSON(
        _ output: [UInt8], _ operation: SnapshotBackendError.Operation, _ template: CommandTemplate, target: String?,
        image: ImageRef?
    ) throws(SnapshotBackendError) -> Any? {
        guard output.contains(where: { ![0x20, 0x09, 0x0a, 0x0d].contains($0) }) else { return nil }
        do {
            return try JSONSerialization.jsonObject(with: Data(output))
        } catch {
            let text = String(decoding: output.prefix(120), as: UTF8.self)
                .trimmingCharacters(in: .whitespacesAndNewlines)
                .replacingOccurrences(of: "\n", with: "\\n")
            throw malformedOutput(
                operation, template, "not JSON: '\(text)\(output.count > 120 ? "..." : "")'", target: target,
                image: image)
        }
    }

    private func malformedOutput(
        _ operation: SnapshotBackendError.Operation, _ template: CommandTemplate, _ reason: String, target: String?,
        image: ImageRef?
    ) -> SnapshotBackendError {
        .permanent(
            backend: name, operation, target: target, image: image,
            "\(template.label) printed malformed JSON on stdout: \(reason)")
    }

    private func imageState(
        _ value: Any, error: Any?, malformed: (String) -> SnapshotBackendError
    ) throws(SnapshotBackendError) -> ImageState {
        guard let text = value as? String else { throw malformed("\"state\" must be a string") }
        let reason = (error as? String).flatMap { $0.isEmpty ? nil : $0 } ?? "reported by the command without a reason"
        guard let state = ImageState(stringValue: text, reason: reason) else {
            throw malformed("unknown state \"\(text)\" (expected queued, saving, active, error or gone)")
        }
        return state
    }

    private func optionalString(
        _ object: [String: Any], _ key: String, _ malformed: (String) -> SnapshotBackendError
    ) throws(SnapshotBackendError) -> String? {
        guard let value = object[key], !(value is NSNull) else { return nil }
        guard let string = value as? String else { throw malformed("\"\(key)\" must be a string") }
        return string
    }

    private func createdAt(_ value: Any?, _ malformed: (String) -> SnapshotBackendError) throws(SnapshotBackendError)
        -> Date?
    {
        guard let value, !(value is NSNull) else { return nil }
        if let text = value as? String, let date = Self.parseTimestamp(text) { return date }
        if let number = value as? NSNumber, !(value is Bool) { return Date(timeIntervalSince1970: number.doubleValue) }
        throw malformed("\"created_at\" must be an RFC 3339 time or Unix seconds, got \(value)")
    }

    private func sizeBytes(_ value: Any?, _ malformed: (String) -> SnapshotBackendError) throws(SnapshotBackendError)
        -> Int64?
    {
        guard let value, !(value is NSNull) else { return nil }
        guard let number = value as? NSNumber, !(value is Bool), number.int64Value >= 0,
            Double(number.int64Value) == number.doubleValue
        else {
            throw malformed("\"size_bytes\" must be a non-negative integer, got \(value)")
        }
        return number.int64Value
    }

    // MARK: - Helpers

    /// The job name in snapcron's description marker (`snapcron:job=NAME`), if any.
    static func jobName(in description: String) -> String? {
        guard let marker = description.range(of: "snapcron:job=") else { return nil }
        let name = description[marker.upperBound...].prefix { !$0.isWhitespace && $0 != ")" }
        return name.isEmpty ? nil : String(name)
    }

    /// Whether an image id could have come from a command (ids with NUL or newline are taken as unknown).
    static func isUsableImageID(_ id: String) -> Bool {
        !id.isEmpty && !id.contains("\0") && !id.contains("\n")
    }

    /// Reads `2026-11-29T09:32:42Z`, with or without fractional seconds, `Z` or an offset.
    static func parseTimestamp(_ text: String) -> Date? {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime]
        if let date = formatter.date(from: text) { return date }
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.date(from: text)
    }

    /// The end of a command's stderr on one line: lines joined with `; `, prefixed with `...` when cut.
    static func summary(of stderr: [UInt8], truncated: Bool) -> String {
        let lines = String(decoding: stderr, as: UTF8.self)
            .split(whereSeparator: \.isNewline)
            .map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty }
        let text = lines.joined(separator: "; ")
        return truncated && !text.isEmpty ? "..." + text : text
    }

    /// `10m`, `1h30m`, `500ms` for messages.
    static func format(_ duration: Duration) -> String {
        let (seconds, attoseconds) = duration.components
        if seconds == 0 { return "\(attoseconds / 1_000_000_000_000_000)ms" }
        var parts = ""
        var rest = seconds
        for (unit, size) in [("h", Int64(3600)), ("m", 60), ("s", 1)] where rest >= size {
            parts += "\(rest / size)\(unit)"
            rest %= size
        }
        let milliseconds = attoseconds / 1_000_000_000_000_000
        return milliseconds > 0 ? parts + "\(milliseconds)ms" : parts
    }
}
