import BackendTypes
import ExecDescriptor
import Foundation
import Logging
import SnapcronConfig
import SnapcronCore
import SnapcronTestKit
import SnapshotBackend
import Testing

@testable import ExecBackend
@testable import SnapcronDaemon

#if canImport(Glibc)
    import Glibc
#endif

/// The exec backend against small scripts: the JSON contract, its fallbacks, and every failure mode.
@Suite final class ExecBackendTests: Sendable {
    let scratch: Scratch

    init() throws {
        scratch = try Scratch()
    }

    deinit {
        scratch.remove()
    }

    func backend(
        create: [String], status: [String]? = nil, list: [String]? = nil, delete: [String]? = nil,
        _ configure: (inout ExecBackend.Configuration) -> Void = { _ in }
    ) throws -> ExecBackend {
        var configuration = ExecBackend.Configuration(
            name: "test", create: create, status: status, list: list, delete: delete)
        configure(&configuration)
        return try ExecBackend(configuration: configuration)
    }

    func createError(_ backend: ExecBackend, target: String = "/srv/disk") async -> SnapshotBackendError? {
        await backendError {
            _ = try await backend.create(target: target, name: "img-1", description: "", logger: quiet)
        }
    }

    // MARK: The JSON contract and its fallbacks

    @Test func createWithoutOutputOrStatusIsActiveAndNamedByTheImageIDTemplate() async throws {
        let script = try scratch.script("snap", "exit 0")
        let plain = try backend(create: [script, "{target}", "{name}"])
        let image = try await plain.create(target: "tank/vm", name: "img-1", description: "", logger: quiet)
        #expect(image == ImageRef(id: "img-1"))
        #expect(try await plain.status(image, logger: quiet) == .active)
        #expect(try await plain.list(target: "tank/vm", logger: quiet).isEmpty)

        let zfsLike = try backend(create: [script]) { $0.imageID = "{target}@{name}" }
        #expect(
            try await zfsLike.create(target: "tank/vm", name: "img-1", description: "", logger: quiet).id
                == "tank/vm@img-1")
    }

    @Test func placeholdersExpandIntoSingleArgumentsWithoutAShell() async throws {
        let script = try scratch.script(
            "args", #"for a in "$@"; do printf '%s\n' "$a"; done > "$(dirname "$0")/args.txt""#)
        let backend = try backend(create: [
            script, "{target}", "{name}", "--job={job}", "{description}", "{{x}}", "$HOME;",
        ])
        let description = "created by snapcron (snapcron:job=web scheduled=2026-11-29T01:00:00Z run=7)"
        _ = try await backend.create(
            target: "/srv/my disk; rm -rf /", name: "n1", description: description, logger: quiet)
        #expect(
            try scratch.read("args.txt").split(separator: "\n").map(String.init) == [
                "/srv/my disk; rm -rf /", "n1", "--job=web", description, "{x}", "$HOME;",
            ])
    }

    @Test func createOutputGivesIdAndState() async throws {
        let queued = try scratch.script("queued", #"echo '{"id": "ami-123", "state": "queued", "extra": 1}'"#)
        #expect(
            try await backend(create: [queued]).create(target: "t", name: "n", description: "", logger: quiet).id
                == "ami-123")

        let failed = try scratch.script(
            "failed", #"echo '{"id": "ami-124", "state": "error", "error": "quota exceeded"}'"#)
        let error = try #require(await createError(try backend(create: [failed])))
        #expect(!error.isTransient)
        #expect(error.message == "failed reported an error: quota exceeded")
        #expect(error.image == ImageRef(id: "ami-124"))
    }

    @Test func statusReadsEveryStateAndDefaultsToActive() async throws {
        let script = try scratch.script(
            "status",
            """
            case $1 in
            q) echo '{"state": "queued"}' ;;
            s) echo '{"state": "saving"}' ;;
            a) echo '{"state": "active"}' ;;
            e) echo '{"state": "error", "error": "disk full"}' ;;
            g) echo '{"state": "gone"}' ;;
            silent) ;;
            bad) echo '{"state": "done"}' ;;
            esac
            """)
        let backend = try backend(create: ["/bin/true"], status: [script, "{image}"])
        let expected: [(String, ImageState)] = [
            ("q", .queued), ("s", .saving), ("a", .active), ("e", .error("disk full")), ("g", .gone),
            ("silent", .active),
        ]
        for (id, state) in expected {
            #expect(try await backend.status(ImageRef(id: id), logger: quiet) == state, "\(id)")
        }
        let error = try #require(
            await backendError { _ = try await backend.status(ImageRef(id: "bad"), logger: quiet) })
        #expect(error.message.contains("unknown state \"done\""), "\(error)")
        #expect(error.operation == .status)
    }

    @Test func listReadsEntriesAndKeepsOnlyItsTarget() async throws {
        let script = try scratch.script(
            "list",
            #"""
            cat <<'JSON'
            [
              {"id": "a", "name": "snap-a", "description": "d", "created_at": "2026-11-29T01:00:00Z", "state": "active",
               "size_bytes": 1024, "target": "tank/vm"},
              {"id": "b", "created_at": 1780000000.5, "state": "saving"},
              {"id": "c", "created_at": "2026-11-29T01:00:00.250+08:00", "state": "error", "error": "broken"},
              {"id": "d", "state": "gone"},
              {"id": "e", "target": "tank/other"}
            ]
            JSON
            """#)
        let images = try await backend(create: ["/bin/true"], list: [script, "{target}"]).list(
            target: "tank/vm", logger: quiet)
        #expect(images.map(\.id.id) == ["a", "b", "c"])
        #expect(images[0].name == "snap-a")
        #expect(images[0].description == "d")
        #expect(images[0].createdAt == Date(timeIntervalSince1970: 1_795_914_000))
        #expect(images[0].sizeBytes == 1024)
        #expect(images[0].target == "tank/vm")
        #expect(images[1].name == "b")
        #expect(images[1].createdAt == Date(timeIntervalSince1970: 1_780_000_000.5))
        #expect(images[1].state == .saving)
        #expect(images[2].createdAt == Date(timeIntervalSince1970: 1_795_885_200.25))
        #expect(images[2].state == .error("broken"))
    }

    @Test func listEntryErrorsNameTheEntry() async throws {
        let script = try scratch.script("list", #"echo '[{"id": "a"}, {"name": "no id"}]'"#)
        let backend = try backend(create: ["/bin/true"], list: [script])
        let error = try #require(await backendError { _ = try await backend.list(target: "t", logger: quiet) })
        #expect(error.message == "list printed malformed JSON on stdout: entry 1: missing \"id\" (a non-empty string)")
        #expect(!error.isTransient)
    }

    @Test func createLooksTheNameUpBeforeCreating() async throws {
        // A tiny store of images as files: create fails if called for a name that exists.
        let tool = try scratch.script(
            "tool",
            #"""
            dir=$(dirname "$0")/images
            mkdir -p "$dir"
            case $1 in
            create) [ ! -e "$dir/$2" ] || { echo "duplicate $2" >&2; exit 9; }
                    echo "${3:-active}" > "$dir/$2"; echo "$2" >> "$dir/../creates" ;;
            list) printf '['; sep=''; for f in "$dir"/*; do [ -e "$f" ] || continue; n=$(basename "$f")
                  printf '%s{"id": "%s", "state": "%s"}' "$sep" "$n" "$(cat "$f")"; sep=','; done; echo ']' ;;
            delete) rm -f "$dir/$2" ;;
            esac
            """#)
        let backend = try backend(
            create: [tool, "create", "{name}"], list: [tool, "list"], delete: [tool, "delete", "{image}"])
        let first = try await backend.create(target: "t", name: "img-1", description: "", logger: quiet)
        let second = try await backend.create(target: "t", name: "img-1", description: "", logger: quiet)
        #expect(first == second)
        #expect(try scratch.read("creates") == "img-1\n")

        // An image of that name in error is deleted and made afresh.
        try "error\n".write(toFile: scratch.path + "/images/img-2", atomically: true, encoding: .utf8)
        _ = try await backend.create(target: "t", name: "img-2", description: "", logger: quiet)
        #expect(try scratch.read("creates") == "img-1\nimg-2\n")
        #expect(try scratch.read("images/img-2") == "active\n")
    }

    @Test func deleteWithoutACommandIsAPermanentError() async throws {
        let error = try #require(
            await backendError { try await backend(create: ["/bin/true"]).delete(ImageRef(id: "x"), logger: quiet) })
        #expect(!error.isTransient)
        #expect(error.message == "no delete command is configured")
    }

    @Test func environmentIsMinimalAndExplicit() async throws {
        setenv("SNAPCRON_TEST_LEAK", "must not reach commands", 1)
        defer { unsetenv("SNAPCRON_TEST_LEAK") }
        let script = try scratch.script("env", #"/usr/bin/env > "$(dirname "$0")/env""#)
        let backend = try backend(create: [script]) { $0.environment = ["AWS_PROFILE": "backup", "TZ": "Asia/Taipei"] }
        _ = try await backend.create(target: "t", name: "n", description: "", logger: quiet)
        var variables: [String: String] = [:]
        for line in try scratch.read("env").split(separator: "\n") {
            let parts = line.split(separator: "=", maxSplits: 1).map(String.init)
            variables[parts[0]] = parts.count > 1 ? parts[1] : ""
        }
        variables["PWD"] = nil  // set by sh itself
        #expect(
            variables == [
                "PATH": ExecBackend.defaultSearchPath, "LC_ALL": "C.UTF-8", "TZ": "Asia/Taipei",
                "AWS_PROFILE": "backup",
                "SNAPCRON_BACKEND": "test", "SNAPCRON_OPERATION": "create",
            ])
    }

    @Test func secretsReachCommandsOnlyAsAFilePath() async throws {
        let script = try scratch.script("env", #"/usr/bin/env > "$(dirname "$0")/env""#)
        let keyFile = scratch.path + "/key"
        try "s3cret".write(toFile: keyFile, atomically: false, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: keyFile)
        let config = try SnapcronConfig.parse(
            "[backends.cli]\ntype = \"exec\"\ncreate = [\"\(script)\"]\napi_key_file = \"\(keyFile)\"\n", file: "x")
        let backend = try #require(try LiveBackends.make(config)["cli"])
        _ = try await backend.create(target: "t", name: "n", description: "", logger: quiet)
        let environment = try scratch.read("env")
        #expect(environment.contains("SNAPCRON_API_KEY_FILE=\(keyFile)\n"))
        #expect(!environment.contains("s3cret"))

        let credential = try SnapcronConfig.parse(
            "[backends.cli]\ntype = \"exec\"\ncreate = [\"x\"]\napi_key_credential = \"cli-key\"\n", file: "x")
        let cli = try #require(credential.backends["cli"])
        let fromSystemd = try #require(
            try ExecBackendDescriptor.makeBackend(
                cli,
                context: BackendContext(
                    stateDirectory: scratch.path,
                    environment: ["CREDENTIALS_DIRECTORY": "/run/credentials/snapcron.service"])) as? ExecBackend)
        #expect(fromSystemd.runner.environment["SNAPCRON_API_KEY_FILE"] == "/run/credentials/snapcron.service/cli-key")
        #expect(throws: DaemonStartError.self) {
            try LiveBackends.make(credential, environment: [:])
        }
    }

    // MARK: Failures

    @Test func missingBinaryIsPermanent() async throws {
        let absolute = try #require(await createError(try backend(create: [scratch.path + "/no-such-tool", "{name}"])))
        #expect(!absolute.isTransient)
        #expect(absolute.message == "cannot run \(scratch.path)/no-such-tool: posix_spawn: no such file or directory")
        #expect(absolute.description.hasPrefix("test create failed for /srv/disk: "))

        let bare = try #require(await createError(try backend(create: ["snapcron-no-such-tool"])))
        #expect(!bare.isTransient)
        #expect(
            bare.message == "command not found: snapcron-no-such-tool (searched PATH=\(ExecBackend.defaultSearchPath))")
    }

    @Test func nonZeroExitIsPermanentWithStderr() async throws {
        let script = try scratch.script(
            "fail", "echo 'working...'; echo 'zfs: dataset is busy' >&2; echo 'try later' >&2; exit 3")
        let error = try #require(await createError(try backend(create: [script, "snapshot"])))
        #expect(!error.isTransient)
        #expect(error.message == "fail snapshot exited with status 3: zfs: dataset is busy; try later")
        #expect(error.target == "/srv/disk")
    }

    @Test func tempfailAndConfiguredCodesAreTransient() async throws {
        let tempfail = try scratch.script("tempfail", "echo 'rate limited' >&2; exit 75")
        let error = try #require(await createError(try backend(create: [tempfail])))
        #expect(error.isTransient)
        #expect(error.message == "tempfail exited with status 75: rate limited")

        let busy = try scratch.script("busy", "exit 42")
        #expect(try #require(await createError(try backend(create: [busy]))).isTransient == false)
        #expect(
            try #require(await createError(try backend(create: [busy]) { $0.transientExitCodes = [75, 42] }))
                .isTransient)
    }

    @Test func deathBySignalIsTransient() async throws {
        let script = try scratch.script("crash", "echo 'segfault coming' >&2; kill -SEGV $$")
        let error = try #require(await createError(try backend(create: [script])))
        #expect(error.isTransient)
        #expect(error.message == "crash was killed by SIGSEGV: segfault coming")
    }

    @Test func timeoutKillsTheWholeProcessGroup() async throws {
        // The command ignores SIGTERM (so SIGKILL is needed) and leaves a child that would sleep on.
        let script = try scratch.script(
            "hang",
            #"""
            trap '' TERM
            sleep 300 &
            echo $! > "$(dirname "$0")/child.pid"
            echo $$ > "$(dirname "$0")/parent.pid"
            echo 'started' >&2
            wait
            """#)
        let backend = try backend(create: [script]) {
            $0.timeout = .milliseconds(600)
            $0.killGrace = .milliseconds(300)
        }
        let started = ContinuousClock.now
        let error = try #require(await createError(backend))
        let elapsed = ContinuousClock.now - started
        #expect(error.isTransient)
        #expect(error.message == "hang timed out after 600ms; its process group was killed: started")
        // Well under the 300 s the command would sleep; generous because parallel tests may starve the task pool.
        #expect(elapsed < .seconds(120), "took \(elapsed)")
        let parent = try #require(pid_t(try scratch.read("parent.pid").trimmingCharacters(in: .whitespacesAndNewlines)))
        let child = try #require(pid_t(try scratch.read("child.pid").trimmingCharacters(in: .whitespacesAndNewlines)))
        #expect(await waitUntilGone(parent), "the command \(parent) survived")
        #expect(await waitUntilGone(child), "its child \(child) survived")
    }

    @Test func leftoverChildrenAreKilledWhenTheCommandExits() async throws {
        let script = try scratch.script(
            "leaky", #"sleep 300 > /dev/null 2>&1 & echo $! > "$(dirname "$0")/child.pid"; exit 0"#)
        _ = try await backend(create: [script]).create(target: "t", name: "n", description: "", logger: quiet)
        let child = try #require(pid_t(try scratch.read("child.pid").trimmingCharacters(in: .whitespacesAndNewlines)))
        #expect(await waitUntilGone(child), "the background child \(child) survived")
    }

    @Test func malformedJSONIsPermanentAndNamesTheCommand() async throws {
        let script = try scratch.script("snap", "echo 'Snapshot created: tank/vm@n1'")
        let error = try #require(await createError(try backend(create: [script, "create", "{target}"])))
        #expect(!error.isTransient)
        #expect(
            error.message == "snap create printed malformed JSON on stdout: not JSON: 'Snapshot created: tank/vm@n1'")

        let array = try scratch.script("array", "echo '[1, 2]'")
        let notObject = try #require(await createError(try backend(create: [array])))
        #expect(notObject.message == "array printed malformed JSON on stdout: expected a JSON object")
    }

    @Test func oversizeOutputIsBounded() async throws {
        // `yes` never stops by itself: the backend must stop reading and kill it.
        let flood = try backend(create: ["/usr/bin/yes"]) { $0.maxStdoutBytes = 64 * 1024 }
        let error = try #require(await createError(flood))
        #expect(!error.isTransient)
        #expect(error.message == "yes printed more than 65536 bytes on stdout; it was killed")

        let noisy = try scratch.script(
            "noisy", "head -c 3000000 /dev/zero | tr '\\0' 'e' >&2; echo >&2; echo 'the real reason' >&2; exit 1")
        let stderrError = try #require(await createError(try backend(create: [noisy])))
        #expect(stderrError.message.count < 4200, "\(stderrError.message.count) characters")
        #expect(stderrError.message.hasPrefix("noisy exited with status 1: ..."))
        #expect(stderrError.message.hasSuffix("; the real reason"))
    }

    @Test func cancellingTheTaskKillsTheCommand() async throws {
        let script = try scratch.script("slow", #"echo $$ > "$(dirname "$0")/pid"; exec sleep 300"#)
        let backend = try backend(create: [script])
        let task = Task { await createError(backend) }
        let pidFile = scratch.path + "/pid"
        while !FileManager.default.fileExists(atPath: pidFile) { try await Task.sleep(for: .milliseconds(10)) }
        task.cancel()
        let error = try #require(await task.value)
        #expect(error.isTransient)
        #expect(error.message == "slow was cancelled; its process group was killed")
    }

    // MARK: Configuration and validation

    @Test func templatesAreCheckedPerCommand() throws {
        let rows: [(ExecBackend.Configuration, String)] = [
            (.init(name: "t", create: []), "create: expected a non-empty argv whose first element is the command"),
            (
                .init(name: "t", create: ["x", "{image}"]),
                "create: placeholder {image} is not available here (available: {target}, {name}, {job}, {description})"
            ),
            (
                .init(name: "t", create: ["x"], status: ["x", "{target}"]),
                "status: placeholder {target} is not available here (available: {image})"
            ),
            (
                .init(name: "t", create: ["x"], list: ["x", "{tgt}"]),
                "list: unknown placeholder {tgt} in '{tgt}' (available: {target})"
            ),
            (
                .init(name: "t", create: ["x"], delete: ["x", "{image"]),
                "delete: unclosed '{' in '{image' (write '{{' for a literal brace)"
            ),
            (
                .init(name: "t", create: ["{name}"]),
                "create: the command itself ({name}) must not contain a placeholder"
            ),
            (
                .init(name: "t", create: ["x"], imageID: "{image}"),
                "image_id: placeholder {image} is not available here (available: {target}, {name}, {job})"
            ),
            (.init(name: "t", create: ["x"], targetPattern: "(["), "target_pattern: invalid regular expression '([': "),
        ]
        for (configuration, message) in rows {
            #expect {
                _ = try ExecBackend(configuration: configuration)
            } throws: { error in
                "\(error)".hasPrefix(message)
            }
        }
        #expect(
            try CommandTemplate(["/usr/lib/snapcron/qemu-snapshot", "create", "{target}"], allowed: [.target]).label
                == "qemu-snapshot create")
        #expect(
            try CommandTemplate(["qemu-img", "snapshot", "-c", "{name}"], allowed: [.name]).label == "qemu-img snapshot"
        )
        #expect(try CommandTemplate(["zfs", "-v"], allowed: []).label == "zfs")
    }

    @Test func validateIsSyntactic() throws {
        let backend = try backend(create: ["x"]) { $0.targetPattern = "[a-z]+/[a-z0-9/]+" }
        try backend.validate(target: "tank/vm/web1")
        for target in ["", "-rf", "tank/vm\nx", "Tank/vm", "tank"] {
            #expect(throws: SnapshotBackendError.self, "\(target)") { try backend.validate(target: target) }
        }
        try self.backend(create: ["x"]).validate(target: "any thing: at all")
    }

    @Test func formatsDurations() {
        #expect(ExecBackend.format(.seconds(600)) == "10m")
        #expect(ExecBackend.format(.seconds(5400)) == "1h30m")
        #expect(ExecBackend.format(.milliseconds(1500)) == "1s500ms")
        #expect(ExecBackend.format(.milliseconds(250)) == "250ms")
    }
}
