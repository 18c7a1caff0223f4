import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A TWCC API key: sent in `x-API-KEY`, never printed, logged or put in an error.
public struct APIKey: Sendable, Hashable, CustomStringConvertible, CustomDebugStringConvertible {
    /// The secret itself; read it only to build the request header.
    public let secret: String

    /// Wraps a key given as a value; surrounding whitespace (a trailing newline of a file) is dropped.
    ///
    /// Throws when the key is empty or has characters that cannot go in an HTTP header.
    public init(_ secret: String) throws(APIKey.LoadError) {
        let trimmed = secret.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !trimmed.isEmpty else { throw LoadError("the API key is empty") }
        // A key with a control character or a space would corrupt the header (or inject another one).
        guard trimmed.unicodeScalars.allSatisfy({ $0.isASCII && $0.value > 0x20 && $0.value < 0x7f }) else {
            throw LoadError("the API key has characters that cannot be sent in a header")
        }
        self.secret = trimmed
    }

    public var description: String { "<api key redacted>" }
    public var debugDescription: String { description }

    /// Why a key could not be loaded; the message never contains the key.
    public struct LoadError: Error, Sendable, CustomStringConvertible {
        public var message: String

        init(_ message: String) {
            self.message = message
        }

        public var description: String { message }
    }

    /// Reads the key named by `api_key_credential` (from `$CREDENTIALS_DIRECTORY`) or `api_key_file` in `settings`.
    public static func load<Value: TWCCSettingValue>(
        settings: [String: Value], environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws(LoadError) -> APIKey {
        let credential = settings["api_key_credential"]?.string
        let file = settings["api_key_file"]?.string
        switch (credential, file) {
        case (let name?, nil): return try load(credential: name, environment: environment)
        case (nil, let path?): return try load(file: path)
        case (.some, .some): throw LoadError("give api_key_credential or api_key_file, not both")
        case (nil, nil): throw LoadError("missing api_key_credential or api_key_file (the API key is never inline)")
        }
    }

    /// Reads `$CREDENTIALS_DIRECTORY/<name>`, as systemd's `LoadCredential=<name>:...` provides it.
    public static func load(
        credential name: String, environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws(LoadError) -> APIKey {
        guard !name.isEmpty, !name.contains("/"), name != ".", name != ".." else {
            throw LoadError("invalid credential name '\(name)'")
        }
        guard let directory = environment["CREDENTIALS_DIRECTORY"], !directory.isEmpty else {
            throw LoadError(
                "credential '\(name)' needs $CREDENTIALS_DIRECTORY (run under systemd with LoadCredential=\(name):...)")
        }
        // systemd makes the credential private to the service, so the world-readable check is for api_key_file only.
        return try read(path: directory + "/" + name, checkMode: false)
    }

    /// Reads a key file, refusing one that everybody may read.
    public static func load(file path: String) throws(LoadError) -> APIKey {
        try read(path: path, checkMode: true)
    }

    private static func read(path: String, checkMode: Bool) throws(LoadError) -> APIKey {
        var info = stat()
        guard stat(path, &info) == 0 else {
            throw LoadError("cannot read '\(path)': \(String(cString: strerror(errno)).lowercased())")
        }
        guard info.st_mode & S_IFMT == S_IFREG else { throw LoadError("'\(path)' is not a regular file") }
        if checkMode, info.st_mode & 0o004 != 0 {
            let mode = String(info.st_mode & 0o7777, radix: 8)
            throw LoadError("'\(path)' is readable by everyone (mode 0\(mode)); chmod o-rwx it")
        }
        guard let data = FileManager.default.contents(atPath: path) else { throw LoadError("cannot read '\(path)'") }
        guard let text = String(data: data, encoding: .utf8) else { throw LoadError("'\(path)' is not UTF-8 text") }
        do {
            return try APIKey(text)
        } catch {
            throw LoadError("'\(path)': \(error.message)")
        }
    }
}
