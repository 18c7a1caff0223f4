public import BackendTypes

/// The `twcc` backend type: the TWCC VCS REST API. Its backend, `TWCCBackend`, reads its settings from the table
/// itself (``BackendConfig/settings``) and builds in `TWCCBackend+Factory.swift`.
public enum TWCCBackendDescriptor: BackendDescriptor {
    public static let name = "twcc"
    public static let settingKeys = [
        "base_url", "platform", "project_id", "requests_per_second", "max_requests_in_flight",
        "request_timeout_seconds", "api_key_credential", "api_key_file",
    ]
    public static let exampleTarget = "101"

    /// Checks what can be checked without the network: the backend reads the table again when it is built.
    public static func readSettings(_ reader: inout SettingsReader, stateDirectory: String) -> (any BackendSettings)? {
        _ = reader.nonEmptyString("platform")
        _ = reader.positiveInteger("project_id")
        if let url = reader.nonEmptyString("base_url"), !(url.hasPrefix("https://") || url.hasPrefix("http://")) {
            reader.error("base_url", "expected an http(s) URL, got '\(url)'")
        }
        _ = reader.positiveNumber("requests_per_second")
        reader.secret(required: true)
        return nil
    }

    public static func targetRule(for backend: BackendConfig, stateDirectory: String) -> TargetRule { .twcc }
}

extension BackendType {
    /// The TWCC VCS REST API.
    public static let twcc = BackendType(TWCCBackendDescriptor.self)
}

extension TargetRule {
    /// `twcc`: a VCS site id (a positive integer) or site name of at most 128 ASCII letters, digits, `-`, `_`, `.`.
    public static let twcc = TargetRule { target in
        guard !target.isEmpty else { return "empty target (expected a VCS site id or name)" }
        guard target.count <= 128,
            target.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-_.".contains($0)) })
        else {
            return "'\(target)' is not a VCS site id or name (letters, digits, '-', '_', '.')"
        }
        if target.allSatisfy(\.isNumber), Int(target).map({ $0 <= 0 }) ?? true {
            return "'\(target)' is not a VCS site id"
        }
        return nil
    }
}
