public import BackendTypes
import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

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
        if let url = reader.nonEmptyString("base_url"), let problem = problem(withBaseURL: url) {
            reader.error("base_url", problem)
        }
        _ = reader.positiveNumber("requests_per_second")
        reader.secret(required: true)
        return nil
    }

    public static func targetRule(for backend: BackendConfig, stateDirectory: String) -> TargetRule { .twcc }

    /// Why the API key must not be sent to `baseURL`, or nil when it may.
    ///
    /// `https://` is required: the key travels in a header, so plain `http://` would hand it to anyone on the
    /// path. Plain `http://` is accepted only for loopback hosts (`127.0.0.0/8`, `::1`, `localhost`), where a
    /// local stand-in or a TLS-terminating proxy listens. A URL with user info is refused: it would read as one
    /// host and connect to another.
    public static func problem(withBaseURL baseURL: String) -> String? {
        guard baseURL.hasPrefix("https://") || baseURL.hasPrefix("http://") else {
            return "expected an http(s) URL, got '\(baseURL)'"
        }
        guard let components = URLComponents(string: baseURL), let host = components.host, !host.isEmpty else {
            return "'\(baseURL)' is not a URL with a host"
        }
        guard components.user == nil, components.password == nil else {
            return "'\(baseURL)' must not contain user info (user@host)"
        }
        guard components.query == nil, components.fragment == nil else {
            return "'\(baseURL)' must not have a query or fragment"
        }
        if components.scheme == "http" && !isLoopback(host: host) {
            return "'\(baseURL)' is plain http, which would send the API key unencrypted; use https:// "
                + "(http:// is allowed only for loopback hosts: 127.0.0.0/8, ::1, localhost)"
        }
        return nil
    }

    /// Whether `host` (as a URL carries it: a name, a dotted quad or a bracketed IPv6 address) is loopback.
    static func isLoopback(host: String) -> Bool {
        var name = host
        if name.hasPrefix("[") && name.hasSuffix("]") { name = String(name.dropFirst().dropLast()) }
        if name.lowercased() == "localhost" { return true }
        var v4 = in_addr()
        if inet_pton(AF_INET, name, &v4) == 1 {
            // s_addr is in network byte order: its first byte in memory is the first octet.
            return withUnsafeBytes(of: &v4) { $0[0] } == 127
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, name, &v6) == 1 {
            let bytes = withUnsafeBytes(of: &v6) { Array($0) }
            return bytes == Array(repeating: 0, count: 15) + [1]
        }
        return false
    }
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
