import Foundation

/// Why a duration like `1h30m` could not be read, with the offending characters.
public struct DurationParseError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Kind: Sendable, Hashable {
        case empty
        case negative
        case missingUnit(number: String)
        case missingNumber(unit: String)
        case unknownUnit(String)
        case repeatedUnit(String)
        case tooLarge
    }

    public var kind: Kind
    /// The input as given.
    public var text: String
    /// The offending characters as 0-based, half-open character offsets into `text`.
    public var offsets: Range<Int>

    static let unitHint = "(use s, m, h, d, w)"

    /// The message without a key prefix, e.g. `unknown unit 'x' in '5x' (use s, m, h, d, w)`.
    public var description: String {
        switch kind {
        case .empty: "empty duration (e.g. 30s, 15m, 2h, 1d, 1w, 1h30m)"
        case .negative: "negative duration '\(text)' not allowed"
        case .missingUnit(let number): "missing unit after '\(number)' in '\(text)' \(Self.unitHint)"
        case .missingNumber(let unit): "missing number before '\(unit)' in '\(text)'"
        case .unknownUnit(let unit): "unknown unit '\(unit)' in '\(text)' \(Self.unitHint)"
        case .repeatedUnit(let unit): "unit '\(unit)' given twice in '\(text)'"
        case .tooLarge: "duration '\(text)' is too large"
        }
    }
}

extension Duration {
    /// The units of the option syntax, largest first (the canonical order).
    static let optionUnits: [(symbol: Character, seconds: Int64)] = [
        ("w", 604_800), ("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1),
    ]

    /// Reads a whole-second duration such as `30s`, `15m`, `2h`, `1d`, `1w` or `1h30m`.
    ///
    /// Units may come in any order but each at most once; a bare `0` is zero. Everything else without
    /// a unit is rejected, so `timeout=30` cannot silently mean seconds.
    public init(parsingOption text: String) throws(DurationParseError) {
        let characters = Array(text)
        func fail(_ kind: DurationParseError.Kind, _ offsets: Range<Int>) -> DurationParseError {
            DurationParseError(kind: kind, text: text, offsets: offsets)
        }
        guard !characters.isEmpty else { throw fail(.empty, 0..<0) }
        if characters == ["0"] {
            self = .zero
            return
        }
        if characters[0] == "-" { throw fail(.negative, 0..<characters.count) }

        var total: Int64 = 0
        var seen: Set<Character> = []
        var index = 0
        while index < characters.count {
            let numberStart = index
            while index < characters.count, characters[index].isASCII, characters[index].isNumber { index += 1 }
            let number = String(characters[numberStart..<index])
            let unitStart = index
            while index < characters.count, !(characters[index].isASCII && characters[index].isNumber) { index += 1 }
            let unit = String(characters[unitStart..<index])

            if unit.isEmpty { throw fail(.missingUnit(number: number), numberStart..<index) }
            guard let symbol = unit.first, unit.count == 1,
                let scale = Self.optionUnits.first(where: { $0.symbol == symbol })?.seconds
            else { throw fail(.unknownUnit(unit), unitStart..<index) }
            if number.isEmpty { throw fail(.missingNumber(unit: unit), unitStart..<index) }
            guard seen.insert(symbol).inserted else { throw fail(.repeatedUnit(unit), unitStart..<index) }

            guard let value = Int64(number) else { throw fail(.tooLarge, numberStart..<index) }
            let (scaled, overflow1) = value.multipliedReportingOverflow(by: scale)
            let (sum, overflow2) = total.addingReportingOverflow(scaled)
            if overflow1 || overflow2 { throw fail(.tooLarge, 0..<characters.count) }
            total = sum
        }
        self = .seconds(total)
    }

    /// The canonical option form: largest units first, zero parts left out (`1h30m`, `0s`).
    public var optionDescription: String {
        var remaining = components.seconds
        guard remaining > 0 else { return "0s" }
        var text = ""
        for (symbol, seconds) in Self.optionUnits where remaining >= seconds {
            text += "\(remaining / seconds)\(symbol)"
            remaining %= seconds
        }
        return text
    }

    /// The duration as a `TimeInterval`, for `Date` arithmetic.
    public var timeInterval: TimeInterval {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }
}
