import BackendTypes
import ExecDescriptor
import LocalDescriptor
import SnapcronConfig
import Testing

@testable import SnapcronCore

/// `[backends.NAME] type = "exec"`: typed settings, defaults, and one message per mistake.
@Suite struct ExecSettingsTests {
    @Test func readsEveryKey() throws {
        let config = try SnapcronConfig.parse(
            """
            [backends.qemu]
            type = "exec"
            create = ["/usr/local/lib/snapcron/qemu-snapshot", "create", "{target}", "{name}"]
            status = ["/usr/local/lib/snapcron/qemu-snapshot", "status", "{image}"]
            list = ["/usr/local/lib/snapcron/qemu-snapshot", "list", "{target}"]
            delete = ["/usr/local/lib/snapcron/qemu-snapshot", "delete", "{image}"]
            image_id = "{target}@{name}"
            timeout = "1h30m"
            transient_exit_codes = [75, 111]
            environment = { HOME = "/var/lib/snapcron", AWS_PROFILE = "backup" }
            target_pattern = "/.+\\\\.qcow2"
            """, file: "snapcron.toml")
        let exec = try #require(config.backends["qemu"]?.exec)
        #expect(exec.create == ["/usr/local/lib/snapcron/qemu-snapshot", "create", "{target}", "{name}"])
        #expect(exec.status?.last == "{image}")
        #expect(exec.list?.last == "{target}")
        #expect(exec.delete?.last == "{image}")
        #expect(exec.imageID == "{target}@{name}")
        #expect(exec.timeout == .seconds(5400))
        #expect(exec.transientExitCodes == [75, 111])
        #expect(exec.environment == ["HOME": "/var/lib/snapcron", "AWS_PROFILE": "backup"])
        #expect(exec.targetPattern == "/.+\\.qcow2")
        #expect(config.backends["qemu"]?.local == nil)
    }

    @Test func defaultsNeedOnlyCreate() throws {
        let config = try SnapcronConfig.parse(
            "[backends.zfs]\ntype = \"exec\"\ncreate = [\"zfs\", \"snapshot\", \"{target}@{name}\"]\n", file: "x")
        let exec = try #require(config.backends["zfs"]?.exec)
        #expect(exec == ExecBackendSettings(create: ["zfs", "snapshot", "{target}@{name}"]))
        #expect(exec.imageID == "{name}")
        #expect(exec.timeout == .seconds(600))
        #expect(exec.transientExitCodes == [75])
        #expect(exec.status == nil && exec.list == nil && exec.delete == nil)
    }

    struct Row: Sendable, CustomTestStringConvertible {
        var name: String
        var keys: String
        var message: String
        var testDescription: String { name }
    }

    @Test(arguments: [
        Row(
            name: "no create", keys: "delete = [\"x\", \"{image}\"]",
            message: "backends.e: missing key 'create' (the argv that makes an image)"),
        Row(
            name: "empty argv", keys: "create = []",
            message: "backends.e.create: expected a non-empty array of strings (an argv), got []"),
        Row(
            name: "placeholder of another command", keys: "create = [\"x\", \"{image}\"]",
            message:
                "backends.e.create: placeholder {image} is not available here (available: {target}, {name}, {job}, {description})"
        ),
        Row(
            name: "unknown placeholder", keys: "create = [\"x\"]\nstatus = [\"x\", \"{id}\"]",
            message: "backends.e.status: unknown placeholder {id} in '{id}' (available: {image})"),
        Row(
            name: "unbalanced brace", keys: "create = [\"x\", \"{name\"]",
            message: "backends.e.create: unbalanced brace in '{name' (write '{{' or '}}' for a literal brace)"),
        Row(
            name: "placeholder as command", keys: "create = [\"{target}\"]",
            message: "backends.e.create: the command itself ({target}) must not contain a placeholder"),
        Row(
            name: "bad image id", keys: "create = [\"x\"]\nimage_id = \"{image}\"",
            message:
                "backends.e.image_id: placeholder {image} is not available here (available: {target}, {name}, {job})"),
        Row(
            name: "bad timeout", keys: "create = [\"x\"]\ntimeout = 600",
            message: "backends.e.timeout: expected a duration greater than 0 such as \"10m\", got 600"),
        Row(
            name: "zero timeout", keys: "create = [\"x\"]\ntimeout = \"0\"",
            message: "backends.e.timeout: expected a duration greater than 0 such as \"10m\", got \"0\""),
        Row(
            name: "bad exit codes", keys: "create = [\"x\"]\ntransient_exit_codes = [75, 256]",
            message: "backends.e.transient_exit_codes: expected an array of exit statuses 1-255, got [75, 256]"),
        Row(
            name: "bad environment", keys: "create = [\"x\"]\nenvironment = { \"A-B\" = \"1\" }",
            message: "backends.e.environment: invalid variable name 'A-B' (use A-Z, a-z, 0-9 and '_')"),
        Row(
            name: "environment not strings", keys: "create = [\"x\"]\nenvironment = { A = 1 }",
            message: "backends.e.environment.A: expected a string, got integer"),
        Row(
            name: "bad pattern", keys: "create = [\"x\"]\ntarget_pattern = \"([\"",
            message: "backends.e.target_pattern: invalid regular expression '(['"),
        Row(
            name: "misspelled key", keys: "create = [\"x\"]\ntimout = \"1m\"",
            message: "backends.e: unknown key 'timout'"),
    ])
    func rejects(_ row: Row) {
        let errors = configErrors("[backends.e]\ntype = \"exec\"\n" + row.keys)
        #expect(errors.count == 1, "\(errors)")
        #expect(errors.first?.message == row.message)
        #expect(errors.hasErrors)
    }
}
