import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Where `/metrics` is served (`[daemon] metrics_listen`): a TCP address or a Unix socket path.
public enum MetricsListen: Sendable, Hashable, CustomStringConvertible {
    case tcp(host: String, port: Int)
    case unix(path: String)

    /// Reads `127.0.0.1:9464`, `[::1]:9464`, `localhost:9464`, `0.0.0.0:9464` or an absolute socket path.
    /// Hosts are IP literals (or `localhost`): the daemon resolves no names at start.
    public init(parsing text: String) throws(MetricsConfigError) {
        if text.hasPrefix("/") {
            self = .unix(path: text)
            return
        }
        let host: Substring
        let portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else {
                throw MetricsConfigError("expected [IPv6]:PORT, got '\(text)'")
            }
            host = text[text.index(after: text.startIndex)..<close]
            portText = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":"), !text[..<colon].contains(":") else {
                throw MetricsConfigError(
                    "expected HOST:PORT (e.g. 127.0.0.1:9464, [::1]:9464) or an absolute socket path, got '\(text)'")
            }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
        }
        guard let port = Int(portText), (1...65_535).contains(port) else {
            throw MetricsConfigError("port '\(portText)' of '\(text)' is not a number from 1 to 65535")
        }
        let address = host == "localhost" ? "127.0.0.1" : String(host)
        guard IPAddress(address) != nil else {
            throw MetricsConfigError("'\(host)' of '\(text)' is not an IP address (names are not resolved)")
        }
        self = .tcp(host: address, port: port)
    }

    public var description: String {
        switch self {
        case .tcp(let host, let port): host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        case .unix(let path): path
        }
    }
}

/// A bad `metrics_listen` or `metrics_allow` value, worded for the config diagnostics.
public struct MetricsConfigError: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// An IPv4 or IPv6 address, as bytes in network order (4 or 16).
public struct IPAddress: Sendable, Hashable, CustomStringConvertible {
    public var bytes: [UInt8]

    public init?(_ text: String) {
        var v4 = in_addr()
        var v6 = in6_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            bytes = withUnsafeBytes(of: &v4) { Array($0) }
        } else if inet_pton(AF_INET6, text, &v6) == 1 {
            bytes = withUnsafeBytes(of: &v6) { Array($0) }
        } else {
            return nil
        }
    }

    public init(bytes: [UInt8]) { self.bytes = bytes }

    /// An IPv4-mapped IPv6 address (`::ffff:127.0.0.1`, what a dual-stack listener sees) as its IPv4 address.
    public var unmapped: IPAddress {
        guard bytes.count == 16, bytes[0..<10].allSatisfy({ $0 == 0 }), bytes[10] == 0xff, bytes[11] == 0xff else {
            return self
        }
        return IPAddress(bytes: Array(bytes[12...]))
    }

    public var description: String {
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        var copy = bytes
        let family = bytes.count == 4 ? AF_INET : AF_INET6
        return copy.withUnsafeMutableBytes { raw in
            inet_ntop(family, raw.baseAddress, &buffer, socklen_t(buffer.count)).map { _ in
                String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            } ?? "?"
        }
    }
}

/// An address block (`127.0.0.0/8`, `::1`, `10.1.2.3`) that may scrape `/metrics` (`[daemon] metrics_allow`).
public struct IPAddressRange: Sendable, Hashable, CustomStringConvertible {
    public var network: IPAddress
    public var prefixLength: Int

    /// Loopback only: what `metrics_allow` is when unset.
    public static let loopback = [IPAddressRange(network: IPAddress("127.0.0.0")!, prefixLength: 8),
                                  IPAddressRange(network: IPAddress("::1")!, prefixLength: 128)]

    public init(network: IPAddress, prefixLength: Int) {
        self.network = network
        self.prefixLength = prefixLength
    }

    public init(parsing text: String) throws(MetricsConfigError) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count <= 2, let address = IPAddress(String(parts[0])) else {
            throw MetricsConfigError("'\(text)' is not an address or ADDRESS/PREFIX (e.g. 10.0.0.0/8, ::1)")
        }
        let bits = address.bytes.count * 8
        var length = bits
        if parts.count == 2 {
            guard let parsed = Int(parts[1]), (0...bits).contains(parsed) else {
                throw MetricsConfigError("prefix length '\(parts[1])' of '\(text)' is not a number from 0 to \(bits)")
            }
            length = parsed
        }
        network = address
        prefixLength = length
    }

    /// Whether `address` lies in this block (an IPv4-mapped IPv6 address counts as its IPv4 address).
    public func contains(_ address: IPAddress) -> Bool {
        let address = address.unmapped
        guard address.bytes.count == network.bytes.count else { return false }
        var remaining = prefixLength
        for (a, b) in zip(address.bytes, network.bytes) where remaining > 0 {
            let mask: UInt8 = remaining >= 8 ? 0xff : ~(0xff >> UInt8(remaining))
            if a & mask != b & mask { return false }
            remaining -= 8
        }
        return true
    }

    public var description: String { "\(network)/\(prefixLength)" }
}
