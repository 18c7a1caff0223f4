#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// One problem of a config table, worded for the operator, e.g. `backends.web.reflink: expected true or false, got
/// "no"`; the config module turns it into a `file: error: ...` diagnostic.
public struct SettingsProblem: Sendable, Hashable {
    public var message: String
    public var note: String?

    public init(message: String, note: String? = nil) {
        self.message = message
        self.note = note
    }
}

/// Reads the keys of one config table and collects every problem with its key path, so that all are reported at
/// once. A backend type's descriptor reads its `[backends.NAME]` table with it.
public struct SettingsReader: Sendable {
    /// The table being read.
    public let table: [String: ConfigValue]
    /// The table's key path, e.g. `backends.web`; empty for the top level of the file.
    public let path: String
    /// What is wrong so far, in the order found.
    public private(set) var problems: [SettingsProblem] = []

    public init(table: [String: ConfigValue], path: String) {
        self.table = table
        self.path = path
    }

    /// The key path of `key` in this table, e.g. `backends.web.reflink`.
    public func keyPath(_ key: String) -> String {
        path.isEmpty ? key : "\(path).\(key)"
    }

    /// Reports a problem of `key` (`backends.web.key: message`), or of the table itself when `key` is nil
    /// (`backends.web: message`, just `message` at the top level).
    public mutating func error(_ key: String?, _ message: String, note: String? = nil) {
        let location = key.map(keyPath) ?? path
        problems.append(SettingsProblem(message: location.isEmpty ? message : "\(location): \(message)", note: note))
    }

    /// A string that is not empty, or nil (reported unless the key is absent).
    public mutating func nonEmptyString(_ key: String) -> String? {
        guard let value = table[key] else { return nil }
        guard let string = value.string, !string.isEmpty else {
            error(key, "expected a non-empty string, got \(value)")
            return nil
        }
        return string
    }

    /// An absolute path, or nil (reported unless the key is absent).
    public mutating func absolutePath(_ key: String) -> String? {
        guard let string = nonEmptyString(key) else { return nil }
        guard string.hasPrefix("/") else {
            error(key, "expected an absolute path, got '\(string)'")
            return nil
        }
        return string
    }

    /// `true` or `false`, or nil (reported unless the key is absent).
    public mutating func boolean(_ key: String) -> Bool? {
        guard let value = table[key] else { return nil }
        guard let bool = value.bool else {
            error(key, "expected true or false, got \(value)")
            return nil
        }
        return bool
    }

    /// An integer of at least 1, or nil (reported unless the key is absent).
    /// A duration written like a schedule option (`400d`, `12h`), at least `minimum`.
    public mutating func duration(_ key: String, atLeast minimum: Duration) -> Duration? {
        guard let value = table[key] else { return nil }
        guard let text = value.string else {
            error(key, "expected a duration such as \"400d\", got \(value)")
            return nil
        }
        do {
            let duration = try Duration(parsingOption: text)
            guard duration >= minimum else {
                error(key, "must be at least \(minimum.optionDescription), got '\(text)'")
                return nil
            }
            return duration
        } catch let parseError {
            error(key, "\(parseError)")
            return nil
        }
    }

    public mutating func positiveInteger(_ key: String) -> Int? {
        guard let value = table[key] else { return nil }
        guard let number = value.integer, number >= 1 else {
            error(key, "expected an integer of at least 1, got \(value)")
            return nil
        }
        return number
    }

    /// A number (integer or float) greater than 0, or nil (reported unless the key is absent).
    public mutating func positiveNumber(_ key: String) -> Double? {
        guard let value = table[key] else { return nil }
        guard let number = value.number, number > 0 else {
            error(key, "expected a number greater than 0, got \(value)")
            return nil
        }
        return number
    }

    /// Checks `api_key_credential` / `api_key_file` (or another `prefix`'s pair): at most one (exactly one where
    /// `required`), a plain credential name, a file that exists and is not world-readable. Secrets are never
    /// inline: the table holds only where the secret is.
    public mutating func secret(prefix: String = "api_key", what: String = "the API key", required: Bool) {
        let credentialKey = "\(prefix)_credential"
        let fileKey = "\(prefix)_file"
        let credential = nonEmptyString(credentialKey)
        let file = absolutePath(fileKey)
        if table[credentialKey] != nil, table[fileKey] != nil {
            error(nil, "give \(credentialKey) or \(fileKey), not both")
            return
        } else if required, table[credentialKey] == nil, table[fileKey] == nil, table[prefix] == nil {
            error(nil, "missing \(credentialKey) or \(fileKey) (\(what) is never inline)")
        }
        if let credential, credential.contains("/") || credential == "." || credential == ".." {
            error(
                credentialKey, "invalid credential name '\(credential)'",
                note: "give the name of a LoadCredential= entry; it is read from $CREDENTIALS_DIRECTORY")
        }
        if let file {
            var info = stat()
            guard stat(file, &info) == 0 else {
                error(fileKey, "cannot read '\(file)': \(String(cString: strerror(errno)).lowercased())")
                return
            }
            let mode = info.st_mode & 0o7777
            if (info.st_mode & S_IFMT) != S_IFREG {
                error(fileKey, "'\(file)' is not a regular file")
            } else if mode & 0o004 != 0 {
                let octal = String(mode, radix: 8)
                let padded = String(repeating: "0", count: max(0, 4 - octal.count)) + octal
                error(
                    fileKey, "'\(file)' is readable by everyone (mode \(padded))", note: "chmod o-rwx \(file)")
            }
        }
    }
}
