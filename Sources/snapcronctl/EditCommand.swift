import ArgumentParser
import ControlProtocol
import Foundation

/// `snapcronctl edit`: like `crontab -e` for the schedule file.
struct EditCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "edit", abstract: "Edit the schedule like crontab -e: validate, install atomically, reload.",
        discussion: """
            Opens a copy of the schedule in $VISUAL, else $EDITOR, else vi. On save the daemon validates the \
            copy against its config and backends; errors are shown compiler-style and you are asked whether to \
            edit again (answering no, or no terminal to ask on, leaves the installed schedule unchanged, exit \
            status 1). A valid copy replaces the schedule atomically (same owner and mode) and the daemon \
            reloads it before the command returns.
            """)

    @OptionGroup var connection: ConnectionOptions
    @Option(help: "The schedule file (default: the one the daemon runs).") var file: String?

    func run() throws {
        let connection = try self.connection.connect()
        let path = try file ?? connection.call(.status, NoParams(), as: StatusResult.self).value.schedulePath
        guard let data = FileManager.default.contents(atPath: path), let original = String(data: data, encoding: .utf8)
        else {
            Output.printError("snapcronctl: cannot read \(path): missing, unreadable or not UTF-8 text")
            throw ExitCodes.failure
        }
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let copy = directory + "/" + ((path as NSString).lastPathComponent)
        try Data(original.utf8).write(to: URL(fileURLWithPath: copy))

        while true {
            try Self.runEditor(on: copy)
            guard let edited = FileManager.default.contents(atPath: copy).flatMap({ String(data: $0, encoding: .utf8) })
            else {
                Output.printError("snapcronctl: the edited copy is not UTF-8 text; \(path) unchanged")
                throw ExitCodes.failure
            }
            if edited == original {
                print("no changes made to \(path)")
                return
            }
            let (check, _) = try connection.call(.check, CheckParams(text: edited, file: path), as: CheckResult.self)
            for diagnostic in check.errors + check.warnings { Output.printError(diagnostic.rendered) }
            if !check.valid {
                let count = check.errors.filter { $0.severity == "error" }.count
                Output.printError("snapcronctl: \(count) error\(count == 1 ? "" : "s") in the edited schedule")
                if Self.askToEditAgain() { continue }
                Output.printError("snapcronctl: \(path) unchanged")
                throw ExitCodes.failure
            }
            try Self.install(edited, at: path)
            print("installed \(path)")
            let (reload, _) = try connection.call(.reload, NoParams(), as: ReloadResult.self)
            print("schedule reloaded: \(reload.jobs) job\(reload.jobs == 1 ? "" : "s")")
            return
        }
    }

    /// `$VISUAL`, else `$EDITOR`, else `vi`, run through the shell so that `EDITOR="code --wait"` works.
    static func runEditor(on file: String) throws {
        let environment = ProcessInfo.processInfo.environment
        let editor = [environment["VISUAL"], environment["EDITOR"]].compactMap { $0 }.first { !$0.isEmpty } ?? "vi"
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", editor + " \"$1\"", "snapcronctl-edit", file]
        do {
            try process.run()
        } catch {
            Output.printError("snapcronctl: cannot start the editor '\(editor)': \(error.localizedDescription)")
            throw ExitCodes.failure
        }
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            Output.printError(
                "snapcronctl: the editor '\(editor)' exited with status \(process.terminationStatus); schedule unchanged"
            )
            throw ExitCodes.failure
        }
    }

    /// Asks on the terminal; no answer (end of input) is no.
    static func askToEditAgain() -> Bool {
        FileHandle.standardError.write(Data("Edit again? [y/N] ".utf8))
        guard let answer = readLine() else {
            FileHandle.standardError.write(Data("\n".utf8))
            return false
        }
        return ["y", "yes"].contains(answer.trimmingCharacters(in: .whitespaces).lowercased())
    }

    /// Writes `text` next to `path` with the same owner and mode, syncs it, and renames it over `path`.
    static func install(_ text: String, at path: String) throws {
        let directory = (path as NSString).deletingLastPathComponent
        let temporary =
            (directory.isEmpty ? "." : directory) + "/.\((path as NSString).lastPathComponent).snapcronctl-\(getpid())"
        var info = stat()
        let hasOriginal = stat(path, &info) == 0
        let descriptor = open(
            temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, hasOriginal ? info.st_mode & 0o7777 : 0o644)
        guard descriptor >= 0 else {
            Output.printError(
                "snapcronctl: cannot create \(temporary): \(String(cString: strerror(errno))); \(path) unchanged")
            throw ExitCodes.failure
        }
        var failure: String?
        let bytes = Array(text.utf8)
        var offset = 0
        while offset < bytes.count, failure == nil {
            let written = bytes[offset...].withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
            if written < 0 { failure = "write: \(String(cString: strerror(errno)))" } else { offset += written }
        }
        if failure == nil, hasOriginal {
            _ = fchmod(descriptor, info.st_mode & 0o7777)
            _ = fchown(descriptor, info.st_uid, info.st_gid)
        }
        if failure == nil, fsync(descriptor) != 0 { failure = "fsync: \(String(cString: strerror(errno)))" }
        close(descriptor)
        if failure == nil, rename(temporary, path) != 0 { failure = "rename: \(String(cString: strerror(errno)))" }
        if let failure {
            unlink(temporary)
            Output.printError("snapcronctl: cannot install \(path): \(failure); \(path) unchanged")
            throw ExitCodes.failure
        }
        let directoryDescriptor = open(directory.isEmpty ? "." : directory, O_RDONLY | O_DIRECTORY)
        if directoryDescriptor >= 0 {
            _ = fsync(directoryDescriptor)
            close(directoryDescriptor)
        }
    }

    private static func temporaryDirectory() throws -> String {
        var template = Array((NSTemporaryDirectory() + "/snapcronctl-edit.XXXXXX").utf8CString)
        guard let pointer = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            Output.printError("snapcronctl: cannot create a temporary directory: \(String(cString: strerror(errno)))")
            throw ExitCodes.failure
        }
        return String(cString: pointer)
    }
}
